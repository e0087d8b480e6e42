"""Pixel-flipping curves: deletion and insertion (Petsiuk et al. 2018, RISE) remove (or insert) pixels in the
order of an attribution map and watch the class probability; a faithful map makes it fall fast (or rise
fast). :mod:`.gain` and :mod:`.imputation` run the same curves with other fills and orders."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .._args import prepare
from .._blur import gaussian_blur
from .._checks import PellucidError, check_number, checked_keywords, fill_like
from .._grad import iter_logits
from .._state import model_state
from ..targets import Target
from ._maps import MapMethod, map_of


@dataclass
class Curve:
    """A deletion or insertion result: ``fractions`` ``(steps,)``, ``scores`` ``(N, steps)``, ``auc`` ``(N,)``;
    ``kind`` names the curve (``"deletion"``, ``"insertion"``, ``"ROAD"``, ...)."""

    fractions: torch.Tensor
    scores: torch.Tensor
    auc: torch.Tensor
    kind: str = ""

    def _repr_png_(self) -> bytes:
        from ..drawing import display

        return display.curve(self)


def _ranks(maps: torch.Tensor) -> torch.Tensor:
    """Position of every pixel in the descending attribution order, ``(N, H*W)`` (ties: first pixel first)."""
    flat = maps.flatten(1)
    order = flat.argsort(dim=1, descending=True, stable=True)
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(flat.shape[1], device=flat.device).expand_as(order))
    return ranks


def _check_steps(steps) -> int:
    return check_number(steps, "steps", 2, integer=True, hint=" (the curve's points from 0% to 100%)")


def blurred(x: torch.Tensor, sigma: float = 5.0, kernel_size: int = 11) -> torch.Tensor:
    """RISE's insertion start: Gaussian blur with kernel 11 and sigma 5, reflect-padded, the kernel capped to
    the image (equals ``torchvision.transforms.functional.gaussian_blur``)."""
    k = min(kernel_size, 2 * ((min(x.shape[-2:]) - 1) // 2) + 1)
    return gaussian_blur(x, sigma, k // 2, mode="reflect")


def _curve(model: nn.Module, x: torch.Tensor, target: Target, maps: torch.Tensor, start: torch.Tensor,
           changed: torch.Tensor, steps: int, batch_size: int, kind: str = "") -> Curve:
    """Scores of ``start`` with the top ``k/(steps-1)`` fraction of pixels taken from ``changed`` (images, or a
    function ``(images, removed (M, 1, H, W) bool) -> filled images``)."""
    n, _, h, w = x.shape
    ranks = _ranks(maps)
    fractions = torch.linspace(0, 1, steps, device=x.device)
    counts = (fractions * h * w).round().long()

    def rows(sl: slice) -> torch.Tensor:
        idx = torch.arange(sl.start, sl.stop, device=x.device)
        i, k = idx // steps, idx % steps
        mask = (ranks[i] < counts[k, None]).reshape(-1, 1, h, w)
        if callable(changed):
            return changed(start[i], mask)
        return torch.where(mask, changed[i], start[i])

    tr = target.repeat_interleave(steps)
    scores = torch.empty(n * steps, device=x.device)
    with model_state(model):
        for sl, logits in iter_logits(model, rows, n * steps, batch_size):
            scores[sl] = tr(logits, sl).float()
    scores = scores.reshape(n, steps)
    return Curve(fractions, scores, torch.trapezoid(scores, fractions, dim=1), kind)

@checked_keywords
def deletion(model: nn.Module, x: torch.Tensor, target, attribution: torch.Tensor | str | MapMethod, *,
             steps: int = 50, baseline: float | torch.Tensor = 0.0, score: str = "softmax",
             batch_size: int | None = None) -> Curve:
    """Deletion curve (Petsiuk et al. 2018): pixels set to ``baseline``, most important first.

    ``attribution`` is an ``(N, H, W)`` or ``(N, C, H, W)`` map (channels are summed), or a method
    name / callable computed here. The curve has ``steps`` points at fractions ``0, 1/(steps-1), ..., 1``
    of the pixels removed; ``score`` is the class probability by default. Lower AUC = more faithful.
    Shape: ``scores (N, steps)``, ``auc (N,)``. Example: ``pl.deletion(model, x, 3, pl.saliency(model, x, 3)).auc``.
    """
    steps = _check_steps(steps)
    x, t, bs = prepare(model, x, target, batch_size, score)
    maps = map_of(model, x, target, attribution)
    return _curve(model, x, t, maps, x, fill_like(baseline, x, "baseline"), steps, bs, "deletion")


@checked_keywords
def insertion(model: nn.Module, x: torch.Tensor, target, attribution: torch.Tensor | str | MapMethod, *,
              steps: int = 50, baseline: float | torch.Tensor | str = "blur", score: str = "softmax",
              batch_size: int | None = None) -> Curve:
    """Insertion curve (Petsiuk et al. 2018): pixels copied onto a blurred image, most important first.

    ``baseline="blur"`` is RISE's start (Gaussian blur, kernel 11, sigma 5); a float or tensor works too.
    Higher AUC = more faithful. Shapes and arguments as :func:`deletion`.
    """
    steps = _check_steps(steps)
    x, t, bs = prepare(model, x, target, batch_size, score)
    maps = map_of(model, x, target, attribution)
    if isinstance(baseline, str):
        if baseline != "blur":
            raise PellucidError(f"insertion baseline must be 'blur', a float or a tensor, got {baseline!r}")
        start = blurred(x)
    else:
        start = fill_like(baseline, x, "baseline")
    return _curve(model, x, t, maps, start, x, steps, bs, "insertion")
