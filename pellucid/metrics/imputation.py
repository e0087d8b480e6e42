"""ROAD (Rong et al. 2022, "A Consistent and Efficient Evaluation Strategy for Attribution Methods"):
remove pixels in the map's order, but fill them by noisy linear imputation instead of a constant, so the
curve measures the information removed rather than the model's reaction to black holes.

Each removed pixel takes the weighted mean of its 8 neighbours (1/6 side, 1/12 diagonal, only those
inside the image), removed neighbours being unknowns too: a sparse linear system per image and
channel (a weighted graph Laplacian with the kept pixels as boundary). Here it is solved for a whole
chunk of (image, fraction) rows at once by Jacobi-preconditioned conjugate gradients with a 3x3 stencil
on the batch axis, instead of one ``scipy.sparse.linalg.spsolve`` per image and fraction.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .._args import prepare
from .._checks import PellucidError, check_choice, check_number, checked_keywords
from .._grad import chunks
from .._state import model_state
from ._maps import MapMethod, map_of
from ._random import base_seed, row_noise
from .curves import Curve, _ranks

FRACTIONS = tuple(round(0.1 * k, 1) for k in range(10))
"""Removed fractions by default: 0 (the image itself), 10%, ..., 90% (the paper's 10-90%)."""


def _neighbours(v: torch.Tensor) -> torch.Tensor:
    """Weighted sum of the 8 neighbours of every pixel of ``v`` ``(..., H, W)`` (1/6 side, 1/12 diagonal);
    outside the image counts 0.

    The stencil is ``[1, 2, 1]ᵀ[1, 2, 1] / 12`` minus the centre's ``4/12``: two 3-tap passes of shifted
    sums (at 224², 2x faster than the 3x3 convolution and 4x faster than the matrix products of the blur).
    """
    p = F.pad(v, (1, 1, 1, 1))
    a = p[..., :-2, :] + 2 * p[..., 1:-1, :] + p[..., 2:, :]
    b = a[..., :-2] + 2 * a[..., 1:-1] + a[..., 2:]
    return (b - 4 * v) / 12


def impute(x: torch.Tensor, removed: torch.Tensor, *, tol: float = 1e-4, max_iter: int | None = None) -> torch.Tensor:
    """Linear imputation of the ``removed`` pixels ``(M, H, W)`` (bool) of images ``x`` ``(M, C, H, W)``.

    Every removed pixel equals the weighted mean of its in-image neighbours (Rong et al.'s
    ``NoisyLinearImputer`` without its noise); kept pixels are unchanged. Solved by conjugate gradients to a
    relative residual ``tol`` for all rows and channels at once, started from the solution at half the
    resolution (images of 32 pixels and more). The default ``1e-4`` leaves errors of about 2e-3 on a 224²
    photo with a large hole, below ROAD's noise of 0.01. Where every pixel is removed, the system
    is singular and the image's mean fills it.
    """
    m, c, h, w = x.shape
    dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    hole = removed[:, None].expand(m, c, h, w).reshape(m * c, 1, h, w).to(dtype)
    known = 1 - hole
    v = x.reshape(m * c, 1, h, w).to(dtype)
    # degree: the weights of the in-image neighbours (1 inside, less on the border)
    degree = _neighbours(torch.ones(1, 1, h, w, device=x.device, dtype=dtype))

    def apply(u):  # the system matrix on the unknowns: degree * u - (weights of removed neighbours) * u
        return hole * (degree * u - _neighbours(hole * u))

    b = hole * _neighbours(known * v)
    # start from the solution at half the resolution, upsampled (cascadic conjugate gradients: the low
    # frequencies, which conjugate gradients are slowest to find, come from the smaller problem); where
    # nothing is kept, the image's mean (the singular system's constant solution)
    count = known.flatten(1).sum(1)
    mean = torch.where(count > 0, (known * v).flatten(1).sum(1) / count.clamp_min(1), v.flatten(1).mean(1))
    mean = mean.reshape(-1, 1, 1, 1)
    if min(h, w) >= 32:
        share = F.avg_pool2d(known, 2, ceil_mode=True)
        coarse = F.avg_pool2d(known * v, 2, ceil_mode=True) / share.clamp_min(1e-6)
        rough = impute(coarse.reshape(m, c, *coarse.shape[-2:]), (share <= 0).reshape(m, c, *share.shape[-2:])[:, 0],
                       tol=tol, max_iter=max_iter)
        start = F.interpolate(rough.reshape(m * c, 1, *rough.shape[-2:]).to(dtype), size=(h, w), mode="bilinear")
    else:
        start = mean.expand_as(v)
    u = hole * torch.where(count.reshape(-1, 1, 1, 1) > 0, start, mean)
    r = b - apply(u)
    z = r / degree
    p = z
    rz = (r * z).flatten(1).sum(1)
    limit = tol * b.flatten(1).norm(dim=1).clamp_min(1e-12)
    solve = count > 0  # rows with nothing kept are solved by the constant start
    for _ in range(max_iter or 20 * (h + w)):
        active = solve & (r.flatten(1).norm(dim=1) > limit)  # a converged row stops: its result does not
        if not active.any():                                  # depend on the rows it shares a chunk with
            break
        ap = apply(p)
        pap = (p * ap).flatten(1).sum(1)
        alpha = torch.where(active & (pap > 0), rz / pap.clamp_min(1e-30), torch.zeros_like(pap))
        alpha = alpha.reshape(-1, 1, 1, 1)
        u = u + alpha * p
        r = r - alpha * ap
        z = r / degree
        rz_new = (r * z).flatten(1).sum(1)
        beta = torch.where(rz > 0, rz_new / rz.clamp_min(1e-30), torch.zeros_like(rz)).reshape(-1, 1, 1, 1)
        p = torch.where(active.reshape(-1, 1, 1, 1), z + beta * p, p)
        rz = rz_new
    out = known * v + hole * u
    return out.reshape(m, c, h, w).to(x.dtype)


def _fractions(fractions) -> torch.Tensor:
    try:
        f = torch.as_tensor(fractions, dtype=torch.float64).flatten()
    except (TypeError, ValueError, RuntimeError) as e:
        raise PellucidError(f"fractions must be numbers in [0, 1], got {fractions!r}") from e
    if f.numel() < 1 or not ((f >= 0) & (f <= 1)).all():
        raise PellucidError(f"fractions must be one or more numbers in [0, 1], got {fractions!r}")
    if (f[1:] <= f[:-1]).any():
        raise PellucidError(f"fractions must increase, got {fractions!r}")
    return f


@checked_keywords
def road(model: nn.Module, x: torch.Tensor, target, attribution: torch.Tensor | str | MapMethod,
         fractions: Sequence[float] = FRACTIONS, order: str = "most", *, noise: float = 0.01,
         score: str = "softmax", seed: int | torch.Generator = 0, batch_size: int | None = None) -> Curve:
    """ROAD curve (Rong et al. 2022): the score after removing each fraction of pixels, filled by noisy
    linear imputation, in the map's order (``order="most"``: most relevant first, MoRF, lower AUC is
    better; ``"least"``: least relevant first, LeRF, higher AUC is better).

    A removed pixel becomes the weighted mean of its neighbours (see :func:`impute`) plus Gaussian noise
    of std ``noise`` (pixel units), clipped to [0, 1]; the noise comes from ``seed``. ``attribution`` is a
    map ``(N, H, W)`` / ``(N, C, H, W)`` (channels summed) or a method; pixels (all channels) are ranked
    as in :func:`deletion`, ``round(f·H·W)`` removed at fraction ``f``. Returns a :class:`Curve` with
    ``scores (N, F)`` and ``auc`` the trapezoid over ``fractions`` (0 to 0.9 by default). The (image,
    fraction) rows run in chunks of ``batch_size``, imputation and forward together.

    How it differs from the references, which implement the same imputation:

    - pytorch-grad-cam ``ROADMostRelevantFirst(percentile=p)`` removes the pixels at or above the ``p``-th
      percentile of the map, i.e. the top ``100-p`` percent (so its ``percentile=80`` is ``fractions=[0.2]``
      here), imputes in the model's (normalized) input space with noise 0.01 there, gives one point per
      call and, by default, the score minus the original score; ``ROADCombined`` averages MoRF and LeRF.
    - Quantus ``ROAD`` removes ``int(H·W·p/100)`` of the top entries of the map broadcast over the channels
      (per channel entry, not per pixel, for RGB), at 1%, 3%, ..., 99% by default, and reports accuracy
      (argmax = label) per percentage rather than a score.
    - Both solve one sparse system per image and fraction with SciPy on the CPU and run one forward per
      fraction; here all rows of a chunk are solved together on the input's device. The noise draws differ,
      so curves agree in shape, not bit for bit (``tests/test_road.py``: rank correlation of the curves,
      and the imputation itself within 1e-4 of pytorch-grad-cam's with the noise off).

    Example: ``pl.road(model, x, y, pl.saliency(model, x, y)).auc``.
    """
    check_choice(order, "order", ("most", "least"))
    x, t, bs = prepare(model, x, target, batch_size, score)
    noise = check_number(noise, "noise", 0, hint=" (pixel units)")
    seed = base_seed(seed)
    f = _fractions(fractions)
    maps = map_of(model, x, target, attribution)
    n, c, h, w = x.shape
    ranks = _ranks(maps if order == "most" else -maps)
    counts = (f * h * w).round().long().to(x.device)
    steps = len(f)
    tr = t.repeat_interleave(steps)
    scores = torch.empty(n * steps, device=x.device)
    with model_state(model):
        for rows in chunks(n * steps, bs):
            idx = torch.arange(rows.start, rows.stop, device=x.device)
            i, k = idx // steps, idx % steps
            removed = (ranks[i] < counts[k, None]).reshape(-1, h, w)
            filled = impute(x[i], removed)
            if noise > 0:
                filled = filled + noise * removed[:, None] * row_noise(seed, rows, x.shape[1:], x)
            filled = torch.where(removed[:, None], filled.clamp(0, 1), x[i])
            with torch.no_grad():
                scores[rows] = tr(model(filled), rows).float()
    scores = scores.reshape(n, steps)
    fr = f.to(x.device, torch.float32)
    auc = torch.trapezoid(scores, fr, dim=1) if steps > 1 else scores[:, 0]
    return Curve(fr, scores, auc, "ROAD")
