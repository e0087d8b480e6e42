"""What has it learned: class and channel visualization, objectives, transforms, activations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import check_side_effects

import pellucid as pl
from pellucid import featureviz as V
from pellucid._blur import gaussian_blur
from pellucid._checks import PellucidError
from pellucid.cli import main
from pellucid.featureviz import figures, loop, objectives, optim


def digits_noise(n: int, seed: int = 1) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return (0.1307 + 0.3081 * torch.randn((n, 1, 28, 28), generator=gen)).clamp(0, 1)


def normalized(model, x):
    return (x - model.mean) / model.std


# ---------------------------------------------------------------------------------------------
# the correctness requirements

def test_class_visualization_of_every_digit_is_classified_as_its_target(digits_model):
    v = pl.class_visualization(digits_model, range(10))
    assert v.image.shape == (10, 1, 28, 28) and 0 <= float(v.image.min()) and float(v.image.max()) <= 1
    with torch.no_grad():
        probs = digits_model(v.image).softmax(1)
    assert (probs.diagonal() >= 0.9).all(), probs.diagonal()
    assert sorted(v.snapshots) == [1, 25, 50, 75, 100]
    assert v.probability.shape == (100, 10)
    assert float(v.probability[0].mean()) < 0.5 < float(v.probability[-1].mean())
    assert torch.equal(v.snapshots[100], v.image)


def test_channel_visualization_raises_the_mean_activation_5x(digits_model):
    layer, channels = "relu3", [0, 5, 9, 13]
    start = digits_noise(len(channels))
    v = pl.channel_visualization(digits_model, layer, channels, start=start)
    rows = range(len(channels))
    before = pl.activations(digits_model, start, layer)[rows, channels].flatten(1).mean(1)
    after = pl.activations(digits_model, v.image, layer)[rows, channels].flatten(1).mean(1)
    assert (before > 0).all() and (after >= 5 * before).all(), (before, after)
    assert v.activation.shape == (100, len(channels))


def test_same_seed_same_image_different_seed_different(digits_model):
    a = pl.class_visualization(digits_model, [3, 4], steps=4, seed=7)
    b = pl.class_visualization(digits_model, [3, 4], steps=4, seed=7)
    c = pl.class_visualization(digits_model, [3, 4], steps=4, seed=8)
    assert torch.equal(a.image, b.image) and not torch.equal(a.image, c.image)
    state = torch.random.get_rng_state()
    pl.channel_visualization(digits_model, "conv2", 1, steps=2, seed=3)
    assert torch.equal(state, torch.random.get_rng_state()), "the global RNG was used"


@pytest.mark.parametrize("call", [
    lambda m, x: pl.class_visualization(m, [1, 2], steps=2),
    lambda m, x: pl.class_visualization(m, 1, steps=2, param="fourier"),
    lambda m, x: pl.channel_visualization(m, "conv2", 3, steps=2, start=x),
    lambda m, x: V.visualize(m, V.neuron("relu3", 1) - 0.1 * V.total_variation(), start=x, steps=2,
                             transforms=V.standard_transforms(2)),
    lambda m, x: pl.activations(m, x, "relu2"),
    lambda m, x: pl.layer_names(m),
])
def test_no_side_effects(digits_model, digits_batch, call):
    check_side_effects(call, digits_model, digits_batch[0][:2])


def test_clear_errors(digits_model):
    with pytest.raises(PellucidError, match=r"unknown layer 'conv22'.*close matches: conv2"):
        pl.channel_visualization(digits_model, "conv22", 0)
    with pytest.raises(PellucidError, match=r"channel 32 is out of range.*0\.\.31"):
        pl.channel_visualization(digits_model, "conv2", 32, steps=1)
    with pytest.raises(PellucidError, match=r"target 10 is out of range.*0\.\.9"):
        pl.class_visualization(digits_model, [3, 10])
    with pytest.raises(PellucidError, match=r"steps must be an int >= 1, got 0"):
        pl.class_visualization(digits_model, 3, steps=0)
    with pytest.raises(PellucidError, match="unknown param"):
        pl.class_visualization(digits_model, 3, param="wavelet")
    with pytest.raises(PellucidError, match="snapshots must be steps in 1..5"):
        pl.class_visualization(digits_model, 3, steps=5, snapshots=[6])
    with pytest.raises(PellucidError, match="channel -1 is negative"):
        pl.channel_visualization(digits_model, "conv2", -1)
    with pytest.raises(PellucidError, match="objectives combine with objectives"):
        V.class_logit(3) + 2
    with pytest.raises(PellucidError, match="channel 40 is out of range"):
        V.filter_maps(digits_model, "conv2", [40], digits_noise(1))


# ---------------------------------------------------------------------------------------------
# oracles: the course's update by hand, scipy's blur, closed forms of objectives

def test_one_step_is_the_course_update(digits_model):
    """Roll, ascend logit - l2 ||I||² by lr * g/||g|| in normalized space, unroll, clamp: by hand."""
    x0, lr, l2, jitter = digits_noise(2), 25.0, 1e-3, 2
    v = V.visualize(digits_model, V.class_logit([4, 7]) - l2 * V.l2(), start=x0, steps=1, lr=lr,
                    transforms=V.roll(jitter), seed=5)
    gen = torch.Generator().manual_seed(5)
    oy, ox = (int(torch.randint(0, jitter + 1, (1,), generator=gen)) for _ in range(2))
    xr = torch.roll(x0, (oy, ox), dims=(-2, -1)).requires_grad_(True)
    score = digits_model(xr)[[0, 1], [4, 7]] - l2 * xr.pow(2).flatten(1).sum(1)
    (g,) = torch.autograd.grad(score.sum(), xr)
    std = float(digits_model.std)
    gn = g * std
    step = lr * math.sqrt(784 / (3 * 224 * 224)) * gn / gn.flatten(1).norm(dim=1)[:, None, None, None]
    expected = torch.roll(xr.detach() + std * step, (-oy, -ox), dims=(-2, -1)).clamp(0, 1)
    torch.testing.assert_close(v.image, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(v.objective[0], score.detach(), atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("batch_size", [1, 2])
def test_one_step_is_the_course_update_in_chunks_too(digits_model, batch_size):
    """Chunks take input gradients, then one pass back through roll and param: the same step."""
    x0, objective = digits_noise(3), V.class_logit([4, 7, 1]) - 1e-3 * V.l2()
    run = lambda bs, param: V.visualize(digits_model, objective, start=x0, steps=3, transforms=V.roll(2),  # noqa: E731
                                        param=param, seed=5, batch_size=bs)
    for param in ("pixel", "fourier"):
        whole, chunked = run(None, param), run(batch_size, param)
        torch.testing.assert_close(chunked.image, whole.image, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(chunked.objective, whole.objective, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("size", [(20, 17), (150, 131)])  # banded matrix products; shifted sums
@pytest.mark.parametrize("mode", ["reflect", "replicate"])
def test_gaussian_filter_matches_scipy_on_both_paths(size, mode):
    from scipy.ndimage import gaussian_filter as scipy_filter

    from pellucid._blur import gaussian_filter

    x = torch.rand(2, 3, *size, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    for sigma, radius in ((0.5, 2), (1.5, 4)):
        want = scipy_filter(x.numpy(), sigma=(0, 0, sigma, sigma), mode={"reflect": "mirror"}.get(mode, "nearest"),
                            radius=(0, 0, radius, radius))
        np.testing.assert_allclose(gaussian_filter(x, sigma, radius, mode).numpy(), want, atol=1e-12)
    with pytest.raises(PellucidError, match="radius 20 needs images larger"):
        gaussian_filter(x[..., :12, :12], 1.0, 20)


@pytest.mark.parametrize("sigma", [0.5, 1.0, 2.0])
def test_blur_matches_scipy(sigma):
    from scipy.ndimage import gaussian_filter

    x = torch.rand(2, 3, 20, 17, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    got = gaussian_blur(x, sigma).numpy()
    want = gaussian_filter(x.numpy(), sigma=(0, 0, sigma, sigma), mode="mirror", truncate=4.0)
    np.testing.assert_allclose(got, want, atol=1e-12)


def test_objectives_compose_as_arithmetic(digits_model):
    x = digits_noise(3)
    logits = digits_model(x).detach()
    cap = V.Capture(logits, x, {"relu3": pl.activations(digits_model, x, "relu3")}, slice(0, 3))
    obj = 2 * V.class_logit([1, 2, 3]) - 0.5 * V.l2() + V.channel("relu3", 4) - V.neuron("relu3", 4, 1, 2)
    got = obj.bind(digits_model, 3)(cap)
    acts = cap.layers["relu3"]
    want = (2 * logits[[0, 1, 2], [1, 2, 3]] - 0.5 * x.pow(2).sum((1, 2, 3)) + acts[:, 4].mean((1, 2))
            - acts[:, 4, 1, 2])
    torch.testing.assert_close(got, want)
    tv = V.total_variation().bind(digits_model, 3)(cap)
    torch.testing.assert_close(tv, x.diff(dim=2).abs().sum((1, 2, 3)) + x.diff(dim=3).abs().sum((1, 2, 3)))
    assert torch.equal(sum([V.l2(), V.l2()]).bind(digits_model, 3)(cap), 2 * x.pow(2).sum((1, 2, 3)))
    assert torch.equal((-V.l2()).bind(digits_model, 3)(cap), -x.pow(2).sum((1, 2, 3)))
    # a scaled composite distributes its weight; layers of every term are kept for the hooks
    nested = 3 * (V.class_logit([1, 2, 3]) - V.l2()) - (-V.channel("relu3", 4))
    assert nested.layers == ("relu3",) and len(nested.terms) == 3
    torch.testing.assert_close(nested.bind(digits_model, 3)(cap), 3 * (logits[[0, 1, 2], [1, 2, 3]] - x.pow(2).sum(
        (1, 2, 3))) + acts[:, 4].mean((1, 2)))


def test_activations_match_the_network_prefix(digits_model, digits_batch):
    x = digits_batch[0]
    with torch.no_grad():
        want = digits_model.net[:6](normalized(digits_model, x))
    torch.testing.assert_close(pl.activations(digits_model, x, "relu2", batch_size=3), want)
    names = {name: shape for name, _, shape in pl.layer_names(digits_model)}
    assert names["conv2"] == (32, 28, 28) and names["pool3"] == (64, 7, 7) and names["fc"] == (10,)


def test_transforms_keep_shape_and_are_seeded():
    x = torch.rand(2, 3, 32, 32)
    t = V.standard_transforms(4)
    a, b = t(x, torch.Generator().manual_seed(1)), t(x, torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and a.shape == (2, 3, 32 + 2 * 8 - 4 - 4, 32 + 2 * 8 - 4 - 4)
    r = V.roll(3)(x, torch.Generator().manual_seed(2))
    assert torch.equal(r.flatten(2).sort().values, x.flatten(2).sort().values)  # a roll permutes pixels
    assert V.random_rotate(0)(x, torch.Generator()).allclose(x, atol=1e-5)
    assert V.random_scale((1, 1))(x, torch.Generator()).allclose(x, atol=1e-5)


def test_fourier_parameterization_round_trips_and_decorrelates():
    x = torch.rand(2, 3, 16, 15, generator=torch.Generator().manual_seed(0)) * 0.9 + 0.05
    p = V.FourierParam(x)
    torch.testing.assert_close(p.image(), x, atol=1e-5, rtol=1e-5)
    gray = V.FourierParam(torch.rand(1, 1, 8, 8) * 0.9 + 0.05)
    assert gray.color is None and gray.image().shape == (1, 1, 8, 8)
    # a step on the lowest frequency changes the whole image; the scale favours low frequencies
    assert float(p.scale[0, 0]) == max(p.tensor.shape[-3:-1]) and float(p.scale.min()) < 2


def lucent_fft_rgb(spectrum: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Lucent 0.1.8's fft_image + to_valid_rgb(decorrelate=True) (param/spatial.py, color.py), verbatim maths."""
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.fftfreq(w)[: w // 2 + 1]
    freqs = np.sqrt(fx * fx + fy * fy)
    scale = torch.tensor(1.0 / np.maximum(freqs, 1.0 / max(w, h)) ** 1).float()[None, None, ..., None]
    image = torch.fft.irfftn(torch.view_as_complex(scale * spectrum), s=(h, w), norm="ortho") / 4.0
    svd = np.asarray([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]]).astype("float32")
    color = svd / np.max(np.linalg.norm(svd, axis=0))
    image = torch.matmul(image.permute(0, 2, 3, 1), torch.tensor(color.T)).permute(0, 3, 1, 2)
    return torch.sigmoid(image)


