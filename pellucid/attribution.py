"""Where does the model look: attribution maps, every one a few lines over the gradient primitive."""

from __future__ import annotations

import torch
from torch import nn

from ._checks import check_choice
from ._grad import input_gradient, prepare
from ._state import model_state

LOSSES = {"logit": "logit", "cross_entropy": "log_softmax"}


def gradient(model: nn.Module, x: torch.Tensor, target, *, score: str = "logit",
             batch_size: int | None = None) -> torch.Tensor:
    """d score / d x for every image, ``(N, C, H, W)``.

    ``score`` is ``"logit"`` (default, as in the papers), ``"log_softmax"`` (minus the
    cross-entropy loss) or ``"softmax"``. Example: ``g = pl.gradient(model, x, target=3)``.
    """
    x, t, bs = prepare(model, x, target, batch_size, score)
    with model_state(model):
        return input_gradient(model, x, t, bs)[0]


def input_x_gradient(model: nn.Module, x: torch.Tensor, target, *, score: str = "logit",
                     batch_size: int | None = None) -> torch.Tensor:
    """Gradient times input (Shrikumar et al. 2016), ``(N, C, H, W)``."""
    return x.detach() * gradient(model, x, target, score=score, batch_size=batch_size)


def normalize_per_image(maps: torch.Tensor) -> torch.Tensor:
    """Min-max scale each map of a batch to [0, 1] (a constant map becomes 0)."""
    flat = maps.flatten(1)
    lo, hi = flat.min(1).values, flat.max(1).values
    span = (hi - lo).clamp_min(torch.finfo(maps.dtype).tiny)
    shape = (-1,) + (1,) * (maps.dim() - 1)
    return (maps - lo.reshape(shape)) / span.reshape(shape)


def saliency(model: nn.Module, x: torch.Tensor, target, *, loss: str = "logit", normalize: bool = False,
             batch_size: int | None = None) -> torch.Tensor:
    """Vanilla-gradient saliency (Simonyan et al. 2014): max over channels of |d score / d x|.

    Shape: ``(N, H, W)``. ``loss="cross_entropy", normalize=True`` gives the NTU homework variant:
    the gradient of the cross-entropy loss, min-max normalized per image.
    """
    check_choice(loss, "loss", LOSSES)
    maps = gradient(model, x, target, score=LOSSES[loss], batch_size=batch_size).abs().amax(1)
    return normalize_per_image(maps) if normalize else maps
