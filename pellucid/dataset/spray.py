"""``pl.scan``: a model's strategies per class across a data set (SpRAy, Lapuschkin et al. 2019, "Unmasking
Clever Hans predictors"), and the images it decides for reasons unlike the rest of their class.

Per class: the explanation maps (LRP by default), downsized and scaled to unit length, become the nodes of a
symmetric k-nearest-neighbour graph with Gaussian affinities; the eigenvectors of its normalized Laplacian
embed the images (spectral embedding), the number of strategies is where the eigenvalues jump (the
eigengap), and k-means in the embedding finds them. An image's ``score`` is the rarity of the strategy it
follows, ``-log(share of its class)``, plus its distance in the embedding from the main strategy (the
largest) as a fraction of the farthest (in [0, 1]): a small separate strategy (a watermark, a tag, a
background) scores above the bulk, and its most atypical members first.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from .._args import prepare
from .._checks import PellucidError, check_positive_int
from .._grad import predictions
from .maps import image_classes, streamed_maps, thumbnails

MAX_CLUSTERS = 8
SHOWN_FLAGGED = 8  # the most flagged images a result keeps thumbnails of


@dataclass(frozen=True)
class Strategy:
    """One strategy of a class: ``images`` (positions in ``x``), ``size``, ``mean_map`` ``(h, w)`` (of the
    unit-scaled maps), ``typical`` (up to 6 positions, nearest its centre first)."""

    images: torch.Tensor
    size: int
    mean_map: torch.Tensor
    typical: torch.Tensor


@dataclass(frozen=True)
class ClassScan:
    """One class: its ``images``, its ``strategies`` (largest first), the Laplacian's smallest ``eigenvalues``
    (the eigengap plot) and the number of strategies chosen."""

    label: int
    images: torch.Tensor
    strategies: list[Strategy]
    eigenvalues: torch.Tensor
    clusters: int


@dataclass(frozen=True)
class ScanResult:
    """``score`` ``(N,)``: how far each image's evidence lies from its class's main strategy (0 to 1 inside it
    for a class with one strategy; the rarer its own strategy the higher); ``flagged`` ``(N,)``: in a strategy
    holding at most ``minority`` of its class; ``classes``:
    ``{class: ClassScan}``; ``maps``: the downsized maps ``(N, h, w)``; ``targets``: the class each image was
    scanned as; ``method``: the method's name; ``thumbnails``: small copies of the images it shows (each
    strategy's typical ones, the most flagged). In Jupyter it shows each class's strategies."""

    score: torch.Tensor
    flagged: torch.Tensor
    classes: dict[int, ClassScan]
    maps: torch.Tensor
    targets: torch.Tensor
    method: str
    minority: float = 0.25
    labels: list[str] = field(default_factory=list)

    thumbnails: dict[int, torch.Tensor] = field(default_factory=dict, repr=False)

    def most_flagged(self, k: int = 10) -> torch.Tensor:
        """The positions of the ``k`` highest scores, highest first."""
        return self.score.argsort(descending=True)[:k]

    def __repr__(self) -> str:
        per = ", ".join(f"{c}: {cs.clusters}" for c, cs in list(self.classes.items())[:10])
        return (f"ScanResult({len(self.score)} images, method={self.method!r}, flagged={int(self.flagged.sum())}, "
                f"strategies per class {{{per}{', ...' if len(self.classes) > 10 else ''}}})")

    def _repr_png_(self) -> bytes:
        from ..drawing import display_learned

        return display_learned.scan_png(self)

    def _repr_html_(self) -> str:
        from ..drawing import display_learned

        return display_learned.scan_html(self)

    def _repr_mimebundle_(self, include=None, exclude=None) -> dict:
        from ..drawing import display, display_learned

        png = display_learned.scan_png(self)
        return display.bundle(png, display_learned.scan_html(self, png))


def _unit(maps: torch.Tensor) -> torch.Tensor:
    flat = maps.flatten(1).double()
    norm = flat.norm(dim=1, keepdim=True)
    return torch.where(norm > 0, flat / norm.clamp_min(1e-300), flat)


def spectral(features: np.ndarray, clusters: int | str = "auto", seed: int = 0,
             neighbours: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """SpRAy's clustering of ``features`` ``(n, d)``: ``(labels, embedding, eigenvalues, k)``."""
    from sklearn.cluster import KMeans
    from sklearn.neighbors import NearestNeighbors

    n = len(features)
    if isinstance(clusters, int) and clusters > n:
        raise PellucidError(f"clusters={clusters} but the class has only {n} images; ask for at most {n}")
    if n < 3 or not np.any(features):
        k = 1
        return np.zeros(n, dtype=int), np.zeros((n, 1)), np.zeros(min(n, 1)), k
    knn = neighbours or int(min(n - 1, max(5, round(np.log(n) * 2))))
    dist, idx = NearestNeighbors(n_neighbors=knn + 1).fit(features).kneighbors(features)
    sigma = np.median(dist[:, 1:]) or 1.0
    w = np.zeros((n, n))
    rows = np.repeat(np.arange(n), knn)
    w[rows, idx[:, 1:].ravel()] = np.exp(-(dist[:, 1:].ravel() / sigma) ** 2)
    w = np.maximum(w, w.T)  # symmetric: an edge if either is among the other's neighbours
    d = w.sum(1)
    inv = np.where(d > 0, 1 / np.sqrt(np.maximum(d, 1e-300)), 0)
    lap = np.eye(n) - inv[:, None] * w * inv[None, :]
    m = min(n - 1, MAX_CLUSTERS + 1)
    vals, vecs = np.linalg.eigh(lap)
    vals, vecs = vals[: m + 1], vecs[:, : m + 1]
    if clusters == "auto":
        gaps = np.diff(vals[: MAX_CLUSTERS + 1])
        k = int(np.argmax(gaps[: max(1, min(len(gaps), n - 1))]) + 1)
    else:
        k = int(clusters)
    emb = vecs[:, : max(k, 2)]
    emb = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)  # Ng, Jordan and Weiss
    labels = np.zeros(n, dtype=int) if k == 1 else \
        KMeans(k, n_init=10, random_state=seed).fit_predict(emb)
    return labels, emb, vals, k