def test_fourier_image_equals_lucents():
    p = V.FourierParam(torch.full((2, 3, 24, 20), 0.5))
    spectrum = torch.randn(p.tensor.shape, generator=torch.Generator().manual_seed(0)) * 0.3
    with torch.no_grad():
        p.tensor.copy_(spectrum)
    torch.testing.assert_close(p.image(), lucent_fft_rgb(spectrum, 24, 20), atol=1e-6, rtol=1e-5)


def test_fourier_image_is_contiguous_so_convolutions_do_not_copy_their_weights():
    assert V.FourierParam(torch.full((2, 3, 24, 20), 0.5)).image().is_contiguous()


@pytest.mark.parametrize("fused", [True, False])
def test_adam_step_equals_torch_optim_adam_on_the_negated_gradient(fused):
    gen = torch.Generator().manual_seed(0)
    theirs = torch.randn(4, 6, generator=gen).requires_grad_(True)
    ours = theirs.detach().clone()
    opt, mine = torch.optim.Adam([theirs], lr=0.05), optim._Adam(ours, 0.05, fused=fused)
    assert mine.fused is fused
    for _ in range(25):
        g = torch.randn(4, 6, generator=gen)
        kept = g.clone()
        theirs.grad = -g
        opt.step()
        mine.step(g)
        assert torch.equal(g, kept)  # the gradient is read, not negated in place
    torch.testing.assert_close(ours, theirs.detach(), atol=1e-6, rtol=1e-5)


