"""The Symmetric Relevance Gain (Blücher et al. 2024): remove pixels both ways, most and least relevant first,
with a fill that stays near the data, and take the area between the two curves. Unlike a deletion curve it
does not reward a random map (both of its orders are random: a gain of about 0)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .._args import prepare
from .._checks import PellucidError, checked_keywords, fill_like
from ._maps import MapMethod, map_of
from .curves import Curve, _check_steps, _curve, blurred
from .imputation import impute


@dataclass
class RelevanceGain:
    """Symmetric Relevance Gain per image: ``gain (N,)`` (higher is better), and the two removal curves,
    ``most`` (most relevant first) and ``least`` (least relevant first)."""

    gain: torch.Tensor
    most: Curve
    least: Curve

    def _repr_png_(self) -> bytes:
        from ..drawing import display

        return display.relevance_gain(self)


FILLS = ("blur", "road")


def _imputed(images: torch.Tensor, removed: torch.Tensor) -> torch.Tensor:
    return impute(images, removed[:, 0])


@checked_keywords
def srg(model: nn.Module, x: torch.Tensor, target, attribution: torch.Tensor | str | MapMethod, *,
        fill: str | float | torch.Tensor = "blur", steps: int = 20, score: str = "softmax",
        batch_size: int | None = None) -> RelevanceGain:
    """Symmetric Relevance Gain (Blücher et al. 2024): the area between the least-relevant-first and the
    most-relevant-first removal curves, ``gain = AUC(least) - AUC(most)`` per image; higher is better.

    Removing pixels in both orders with the same ``fill`` (``"blur"``: RISE's blurred image; ``"road"``:
    linear imputation from the kept neighbours, as ROAD; or a number / tensor) cancels what the fill alone
    does to the model, which a deletion curve rewards: blacking out scattered pixels pushes an image off the
    data fastest, so on a real model deletion ranks a random map most faithful, while its gain is about 0
    (both orders are random). Example: ``pl.srg(model, x, 3, "saliency").gain``.
    """
    steps = _check_steps(steps)
    x, t, bs = prepare(model, x, target, batch_size, score)
    maps = map_of(model, x, target, attribution)
    if isinstance(fill, str):
        if fill not in FILLS:
            raise PellucidError(f"fill must be one of {', '.join(FILLS)}, a number or a tensor, got {fill!r}")
        changed = blurred(x) if fill == "blur" else _imputed
    else:
        changed = fill_like(fill, x, "fill")
    most = _curve(model, x, t, maps, x, changed, steps, bs, "most relevant first")
    least = _curve(model, x, t, -maps, x, changed, steps, bs, "least relevant first")
    return RelevanceGain(least.auc - most.auc, most, least)
