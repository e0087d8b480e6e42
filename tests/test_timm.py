"""timm architectures by name (``timm:NAME``): weights from a local file, timm's own preprocessing inside the
model, CAM layers and token grids against pytorch-grad-cam, LRP on timm CNNs. Random weights; nothing is
downloaded."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

import pellucid as pl
from pellucid import registry
from pellucid.attribution.cams import default_layer
from pellucid.models import timm_models
from pellucid.models.base import seeded
from pellucid.models.vision import IMAGENET_MEAN, IMAGENET_STD

timm = pytest.importorskip("timm")
timm_data = pytest.importorskip("timm.data")


@pytest.fixture(scope="module")
def photo224():
    return pl.sample_images("photos", n=1, size=224)[0]


def perturbed_state(model: pl.PixelModel, seed: int = 1) -> dict:
    """The model's weights moved by seeded noise: a file that differs from ``weights="random"``."""
    gen = torch.Generator().manual_seed(seed)
    return {k: v + 0.05 * torch.randn(v.shape, generator=gen) if v.is_floating_point() else v
            for k, v in model.net.state_dict().items()}


# ---------------------------------------------------------------------------------------------
# records and loading

def test_featured_records_are_listed_with_timms_input_size():
    records, listed = registry.models(), dict(pl.list_models())
    for arch in timm_models.FEATURED:
        record = records[f"timm:{arch}"]
        assert listed[record.name] == record.title
        assert record.input_size == tuple(timm.get_pretrained_cfg(arch).input_size)
        assert (record.extra, record.needs, record.weights) == ("timm", "timm", "file")
        assert record.missing() is None and "--weights FILE" in record.ready()
    assert records["timm:vit_small_patch16_224"].kind == "transformer" and records["timm:convnext_tiny"].kind == "cnn"
    # a member that is not featured gets its record by rule, its size from timm's config
    assert registry.model_record("timm:resnet18").input_size == tuple(timm.get_pretrained_cfg("resnet18").input_size)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_a_weights_file_round_trips_predictions_exactly(tmp_path, photo224, suffix):
    random = pl.load_model("timm:resnet18", weights="random")
    state = perturbed_state(random)
    path = tmp_path / f"r18{suffix}"
    if suffix == ".pth":
        torch.save(state, path)
    else:
        from safetensors.torch import save_file

        save_file(state, str(path))
    model = pl.load_model("timm:resnet18", weights=path)
    x = photo224[:, :, :64, :64]
    want = torch.func.functional_call(random, {f"net.{k}": v for k, v in state.items()}, (x,))
    with torch.no_grad():
        assert torch.equal(model(x), want)
        assert not torch.allclose(model(x), random(x))  # the file's weights, not the seeded initialization
    assert model.weights == str(path) and model.labels == pl.load_model("imagenet").labels


def test_a_fine_tuned_head_builds_that_many_classes(tmp_path, photo224):
    net = seeded(lambda: timm.create_model("resnet18", pretrained=False, num_classes=7))
    torch.save(net.state_dict(), tmp_path / "head7.pth")
    model = pl.load_model("timm:resnet18", weights=tmp_path / "head7.pth")
    assert model.labels == [str(k) for k in range(7)]
    x = photo224[:, :, :64, :64]
    with torch.no_grad():
        assert torch.equal(model(x), net.eval()((x - model.mean) / model.std))


@pytest.mark.parametrize("arch", ["vit_small_patch16_224", "deit_tiny_patch16_224"])
def test_preprocessing_is_timms_own(arch, photo224):
    """mean, std and input size from timm's pretrained config; the model in pixel space gives what timm's
    net gives on the tensor of timm's own eval transform (crop_pct 1: the photo is already the input size)."""
    from PIL import Image

    model = pl.load_model(f"timm:{arch}", weights="random")
    cfg = timm.get_pretrained_cfg(arch)
    assert model.input_size == tuple(cfg.input_size) and model.strict_size
    assert torch.allclose(model.mean.flatten(), torch.tensor(cfg.mean))
    assert torch.allclose(model.std.flatten(), torch.tensor(cfg.std))
    assert (tuple(cfg.mean), tuple(cfg.std)) == ({"vit_small_patch16_224": ((0.5,) * 3, (0.5,) * 3)}.get(
        arch, ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))))
    x = (photo224 * 255).round() / 255  # exactly what an 8-bit image holds
    image = Image.fromarray((x[0].permute(1, 2, 0) * 255).round().byte().numpy())
    transform = timm_data.create_transform(**{**timm_data.resolve_data_config({}, model=model.net), "crop_pct": 1.0})
    with torch.no_grad():
        assert torch.allclose(model(x), model.net(transform(image)[None]), atol=1e-4)
    with pytest.raises(pl.PellucidError, match="224"):  # a fixed grid of position embeddings: one size
        pl.saliency(model, torch.rand(1, 3, 112, 112), 0)


