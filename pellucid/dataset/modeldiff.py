"""``pl.diff``: what changed between two models (two checkpoints, a model and its fix) image by image: how far
each image's evidence moved, whether its prediction changed, and what counts as moved beyond noise."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from .._args import prepare
from .._checks import PellucidError, check_positive_int
from .._grad import predictions
from ..registry import method as method_record
from .maps import image_classes, streamed_maps, thumbnails

Z_BEYOND = 8.0
"""How many robust standard deviations (1.4826 x the median absolute deviation) above the median distance an
image's distance must lie to count as moved: the bulk of a data set does not move between two versions of
a model, so the bulk is the null. Measured between two seeds of the same digits training (LRP, 300 held-out
digits): the distances have a long tail (the five largest 0.67, 0.63, 0.53, 0.52, 0.37), and 5 deviations
let some of it through; 8 is the default."""

UNCORRELATED = 1.0
"""A distance that counts as moved whatever the bulk does: ``1 - cosine`` of 1 or more, the two maps orthogonal or
opposed (when most images move, e.g. a model retrained from scratch, the bulk's own bound would exceed it). The
cosine is of the maps as they are, not centred: two non-negative maps (saliency, Grad-CAM) never reach it, so for
them only the bulk's bound applies."""


SHOWN_MOVED = 8  # the most moved images a result keeps thumbnails of


@dataclass(frozen=True)
class ClassDiff:
    label: int
    images: int
    mean_distance: float
    moved: int
    changed: int


@dataclass(frozen=True)
class DiffResult:
    """Per image: ``distance`` (1 - cosine similarity of the two models' downsized maps, 0 to 2), ``pred_a``,
    ``pred_b``, ``changed`` (the prediction differs), ``moved`` (distance beyond ``threshold``); ``order``: the
    images by distance, largest first; ``noise``: the method's own distance between two seeds on model A
    (zeros for a deterministic method); ``threshold``: the null's bound; ``classes``: per-class summaries;
    ``thumbnails``: small copies of the images that moved most. In Jupyter it shows those images with both maps."""

    distance: torch.Tensor
    pred_a: torch.Tensor
    pred_b: torch.Tensor
    changed: torch.Tensor
    moved: torch.Tensor
    order: torch.Tensor
    noise: torch.Tensor
    threshold: float
    targets: torch.Tensor
    classes: dict[int, ClassDiff]
    maps_a: torch.Tensor
    maps_b: torch.Tensor
    method: str
    thumbnails: dict[int, torch.Tensor] = field(default_factory=dict, repr=False)

    def __repr__(self) -> str:
        return (f"DiffResult({len(self.distance)} images, method={self.method!r}, moved={int(self.moved.sum())}, "
                f"changed prediction={int(self.changed.sum())}, threshold={self.threshold:.3f})")

    def _repr_png_(self) -> bytes:
        from ..drawing import display_learned

        return display_learned.diff_png(self)

    def _repr_html_(self) -> str:
        from ..drawing import display_learned

        return display_learned.diff_html(self)

    def _repr_mimebundle_(self, include=None, exclude=None) -> dict:
        from ..drawing import display, display_learned

        return display.bundle(display_learned.diff_png(self), display_learned.diff_html(self))


def map_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``1 - cosine`` between matching rows of two ``(N, ...)`` map stacks (0 for two all-zero maps)."""
    a, b = a.flatten(1).double(), b.flatten(1).double()
    na, nb = a.norm(dim=1), b.norm(dim=1)
    cos = (a * b).sum(1) / (na * nb).clamp_min(1e-300)
    both_zero = (na == 0) & (nb == 0)
    return torch.where(both_zero, 0.0, 1 - cos).float()


def robust_threshold(distance: torch.Tensor, noise: torch.Tensor, z: float = Z_BEYOND) -> float:
    """The null's bound: the median distance plus ``z`` robust standard deviations (at most
    :data:`UNCORRELATED`), and at least the method's own noise (its 99th percentile)."""
    med = float(distance.median())
    mad = float((distance - med).abs().median()) * 1.4826
    bound = min(med + z * max(mad, 1e-6), UNCORRELATED)
    return max(bound, float(noise.quantile(0.99)) if len(noise) else 0.0)


def diff(model_a: nn.Module, model_b: nn.Module, x: torch.Tensor, y=None, *, method: str | Callable = "lrp",
         size: int = 32, batch_size: int | None = None, seed: int = 0, z: float = Z_BEYOND,
         options: dict | None = None) -> DiffResult:
    """Compare the evidence of two models image by image (``y``: the class to explain in both; ``None``: model A's
    prediction). Maps come from ``method`` (any registered name, LRP by default, or a function), computed in
    chunks and downsized to ``size``. An image ``moved`` when its distance lies beyond the null: more than ``z``
    robust standard deviations above the median distance (most images do not move between two versions), and
    beyond the method's own noise (a seeded method runs twice on model A with two seeds).
    Example: ``d = pl.diff(old, new, x, y); x[d.order[:8]]``.
    """
    x, _, _ = prepare(model_a, x, 0, batch_size)
    prepare(model_b, x[:1], 0, batch_size)
    check_positive_int(size, "size")
    if not isinstance(z, int | float) or isinstance(z, bool) or not z > 0:
        raise PellucidError(f"z must be a number > 0 (robust standard deviations), got {z!r}")
    n = len(x)
    pred_a = predictions(model_a, x, batch_size).argmax(1).cpu()
    pred_b = predictions(model_b, x, batch_size).argmax(1).cpu()
    if y is None:
        targets = pred_a
    else:
        targets = image_classes(y, n, model_a)
    kw = dict(size=size, batch_size=batch_size, options=options)
    t = targets.to(x.device)
    maps_a = streamed_maps(model_a, x, t, method, seed=seed, **kw)
    maps_b = streamed_maps(model_b, x, t, method, seed=seed, **kw)
    distance = map_distance(maps_a, maps_b)
    seeded = isinstance(method, str) and method_record(method).seeded
    noise = map_distance(maps_a, streamed_maps(model_a, x, t, method, seed=seed + 1, **kw)) if seeded \
        else torch.zeros(n)
    threshold = robust_threshold(distance, noise, z)
    moved = (distance > threshold) | (distance >= UNCORRELATED)
    changed = pred_a != pred_b
    classes = {}
    for c in sorted(set(targets.tolist())):
        rows = targets == c
        classes[c] = ClassDiff(c, int(rows.sum()), float(distance[rows].mean()), int(moved[rows].sum()),
                               int(changed[rows].sum()))
    name = method if isinstance(method, str) else getattr(method, "__name__", "custom")
    order = distance.argsort(descending=True)
    return DiffResult(distance, pred_a, pred_b, changed, moved, order, noise, threshold, targets, classes, maps_a,
                      maps_b, name, thumbnails(x, order[:SHOWN_MOVED].tolist()))
