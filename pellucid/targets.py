"""Targets: an int, one int per sample, or a callable ``logits -> (N,)`` scores.

Every method turns its ``target`` argument into a :class:`Target` once, with the batch size and the
number of classes, so a bad target fails before any work is done.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ._checks import PellucidError, check_choice

SCORES = ("logit", "log_softmax", "softmax")


class Target:
    """What to explain: per-row classes (or a callable) and how logits become one score per row.

    ``score="logit"`` is the raw logit (the papers' choice), ``"log_softmax"`` is minus the
    cross-entropy loss, ``"softmax"`` the probability.
    """

    def __init__(self, classes: torch.Tensor | None, fn: Callable | None, score: str = "logit"):
        self.classes = classes
        self.fn = fn
        self.score = check_choice(score, "score", SCORES)
        self._max: int | None = None  # the largest class, read once (not a tensor reduction per call)
        self._index: dict = {}  # (start, stop, device) -> (M, 1) gather index of a chunk, built once

    def __call__(self, logits: torch.Tensor, rows: slice | torch.Tensor | None = None) -> torch.Tensor:
        """Scores ``(M,)`` of a chunk of logits ``(M, K)``; ``rows`` picks the chunk's targets."""
        if self.fn is not None:
            out = self.fn(logits)
            if not isinstance(out, torch.Tensor) or out.shape != (logits.shape[0],):
                got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
                raise PellucidError(
                    f"a callable target must return one score per sample, shape ({logits.shape[0]},), got {got}"
                )
            return out
        if logits.dim() != 2:
            raise PellucidError(f"the model returned output of shape {tuple(logits.shape)}; a class target needs "
                                "logits of shape (N, classes): return 2-D logits from the model, or pass a "
                                "callable target that turns the output into one score per sample")
        if self._max is None:
            self._max = int(self.classes.max()) if self.classes.numel() else -1
        if self._max >= logits.shape[1]:
            raise PellucidError(
                f"target {self._max} is out of range: the model has classes 0..{logits.shape[1] - 1}"
            )
        if self.score == "log_softmax":
            logits = F.log_softmax(logits, dim=1)
        elif self.score == "softmax":
            logits = F.softmax(logits, dim=1)
        return logits.gather(1, self._gather_index(rows, logits.device)).view(-1)

    def _gather_index(self, rows, device) -> torch.Tensor:
        """The ``(M, 1)`` classes of ``rows`` on ``device``; kept for whole-batch and slice chunks."""
        key = (None, None, device) if rows is None else (rows.start, rows.stop, device) \
            if isinstance(rows, slice) else None
        index = self._index.get(key) if key is not None else None
        if index is None:
            index = (self.classes if rows is None else self.classes[rows]).to(device)[:, None]
            if key is not None:
                self._index[key] = index
        return index

    def repeat(self, times: int) -> Target:
        """The target of a batch made of ``times`` stacked copies of the original batch."""
        if self.classes is None:
            return self
        return Target(self.classes.repeat(times), None, self.score)

    def repeat_interleave(self, times: int) -> Target:
        """The target of a batch where each sample is repeated ``times`` times in a row."""
        if self.classes is None:
            return self
        return Target(self.classes.repeat_interleave(times), None, self.score)

    def select(self, rows) -> Target:
        if self.classes is None:
            return self
        return Target(self.classes[rows], None, self.score)


def as_target(target, n: int, num_classes: int | None, score: str = "logit", name: str = "target") -> Target:
    """Turn an int, a sequence/1-D tensor of ints, or a callable into a :class:`Target` for ``n`` samples."""
    if isinstance(target, Target):
        return target
    if callable(target) and not isinstance(target, torch.Tensor):
        return Target(None, target, score)
    if isinstance(target, bool):
        raise PellucidError(f"{name} must be an int class index, got bool {target!r}")
    if isinstance(target, numbers.Integral):  # int and numpy integers
        classes = torch.full((n,), int(target), dtype=torch.long)
    elif isinstance(target, torch.Tensor | Sequence | np.ndarray) and not isinstance(target, str):
        try:
            classes = torch.as_tensor(target)
        except (TypeError, ValueError) as e:
            raise PellucidError(f"{name} must be ints, got {target!r}") from e
        if classes.dim() == 0:
            classes = classes.reshape(1).expand(n)
        if classes.dim() != 1 or (classes.numel() and classes.is_floating_point()) or classes.dtype == torch.bool:
            raise PellucidError(
                f"{name} must be an int or a 1-D sequence of ints, got {classes.dtype} of shape {tuple(classes.shape)}"
            )
        if classes.numel() != n:
            raise PellucidError(f"got {classes.numel()} {name}s for {n} images; pass one int, or one per image")
        classes = classes.long().cpu()
    else:
        raise PellucidError(
            f"{name} must be an int, a sequence of ints, or a callable logits -> (N,) scores; "
            f"got {type(target).__name__}"
        )
    if num_classes is not None:
        bad = classes[(classes < 0) | (classes >= num_classes)]
        if bad.numel():
            raise PellucidError(f"{name} {int(bad[0])} is out of range: the model has classes 0..{num_classes - 1}")
    elif (classes < 0).any():
        raise PellucidError(f"{name} {int(classes[classes < 0][0])} is negative; class indices start at 0")
    return Target(classes, None, score)
