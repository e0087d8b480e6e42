"""The foundation: models, data, the gradient core, saliency, and their invariants."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import check_side_effects
from torch import nn

import pellucid as pl
from pellucid._checks import PellucidError


def test_digits_heldout_accuracy(digits_model):
    from pellucid.models.base import accuracy
    from pellucid.models.data import digits

    x, y = digits("test")
    assert len(x) == 1000
    assert accuracy(digits_model, x, y) >= 0.97


def test_digits_split_is_fixed_and_disjoint():
    from pellucid.models.data import digits

    xtr, _ = digits("train")
    xte, _ = digits("test")
    assert len(xtr) == 4000 and len(xte) == 1000
    train_rows = {r.numpy().tobytes() for r in xtr.flatten(1)}
    assert not any(r.numpy().tobytes() in train_rows for r in xte.flatten(1))
    assert torch.equal(digits("test")[0], xte)


def test_digits_architecture(digits_model):
    kinds = [type(m).__name__ for m in digits_model.net]
    assert kinds == ["Conv2d", "BatchNorm2d", "ReLU", "Conv2d", "BatchNorm2d", "ReLU", "MaxPool2d",
                     "Conv2d", "BatchNorm2d", "ReLU", "MaxPool2d", "Flatten", "Linear"]
    assert [m.out_channels for m in digits_model.net if isinstance(m, nn.Conv2d)] == [16, 32, 64]
    assert digits_model.net.fc.out_features == 10


def test_corrupt_checkpoint_is_retrained(tmp_path, monkeypatch):
    import pellucid.models.digits as models

    monkeypatch.setenv("PELLUCID_CACHE", str(tmp_path))
    (tmp_path / "digits.pt").write_bytes(b"not a checkpoint")
    calls = []

    def fake_train(batchnorm=True, progress=True, **_):
        calls.append(batchnorm)
        return models.digits_model(models.digits_net(batchnorm)), 0.5

    monkeypatch.setattr(models, "train_digits", fake_train)
    model = models.load_digits()
    assert calls == [True] and model.accuracy == 0.5
    # the retrained weights were cached and load with weights_only=True next time
    ckpt = torch.load(tmp_path / "digits.pt", weights_only=True)
    assert set(ckpt) == {"state_dict", "meta"}
    assert models.load_digits().accuracy == 0.5 and calls == [True]


def test_sample_images_digits_are_heldout_and_balanced(digits_batch):
    x, y = digits_batch
    assert x.shape == (10, 1, 28, 28) and x.min() >= 0 and x.max() <= 1
    assert sorted(y.tolist()) == list(range(10))


def test_sample_photos_offline():
    x, y = pl.sample_images("photos", size=96)
    assert x.shape == (len(pl.PHOTOS), 3, 96, 96) and len(pl.PHOTOS) >= 8 and (y == -1).all()
    assert 0 <= float(x.min()) and float(x.max()) <= 1 and x.std() > 0.1


# ------------------------------------------------------------------------------ closed forms + oracles

class Linear(nn.Module):
    def __init__(self, c=3, h=5, w=4, k=4):
        super().__init__()
        self.fc = nn.Linear(c * h * w, k)
        self.shape = (c, h, w)

    def forward(self, x):
        return self.fc(x.flatten(1))


def test_gradient_of_linear_model_is_its_weights():
    torch.manual_seed(0)
    net = Linear()
    x = torch.rand(6, 3, 5, 4)
    target = [0, 1, 2, 3, 0, 1]
    g = pl.gradient(net, x, target)
    w = net.fc.weight.detach().reshape(4, 3, 5, 4)
    assert torch.allclose(g, w[target], atol=1e-6)
    sal = pl.saliency(net, x, target)
    assert torch.allclose(sal, w[target].abs().amax(1), atol=1e-6)
    assert torch.allclose(pl.input_x_gradient(net, x, target), x * w[target], atol=1e-6)


def test_saliency_matches_captum_on_digits(digits_model, digits_batch):
    from captum.attr import Saliency

    x, y = digits_batch
    ours = pl.saliency(digits_model, x, y)
    theirs = Saliency(digits_model).attribute(x.clone().requires_grad_(), target=y, abs=True).amax(1)
    assert torch.allclose(ours, theirs, atol=1e-5)


def test_saliency_matches_captum_on_resnet18(resnet_small, photos_small):
    from captum.attr import Saliency

    x, _ = photos_small
    target = [1, 281, 500, 999]
    ours = pl.saliency(resnet_small, x, target)
    theirs = Saliency(resnet_small).attribute(x.clone().requires_grad_(), target=target, abs=True).amax(1)
    assert torch.allclose(ours, theirs, atol=1e-5)


def test_cross_entropy_saliency_is_normalized_loss_gradient(digits_model, digits_batch):
    x, y = digits_batch
    xr = x.clone().requires_grad_()
    F.cross_entropy(digits_model(xr), y, reduction="sum").backward()
    ref = xr.grad.abs().amax(1)
    ref = (ref - ref.flatten(1).min(1).values[:, None, None]) / (
        ref.flatten(1).max(1).values - ref.flatten(1).min(1).values)[:, None, None]
    ours = pl.saliency(digits_model, x, y, loss="cross_entropy", normalize=True)
    assert torch.allclose(ours, ref, atol=1e-5)
    assert ours.flatten(1).max(1).values.allclose(torch.ones(len(x)))
    digits_model.zero_grad(set_to_none=True)


def test_saliency_follows_the_strokes(digits_model):
    """Most saliency mass lies on (a 1-pixel dilation of) the digit's strokes."""
    x, y = pl.sample_images("digits", n=100)
    s = pl.saliency(digits_model, x, y)
    stroke = F.max_pool2d((x > 0.3).float(), 3, 1, 1)[:, 0]
    ratio = ((s * stroke).sum((1, 2)) / s.sum((1, 2))) / stroke.mean((1, 2))
    assert float(ratio.median()) >= 1.8


