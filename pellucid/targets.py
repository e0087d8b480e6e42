"""Targets: an int, one int per sample, a callable ``output -> (N,)`` scores, or ``None`` (the output itself).

``None`` explains a single-output model (a regression); ``score="sigmoid"`` a multi-label one;
:func:`segmentation_target` and :func:`similarity_target` segmentation and embedding models. A callable
receives the model's output as it is (a tensor, a dict, a tuple) and says what to read.

Every method turns its ``target`` argument into a :class:`Target` once, with the batch size and the
number of classes, so a bad target fails before any work is done.
"""

from __future__ import annotations

import numbers
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ._checks import INT64_MAX, PellucidError, check_choice

SCORES = ("logit", "log_softmax", "softmax", "sigmoid")


class Target:
    """What to explain: per-row classes (or a callable) and how logits become one score per row.

    ``score="logit"`` is the raw logit (the papers' choice), ``"log_softmax"`` is minus the
    cross-entropy loss, ``"softmax"`` the probability, ``"sigmoid"`` a multi-label probability. With
    neither classes nor a callable, the target is the output itself (a single-output model); of the
    scores only ``"sigmoid"`` applies to it (softmax over one output is 1), as none applies to a callable.
    """

    def __init__(self, classes: torch.Tensor | None, fn: Callable | None, score: str = "logit"):
        self.classes = classes
        self.fn = fn
        self.score = check_choice(score, "score", SCORES)
        self._max: int | None = None  # the largest class, read once (not a tensor reduction per call)
        self._index: dict = {}  # (start, stop, device) -> (M, 1) gather index of a chunk, built once

    def __call__(self, logits, rows: slice | torch.Tensor | None = None) -> torch.Tensor:
        """Scores ``(M,)`` of a chunk of outputs (logits ``(M, K)``); ``rows`` picks the chunk's targets."""
        if self.fn is not None:
            out = self.fn.scores(logits, rows) if isinstance(self.fn, RowTarget) else self.fn(logits)
            n = batch_len(logits)
            if not isinstance(out, torch.Tensor) or out.shape != (n,):
                got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
                raise PellucidError(
                    f"a callable target must return one score per sample, shape ({n},), got {got}"
                )
            return out
        if not isinstance(logits, torch.Tensor):
            raise PellucidError(f"the model returned a {_describe(logits)}; a class target needs a tensor of logits: "
                                "pass a callable target that reads the output, e.g. lambda out: out['logits'][:, 3]")
        if self.classes is None:
            return self._output(logits)
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
        elif self.score == "sigmoid":
            logits = torch.sigmoid(logits)
        return logits.gather(1, self._gather_index(rows, logits.device)).view(-1)

    def _output(self, out: torch.Tensor) -> torch.Tensor:
        """``target=None``: the output of a single-output model, ``(N,)`` or ``(N, 1)``."""
        if out.dim() == 2 and out.shape[1] == 1:
            out = out[:, 0]
        if out.dim() != 1:
            raise PellucidError(f"target=None explains a single-output model (the output itself is the score), but "
                                f"this model returns {tuple(out.shape)}; pass a class index, one per image, or a "
                                "callable output -> (N,) scores")
        return torch.sigmoid(out) if self.score == "sigmoid" else out

    def bind(self, model, x: torch.Tensor) -> Target:
        """The target with what it reads from the model's output on ``x`` fixed (a predicted mask)."""
        if isinstance(self.fn, RowTarget):
            bound = self.fn.bind(model, x)
            if bound is not self.fn:
                return Target(None, bound, self.score)
        return self

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
        if isinstance(self.fn, RowTarget):
            return Target(None, self.fn.take(self.fn.index().repeat(times)), self.score)
        if self.classes is None:
            return self
        return Target(self.classes.repeat(times), None, self.score)

    def repeat_interleave(self, times: int) -> Target:
        """The target of a batch where each sample is repeated ``times`` times in a row."""
        if isinstance(self.fn, RowTarget):
            return Target(None, self.fn.take(self.fn.index().repeat_interleave(times)), self.score)
        if self.classes is None:
            return self
        return Target(self.classes.repeat_interleave(times), None, self.score)

    def select(self, rows) -> Target:
        if isinstance(self.fn, RowTarget):
            return Target(None, self.fn.take(self.fn.index()[torch.as_tensor(rows, dtype=torch.long)]), self.score)
        if self.classes is None:
            return self
        return Target(self.classes[rows], None, self.score)


