"""SHAP estimators: GradientSHAP (expected gradients) and KernelSHAP over superpixels.

- :func:`gradient_shap` (Lundberg & Lee 2017; Erion et al. 2021): the gradient at a random point between
  a random baseline and the (optionally noisy) image, times their difference, averaged over samples. The
  samples of all images are stacked on the batch axis and run ``batch_size`` at a time.
- :func:`kernel_shap` (Lundberg & Lee 2017): the Shapley values of superpixels, from a weighted least-squares
  fit on coalitions sampled as the ``shap`` library does (whole coalition sizes enumerated while the budget
  allows, the rest drawn by the Shapley kernel, each with its complement), solved with the efficiency
  constraint eliminated, so the values sum to ``f(x) - f(all removed)`` exactly and an additive model gets
  its exact Shapley values.
"""

from __future__ import annotations

import itertools
import math
from typing import NamedTuple

import torch
from torch import nn

from .._args import prepare
from .._checks import check_number, check_positive_int, checked_keywords, forwards, generator
from .._grad import iter_gradients, perturbation_scores, row_index
from .._state import model_state
from ..registry import Method, register_method
from .perturbation import segmented
from .reference import as_baselines

# ---------------------------------------------------------------------------------------------
# GradientSHAP

@checked_keywords
def gradient_shap(model: nn.Module, x: torch.Tensor, target, baselines, samples: int = 50, stdevs: float = 0.0,
                  seed=0, *, score: str = "logit", batch_size: int | None = None) -> torch.Tensor:
    """GradientSHAP, i.e. expected gradients (Lundberg & Lee 2017; Erion et al. 2021), ``(N, C, H, W)``.

    Each of ``samples`` draws per image takes a random baseline from ``baselines`` (``(B, C, H, W)``, a number,
    or ``"noise"``: 16 uniform-noise images), adds Gaussian noise of std ``stdevs`` to the image (clipped to
    [0, 1]), and takes ``gradient * (image - baseline)`` at a uniform random point between the two; the map is
    the mean. It sums to ``f(x) - E[f(b)]`` up to sampling error. Randomness comes from ``seed`` (an int or a
    ``torch.Generator``) only; the ``N * samples`` rows run ``batch_size`` at a time.
    Example: ``attr = pl.gradient_shap(model, x, 3, background, samples=50)``.
    """
    x, t, bs = prepare(model, x, target, batch_size, score)
    check_positive_int(samples, "samples")
    stdevs = check_number(stdevs, "stdevs", 0, hint=" (noise std in pixel units)")
    gen = generator(seed, x.device)
    refs = as_baselines(baselines, x, seed if isinstance(seed, int) else 0)
    total = len(x) * samples
    which = torch.randint(0, len(refs), (total,), generator=gen, device=x.device)
    alphas = torch.rand(total, generator=gen, device=x.device, dtype=x.dtype)
    shape = (-1,) + (1,) * (x.dim() - 1)
    current: dict = {}

    def make(rows):
        i, _ = row_index(rows, samples, x.device)
        xs = x[i]
        if stdevs > 0:
            noise = torch.randn(xs.shape, generator=gen, device=x.device, dtype=x.dtype)
            xs = (xs + stdevs * noise).clamp(0, 1)
        b = refs[which[rows]]
        current["delta"] = delta = xs - b
        return b + alphas[rows].reshape(shape) * delta

    attr = torch.zeros_like(x)
    with model_state(model):
        for rows, grad, _ in iter_gradients(model, make, total, t.repeat_interleave(samples), bs):
            attr.index_add_(0, row_index(rows, samples, x.device)[0], grad * current["delta"])
    return attr / samples


# ---------------------------------------------------------------------------------------------
# KernelSHAP

class ShapResult(NamedTuple):
    """``map (N, H, W)`` (each pixel its superpixel's value), ``segments (N, H, W)`` (labels 0..F-1),
    ``values`` (list of ``(F,)`` Shapley values per image), ``base (N,)`` = f(all removed), ``score (N,)`` = f(x)."""

    map: torch.Tensor
    segments: torch.Tensor
    values: list
    base: torch.Tensor
    score: torch.Tensor