def _class_scan(label: int, where: torch.Tensor, maps: torch.Tensor, clusters, seed: int,
                score: torch.Tensor) -> ClassScan:
    unit = _unit(maps[where])
    labels, emb, vals, k = spectral(unit.numpy(), clusters, seed)
    sizes = np.bincount(labels, minlength=k)
    order = np.argsort(-sizes, kind="stable")
    main = labels == order[0]
    dist = np.linalg.norm(emb - emb[main].mean(0), axis=1)
    far = dist / dist.max() if dist.max() > 1e-12 else dist
    # the rarer the strategy an image follows, the higher; within a strategy, the farther from the main one
    score[where] = torch.as_tensor(-np.log(sizes[labels] / len(labels)) + far, dtype=score.dtype)
    strategies = []
    for c in order:
        members = np.flatnonzero(labels == c)
        if not len(members):
            continue
        centre_c = emb[members].mean(0)
        near = members[np.argsort(np.linalg.norm(emb[members] - centre_c, axis=1), kind="stable")][:6]
        mean_map = unit[members].mean(0).reshape(maps.shape[1:]).float()
        strategies.append(Strategy(where[torch.as_tensor(members)], len(members), mean_map,
                                   where[torch.as_tensor(near)]))
    return ClassScan(label, where, strategies, torch.as_tensor(vals, dtype=torch.float32), k)


def scan(model: nn.Module, x: torch.Tensor, y=None, *, method: str | Callable = "lrp",
         classes: Sequence[int] | None = None, clusters: int | str = "auto", size: int = 32,
         batch_size: int | None = None, seed: int = 0, minority: float = 0.25, maps: torch.Tensor | None = None,
         options: dict | None = None) -> ScanResult:
    """The strategies of ``model`` per class over ``x`` (SpRAy) and a per-image Clever-Hans score.

    ``y``: the class of each image (``None``: the predicted one); ``method``: any registered method name (LRP by
    default) or ``fn(model, x, target) -> (N, H, W)``; maps are computed in chunks and downsized to ``size``
    (``maps=``: ``(N, h, w)`` maps computed before, e.g. a batch job's, used as they are); ``classes``: only
    these; ``clusters``: ``"auto"`` (the eigengap, at most 8) or a number. ``.score`` ranks the images whose
    evidence lies outside their class's main strategy first; ``.flagged`` marks those in a strategy that holds
    at most ``minority`` (a fraction) of their class. Example: ``s = pl.scan(model, x, y); x[s.most_flagged(8)]``.
    """
    x, _, _ = prepare(model, x, 0, batch_size)
    n = len(x)
    if y is None:
        targets = predictions(model, x, batch_size).argmax(1).cpu()
    else:
        targets = image_classes(y, n, model)
    if clusters != "auto":
        check_positive_int(clusters, "clusters")
    if not isinstance(minority, int | float) or isinstance(minority, bool) or not 0 < minority < 1:
        raise PellucidError(f"minority must be a fraction in (0, 1), got {minority!r}")
    wanted = sorted(set(targets.tolist())) if classes is None else [int(c) for c in classes]
    if not wanted:
        raise PellucidError("classes is empty; give the classes to scan, or None for every class present")
    missing = [c for c in wanted if not (targets == c).any()]
    if missing:
        raise PellucidError(f"no image of class {missing[0]} to scan (classes present: "
                            f"{sorted(set(targets.tolist()))})")
    if maps is None:
        keep = torch.isin(targets, torch.as_tensor(wanted))
        rows = keep.nonzero().flatten()
        computed = streamed_maps(model, x, targets[rows].to(x.device), method, size=size, batch_size=batch_size,
                                 options=options, seed=seed, index=None if keep.all() else rows)
        small = torch.zeros(n, *computed.shape[1:])
        small[rows] = computed
    else:
        small = torch.as_tensor(maps).float().cpu()
        if small.dim() != 3 or len(small) != n:
            raise PellucidError(f"maps must be (N, h, w) with N = {n} images, got shape {tuple(small.shape)}")
    score = torch.zeros(n)
    found = {c: _class_scan(c, (targets == c).nonzero().flatten(), small, clusters, seed, score) for c in wanted}
    flagged = torch.zeros(n, dtype=torch.bool)
    for cs in found.values():
        for s in cs.strategies[1:]:
            flagged[s.images] = s.size <= minority * len(cs.images)
    name = method if isinstance(method, str) else getattr(method, "__name__", "custom")
    labels = list(getattr(model, "labels", None) or [])
    shown = [i for cs in found.values() for s in cs.strategies for i in s.typical.tolist()]
    shown += score.argsort(descending=True)[:SHOWN_FLAGGED].tolist()
    return ScanResult(score, flagged, found, small, targets, name, minority, labels, thumbnails(x, shown))