def as_target(target, n: int, num_classes: int | None, score: str = "logit", name: str = "target") -> Target:
    """Turn an int, a sequence/1-D tensor of ints, a callable or ``None`` into a :class:`Target` for ``n`` samples."""
    if isinstance(target, Target):
        return target
    if target is None:
        if num_classes is not None and num_classes > 1:
            raise PellucidError(f"{name}=None explains a single-output model (the output itself is the score), but "
                                f"this model has {num_classes} classes; pass a class index 0..{num_classes - 1}, "
                                "one per image, or a callable output -> (N,) scores")
        return Target(None, None, check_choice(score, "score", SCORES))
    if isinstance(target, RowTarget):
        return Target(None, target.check_rows(n, name), score)
    if callable(target) and not isinstance(target, torch.Tensor):
        return Target(None, target, score)
    if isinstance(target, numbers.Integral | torch.Tensor | Sequence | np.ndarray) and not isinstance(target, str):
        return Target(as_indices(target, n, name, num_classes), None, score)
    raise PellucidError(
        f"{name} must be an int, a sequence of ints, a callable output -> (N,) scores, or None (a "
        "single-output model); "
        f"got {type(target).__name__}"
    )


def _out_of_range(name: str, value: int, limit: int | None, kind: str) -> PellucidError:
    if limit is not None:
        kinds = "classes" if kind == "class" else f"{kind}s"
        return PellucidError(f"{name} {value} is out of range: the model has {kinds} 0..{limit - 1}")
    if value < 0:
        return PellucidError(f"{name} {value} is negative: pass a {kind} index >= 0 (one that fits int64)")
    return PellucidError(f"{name} {value} is out of range: pass a {kind} index that fits int64 (0..{INT64_MAX})")


def as_indices(value, n: int, name: str = "target", limit: int | None = None, kind: str = "class") -> torch.Tensor:
    """Class (or channel) indices, one int for all ``n`` rows or one per row, as an ``(n,)`` int64 tensor on the
    CPU: the one check of index values. Each must be in ``0..limit - 1`` (``limit=None``: any index that fits
    int64); numpy and unsigned integers are converted, floats, bools and out-of-range values are refused with
    a :class:`PellucidError` that names the value and the accepted range."""
    if isinstance(value, bool):
        raise PellucidError(f"{name} must be an int {kind} index, got bool {value!r}")
    if isinstance(value, numbers.Integral):  # int and numpy integers: checked as Python ints, before torch
        v = int(value)
        if not 0 <= v < (INT64_MAX + 1 if limit is None else limit):
            raise _out_of_range(name, v, limit, kind)
        return torch.full((n,), v, dtype=torch.long)
    try:
        idx = torch.as_tensor(value)
    except (TypeError, ValueError, RuntimeError, OverflowError) as e:
        try:  # an int past int64 is the usual reason: name it
            items = np.asarray(value, dtype=object).ravel()
        except (TypeError, ValueError):
            items = ()
        for item in items:
            if isinstance(item, numbers.Integral) and not isinstance(item, bool) and not 0 <= item <= INT64_MAX:
                raise _out_of_range(name, int(item), limit, kind) from None
        raise PellucidError(f"{name} must be ints, got {value!r}") from e
    if idx.dim() == 0:
        idx = idx.reshape(1).expand(n)
    if idx.dim() != 1 or (idx.numel() and idx.is_floating_point()) or idx.dtype == torch.bool or idx.is_complex():
        raise PellucidError(
            f"{name} must be an int or a 1-D sequence of ints, got {idx.dtype} of shape {tuple(idx.shape)}"
        )
    if idx.numel() != n:
        raise PellucidError(f"got {idx.numel()} {name}s for {n} images; pass one int, or one per image")
    if idx.dtype == torch.uint64:  # past int64 would wrap to negative in .long(): read as Python ints
        big = [v for v in idx.tolist() if v > INT64_MAX]
        if big:
            raise _out_of_range(name, big[0], limit, kind)
    idx = idx.long().cpu()
    bad = idx[(idx < 0) | (idx >= limit)] if limit is not None else idx[idx < 0]
    if bad.numel():
        raise _out_of_range(name, int(bad[0]), limit, kind)
    return idx