def test_callable_and_per_sample_targets(digits_model, digits_batch):
    x, y = digits_batch
    a = pl.gradient(digits_model, x, y)
    b = pl.gradient(digits_model, x, lambda logits: logits.gather(1, y[:, None]).squeeze(1))
    assert torch.allclose(a, b, atol=1e-6)
    c = pl.gradient(digits_model, x, 3)
    d = pl.gradient(digits_model, x, [3] * len(x))
    assert torch.equal(c, d)


def test_batch_size_does_not_change_results(digits_model, digits_batch):
    x, y = digits_batch
    assert torch.allclose(pl.gradient(digits_model, x, y, batch_size=1),
                          pl.gradient(digits_model, x, y, batch_size=64), atol=1e-5)


# ------------------------------------------------------------------------------ invariants

METHODS = {
    "gradient": lambda m, x, t: pl.gradient(m, x, t),
    "input_x_gradient": lambda m, x, t: pl.input_x_gradient(m, x, t),
    "saliency": lambda m, x, t: pl.saliency(m, x, t),
    "saliency_ce": lambda m, x, t: pl.saliency(m, x, t, loss="cross_entropy", normalize=True),
}


@pytest.mark.parametrize("name", list(METHODS))
def test_no_side_effects(name, digits_model, digits_batch):
    x, y = digits_batch
    check_side_effects(lambda m, xx: METHODS[name](m, xx, y[:4]), digits_model, x[:4])


# ------------------------------------------------------------------------------ bad input

@pytest.mark.parametrize("bad, message", [
    (torch.rand(1, 28, 28), "4 dims"),
    (torch.rand(2, 3, 28, 28), "3 channels but the model expects 1"),
    (torch.rand(2, 1, 28, 28) * 2, "pixel space"),
    (torch.full((2, 1, 28, 28), float("nan")), "NaN"),
    (torch.zeros(2, 1, 28, 28, dtype=torch.long), "float"),
    ("an image", "torch.Tensor"),
])
def test_bad_images_are_named(digits_model, bad, message):
    with pytest.raises(PellucidError, match=message):
        pl.saliency(digits_model, bad, 0)


@pytest.mark.parametrize("target, message", [
    (10, "out of range"),
    (-1, "out of range"),
    ([1, 2, 3], "got 3 targets for 2 images"),
    (1.5, "must be an int"),
    ([0.5, 1.5], "must be an int"),
])
def test_bad_targets_are_named(digits_model, target, message):
    with pytest.raises(PellucidError, match=message):
        pl.saliency(digits_model, torch.rand(2, 1, 28, 28), target)


def test_unknown_model_name():
    with pytest.raises(PellucidError, match="unknown model 'resnet19'.*resnet18"):
        pl.load_model("resnet19")