def shapley_kernel(features: int, size) -> torch.Tensor:
    """The Shapley kernel weight of a coalition of ``size`` out of ``features``: ``(M-1) / (C(M, s) s (M-s))``."""
    m = features
    s = torch.as_tensor(size, dtype=torch.float64)
    log_comb = torch.lgamma(torch.tensor(m + 1.0, dtype=torch.float64)) - torch.lgamma(s + 1) - torch.lgamma(m - s + 1)
    return (m - 1) / (torch.exp(log_comb) * s * (m - s))


def coalitions(features: int, samples: int, generator: torch.Generator,
               device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Coalition masks ``(K, M)`` (1 = kept) and their weights ``(K,)``, sampled as ``shap.KernelExplainer``.

    Coalition sizes ``s`` and ``M - s`` share the Shapley kernel's mass ``(M-1) / (s (M-s))``. Sizes from the
    outside in are enumerated whole (each coalition with its exact kernel weight) while the budget covers them;
    the remaining budget draws a size by the remaining mass, a uniform coalition of that size and its
    complement, and shares the remaining mass equally. Identical draws are merged. ``K <= samples``.
    """
    m = features
    if m < 2:
        return torch.ones(1, m, device=device), torch.ones(1, dtype=torch.float64, device=device)
    n_sizes, n_paired = math.ceil((m - 1) / 2), math.floor((m - 1) / 2)
    mass = torch.tensor([(m - 1) / (s * (m - s)) for s in range(1, n_sizes + 1)], dtype=torch.float64)
    mass[:n_paired] *= 2
    mass /= mass.sum()
    left, remaining, full = samples, mass.clone(), 0
    rows, weights = [], []
    for s in range(1, n_sizes + 1):
        paired = s <= n_paired
        count = math.comb(m, s) * (2 if paired else 1)
        if left * float(remaining[s - 1]) / count < 1 - 1e-8:
            break
        full, left = full + 1, left - count
        if float(remaining[s - 1]) < 1:
            remaining /= 1 - remaining[s - 1]
        w = float(mass[s - 1]) / count
        for combo in itertools.combinations(range(m), s):
            z = torch.zeros(m, dtype=torch.float64)
            z[list(combo)] = 1
            rows.append(z)
            weights.append(w)
            if paired:
                rows.append(1 - z)
                weights.append(w)
    z_full = torch.stack(rows) if rows else torch.zeros(0, m, dtype=torch.float64)
    w_full = torch.tensor(weights, dtype=torch.float64)
    if full < n_sizes and left > 0:
        rest = mass[full:].clone()
        rest[: max(0, n_paired - full)] /= 2  # a draw of a paired size brings its complement
        rest /= rest.sum()
        draws = max(1, left // 2)
        sizes = torch.multinomial(rest, draws, replacement=True, generator=_cpu(generator)) + full + 1
        ranks = torch.rand(draws, m, generator=_cpu(generator), dtype=torch.float64).argsort(1).argsort(1)
        z = (ranks < sizes[:, None]).double()
        z = torch.cat([z, 1 - z[sizes <= n_paired]])[:left]
        z, counts = torch.unique(z, dim=0, return_counts=True)
        w = counts.double()
        w *= float(mass[full:].sum()) / w.sum()
        z_full, w_full = torch.cat([z_full, z]), torch.cat([w_full, w])
    return z_full.float().to(device), w_full.to(device)


_CPU_GENERATORS: dict = {}


def _cpu(generator: torch.Generator) -> torch.Generator:
    """Coalitions are drawn on the CPU: a CPU generator seeded from ``generator``'s stream when it is not one."""
    if generator.device.type == "cpu":
        return generator
    seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device))
    return torch.Generator().manual_seed(seed)


