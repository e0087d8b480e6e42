"""LIME's machinery, shared by image and text: random keep/remove masks, the cosine kernel and a
closed-form weighted ridge fit (the local linear surrogate)."""

from __future__ import annotations

import torch


def random_masks(samples: int, features: int, generator: torch.Generator, device=None) -> torch.Tensor:
    """LIME's perturbations: ``(samples, features)`` random 0/1 (keep/remove); row 0 keeps everything."""
    z = torch.randint(0, 2, (samples, features), generator=generator, device=device).float()
    z[0] = 1
    return z


def fit_surrogate(z: torch.Tensor, scores: torch.Tensor, kernel_width: float = 0.25,
                  alpha: float = 1.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """LIME's local linear model: ridge of ``scores`` on masks ``z`` weighted by the cosine kernel.

    Returns ``(weights (F,), intercept, R^2)`` as lime_base does (Ridge ``alpha=1``, kernel width 0.25).
    """
    return weighted_ridge(z, scores, lime_kernel(z, kernel_width), alpha)




def weighted_ridge(z: torch.Tensor, y: torch.Tensor, weights: torch.Tensor,
                   alpha: float = 1.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Closed-form weighted ridge regression with an unpenalized intercept (sklearn's ``Ridge``).

    ``z`` is ``(S, F)`` features, ``y`` ``(S,)`` targets, ``weights`` ``(S,)`` sample weights.
    Returns ``(coef (F,), intercept (), weighted R^2 ())``: LIME's surrogate fit, done on the device.
    """
    z, y, w = z.double(), y.double(), weights.double()
    zm, ym = (w @ z) / w.sum(), (w @ y) / w.sum()
    zc, yc = z - zm, y - ym
    gram = zc.T @ (w[:, None] * zc)
    rhs = zc.T @ (w * yc)
    coef = torch.linalg.solve(gram + alpha * torch.eye(z.shape[1], dtype=z.dtype, device=z.device), rhs)
    intercept = ym - zm @ coef
    resid = y - (z @ coef + intercept)
    r2 = 1 - (w @ resid**2) / (w @ yc**2).clamp_min(1e-300)
    return coef.float(), intercept.float(), r2.float()


def lime_kernel(z: torch.Tensor, kernel_width: float = 0.25) -> torch.Tensor:
    """lime_image's weights: ``sqrt(exp(-d^2 / width^2))`` of the cosine distance to the all-ones sample."""
    ones = torch.ones(z.shape[1], dtype=torch.float64, device=z.device)
    zz = z.double()
    cos = (zz @ ones) / (zz.norm(dim=1) * ones.norm()).clamp_min(1e-12)
    d = 1 - cos
    return torch.sqrt(torch.exp(-((d / kernel_width) ** 2))).float()  # d / w first: a tiny width does not give 0 / 0