def test_clear_errors(tmp_path):
    with pytest.raises(pl.PellucidError, match=r"unknown timm architecture 'vit_smal_patch16_224'.*close matches: "
                                               r"timm:vit_small_patch16_224"):
        pl.load_model("timm:vit_smal_patch16_224", weights="random")
    with pytest.raises(pl.PellucidError, match=r"unknown pretrained tag.*vit_small_patch16_224\.augreg_in1k"):
        pl.load_model("timm:vit_small_patch16_224.nonsense", weights="random")
    with pytest.raises(pl.PellucidError, match=r"no weights for timm:convnext_tiny: pellucid never downloads"):
        pl.load_model("timm:convnext_tiny")
    with pytest.raises(pl.PellucidError, match=r"does not exist"):
        pl.load_model("timm:convnext_tiny", weights=tmp_path / "missing.pth")
    torch.save({"fc.weight": torch.zeros(3, 3)}, tmp_path / "other.pth")
    with pytest.raises(pl.PellucidError, match=r"do not fit timm:resnet18"):
        pl.load_model("timm:resnet18", weights=tmp_path / "other.pth")


def test_without_timm_nothing_is_listed_and_loading_says_how_to_install():
    """In a fresh interpreter where ``import timm`` fails: pellucid imports (so it never imports timm at import
    time), lists the family but no featured member, and a timm name says ``pip install 'pellucid[timm]'``."""
    code = """if True:
        import sys
        sys.modules["timm"] = None  # import timm raises ImportError
        import pellucid as pl
        from pellucid import registry
        names = [n for n, _ in pl.list_models()]
        assert "<timm name>" in names and not any(n.startswith("timm:") for n in names), names
        assert "pip install 'pellucid[timm]'" in registry.model_record("timm:resnet50").missing()
        try:
            pl.load_model("timm:resnet50", weights="random")
        except pl.PellucidError as e:
            print(e)
        """
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "timm models need the timm package, which is not installed: pip install 'pellucid[timm]'" in out.stdout


# ---------------------------------------------------------------------------------------------
# CAM layers and token grids, against pytorch-grad-cam given the same layer and reshape

CASES = {  # architecture: (input side, the default layer, the module pytorch-grad-cam gets, its reshape)
    "vit_small_patch16_224": (224, "blocks.11.norm1", lambda n: n.blocks[-1].norm1,
                              lambda t: t[:, 1:].reshape(len(t), 14, 14, -1).permute(0, 3, 1, 2)),
    "deit_tiny_patch16_224": (224, "blocks.11.norm1", lambda n: n.blocks[-1].norm1,
                              lambda t: t[:, 1:].reshape(len(t), 14, 14, -1).permute(0, 3, 1, 2)),
    # the class and the distillation token dropped
    "deit_tiny_distilled_patch16_224": (224, "blocks.11.norm1", lambda n: n.blocks[-1].norm1,
                                        lambda t: t[:, 2:].reshape(len(t), 14, 14, -1).permute(0, 3, 1, 2)),
    # the last stage's output, not a channels-last layer inside a block's MLP
    "convnext_tiny": (128, "stages", lambda n: n.stages, None),
    "efficientnet_b0": (128, "conv_head", lambda n: n.conv_head, None),
}


@pytest.mark.parametrize("arch", list(CASES))
def test_default_cam_layers_and_token_grids_match_pytorch_grad_cam(arch, photo224):
    pytest.importorskip("pytorch_grad_cam")
    from test_cam import assert_close_maps, reference

    side, layer, module, reshape = CASES[arch]
    model = pl.load_model(f"timm:{arch}", weights="random")
    x = torch.nn.functional.interpolate(photo224, size=side, mode="bilinear", antialias=True).clamp(0, 1)
    assert default_layer(model, x) == layer
    ours = pl.grad_cam(model, x, 3)  # layer=None
    assert ours.shape == (1, side, side) and torch.isfinite(ours).all() and ours.max() > 0
    assert_close_maps(ours, reference("gradcam", model, module(model.net), x, [3], reshape))


# ---------------------------------------------------------------------------------------------
# LRP on timm CNNs (the rules are pl.lrp's; transformers are AttnLRP's, elsewhere)

def timm_net(arch: str):
    from test_lrp import random_batchnorm

    return random_batchnorm(seeded(lambda: timm.create_model(arch, pretrained=False, num_classes=10)))


def test_lrp0_is_gradient_x_input_on_a_timm_resnet(photo224):
    """timm's ResNet (plain BatchNorm2d, ReLU, residual sums): every BatchNorm merged, LRP-0 is gradient x input."""
    from test_lrp import assert_close, gradient_x_input

    from pellucid.attribution.lrp import canonize

    net = timm_net("resnet18")
    model = pl.wrap(net, IMAGENET_MEAN, IMAGENET_STD)
    x, t = photo224[:, :, :64, :64], torch.tensor([3])
    assert_close(pl.lrp(model, x, t, "zero"), gradient_x_input(model, x, t))
    assert len(canonize._CACHE[net].merged) == sum(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())


def test_lrp_keeps_its_books_on_a_timm_efficientnet(photo224):
    """What LRP needs of a CNN: the relevance at the input plus what every ruled layer absorbed is the score."""
    net = timm_net("efficientnet_b0")
    model = pl.wrap(net, IMAGENET_MEAN, IMAGENET_STD)
    ruled = [n for n, m in net.named_modules() if isinstance(m, torch.nn.Conv2d | torch.nn.Linear)]
    result = pl.lrp(model, photo224[:, :, :64, :64], 3, layers=ruled)
    total = result.input.flatten(1).sum(1) + sum(result.absorbed.values())
    assert torch.allclose(total, result.score, rtol=1e-2)