def shapley_solve(z: torch.Tensor, y: torch.Tensor, weights: torch.Tensor, base: float, full: float) -> torch.Tensor:
    """The KernelSHAP values ``(M,)``: weighted least squares of ``y - base`` on coalitions ``z``, subject to
    ``sum(values) = full - base`` (eliminated exactly: the last value is the rest). Float64 on the CPU."""
    z, y, w = z.double().cpu(), y.double().cpu(), weights.double().cpu()
    total = full - base
    m = z.shape[1]
    if m == 1:
        return torch.tensor([total], dtype=torch.float64)
    a = (z[:, :-1] - z[:, -1:]) * w.sqrt()[:, None]
    b = (y - base - z[:, -1] * total) * w.sqrt()
    head = torch.linalg.lstsq(a, b[:, None], driver="gelsd").solution[:, 0]
    return torch.cat([head, (total - head.sum())[None]])


@checked_keywords
def kernel_shap(model: nn.Module, x: torch.Tensor, target, samples: int = 1000, segments: int = 100, seed=0, *,
                segmentation: torch.Tensor | None = None, fill=0.0, score: str = "logit",
                batch_size: int | None = None, return_details: bool = False):
    """KernelSHAP (Lundberg & Lee 2017) over superpixels: each SLIC segment's Shapley value, ``(N, H, W)``.

    A coalition keeps some segments and sets the rest to ``fill`` (a number, a tensor or ``"mean"``, each
    segment's mean colour). ``samples`` coalitions per image are drawn as ``shap.KernelExplainer`` draws them
    (:func:`coalitions`, seeded by ``seed``), scored ``batch_size`` at a time, and fitted by weighted least
    squares with the efficiency constraint solved exactly: the values sum to ``f(x) - f(all removed)``, and
    they are exact for a model additive in the segments. Each pixel of the map shows its segment's value;
    ``return_details=True`` gives a :class:`ShapResult`. Example: ``m = pl.kernel_shap(model, x, 3, seed=0)``.
    """
    x, t, bs = prepare(model, x, target, batch_size, score)
    check_positive_int(samples, "samples", 2)
    gen = generator(seed, x.device)
    maps, values, bases, scores, labels = [], [], [], [], []
    with model_state(model):
        for i, part in enumerate(segmented(x, segments, segmentation, fill)):
            z, w = coalitions(part.nseg, samples, gen, x.device)
            ends = torch.stack([torch.ones(part.nseg, device=x.device), torch.zeros(part.nseg, device=x.device)])
            z = torch.cat([ends, z])
            y = perturbation_scores(model, part.rows(z), len(z), t.select([i]).repeat(len(z)), bs)
            full, base = float(y[0]), float(y[1])
            phi = shapley_solve(z[2:], y[2:], w, base, full).to(x)
            maps.append(phi[part.seg])
            values.append(phi)
            bases.append(base)
            scores.append(full)
            labels.append(part.seg)
    result = ShapResult(torch.stack(maps), torch.stack(labels), values, torch.tensor(bases, device=x.device),
                        torch.tensor(scores, device=x.device))
    return result if return_details else result.map


# ---------------------------------------------------------------------------------------------
# records

@forwards(gradient_shap)
def _gradient_shap_map(model, x, target, baselines="noise", **kw):
    """GradientSHAP over 16 uniform-noise baselines, summed over channels."""
    return gradient_shap(model, x, target, baselines, **kw).sum(1)


def _large(x: torch.Tensor, quick: bool) -> bool:
    return quick and max(x.shape[-2:]) > 64


register_method(Method(
    "gradient_shap", "GradientSHAP", _gradient_shap_map, seeded=True, cost="moderate", sanity="small", signed=True,
    grid=False, options=lambda x, seed, quick: {"samples": 16 if _large(x, quick) else 50},
    report={"samples": 16}, summary="expected gradients from 16 noise baselines, summed over channels"))
register_method(Method(
    "kernel_shap", "KernelSHAP", kernel_shap, seeded=True, cost="expensive", sanity="never", signed=True, grid=False,
    options=lambda x, seed, quick: {"samples": 300 if _large(x, quick) else 1000},
    report={"samples": 300}, summary="Shapley values of SLIC superpixels (sum to f(x) - f(black))"))
