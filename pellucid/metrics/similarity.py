"""How alike two attribution maps are: Spearman rank correlation, SSIM and top-k overlap."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def average_ranks(values: torch.Tensor) -> torch.Tensor:
    """Ranks ``0..M-1`` along the last dim, ties sharing their average rank (as ``scipy.stats.rankdata``)."""
    flat = values.reshape(-1, values.shape[-1]).double()
    out = torch.empty_like(flat)
    for r, row in enumerate(flat):
        sorted_vals, order = row.sort(stable=True)
        _, inverse, counts = torch.unique_consecutive(sorted_vals, return_inverse=True, return_counts=True)
        first = counts.cumsum(0) - counts
        out[r, order] = (first + (counts - 1) / 2).to(out.dtype)[inverse]
    return out.reshape(values.shape)


def spearman(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spearman rank correlation of each pair of maps ``(N, ...)``, ``(N,)`` (0 where a map is constant)."""
    ra, rb = average_ranks(a.flatten(1)), average_ranks(b.flatten(1))
    ra, rb = ra - ra.mean(1, keepdim=True), rb - rb.mean(1, keepdim=True)
    denom = (ra.norm(dim=1) * rb.norm(dim=1))
    return torch.where(denom > 0, (ra * rb).sum(1) / denom.clamp_min(1e-300), torch.zeros_like(denom)).float()


def ssim(a: torch.Tensor, b: torch.Tensor, data_range: float = 1.0, win_size: int = 7) -> torch.Tensor:
    """Mean structural similarity of each pair of ``(N, H, W)`` maps, ``(N,)``.

    Wang et al. 2004 with ``skimage.metrics.structural_similarity``'s defaults: a 7x7 uniform window,
    sample covariance, K1=0.01, K2=0.03, averaged over the valid (uncropped) region.
    """
    win = min(win_size, *a.shape[-2:])
    win -= 1 - win % 2
    pair = torch.stack([a, b], 1).double()
    mean = lambda t: F.avg_pool2d(t, win, stride=1)  # noqa: E731
    mu = mean(pair)
    ux, uy = mu[:, 0], mu[:, 1]
    cov = win * win / (win * win - 1)
    vx = cov * (mean(pair[:, :1] ** 2)[:, 0] - ux**2)
    vy = cov * (mean(pair[:, 1:] ** 2)[:, 0] - uy**2)
    vxy = cov * (mean(pair[:, :1] * pair[:, 1:])[:, 0] - ux * uy)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux**2 + uy**2 + c1) * (vx + vy + c2))
    return s.flatten(1).mean(1).float()


def top_count(fraction_or_k: float | int, pixels: int) -> int:
    """``k`` from an int count or a fraction in (0, 1] of ``pixels``, at least 1."""
    from .._checks import PellucidError

    v = fraction_or_k
    if isinstance(v, bool) or not isinstance(v, int | float) or not v > 0 or (isinstance(v, float) and v > 1):
        raise PellucidError(f"top must be a pixel count >= 1 or a fraction in (0, 1], got {v!r}")
    k = v if isinstance(v, int) else round(v * pixels)
    return max(1, min(int(k), pixels))


def topk_overlap(a: torch.Tensor, b: torch.Tensor, top: float | int = 0.1) -> torch.Tensor:
    """Share of ``a``'s ``k`` largest pixels that are also among ``b``'s ``k`` largest, ``(N,)`` in [0, 1].

    ``top`` is ``k`` as a count or as a fraction of the pixels (Ghorbani et al. 2019's top-k intersection;
    ties broken by position, first pixel first)."""
    fa, fb = a.flatten(1), b.flatten(1)
    k = top_count(top, fa.shape[1])
    ia = fa.argsort(dim=1, descending=True, stable=True)[:, :k]
    ib = fb.argsort(dim=1, descending=True, stable=True)[:, :k]
    hit = torch.zeros_like(fa, dtype=torch.bool).scatter_(1, ib, True)
    return hit.gather(1, ia).float().mean(1)
