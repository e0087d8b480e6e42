"""The losses the attacks of AutoAttack climb (Croce & Hein 2020), as duck-typed targets of the one
gradient primitive: ``loss(logits, rows) -> (M,)`` per row (``_loop._gradient_and_logits`` keeps the
logits, so one pass gives the gradient, the loss and the prediction)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .._checks import PellucidError

LOSSES = ("ce", "dlr")


def margin(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``z_y - max_{j != y} z_j`` per row: positive while ``y`` is predicted."""
    z_y = logits.gather(1, y[:, None]).squeeze(1)
    other = logits.scatter(1, y[:, None], float("-inf")).amax(1)
    return z_y - other


def dlr(logits: torch.Tensor, y: torch.Tensor, t: torch.Tensor | None = None) -> torch.Tensor:
    """Difference of logits ratio, to maximize: ``-(z_y - max_{j != y} z_j) / (z_pi1 - z_pi3)``, or
    targeted ``-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2)`` (``pi``: the logits sorted, descending)."""
    top = logits.topk(3 if t is None else 4, dim=1).values
    if t is None:
        return -margin(logits, y) / (top[:, 0] - top[:, 2] + 1e-12)
    z_y, z_t = logits.gather(1, y[:, None]).squeeze(1), logits.gather(1, t[:, None]).squeeze(1)
    return -(z_y - z_t) / (top[:, 0] - 0.5 * (top[:, 2] + top[:, 3]) + 1e-12)


def check_loss(kind: str, classes: int | None, targeted: bool) -> None:
    if kind not in LOSSES:
        raise PellucidError(f"unknown loss {kind!r}; choose one of: {', '.join(LOSSES)}")
    need = 4 if targeted else 3
    if kind == "dlr" and classes is not None and classes < need:
        raise PellucidError(f"the {'targeted ' if targeted else ''}DLR loss needs a model with at least {need} "
                            f"classes, this one has {classes}; use loss='ce'")


class Loss:
    """Per-row loss to maximize: ``"ce"`` away from ``y`` (or towards ``t``), ``"dlr"`` (targeted with
    ``t``). ``y`` and ``t`` are the classes of the batch handed to the primitive, on its device."""

    def __init__(self, kind: str, y: torch.Tensor, t: torch.Tensor | None = None):
        self.kind, self.y, self.t = kind, y, t

    def __call__(self, logits: torch.Tensor, rows: slice | None = None) -> torch.Tensor:
        rows = slice(None) if rows is None else rows
        y = self.y[rows]
        t = None if self.t is None else self.t[rows]
        if self.kind == "dlr":
            return dlr(logits, y, t)
        if t is None:
            return F.cross_entropy(logits, y, reduction="none")
        return -F.cross_entropy(logits, t, reduction="none")
