"""Perturbation methods: occlusion and LIME. Perturbed images are built chunk by chunk on the
device and scored ``batch_size`` at a time; LIME's surrogate fit is closed-form (``_surrogate``)."""

from __future__ import annotations

import hashlib
import math
from collections import OrderedDict
from typing import NamedTuple

import torch
from torch import nn

from .._args import prepare
from .._checks import PellucidError, check_number, check_positive_int, checked_keywords, fill_like, generator
from .._grad import perturbation_scores, row_index
from .._state import model_state
from .._surrogate import fit_surrogate, random_masks
from ..registry import Method, register_method

# ---------------------------------------------------------------------------------------------
# occlusion and LIME: perturb, run the batch, compare scores

def _pair(value, name: str) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, int) else tuple(value) if isinstance(value, tuple | list) else ()
    if len(pair) != 2 or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in pair):
        raise PellucidError(f"{name} must be a positive int or a pair of them, got {value!r}")
    return pair


def _window_starts(size: int, window: int, stride: int) -> torch.Tensor:
    """Captum's window positions: ``k * stride`` for ``ceil((size - window) / stride) + 1`` windows."""
    return torch.arange(math.ceil((size - window) / stride) + 1) * stride


@checked_keywords
def occlusion(model: nn.Module, x: torch.Tensor, target, window=8, stride=4, fill=0.0, *,
              score: str = "logit", batch_size: int | None = None) -> torch.Tensor:
    """Occlusion (Zeiler & Fergus 2014): the drop of the score when a window is set to ``fill``.

    Each pixel gets the drop averaged over the windows covering it (Captum's ``Occlusion``). All
    windows of all images go through the model in chunks of ``batch_size``. Shape: ``(N, H, W)``.
    Example: ``occ = pl.occlusion(model, x, 3, window=4, stride=2)``.
    """
    x, t, bs = prepare(model, x, target, batch_size, score)
    (wh, ww), (sh, sw) = _pair(window, "window"), _pair(stride, "stride")
    h, w = x.shape[-2:]
    if wh > h or ww > w:
        raise PellucidError(f"window {(wh, ww)} is larger than the image {(h, w)}")
    fills = fill_like(fill, x)
    # window k = (ky, kx) covers rows_in[ky] x cols_in[kx]: masks are separable
    rows_in = (torch.arange(h)[None] - _window_starts(h, wh, sh)[:, None]).clamp_min(-1)
    cols_in = (torch.arange(w)[None] - _window_starts(w, ww, sw)[:, None]).clamp_min(-1)
    rows_in = ((rows_in >= 0) & (rows_in < wh)).to(x)
    cols_in = ((cols_in >= 0) & (cols_in < ww)).to(x)
    ny, nx = len(rows_in), len(cols_in)

    def make(rows):
        i, k = row_index(rows, ny * nx, x.device)
        inside = (rows_in[k // nx][:, :, None] * cols_in[k % nx][:, None, :]).bool()[:, None]
        return torch.where(inside, fills[i], x[i])

    with model_state(model):
        base = perturbation_scores(model, x, len(x), t, bs)
        scores = perturbation_scores(model, make, len(x) * ny * nx, t.repeat_interleave(ny * nx), bs)
    drop = (base[:, None] - scores.reshape(len(x), ny * nx)).reshape(len(x), ny, nx)
    total = torch.einsum("nab,ay,bx->nyx", drop, rows_in, cols_in)
    return total / (rows_in.sum(0)[:, None] * cols_in.sum(0)[None, :]).clamp_min(1)


_SEGMENT_CACHE: OrderedDict = OrderedDict()
_SEGMENT_CACHE_SIZE = 256


def slic_segments(x: torch.Tensor, segments: int = 100, compactness: float = 1.0, sigma: float = 1.0) -> torch.Tensor:
    """SLIC superpixels (Achanta et al. 2012) of each image, ``(N, H, W)`` labels from 0.

    Defaults are the course report's ``slic(img, n_segments=100, compactness=1, sigma=1)``. Results
    are cached per image content and parameters, so explaining the same image again skips SLIC.
    """
    from skimage.segmentation import slic

    check_positive_int(segments, "segments", 2)
    out = []
    for img in x.detach().float().cpu().numpy():
        key = (hashlib.blake2b(img.tobytes(), digest_size=16).hexdigest(), img.shape, segments, compactness, sigma)
        if key not in _SEGMENT_CACHE:
            arr = img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0)
            seg = slic(arr.astype("float64"), n_segments=segments, compactness=compactness, sigma=sigma,
                       start_label=0, channel_axis=None if img.shape[0] == 1 else -1)
            _SEGMENT_CACHE[key] = torch.from_numpy(seg.astype("int64"))
            if len(_SEGMENT_CACHE) > _SEGMENT_CACHE_SIZE:
                _SEGMENT_CACHE.popitem(last=False)
        _SEGMENT_CACHE.move_to_end(key)
        out.append(_SEGMENT_CACHE[key])
    return torch.stack(out).to(x.device)


def _check_segmentation(segmentation, x: torch.Tensor) -> torch.Tensor:
    seg = torch.as_tensor(segmentation)
    if seg.dim() == 2:
        seg = seg.expand(len(x), -1, -1)
    if seg.shape != (len(x), *x.shape[-2:]) or seg.is_floating_point():
        raise PellucidError(f"segmentation must be integer labels of shape (N, H, W) = {(len(x), *x.shape[-2:])} "
                            f"or (H, W), got {seg.dtype} {tuple(seg.shape)}")
    return seg.to(x.device)


class LimeResult(NamedTuple):
    """``map (N, H, W)``, ``segments (N, H, W)`` (labels 0..F-1), ``weights`` (list of ``(F,)`` per
    image), ``intercept (N,)`` and the weighted ``r2 (N,)`` of each surrogate fit."""

    map: torch.Tensor
    segments: torch.Tensor
    weights: list
    intercept: torch.Tensor
    r2: torch.Tensor


def _segment_fill(img: torch.Tensor, seg: torch.Tensor, nseg: int, fill) -> torch.Tensor:
    """The image a fully removed sample shows: ``fill`` (number / tensor) or each segment's mean colour."""
    if not (isinstance(fill, str) and fill == "mean"):
        return fill_like(fill, img[None])[0]
    flat = seg.flatten()
    sums = torch.zeros(img.shape[0], nseg, dtype=img.dtype, device=img.device).index_add_(1, flat, img.flatten(1))
    counts = torch.bincount(flat, minlength=nseg).clamp_min(1).to(img)
    return (sums / counts)[:, seg]


class Segmented(NamedTuple):
    """One image split into superpixels: labels ``seg (H, W)`` in ``0..nseg-1``, the image, and what a
    removed segment shows."""

    seg: torch.Tensor
    nseg: int
    img: torch.Tensor
    removed: torch.Tensor

    def rows(self, z: torch.Tensor):
        """A row maker: row ``r`` keeps the segments where ``z[r]`` is 1 and removes the others."""
        return lambda rows: torch.where(z[rows][:, self.seg][:, None].bool(), self.img, self.removed)


def segmented(x: torch.Tensor, segments: int, segmentation, fill) -> list[Segmented]:
    """The one superpixel set-up of LIME and KernelSHAP: SLIC segments (or the caller's ``segmentation``)
    relabelled ``0..nseg-1`` per image, and each image's removed fill."""
    segs = slic_segments(x, segments) if segmentation is None else _check_segmentation(segmentation, x)
    out = []
    for i in range(len(x)):
        seg = torch.unique(segs[i], return_inverse=True)[1]
        nseg = int(seg.max()) + 1
        out.append(Segmented(seg, nseg, x[i], _segment_fill(x[i], seg, nseg, fill)))
    return out


@checked_keywords
def lime(model: nn.Module, x: torch.Tensor, target, samples: int = 1000, segments: int = 100, seed: int = 0, *,
         segmentation: torch.Tensor | None = None, fill=0.0, kernel_width: float = 0.25, alpha: float = 1.0,
         score: str = "logit", batch_size: int | None = None, return_details: bool = False):
    """LIME (Ribeiro et al. 2016) over superpixels: a weighted linear fit of the score on kept segments.

    Each sample keeps a random half of the SLIC segments (the rest set to ``fill``: a number, a tensor
    or ``"mean"``, lime's per-segment mean colour). Masks are built on the device, samples run in
    chunks of ``batch_size``, and the ridge fit (lime's cosine kernel, ``alpha=1``) is closed-form.
    Returns the ``(N, H, W)`` map of superpixel weights, or a :class:`LimeResult` with
    ``return_details=True``. Example: ``m = pl.lime(model, x, 3, samples=1000, seed=0)``.
    """
    x, t, bs = prepare(model, x, target, batch_size, score)
    check_positive_int(samples, "samples", 2)
    kernel_width = check_number(kernel_width, "kernel_width", 0, low_open=True, hint=" (of the cosine kernel)")
    alpha = check_number(alpha, "alpha", 0, low_open=True, hint=" (the ridge penalty)")
    gen = generator(seed, x.device)
    maps, weights, intercepts, r2s, labels = [], [], [], [], []
    with model_state(model):
        for i, part in enumerate(segmented(x, segments, segmentation, fill)):
            z = random_masks(samples, part.nseg, gen, x.device)
            y = perturbation_scores(model, part.rows(z), samples, t.select([i]).repeat(samples), bs)
            coef, intercept, r2 = fit_surrogate(z, y, kernel_width, alpha)
            maps.append(coef[part.seg])
            weights.append(coef)
            intercepts.append(intercept)
            r2s.append(r2)
            labels.append(part.seg)
    result = LimeResult(torch.stack(maps), torch.stack(labels), weights, torch.stack(intercepts), torch.stack(r2s))
    return result if return_details else result.map


# ---------------------------------------------------------------------------------------------
# records

def _occlusion_options(x: torch.Tensor, seed: int, quick: bool) -> dict:
    """Windows of ~1/7 of the side: 4/2 on 28x28, 32/16 on 224x224."""
    window = max(2, round(max(x.shape[-2:]) / 7))
    return {"window": window, "stride": max(1, window // 2)}


register_method(Method("occlusion", "Occlusion", occlusion, cost="expensive", sanity="never", signed=True,
                       options=_occlusion_options, summary="score drop when a patch is blacked out"))
register_method(Method(
    "lime", "LIME", lime, seeded=True, cost="expensive", sanity="never", signed=True,
    options=lambda x, seed, quick: {"samples": 250 if quick and max(x.shape[-2:]) > 64 else 1000},
    report={"samples": 250}, summary="weights of a linear fit over SLIC superpixels"))
