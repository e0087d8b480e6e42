"""Maps for many images: computed chunk by chunk on the data-set stage, downsized on the fly, so a scan or a
diff over thousands of images never holds their full-size maps (only ``(N, size, size)`` float32)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .._args import num_classes
from .._checks import PellucidError, check_positive_int
from .._grad import default_batch_size
from ..registry import method as method_record
from ..targets import as_indices
from .stage import Stage, run_stage


def downsize(maps: torch.Tensor, size: int) -> torch.Tensor:
    """``(N, H, W)`` maps averaged down to ``(N, s, s')`` with the longer side ``size`` (never up)."""
    h, w = maps.shape[-2:]
    scale = min(1.0, size / max(h, w))
    out = (max(1, round(h * scale)), max(1, round(w * scale)))
    if out == (h, w):
        return maps.float()
    return F.adaptive_avg_pool2d(maps[:, None].float(), out)[:, 0]


def image_classes(y, n: int, model: nn.Module) -> torch.Tensor:
    """``y`` as one class per image, ``(n,)`` int64 on the CPU, each a class of ``model``
    (:func:`pellucid.targets.as_indices`, the one check of index values); a clear error otherwise."""
    classes = torch.as_tensor(y.detach().cpu() if isinstance(y, torch.Tensor) else y)
    if classes.dim() != 1 or len(classes) != n or classes.is_floating_point():
        raise PellucidError(f"y must hold one integer class per image ({n}), got shape {tuple(classes.shape)}"
                            f"{' of floats' if classes.is_floating_point() else ''}")
    return as_indices(classes, n, "y", num_classes(model))


THUMB = 96
"""The longer side, in pixels, of the copies of images a result keeps to draw itself."""


def thumbnails(x: torch.Tensor, positions) -> dict[int, torch.Tensor]:
    """``{position: (C, h, w)}`` small CPU copies (longer side at most :data:`THUMB`) of the images a result shows,
    so it can draw itself without the data set."""
    keep = sorted({int(i) for i in positions})
    h, w = x.shape[-2:]
    scale = min(1.0, THUMB / max(h, w))
    out = {}
    for start in range(0, len(keep), 32):  # a few at a time: never a full-size copy of many images
        rows = keep[start:start + 32]
        small = x[rows].detach().float()
        if scale < 1:
            small = F.interpolate(small, size=(max(1, round(h * scale)), max(1, round(w * scale))), mode="area")
        out.update(zip(rows, small.clamp(0, 1).cpu()))
    return out


@dataclass(frozen=True)
class _Slices:
    """The stage's ``load``: rows of an in-memory batch (no I/O) with their targets; with ``index``, the chunk's
    rows are those positions of ``x`` (gathered chunk by chunk: a subset of a large batch is never copied whole)."""

    x: torch.Tensor
    targets: torch.Tensor
    index: torch.Tensor | None = None

    def __call__(self, rows: slice):
        if self.index is None:
            return self.x[rows], self.targets[rows]
        return self.x[self.index[rows].to(self.x.device)], self.targets[rows]


def streamed_maps(model: nn.Module, x: torch.Tensor, targets: torch.Tensor, method: str | Callable = "lrp", *,
                  size: int = 32, batch_size: int | None = None, options: dict | None = None,
                  seed: int = 0, index: torch.Tensor | None = None) -> torch.Tensor:
    """``(N, h, w)`` float32 maps of ``method`` (a registered name or ``fn(model, x, target) -> (N, H, W)``) for
    images ``x`` with one target each (``index``: for the images ``x[index]`` only, one target each), downsized to
    ``size`` as each chunk is done."""
    check_positive_int(size, "size")
    if batch_size is None:  # the model's own chunk size (EfficientNet-Lite0 at 224²: 4), bounding the peak memory
        batch_size = default_batch_size(x, model)
    check_positive_int(batch_size, "batch_size")
    opts = dict(options or {})
    if isinstance(method, str):
        record = method_record(method)
        opts = {**record.defaults(x[:1], seed), **opts}

        def compute(v, t):
            return record(model, v, t, **opts)
    elif callable(method):
        def compute(v, t):
            return method(model, v, t, **opts)
    else:
        raise PellucidError(f"method must be a registered method name or a function, got {method!r}")

    def worker(loaded):
        v, t = loaded
        m = compute(v, t)
        if not isinstance(m, torch.Tensor) or m.dim() != 3 or len(m) != len(v):
            raise PellucidError(f"method {getattr(method, '__name__', method)!r} must give (N, H, W) maps, got "
                                f"{getattr(m, 'shape', type(m).__name__)}")
        return downsize(m.detach(), size).cpu()

    total = len(x) if index is None else len(index)
    chunks = [slice(i, min(i + batch_size, total)) for i in range(0, total, batch_size)]
    load = _Slices(x, targets, None if index is None else torch.as_tensor(index).cpu())
    out = [done.value for done in run_stage(Stage(load, lambda: worker), chunks, worker=worker)]
    return torch.cat(out) if out else torch.zeros(0, size, size)
