"""Attribution methods against their oracles: Captum, lime, closed forms; plus invariants."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import check_side_effects
from torch import nn

import pellucid as pl
from pellucid import registry
from pellucid._checks import PellucidError
from pellucid.attribution import make_baseline, perturbation


def corr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.corrcoef(torch.stack([a.flatten().float(), b.flatten().float()]))[0, 1])


@pytest.fixture(scope="module")
def digits4(digits_batch):
    x, y = digits_batch
    return x[:4], y[:4]


@pytest.fixture(scope="module")
def photo1(photos_small):
    return photos_small[0][:1], 3


# ---------------------------------------------------------------------------------------------
# Integrated Gradients

@pytest.mark.parametrize("baseline", [0.0, 0.5])
def test_ig_matches_captum_on_digits(digits_model, digits4, baseline):
    from captum.attr import IntegratedGradients

    x, y = digits4
    ours = pl.integrated_gradients(digits_model, x, y, baseline=baseline, steps=50)
    ref = IntegratedGradients(digits_model).attribute(x, baselines=baseline, target=y, n_steps=50,
                                                      method="gausslegendre")
    assert torch.allclose(ours, ref, atol=1e-4 * float(ref.abs().max()))


def test_ig_matches_captum_on_resnet18(resnet_small, photo1):
    from captum.attr import IntegratedGradients

    x, t = photo1
    ours = pl.integrated_gradients(resnet_small, x, t, steps=16, rule="riemann_middle")
    ref = IntegratedGradients(resnet_small).attribute(x, baselines=0.0, target=t, n_steps=16,
                                                      method="riemann_middle")
    assert torch.allclose(ours, ref, atol=1e-3 * float(ref.abs().max()))


@pytest.mark.parametrize("baseline", [0.0, "blur", "noise"])
def test_ig_completeness_within_one_percent(digits_model, digits4, baseline):
    x, y = digits4
    attr, err = pl.integrated_gradients(digits_model, x, y, baseline=baseline, steps=128, return_error=True)
    assert attr.shape == x.shape and err.shape == (len(x),)
    assert float(err.max()) <= 0.01
    # the error is what it claims: check one sample by hand
    b = make_baseline(baseline, x)
    with torch.no_grad():
        delta = digits_model(x)[0, y[0]] - digits_model(b)[0, y[0]]
    assert abs(float(attr[0].sum() - delta)) / abs(float(delta)) == pytest.approx(float(err[0]), abs=1e-4)


def test_ig_completeness_on_resnet18(resnet_small, photo1):
    x, t = photo1
    _, err = pl.integrated_gradients(resnet_small, x, t, steps=128, return_error=True)
    assert float(err.max()) <= 0.01


def test_ig_baselines(digits_model, digits4):
    x, y = digits4
    b = torch.rand(1, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    per_image = pl.integrated_gradients(digits_model, x, y, baseline=b, steps=8)
    full = pl.integrated_gradients(digits_model, x, y, baseline=b.expand_as(x).clone(), steps=8)
    assert torch.allclose(per_image, full)
    blurred = make_baseline("blur", x)
    assert blurred.shape == x.shape and blurred.std() < x.std()
    assert torch.equal(make_baseline("noise", x, seed=3), make_baseline("noise", x, seed=3))
    with pytest.raises(PellucidError, match="baseline must be a number, a tensor.*'blur' or 'noise'"):
        pl.integrated_gradients(digits_model, x, y, baseline=[0.1])
    with pytest.raises(PellucidError, match="unknown baseline 'mean'"):
        pl.integrated_gradients(digits_model, x, y, baseline="mean")
    with pytest.raises(PellucidError, match=r"baseline of shape \(3, 28, 28\) does not broadcast"):
        pl.integrated_gradients(digits_model, x, y, baseline=torch.zeros(3, 28, 28))
    with pytest.raises(PellucidError, match="steps must be an int >= 1"):
        pl.integrated_gradients(digits_model, x, y, steps=0)


class RowRecorder(nn.Module):
    """Wraps a model and records the largest batch it was called with."""

    def __init__(self, model):
        super().__init__()
        self.model, self.largest = model, 0

    def forward(self, x):
        self.largest = max(self.largest, len(x))
        return self.model(x)


def test_many_pass_methods_respect_batch_size(digits_model, digits4):
    x, y = digits4[0][:2], digits4[1][:2]
    rec = RowRecorder(digits_model)
    calls = {
        "ig": lambda bs: pl.integrated_gradients(rec, x, y, steps=40, batch_size=bs),
        "smoothgrad": lambda bs: pl.smoothgrad(rec, x, y, samples=10, batch_size=bs),
        "occlusion": lambda bs: pl.occlusion(rec, x, y, window=6, stride=4, batch_size=bs),
        "lime": lambda bs: pl.lime(rec, x[:1], y[:1], samples=60, batch_size=bs),
    }
    for name, call in calls.items():
        rec.largest = 0
        small = call(7)
        assert 0 < rec.largest <= 7, name
        assert torch.allclose(small, call(64), atol=1e-5 * float(small.abs().max())), name


# ---------------------------------------------------------------------------------------------
# SmoothGrad

def test_smoothgrad_is_seeded_and_leaves_the_global_rng(digits_model, digits4):
    x, y = digits4
    state = torch.get_rng_state()
    a = pl.smoothgrad(digits_model, x, y, samples=10, seed=1)
    b = pl.smoothgrad(digits_model, x, y, samples=10, seed=1)
    c = pl.smoothgrad(digits_model, x, y, samples=10, seed=2)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(a, b) and not torch.allclose(a, c)
    assert a.shape == x.shape


def test_smoothgrad_with_zero_sigma_is_the_wrapped_method(digits_model, digits4):
    x, y = digits4
    g = pl.gradient(digits_model, x, y)
    assert torch.allclose(pl.smoothgrad(digits_model, x, y, samples=5, sigma=0.0), g, atol=1e-6)
    ig = pl.integrated_gradients(digits_model, x, y, steps=10)
    sg_ig = pl.smoothgrad(digits_model, x, y, samples=3, sigma=0.0, method=pl.integrated_gradients, steps=10)
    assert torch.allclose(sg_ig, ig, atol=1e-5)
    noisy = pl.smoothgrad(digits_model, x, y, samples=3, sigma=0.2, method=pl.integrated_gradients, steps=10)
    assert noisy.shape == x.shape and not torch.allclose(noisy, ig)


def test_smoothgrad_rejects_bad_arguments(digits_model, digits4):
    x, y = digits4
    with pytest.raises(PellucidError, match="sigma must be a finite number >= 0"):
        pl.smoothgrad(digits_model, x, y, sigma=-1)
    with pytest.raises(PellucidError, match="samples must be an int >= 1"):
        pl.smoothgrad(digits_model, x, y, samples=0)


# ---------------------------------------------------------------------------------------------
# Grad-CAM

def captum_gradcam(model, layer, x, target):
    from captum.attr import LayerAttribution, LayerGradCam

    cam = LayerGradCam(model, layer).attribute(x, target=target, relu_attributions=True)
    return LayerAttribution.interpolate(cam, x.shape[-2:], "bilinear")[:, 0]


def test_grad_cam_matches_captum_on_digits(digits_model, digits4):
    x, y = digits4
    ours = pl.grad_cam(digits_model, x, y)  # layer=None: the last conv layer, conv3
    ref = captum_gradcam(digits_model, digits_model.net.conv3, x, y)
    assert ours.shape == (4, 28, 28) and (ours >= 0).all()
    assert corr(ours, ref) >= 0.99
    assert torch.allclose(ours, ref, atol=1e-5 * float(ref.max()))


def test_grad_cam_matches_captum_on_resnet18(resnet_small, photo1):
    x, t = photo1
    ours = pl.grad_cam(resnet_small, x, t, layer="layer4")
    ref = captum_gradcam(resnet_small, resnet_small.net.layer4, x, t)
    assert corr(ours, ref) >= 0.99
    auto = pl.grad_cam(resnet_small, x, t)
    ref = captum_gradcam(resnet_small, resnet_small.net.layer4[1].conv2, x, t)
    assert corr(auto, ref) >= 0.99


def test_grad_cam_unknown_layer_lists_valid_names(resnet_small, photo1):
    x, t = photo1
    with pytest.raises(PellucidError, match="unknown layer 'layer5'.*close matches: layer4"):
        pl.grad_cam(resnet_small, x, t, layer="layer5")


def test_guided_grad_cam_matches_captum(digits_model, digits4):
    from captum.attr import GuidedGradCam

    x, y = digits4
    ours = pl.guided_grad_cam(digits_model, x, y, layer="conv3")
    ref = GuidedGradCam(digits_model, digits_model.net.conv3).attribute(x, target=y, interpolate_mode="bilinear")
    assert ours.shape == x.shape
    assert corr(ours, ref) >= 0.99


@pytest.mark.parametrize("which", ["digits", "resnet"])
def test_guided_backprop_matches_captum(which, digits_model, digits4, resnet_small, photo1):
    from captum.attr import GuidedBackprop

    model, (x, y) = (digits_model, digits4) if which == "digits" else (resnet_small, photo1)
    ours = pl.guided_backprop(model, x, y)
    ref = GuidedBackprop(model).attribute(x.clone(), target=y)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-4)
    # guided is not plain: negative gradients are cut at the ReLUs
    assert not torch.allclose(ours, pl.gradient(model, x, y), atol=1e-5)


# ---------------------------------------------------------------------------------------------
# occlusion

def test_occlusion_matches_captum_on_digits(digits_model, digits4):
    from captum.attr import Occlusion

    x, y = digits4
    ours = pl.occlusion(digits_model, x, y, window=4, stride=2)
    ref = Occlusion(digits_model).attribute(x, sliding_window_shapes=(1, 4, 4), strides=(1, 2, 2), baselines=0.0,
                                            target=y, perturbations_per_eval=64)[:, 0]
    assert ours.shape == (4, 28, 28)
    assert corr(ours, ref) >= 0.99
    assert torch.allclose(ours, ref, atol=1e-4 * float(ref.abs().max()))


def test_occlusion_matches_captum_on_resnet18_with_ragged_windows(resnet_small, photo1):
    from captum.attr import Occlusion

    x, t = photo1  # 64 px, window 24 / stride 16: the last window is cut at the border
    ours = pl.occlusion(resnet_small, x, t, window=24, stride=16, fill=0.5)
    ref = Occlusion(resnet_small).attribute(x, sliding_window_shapes=(3, 24, 24), strides=(3, 16, 16),
                                            baselines=0.5, target=t, perturbations_per_eval=16)[:, 0]
    assert corr(ours, ref) >= 0.99


def test_occlusion_rejects_bad_windows(digits_model, digits4):
    x, y = digits4
    with pytest.raises(PellucidError, match="window must be a positive int or a pair"):
        pl.occlusion(digits_model, x, y, window=0)
    with pytest.raises(PellucidError, match=r"window \(40, 40\) is larger than the image \(28, 28\)"):
        pl.occlusion(digits_model, x, y, window=40)


# ---------------------------------------------------------------------------------------------
# LIME

def test_lime_recovers_superpixel_sums_of_a_linear_model(photos_small):
    from scipy.stats import spearmanr

    x = photos_small[0][:1]
    gen = torch.Generator().manual_seed(0)
    linear = nn.Sequential(nn.Flatten(), nn.Linear(3 * 64 * 64, 2))
    with torch.no_grad():
        linear[1].weight.copy_(torch.randn(linear[1].weight.shape, generator=gen))
    model = pl.wrap(linear)
    res = pl.lime(model, x, 1, samples=1000, segments=50, return_details=True)
    seg = res.segments[0].flatten()
    contrib = (linear[1].weight[1] * x.flatten()).reshape(3, -1).sum(0).detach()
    sums = torch.zeros(int(seg.max()) + 1).index_add_(0, seg, contrib)
    rho = spearmanr(res.weights[0].numpy(), sums.numpy()).statistic
    assert rho >= 0.95
    assert float(res.r2[0]) > 0.99
    assert res.map.shape == (1, 64, 64) and torch.equal(res.map[0].flatten(), res.weights[0][seg])


def test_lime_top5_overlaps_lime_image_on_digits(digits_model, digits4):
    from lime import lime_image

    x, y = digits4[0][:3], digits4[1][:3]
    res = pl.lime(digits_model, x, y, samples=1000, return_details=True)
    overlaps = []
    for i in range(len(x)):
        seg = res.segments[i].numpy()

        def classifier(images, i=i):
            batch = torch.from_numpy(images[..., :1]).permute(0, 3, 1, 2).float()
            with torch.no_grad():
                return digits_model(batch).numpy()

        exp = lime_image.LimeImageExplainer(random_state=0).explain_instance(
            x[i, 0].double().numpy(), classifier, labels=(int(y[i]),), top_labels=None, hide_color=0,
            num_samples=1000, segmentation_fn=lambda _img, seg=seg: seg, random_seed=0, batch_size=100)
        theirs = [f for f, _ in sorted(exp.local_exp[int(y[i])], key=lambda fw: -fw[1])[:5]]
        ours = res.weights[i].topk(5).indices.tolist()
        overlaps.append(len(set(ours) & set(theirs)))
    assert np.mean(overlaps) >= 3, overlaps


def test_lime_is_seeded_and_caches_segments(digits_model, digits4):
    x, y = digits4
    state = torch.get_rng_state()
    a = pl.lime(digits_model, x[:2], y[:2], samples=200, seed=5)
    size = len(perturbation._SEGMENT_CACHE)
    b = pl.lime(digits_model, x[:2], y[:2], samples=200, seed=5)
    assert len(perturbation._SEGMENT_CACHE) == size  # the second call reused the segmentation
    c = pl.lime(digits_model, x[:2], y[:2], samples=200, seed=6)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_lime_user_segmentation_and_mean_fill(digits_model, digits4):
    x, y = digits4
    quadrants = (torch.arange(28)[:, None] // 14) * 2 + torch.arange(28)[None, :] // 14
    res = pl.lime(digits_model, x[:1], y[:1], samples=64, segmentation=quadrants, fill="mean", return_details=True)
    assert res.weights[0].shape == (4,) and len(res.map[0].unique()) <= 4
    with pytest.raises(PellucidError, match="segmentation must be integer labels of shape"):
        pl.lime(digits_model, x[:1], y[:1], segmentation=torch.zeros(5, 5, dtype=torch.long))


# ---------------------------------------------------------------------------------------------
# the registry, side effects, CLI and report

FAST = {"smoothgrad": {"samples": 4}, "ig": {"steps": 4}, "occlusion": {"window": 7, "stride": 7},
        "lime": {"samples": 16}}


@pytest.mark.parametrize("name", list(registry.methods()))
def test_every_method_has_no_side_effects(name, digits_model, digits4):
    x, y = digits4
    out = pl.attribution_map(name, digits_model, x, y, **FAST.get(name, {}))
    assert out.shape == (4, 28, 28) and torch.isfinite(out).all()
    check_side_effects(lambda m, xx: registry.method(name)(m, xx, y, **FAST.get(name, {})), digits_model, x)


@pytest.mark.parametrize("name", list(registry.methods()))
def test_every_method_runs_on_resnet18(name, resnet_small, photo1):
    """A real map on a 224-class-head ResNet: finite, not constant, and (but for Eigen-CAM, the principal
    component of the activations, which has no target) a different map for another class."""
    x, t = photo1
    out = pl.attribution_map(name, resnet_small, x, t, **FAST.get(name, {}))
    assert out.shape == (1, 64, 64) and torch.isfinite(out).all()
    assert float(out.std()) > 0, f"{name} gave a constant map"
    if name != "eigencam":
        other = pl.attribution_map(name, resnet_small, x, (t + 1) % 1000, **FAST.get(name, {}))
        assert not torch.allclose(out, other), f"{name} gave the same map for two classes"
    if name in ("saliency", "input_x_gradient"):  # closed forms over the input gradient
        g = pl.gradient(resnet_small, x, t)
        want = g.abs().amax(1) if name == "saliency" else (g * x).sum(1)
        assert torch.allclose(out, want, rtol=1e-4, atol=1e-7)


def test_unknown_method_lists_valid_names(digits_model, digits4):
    x, y = digits4
    with pytest.raises(PellucidError, match="unknown attribution method 'gradcm'.*saliency.*gradcam.*lime"):
        pl.attribution_map("gradcm", digits_model, x, y)


def test_explain_cli_writes_a_grid(tmp_path, digits_model):
    from PIL import Image

    from pellucid.cli import main

    out = tmp_path / "grid.png"
    assert main(["explain", "-n", "2", "--methods", "saliency,gradcam,occlusion", "--shared-scale",
                 "--out", str(out)]) == 0
    img = Image.open(out)
    assert img.format == "PNG" and img.width > img.height


def test_explain_cli_unknown_method(tmp_path, digits_model, capsys):
    from pellucid.cli import main

    assert main(["explain", "-n", "1", "--methods", "saliency,shap", "--out", str(tmp_path / "g.png")]) == 2
    assert "unknown attribution method 'shap'" in capsys.readouterr().err


def test_report_has_the_attribution_grid(tmp_path, digits_model, digits_batch):
    from pellucid.drawing.report import attribution_section, build_report

    x, y = digits_batch
    path = build_report(digits_model, x[:1], y[:1], tmp_path, progress=False, sections=[attribution_section])
    page = path.read_text()
    assert "Where does it look" in page and "data:image/png;base64," in page
    # the caption lists the columns shown, in order, and names LRP's composite
    caption = page.split(">Where does it look</h2>")[1].split("<img")[0]
    assert "Seven attribution methods" in caption and "LRP with the epsilon_plus_flat composite" in caption
    names = ("saliency", "SmoothGrad", "Integrated Gradients", "Grad-CAM", "LRP", "occlusion", "LIME")
    spots = [caption.index(n) for n in names]
    assert spots == sorted(spots)


def test_the_attribution_caption_follows_the_columns():
    from pellucid.drawing.report import attribution_caption

    text = attribution_caption(["saliency", "lrp"], "attnlrp")
    assert text.startswith("Two attribution methods") and "saliency and LRP with the attnlrp composite" in text


def test_score_cam_hands_rows_in_the_models_memory_format_and_the_others_need_not(resnet_small, photo1):
    """Score-CAM lays its masked images out as the model's weights are (channels-last here): a mismatch made
    every convolution reorder its weights. Occlusion, LIME and KernelSHAP gain nothing from it
    (benchmarks/layout.py) and keep their rows; every map is the same either way."""
    import copy

    x, t = photo1
    last = copy.deepcopy(resnet_small).to(memory_format=torch.channels_last)
    seen = []
    hook = last.net.conv1.register_forward_pre_hook(
        lambda m, inp: seen.append(inp[0].is_contiguous(memory_format=torch.channels_last)))
    try:
        for name, kw in (("scorecam", {}), ("occlusion", {"window": 16, "stride": 16}), ("lime", {"samples": 16}),
                         ("kernel_shap", {"samples": 16})):
            seen.clear()
            got = pl.attribution_map(name, last, x, t, **kw)
            if name == "scorecam":
                assert len(seen) > 1 and seen[-1], name  # the masked passes come last (after the plain ones)
            assert torch.allclose(got, pl.attribution_map(name, resnet_small, x, t, **kw), rtol=1e-3, atol=1e-4)
    finally:
        hook.remove()