# ---------------------------------------------------------------------------------------------
# outputs other than logits: what to read, and targets with data per sample

def batch_len(output) -> int:
    """The batch size of a model output: a tensor, or the first tensor of a dict, tuple or list."""
    if isinstance(output, torch.Tensor):
        return output.shape[0]
    values = output.values() if isinstance(output, dict) else output if isinstance(output, tuple | list) else ()
    for v in values:
        if isinstance(v, torch.Tensor):
            return v.shape[0]
    raise PellucidError(f"the model returned a {_describe(output)}; expected a tensor, or a dict or tuple of tensors")


def _describe(output) -> str:
    if isinstance(output, dict):
        return "dict with keys " + ", ".join(map(repr, output))
    if isinstance(output, tuple | list):
        return f"{type(output).__name__} of {len(output)}"
    return type(output).__name__


def read_output(output, key=None, what: str = "output") -> torch.Tensor:
    """``output[key]`` of a dict or tuple output (``None``: a tensor as it is, a tuple's first item)."""
    if isinstance(output, torch.Tensor) and key is None:
        return output
    try:
        value = output[0 if key is None and isinstance(output, tuple | list) else key]
    except (KeyError, IndexError, TypeError):
        value = None
    if not isinstance(value, torch.Tensor):
        raise PellucidError(f"the model returned a {_describe(output)}; cannot read {what} {key!r} from it: "
                            "pass key= naming the tensor to read")
    return value


class RowTarget(ABC):
    """A target callable with data per sample (a mask, a reference embedding) that follows the rows of
    the batches methods build (IG steps, SmoothGrad samples, masked copies). Subclasses define
    :meth:`score_with`; ``data`` is ``(n, ...)`` per sample, or ``None``/one shared row."""

    def __init__(self, data: torch.Tensor | None, per_sample: bool):
        self.data = data
        self.per_sample = per_sample
        self._index: torch.Tensor | None = None

    @abstractmethod
    def score_with(self, output, data: torch.Tensor | None) -> torch.Tensor:
        """One score per row of ``output`` given the per-row ``data`` of those rows (or the shared row)."""

    def __call__(self, output) -> torch.Tensor:
        return self.scores(output, None)

    def index(self) -> torch.Tensor:
        if self._index is not None:
            return self._index
        return torch.arange(len(self.data) if self.per_sample else 1)

    def take(self, index: torch.Tensor) -> RowTarget:
        if not self.per_sample:
            return self
        new = object.__new__(type(self))
        new.__dict__.update(self.__dict__)
        new._index = index.long()
        return new

    def scores(self, output, rows) -> torch.Tensor:
        data = self.data
        if self.per_sample:
            idx = self.index()
            idx = idx if rows is None else idx[rows]
            data = data[idx.to(data.device)]
        return self.score_with(output, data)

    def check_rows(self, n: int, name: str = "target") -> RowTarget:
        if self.per_sample and self._index is None and len(self.data) != n:
            raise PellucidError(f"{name} {type(self).__name__} holds {len(self.data)} rows for {n} images; "
                                "pass one shared row or one per image")
        return self

    def bind(self, model, x: torch.Tensor) -> RowTarget:
        return self


