"""The pixel-space convention: ``PixelModel`` and ``wrap`` put normalization inside the model, so every
method takes images in [0, 1]; and the small helpers every model loader shares."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .._checks import PellucidError


class PixelModel(nn.Module):
    """A classifier that takes images in [0, 1]: normalization happens inside ``forward``.

    ``net`` is the wrapped module (layer names are relative to it), ``labels`` the class names,
    ``input_size`` the expected ``(C, H, W)``.
    """

    def __init__(self, net: nn.Module, mean=None, std=None, labels=None, input_size=None, name=None):
        super().__init__()
        self.net = net
        channels = input_size[0] if input_size is not None else (len(mean) if mean is not None else None)
        shape = (1, -1, 1, 1)
        for what, v in (("mean", mean), ("std", std)):
            self.register_buffer(what, None if v is None else torch.as_tensor(v, dtype=torch.float32).reshape(shape))
        for what, v in (("mean", mean), ("std", std)):
            if v is not None and channels is not None and len(v) not in (1, channels):
                raise PellucidError(f"{what} has {len(v)} values but the input has {channels} channels")
        for what, v in (("mean", self.mean), ("std", self.std)):
            if v is not None and not torch.isfinite(v).all():
                raise PellucidError(f"{what} must be finite numbers, got {tuple(v.flatten().tolist())}")
        if std is not None and (self.std <= 0).any():
            raise PellucidError(f"std must be positive (a scale per channel), got {tuple(self.std.flatten().tolist())}")
        self.labels = list(labels) if labels is not None else None
        self.input_size = tuple(input_size) if input_size is not None else None
        self.name = name or type(net).__name__
        # a declared size is a requirement when nothing adapts the spatial size before a dense layer
        self.strict_size = self.input_size is not None and _needs_exact_size(net)

    @property
    def num_classes(self) -> int | None:
        return len(self.labels) if self.labels is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mean is not None:
            x = x - self.mean
        if self.std is not None:
            x = x / self.std
        return self.net(x)

    def label(self, k: int) -> str:
        return self.labels[k] if self.labels is not None else str(k)


def _needs_exact_size(net: nn.Module) -> bool:
    """Whether ``net`` only runs at one image size: it flattens into a dense layer with no adaptive pooling."""
    kinds = tuple(type(m) for m in net.modules())
    adaptive = any(issubclass(k, nn.modules.pooling._AdaptiveAvgPoolNd | nn.modules.pooling._AdaptiveMaxPoolNd)
                   for k in kinds)
    return not adaptive and nn.Flatten in kinds and nn.Linear in kinds


def wrap(module: nn.Module, mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
         labels: Sequence[str] | None = None, input_size: Sequence[int] | None = None,
         name: str | None = None) -> PixelModel:
    """Turn any classifier into a pixel-space model: ``forward`` takes images in [0, 1].

    An already wrapped model is returned as it is when nothing else is asked; given ``labels``,
    ``input_size`` or ``name``, a new wrapper around the same network carries them (the caller's model
    is not changed); a second ``mean``/``std`` is refused (normalizing twice is never what is meant).

    Example::

        model = pl.wrap(net, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),
                        labels=names, input_size=(3, 224, 224))
    """
    if not isinstance(module, nn.Module):
        raise PellucidError(f"wrap expects a torch.nn.Module, got {type(module).__name__}")
    if isinstance(module, PixelModel):
        if mean is not None or std is not None:
            raise PellucidError("this model is already a pellucid PixelModel with its own normalization: wrap "
                                "its .net to give another mean/std")
        if labels is None and input_size is None and name is None:
            return module
        rewrapped = PixelModel(module.net, None, None, module.labels if labels is None else labels,
                               module.input_size if input_size is None else input_size, name or module.name)
        rewrapped.mean, rewrapped.std = module.mean, module.std
        for attr in ("samples", "weights", "accuracy", "cpu_batch_size"):
            if hasattr(module, attr):
                setattr(rewrapped, attr, getattr(module, attr))
        return rewrapped.train(module.training)
    return PixelModel(module, mean, std, labels, input_size, name)


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 250) -> float:
    """The fraction of ``x`` that ``model`` classifies as ``y`` (its state untouched)."""
    from .._grad import predictions

    pred = predictions(model, x, batch_size).argmax(1)
    return float((pred == y.to(pred.device)).float().mean())


def seeded(build, seed: int = 0):
    """``build()`` with a seeded default initialization that leaves the global RNG as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def channels_last(model: nn.Module) -> nn.Module:
    """Store the convolution weights channels-last, so the network runs channels-last.

    On CPU, PyTorch's max-pool over a contiguous (NCHW) tensor is 15x slower than over a channels-last
    one; for the digits CNN this makes a forward pass 1.9x and an input-gradient pass 1.4x faster, and
    EfficientNet-Lite0's forward and backward ~1.3x. A one-channel input has the same memory either way.
    """
    return model.to(memory_format=torch.channels_last)