def test_pl_names_are_the_featureviz_functions():
    assert callable(pl.visualize) and pl.visualize is loop.visualize and pl.channel is objectives.channel
    assert pl.visualize is V.visualize and pl.Objective is V.Objective and pl.roll is V.roll


def test_fourier_class_visualization_on_resnet(resnet_small):
    v = pl.class_visualization(resnet_small, [1, 500], steps=5, param="fourier")
    assert v.image.shape == (2, 3, 64, 64)
    assert (v.objective[-1] > v.objective[0]).all()
    assert (v.probability[-1] > v.probability[0]).all()


# ---------------------------------------------------------------------------------------------
# command line and report

def test_cli_layers_lists_names_with_shapes(capsys, digits_model):
    assert main(["layers", "--model", "digits"]) == 0
    out = capsys.readouterr().out
    assert "conv2" in out and "32x28x28" in out and "fc" in out


def test_cli_classviz_and_filterviz_write_pngs(tmp_path, digits_model):
    from PIL import Image

    grid, strip, filt = tmp_path / "c.png", tmp_path / "h.png", tmp_path / "f.png"
    assert main(["classviz", "--model", "digits", "--target", "3", "7", "--steps", "4", "--out", str(grid)]) == 0
    assert main(["classviz", "--model", "digits", "--target", "3", "--steps", "4", "--history", "--out",
                 str(strip)]) == 0
    assert main(["filterviz", "--model", "digits", "--layer", "conv2", "--channel", "1", "2", "-n", "3",
                 "--steps", "3", "--out", str(filt)]) == 0
    assert Image.open(strip).width > Image.open(grid).width  # 4 snapshot columns against 2 images
    assert Image.open(filt).format == "PNG"
    assert main(["filterviz", "--model", "digits", "--layer", "conv9", "--out", str(filt)]) == 2


def test_report_section(tmp_path, digits_model, digits_batch, monkeypatch):
    from pellucid.drawing.report import ReportContext, learned_section

    monkeypatch.setattr(figures, "LEARNED_STEPS", 3)
    x, y = digits_batch
    section = learned_section(ReportContext(digits_model, x, y, tmp_path, progress=False))
    assert section.title == "What has it learned" and section.body.count("<img") == 2


def test_callback_sees_every_snapshot_while_the_loop_runs(digits_model):
    seen = []
    v = pl.class_visualization(digits_model, 3, steps=6, snapshots=(2, 4, 6), progress=False,
                               callback=lambda step, images: seen.append((step, images.clone())))
    assert [s for s, _ in seen] == [2, 4, 6]
    assert all(torch.equal(img, v.snapshots[s]) for s, img in seen)
    assert torch.equal(seen[-1][1], v.image)
