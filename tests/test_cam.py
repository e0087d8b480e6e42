"""The CAM family against pytorch-grad-cam on the same layers and images; transformers' token grids;
no side effects; bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import check_side_effects
from torch import nn

import pellucid as pl
from pellucid import registry
from pellucid._checks import PellucidError
from pellucid.attribution.cams import METHODS, default_layer, principal_map

pgc = pytest.importorskip("pytorch_grad_cam")
from pytorch_grad_cam.ablation_layer import AblationLayer  # noqa: E402
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget  # noqa: E402
from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection  # noqa: E402

GRADIENT = ("gradcam", "gradcam++", "xgradcam", "hirescam", "layercam")
CLASSES = {"gradcam": "GradCAM", "gradcam++": "GradCAMPlusPlus", "xgradcam": "XGradCAM", "hirescam": "HiResCAM",
           "layercam": "LayerCAM", "scorecam": "ScoreCAM", "ablationcam": "AblationCAM", "eigencam": "EigenCAM"}


class ZeroAblation(AblationLayer):
    """pytorch-grad-cam's ablation set to zero, as the paper (its default uses min - 1e7 on layers with
    negative values)."""

    def __call__(self, x):
        out = self.activations
        for i in range(out.size(0)):
            out[i, self.indices[i]] = 0
        return out


def corr(a, b) -> float:
    a, b = torch.as_tensor(a).flatten().double(), torch.as_tensor(b).flatten().double()
    return float(torch.corrcoef(torch.stack([a, b]))[0, 1])


def reference(method, model, module, x, y, reshape=None):
    cls = getattr(pgc, CLASSES[method])
    kw = {"reshape_transform": reshape}
    if method == "ablationcam":
        kw.update(ablation_layer=ZeroAblation(), batch_size=64)
    try:
        with cls(model, target_layers=[module], **kw) as c:
            c.batch_size = 64
            return c(x, targets=[ClassifierOutputTarget(int(k)) for k in y])
    finally:  # it calls .backward(): leave the shared fixtures without parameter gradients
        for p in model.parameters():
            p.grad = None


def assert_close_maps(ours, theirs, bar=0.99):
    for i in range(len(ours)):
        r = corr(ours[i], theirs[i])
        assert r >= bar, f"image {i}: correlation {r:.4f}"


@pytest.fixture(scope="module")
def digits4(digits_batch):
    x, y = digits_batch
    return x[:4], y[:4]


# ---------------------------------------------------------------------------------------------
# against pytorch-grad-cam

@pytest.mark.parametrize("method", [m for m in METHODS if m != "eigencam"])
def test_cam_matches_pytorch_grad_cam_on_digits(digits_model, digits4, method):
    x, y = digits4
    ours = pl.cam(digits_model, x, y, method, "conv3")
    theirs = reference(method, digits_model, digits_model.net.conv3, x, y)
    assert ours.shape == (4, 28, 28)
    assert_close_maps(ours, theirs)


@pytest.mark.parametrize("method", [m for m in METHODS if m != "eigencam"])
def test_cam_matches_pytorch_grad_cam_on_resnet18(resnet_small, photos_small, method):
    n = 1 if method in ("scorecam", "ablationcam") else 2
    x, y = photos_small[0][:n], [3, 7][:n]
    ours = pl.cam(resnet_small, x, y, method, "layer4")
    theirs = reference(method, resnet_small, resnet_small.net.layer4, x, y)
    assert_close_maps(ours, theirs)


@pytest.mark.parametrize("where", ["digits", "resnet18"])
def test_eigencam_is_the_principal_component_with_a_fixed_sign(digits_model, digits4, resnet_small, photos_small,
                                                               where):
    model, x, layer = ((digits_model, digits4[0], "conv3") if where == "digits"
                       else (resnet_small, photos_small[0][:2], "layer4"))
    acts = pl.activations(model, x, layer)
    ours = principal_map(acts)
    theirs = get_2d_projection(acts.numpy())
    mean = acts.mean(1)
    for i in range(len(x)):
        assert abs(corr(ours[i], theirs[i])) >= 0.99
        assert corr(ours[i], mean[i]) >= 0  # the sign agrees with the mean activation
    # the full map equals pytorch-grad-cam's EigenCAM, up to the sign it leaves to the SVD
    full = pl.cam(model, x, 0, "eigencam", layer)
    flipped = torch.nn.functional.interpolate((-ours).clamp_min(0)[:, None], size=x.shape[-2:], mode="bilinear")[:, 0]
    ref = reference("eigencam", model, dict(model.net.named_modules())[layer], x, [0] * len(x))
    for i in range(len(x)):
        assert max(corr(full[i], ref[i]), corr(flipped[i], ref[i])) >= 0.99


def test_grad_cam_is_the_gradcam_member(digits_model, digits4):
    x, y = digits4
    assert torch.equal(pl.grad_cam(digits_model, x, y), pl.cam(digits_model, x, y))
    assert torch.equal(pl.grad_cam(digits_model, x, y, layer="conv2"), pl.cam(digits_model, x, y, "gradcam", "conv2"))


def test_chunks_do_not_change_the_maps(digits_model, digits4):
    x, y = digits4
    for method in ("gradcam++", "scorecam", "ablationcam"):
        whole = pl.cam(digits_model, x, y, method, "conv3", batch_size=64)
        small = pl.cam(digits_model, x, y, method, "conv3", batch_size=3)
        assert torch.allclose(whole, small, atol=1e-5 * float(whole.abs().max()))


def test_smoothing(digits_model, digits4):
    x, y = digits4
    aug = pl.cam(digits_model, x, y, "gradcam", "conv3", smooth="aug")
    # by hand: the mirror image's map mirrored back, averaged with the plain ones
    views = [pl.cam(digits_model, (v * k).clamp(0, 1), y, "gradcam", "conv3") for v in (x, x.flip(-1))
             for k in (0.9, 1.0, 1.1)]
    by_hand = (sum(views[:3]) + sum(v.flip(-1) for v in views[3:])) / 6
    assert torch.allclose(aug, by_hand, atol=1e-5)
    eig = pl.cam(digits_model, x, y, "gradcam", "conv3", smooth="eigen")
    assert eig.shape == (4, 28, 28) and eig.min() >= 0
    # SmoothGrad wraps a CAM like any method
    sg = pl.smoothgrad(digits_model, x, y, samples=4, method=pl.cam, seed=0)
    assert sg.shape == (4, 28, 28)


# ---------------------------------------------------------------------------------------------
# transformers

@pytest.fixture(scope="module")
def vit_small():
    """torchvision's vit_b_16, random weights, at 112x112 (a 7x7 grid) to stay fast; a seeded random head
    (torchvision initializes the head to zeros)."""
    import torchvision

    torch.manual_seed(0)
    net = torchvision.models.vit_b_16(weights=None, image_size=112)
    nn.init.normal_(net.heads.head.weight, std=0.5)
    return pl.wrap(net, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), input_size=(3, 112, 112)).eval()


@pytest.fixture(scope="module")
def swin():
    return pl.load_model("swin_t", weights="random")


@pytest.fixture(scope="module")
def photo112():
    return pl.sample_images("photos", size=112)[0][:1]


def test_vit_default_layer_and_maps_match_pytorch_grad_cam(vit_small, photo112):
    from pytorch_grad_cam.utils.reshape_transforms import vit_reshape_transform

    x = photo112
    assert default_layer(vit_small, x) == "encoder.layers.encoder_layer_11.ln_1"
    module = vit_small.net.encoder.layers[-1].ln_1
    for method in ("gradcam", "layercam", "xgradcam"):
        ours = pl.cam(vit_small, x, 5, method)  # layer=None: the last block's first norm, tokens as a 7x7 grid
        theirs = reference(method, vit_small, module, x, [5], lambda t: vit_reshape_transform(t, 7, 7))
        assert_close_maps(ours, theirs)
    # the patch embedding, the old default, is far from it
    old = pl.cam(vit_small, x, 5, "gradcam", "conv_proj")
    assert corr(old[0], pl.cam(vit_small, x, 5)[0]) < 0.9


def test_swin_default_layer_and_maps_match_pytorch_grad_cam(swin):
    x = pl.sample_images("photos", size=224)[0][:1]
    assert default_layer(swin, x) == "features.7.1.norm1"
    module = swin.net.features[-1][-1].norm1
    for method in ("gradcam", "hirescam", "gradcam++"):
        ours = pl.cam(swin, x, 5, method)
        # torchvision's Swin keeps (N, h, w, C): pytorch-grad-cam's transform for it is a permute
        theirs = reference(method, swin, module, x, [5], lambda t: t.permute(0, 3, 1, 2))
        assert_close_maps(ours, theirs)


def test_vit_default_layer_of_the_registered_model():
    vit = pl.load_model("vit_b_16", weights="random")
    x = torch.rand(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    assert default_layer(vit, x) == "encoder.layers.encoder_layer_11.ln_1"


def test_ablation_on_tokens_zeroes_a_channel_of_the_patch_tokens(vit_small, photo112):
    """Ablation-CAM on a ViT (its passes share the layers before the CAM layer) against channels ablated by hand."""
    import torchvision

    from pellucid._state import model_state
    from pellucid.attribution.cams.grids import make_reshape
    from pellucid.attribution.cams.passes import ablation_weights
    from pellucid.targets import as_target

    torch.manual_seed(0)
    vit = pl.wrap(torchvision.models.VisionTransformer(32, 8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64,
                                                       num_classes=10), input_size=(3, 32, 32)).eval()
    nn.init.normal_(vit.net.heads.head.weight, std=0.5)
    x = photo112[..., ::3, ::3][..., :32, :32].contiguous()
    layer = vit.net.encoder.layers[-1].ln_1
    assert default_layer(vit, x) == "encoder.layers.encoder_layer_1.ln_1"
    raw = pl.activations(vit, x, "encoder.layers.encoder_layer_1.ln_1")
    with torch.no_grad():
        base = vit(x)[:, 5]
    with model_state(vit) as state:
        w = ablation_weights(vit, state, layer, x, as_target(5, 1, None), raw, make_reshape("tokens", (4, 4), 1),
                             base, 8)
    assert torch.allclose(pl.cam(vit, x, 5, "ablationcam"), pl.cam(vit, x, 5, "ablationcam", batch_size=5), atol=1e-6)
    vit_small = vit
    for k in (0, 17, 31):
        ablated = raw.clone()
        ablated[:, 1:, k] = 0
        handle = layer.register_forward_hook(lambda _m, _i, _o, a=ablated: a)
        try:
            with torch.no_grad():
                score = vit_small(x)[:, 5]
        finally:
            handle.remove()
        assert torch.allclose(w[:, k], (base - score) / base, atol=1e-4)


def test_reshape_argument(vit_small, photo112):
    x = photo112
    auto = pl.cam(vit_small, x, 5, "gradcam", "encoder.layers.encoder_layer_10")
    by_hand = pl.cam(vit_small, x, 5, "gradcam", "encoder.layers.encoder_layer_10",
                     reshape=lambda t: t[:, 1:].reshape(len(t), 7, 7, -1).permute(0, 3, 1, 2))
    assert torch.allclose(auto, by_hand)


def test_layers_command_shows_token_grids():
    from pellucid.attribution.cams import describe_grid

    assert describe_grid((197, 768), (3, 224, 224)) == "grid 14x14 (tokens, 1 skipped)"
    assert describe_grid((7, 7, 768), (3, 224, 224)) == "grid 7x7 (channels last)"
    assert describe_grid((64, 14, 14), (1, 28, 28)) == "grid 14x14"
    assert describe_grid((10,), (1, 28, 28)) == ""


# ---------------------------------------------------------------------------------------------
# records, side effects, bad input

def test_registered_for_every_front_end():
    table = registry.methods()
    for name in ("gradcam", "gradcam++", "xgradcam", "hirescam", "layercam", "scorecam", "ablationcam", "eigencam"):
        assert name in table
    assert table["scorecam"].cost == table["ablationcam"].cost == "expensive"
    assert [m for m in registry.grid_methods() if "cam" in m] == ["gradcam"]


@pytest.mark.parametrize("method", METHODS)
def test_no_side_effects(digits_model, digits4, method):
    x, y = digits4
    check_side_effects(lambda m, xx: pl.cam(m, xx[:2], y[:2], method, "conv3"), digits_model, x,
                       explode_at=digits_model.net.conv2)
    check_side_effects(lambda m, xx: pl.cam(m, xx[:2], y[:2], method, "conv3"), digits_model, x,
                       explode_at=digits_model.net.fc)


def test_no_side_effects_of_smoothing_and_default_layer(digits_model, digits4):
    x, y = digits4
    check_side_effects(lambda m, xx: pl.cam(m, xx[:2], y[:2], smooth="aug"), digits_model, x)
    check_side_effects(lambda m, xx: pl.cam(m, xx[:2], y[:2], smooth="eigen"), digits_model, x)


def test_bad_input(digits_model, digits4):
    x, y = digits4
    with pytest.raises(PellucidError, match=r"unknown CAM method 'gradcam\+'.*gradcam\+\+.*eigencam"):
        pl.cam(digits_model, x, y, "gradcam+")
    with pytest.raises(PellucidError, match=r"layer 'fc' gives output \(4, 10\), not a spatial map.*reshape="):
        pl.cam(digits_model, x, y, "scorecam", "fc")
    with pytest.raises(PellucidError, match=r"layer 'flatten' gives output \(4, 3136\), not a spatial map"):
        pl.cam(digits_model, x, y, "gradcam", "flatten")
    with pytest.raises(PellucidError, match=r"unknown smooth 'blur'"):
        pl.cam(digits_model, x, y, smooth="blur")
    with pytest.raises(PellucidError, match=r"reshape must give \(N, C, h, w\)"):
        pl.cam(digits_model, x, y, "gradcam", "conv3", reshape=lambda t: t.flatten(2))
    mlp = pl.wrap(nn.Sequential(nn.Flatten(), nn.Linear(784, 10)), input_size=(1, 28, 28))
    with pytest.raises(PellucidError, match="no layer of this model gives a spatial grid"):
        pl.cam(mlp, x, y)


def test_relu_off_keeps_negative_evidence(digits_model, digits4):
    x, y = digits4
    raw = pl.cam(digits_model, x, y, "hirescam", "conv3", relu=False)
    assert raw.min() < 0
    assert np.isfinite(raw.numpy()).all()


# ---------------------------------------------------------------------------------------------
# front ends

def test_cli_explain_offers_the_family_and_target_kinds(tmp_path, digits_model, capsys):
    from pellucid.cli import main

    out = tmp_path / "g.png"
    assert main(["explain", "-n", "2", "--methods", "gradcam++,scorecam,eigencam", "--target-kind", "multilabel",
                 "--out", str(out)]) in (0, None)
    assert out.exists()
    assert main(["explain", "-n", "1", "--methods", "layercam", "--target-kind", "regression",
                 "--out", str(out)]) == 2
    assert "target=None explains a single-output model" in capsys.readouterr().err
    assert main(["layers", "--model", "digits"]) in (0, None)
    assert "64x14x14  grid 14x14" in capsys.readouterr().out


def test_score_cam_masks_follow_the_models_memory_format(resnet_small, photos_small):
    """Masked images laid out against the model's convolution weights make every convolution reorder its
    weights (a third of Score-CAM's time on a contiguous resnet18): they follow the first weight that tells,
    and the maps do not depend on the layout."""
    import copy

    from pellucid._grad import memory_format as _memory_format

    last = copy.deepcopy(resnet_small).to(memory_format=torch.channels_last)
    assert _memory_format(resnet_small) == torch.contiguous_format
    assert _memory_format(last) == torch.channels_last
    pointwise = nn.Sequential(nn.Conv2d(1, 4, 1), nn.Conv2d(4, 4, 3)).to(memory_format=torch.channels_last)
    assert _memory_format(pointwise) == torch.channels_last  # the 1x1, one-channel weight is both: skipped
    assert _memory_format(nn.Sequential(nn.Linear(3, 2))) == torch.contiguous_format
    x, y = photos_small[0][:1], torch.tensor([3])
    a = pl.cam(resnet_small, x, y, "scorecam", "layer4")
    b = pl.cam(last, x, y, "scorecam", "layer4")
    assert torch.allclose(a, b, atol=1e-4)
