"""Bad input gets one clear error naming the value and what is accepted; what can be converted is
converted, and the caller's objects are left as they were (issue #15)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import pellucid as pl
from pellucid._checks import PellucidError


def test_float64_images_are_converted_and_the_caller_keeps_theirs(digits_model, digits_batch):
    x, y = digits_batch
    x64 = x[:3].double()
    before = x64.clone()
    got = pl.saliency(digits_model, x64, y[:3])
    torch.testing.assert_close(got, pl.saliency(digits_model, x[:3], y[:3]))
    assert x64.dtype == torch.float64 and torch.equal(x64, before)


def test_numpy_integer_targets_are_accepted(digits_model, digits_batch):
    x, y = digits_batch
    want = pl.gradient(digits_model, x[:3], y[:3])
    torch.testing.assert_close(pl.gradient(digits_model, x[:3], y[:3].numpy()), want)
    torch.testing.assert_close(pl.gradient(digits_model, x[:1], np.int64(int(y[0]))), want[:1])


def test_meta_tensor_is_refused(digits_model):
    with pytest.raises(PellucidError, match="meta device"):
        pl.saliency(digits_model, torch.empty(2, 1, 28, 28, device="meta"), 1)


def test_uint8_images_get_a_conversion_hint(digits_model):
    with pytest.raises(PellucidError, match=r"dtype torch.uint8; convert with x.float\(\) / 255"):
        pl.saliency(digits_model, torch.zeros(1, 1, 28, 28, dtype=torch.uint8), 1)


def test_grad_cam_on_a_layer_without_a_spatial_map(digits_model, digits_batch):
    from pellucid._state import hook_count

    x, y = digits_batch
    with pytest.raises(PellucidError, match=r"layer 'fc' gives output \(2, 10\), not a spatial map"):
        pl.grad_cam(digits_model, x[:2], y[:2], layer="fc")
    assert hook_count(digits_model) == 0


def test_one_dimensional_logits_get_a_clear_error():
    model = pl.wrap(nn.Sequential(nn.Flatten(), nn.Linear(4, 1), nn.Flatten(0)))
    with pytest.raises(PellucidError, match=r"output of shape \(2,\); a class target needs logits of shape"):
        pl.gradient(model, torch.rand(2, 1, 2, 2), 0)


@pytest.mark.parametrize("call", [
    lambda m, x, y: pl.integrated_gradients(m, x, y, baseline=float("nan"), steps=4),
    lambda m, x, y: pl.integrated_gradients(m, x, y, baseline=torch.full((1, 1, 28, 28), float("nan")), steps=4),
    lambda m, x, y: pl.occlusion(m, x, y, window=7, stride=7, fill=float("nan")),
    lambda m, x, y: pl.lime(m, x, y, samples=8, fill=float("inf")),
    lambda m, x, y: pl.deletion(m, x, y, pl.saliency(m, x, y), baseline=float("nan")),
])
def test_nan_baselines_and_fills_are_refused(call, digits_model, digits_batch):
    x, y = digits_batch
    with pytest.raises(PellucidError, match="NaN or infinite"):
        call(digits_model, x[:1], y[:1])


def test_explain_reads_a_comma_separated_string(digits_model, digits_batch):
    x, y = digits_batch
    maps = pl.explain(digits_model, x[:2], y[:2], methods="saliency, gradcam")
    assert list(maps) == ["saliency", "gradcam"]
    with pytest.raises(PellucidError, match="unknown attribution method 's'"):
        pl.explain(digits_model, x[:2], y[:2], methods=list("saliency"))


def test_load_model_leaves_the_global_rng_alone(digits_model):
    torch.manual_seed(123)
    want = torch.rand(3)
    torch.manual_seed(123)
    pl.load_model("digits")
    pl.load_model("digits", weights="random")
    assert torch.equal(torch.rand(3), want)


def test_digits_weights_random_is_an_untrained_seeded_net(digits_model, digits_batch):
    a, b = pl.load_model("digits", weights="random"), pl.load_model("digits", weights="random")
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert not torch.equal(a.net.fc.weight, digits_model.net.fc.weight)
    x, y = digits_batch
    assert float((a(x).argmax(1) == y).float().mean()) < 0.5  # untrained: not the 97% model


def test_digits_weights_of_the_wrong_shape(tmp_path):
    path = tmp_path / "w.pth"
    torch.save({"fc.weight": torch.zeros(3, 3)}, path)
    with pytest.raises(PellucidError, match=r"do not fit digits:.*size mismatch for fc.weight"):
        pl.load_model("digits", weights=str(path))


class _RunsCode:
    def __reduce__(self):
        return (print, ("this ran",))


def test_a_pickle_checkpoint_is_refused_without_suggesting_weights_only_false(tmp_path, capsys):
    path = tmp_path / "evil.pth"
    torch.save({"fc.weight": _RunsCode()}, path)
    for name in ("digits", "resnet18"):
        with pytest.raises(PellucidError, match="refusing to load .* could run code") as err:
            pl.load_model(name, weights=str(path))
        assert "weights_only=False" not in str(err.value) and "this ran" not in capsys.readouterr().out


def test_an_image_of_the_wrong_size_for_a_fixed_size_model(digits_model, resnet_small):
    with pytest.raises(PellucidError, match=r"x is 32x32 but the model takes exactly 28x28 images"):
        pl.saliency(digits_model, torch.rand(1, 1, 32, 32), 1)
    assert pl.saliency(resnet_small, torch.rand(1, 3, 48, 48), 1).shape == (1, 48, 48)  # adaptive pooling: any size


def test_sample_images_needs_a_positive_n():
    with pytest.raises(PellucidError, match="n must be a positive int.*got 0"):
        pl.sample_images("digits", n=0)