def test_torchvision_without_weights_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(PellucidError, match="no weights for vgg16 offline.*weights='random'"):
        pl.load_model("vgg16")


def test_torchvision_weights_file_roundtrip(tmp_path):
    model = pl.load_model("squeezenet1_1", weights="random")
    path = tmp_path / "sq.pth"
    torch.save(model.net.state_dict(), path)
    again = pl.load_model("squeezenet1_1", weights=str(path))
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), again.parameters()))
    assert again.labels[281] == "tabby" and again.input_size == (3, 224, 224)


def test_torchvision_fine_tuned_head_and_meta_load(tmp_path):
    import torchvision

    net = torchvision.models.squeezenet1_1(num_classes=5)
    torch.save(net.state_dict(), tmp_path / "plain.pth")
    plain = pl.load_model("squeezenet1_1", weights=str(tmp_path / "plain.pth"))
    assert plain.num_classes == 5 and plain.labels == ["0", "1", "2", "3", "4"]
    assert all(torch.equal(a, b) for a, b in zip(net.parameters(), plain.net.parameters()))
    meta = {"labels": ["a", "b", "c", "d", "e"], "input_size": [3, 64, 64], "mean": [0.5], "std": [0.25]}
    torch.save({"state_dict": net.state_dict(), "meta": meta}, tmp_path / "meta.pth")
    model = pl.load_model("squeezenet1_1", weights=str(tmp_path / "meta.pth"))
    assert model.label(2) == "c" and model.input_size == (3, 64, 64)
    assert float(model.std) == 0.25 and pl.gradient(model, torch.rand(1, 3, 64, 64), 4).shape == (1, 3, 64, 64)
    state = net.state_dict()
    state["features.0.weight"] = state["features.0.weight"][:10]  # not the head: still a clear error
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(PellucidError, match="do not fit squeezenet1_1.*features.0.weight"):
        pl.load_model("squeezenet1_1", weights=str(tmp_path / "bad.pth"))


def test_missing_and_corrupt_image_files(tmp_path, digits_model):
    with pytest.raises(PellucidError, match="does not exist"):
        pl.load_image(tmp_path / "nope.png", digits_model)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(PellucidError, match="cannot read image .*bad.png"):
        pl.load_image(bad, digits_model)


def test_load_image_converts_and_resizes(tmp_path, digits_model, resnet_small):
    from PIL import Image

    rgb = (np.random.default_rng(0).random((40, 60, 3)) * 255).astype(np.uint8)
    Image.fromarray(rgb).save(tmp_path / "a.png")
    Image.fromarray(rgb).save(tmp_path / "a.jpg", quality=95)
    x = pl.load_image(tmp_path / "a.png", digits_model)
    assert x.shape == (1, 1, 28, 28) and 0 <= x.min() and x.max() <= 1
    x = pl.load_image(tmp_path / "a.jpg", resnet_small)
    assert x.shape == (1, 3, 64, 64)
    Image.fromarray(rgb[..., 0]).save(tmp_path / "g.png")
    assert pl.load_image(tmp_path / "g.png", resnet_small).shape == (1, 3, 64, 64)


def test_wrap_puts_normalization_inside():
    net = nn.Sequential(nn.Flatten(), nn.Linear(12, 2))
    model = pl.wrap(net, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), labels=["a", "b"], input_size=(3, 2, 2))
    x = torch.rand(3, 3, 2, 2)
    assert torch.allclose(model(x), net((x - 0.5) / 0.25))
    assert model.num_classes == 2 and model.label(1) == "b"
    with pytest.raises(PellucidError, match="std has 2 values but the input has 3 channels"):
        pl.wrap(net, std=(1, 1), input_size=(3, 2, 2))


def test_find_layer_names_and_close_matches(digits_model, resnet_small):
    from pellucid.models.layers import find_layer, last_conv_layer

    assert find_layer(digits_model, "conv3") is digits_model.net.conv3
    assert last_conv_layer(digits_model) == "conv3"
    assert last_conv_layer(resnet_small) == "layer4.1.conv2"
    assert find_layer(resnet_small, "layer4") is resnet_small.net.layer4
    with pytest.raises(PellucidError, match="unknown layer 'layer5'.*close matches: layer"):
        find_layer(resnet_small, "layer5")