class SegmentationTarget(RowTarget):
    """See :func:`segmentation_target`."""

    def __init__(self, cls: int, mask, key):
        if isinstance(cls, bool) or not isinstance(cls, numbers.Integral) or cls < 0:
            raise PellucidError(f"segmentation_target: cls must be a class index >= 0, got {cls!r}")
        if mask is not None:
            mask = torch.as_tensor(mask)
            if mask.dim() not in (2, 3) or mask.is_floating_point() and not ((mask == 0) | (mask == 1)).all():
                raise PellucidError(f"segmentation_target: mask must be (H, W) or (N, H, W) booleans, got "
                                    f"{mask.dtype} of shape {tuple(mask.shape)}")
            mask = mask.bool()
        super().__init__(mask, mask is not None and mask.dim() == 3)
        self.cls, self.key = int(cls), key

    def logits(self, output) -> torch.Tensor:
        out = read_output(output, self.key if isinstance(output, dict) else None, "segmentation logits")
        if out.dim() != 4:
            raise PellucidError(f"segmentation_target needs logits (N, K, H, W), the model gives {tuple(out.shape)}")
        if self.cls >= out.shape[1]:
            raise PellucidError(f"segmentation_target: class {self.cls} is out of range: the model has classes "
                                f"0..{out.shape[1] - 1}")
        return out

    def score_with(self, output, mask) -> torch.Tensor:
        out = self.logits(output)
        if mask is None:
            mask = out.detach().argmax(1) == self.cls
        if tuple(mask.shape[-2:]) != tuple(out.shape[-2:]):
            raise PellucidError(f"segmentation_target: mask of shape {tuple(mask.shape)} does not fit the model's "
                                f"logits {tuple(out.shape)}; pass (H, W) = {tuple(out.shape[-2:])} or (N, H, W) "
                                "booleans")
        return (out[:, self.cls] * mask.to(out)).sum((1, 2))

    def bind(self, model, x: torch.Tensor) -> RowTarget:
        """``mask=None``: the pixels predicted as ``cls`` on ``x`` (one forward), fixed for every pass."""
        if self.data is not None:
            return self
        from ._state import model_state

        with model_state(model), torch.no_grad():
            out = self.logits(model(x))
        return SegmentationTarget(self.cls, out.argmax(1) == self.cls, self.key)


def segmentation_target(cls: int, mask=None, *, key: str = "out") -> SegmentationTarget:
    """A target for segmentation models: the sum of class ``cls``'s pixel logits over ``mask``.

    The model's output is logits ``(N, K, H, W)``, or a dict holding them under ``key`` (torchvision's
    segmentation models return ``{"out": ...}``). ``mask`` is ``(H, W)`` or ``(N, H, W)`` booleans;
    ``None`` takes the pixels predicted as ``cls`` on the images being explained. Example:
    ``pl.gradient(seg_model, x, pl.segmentation_target(15))``.
    """
    return SegmentationTarget(cls, mask, key)


class SimilarityTarget(RowTarget):
    """See :func:`similarity_target`."""

    def __init__(self, embedding, key):
        try:
            ref = torch.as_tensor(embedding)
        except (TypeError, ValueError, RuntimeError) as e:
            raise PellucidError(f"similarity_target: embedding must be a float vector (D,) or one per image (N, D), "
                                f"got {type(embedding).__name__}") from e
        if ref.dim() not in (1, 2) or not ref.is_floating_point():
            raise PellucidError(f"similarity_target: embedding must be a float vector (D,) or one per image (N, D), "
                                f"got {ref.dtype} of shape {tuple(ref.shape)}")
        if not torch.isfinite(ref).all():
            raise PellucidError("similarity_target: embedding contains NaN or infinite values; pass finite numbers")
        super().__init__(ref.detach(), ref.dim() == 2)
        self.key = key

    def score_with(self, output, ref) -> torch.Tensor:
        emb = read_output(output, self.key, "embedding").flatten(1)
        if emb.shape[1] != ref.shape[-1]:
            raise PellucidError(f"similarity_target: the reference has {ref.shape[-1]} dims, the model's embedding "
                                f"{emb.shape[1]}")
        return F.cosine_similarity(emb, ref.to(emb).expand_as(emb), dim=1)


def similarity_target(embedding, *, key=None) -> SimilarityTarget:
    """A target for embedding models: the cosine similarity of the output to ``embedding``.

    ``embedding`` is ``(D,)`` (one reference for all images) or ``(N, D)``; a dict or tuple output is read
    at ``key``. Example: ``pl.integrated_gradients(encoder, x, pl.similarity_target(encoder(ref)[0]))``.
    """
    return SimilarityTarget(embedding, key)
