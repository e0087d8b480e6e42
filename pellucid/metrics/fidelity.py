"""Infidelity and max-sensitivity (Yeh et al. 2019, "On the (In)fidelity and Sensitivity of Explanations").

- Infidelity: how well ``perturbation · attribution`` predicts the score drop the perturbation causes,
  ``E_I[(I·Φ(x) - (f(x) - f(x - I)))²]`` with Gaussian ``I``. Zero for the gradient of a linear model.
- Max-sensitivity: the largest relative change of the map under uniform noise of a small L∞ radius,
  ``max_δ ||Φ(x + δ) - Φ(x)|| / ||Φ(x)||``. Zero for any map that does not depend on ``x`` locally.

Perturbed images are stacked on the batch axis and run in chunks of ``batch_size``; the noise of each
perturbed copy comes from ``(seed, copy)`` only, so results do not depend on ``batch_size``.
"""

from __future__ import annotations

import torch
from torch import nn

from .._args import prepare
from .._checks import PellucidError, check_number, check_positive_int, checked_keywords
from .._grad import chunks, iter_logits
from .._state import model_state
from ..targets import Target
from ._maps import MapMethod, as_map, is_seeded, resolve_method
from ._random import base_seed, row_noise


def _scores(model: nn.Module, x: torch.Tensor, target: Target, batch_size: int) -> torch.Tensor:
    with model_state(model):
        return torch.cat([target(logits, rows).float() for rows, logits in iter_logits(model, x, len(x), batch_size)])


def _attribution(model, x, target, attribution) -> torch.Tensor:
    """``(N, C, H, W)`` attribution as given, or an ``(N, H, W)`` map as ``(N, 1, H, W)`` (shared by channels)."""
    if isinstance(attribution, str) or (callable(attribution) and not isinstance(attribution, torch.Tensor)):
        _, fn = resolve_method(attribution)
        attribution = fn(model, x, target)
    if isinstance(attribution, torch.Tensor) and attribution.shape == x.shape:
        a = attribution.detach().to(x.device, x.dtype)
        if not torch.isfinite(a).all():
            raise PellucidError("attribution contains NaN or infinite values")
        return a
    return as_map(attribution, x).to(x.dtype)[:, None]


@checked_keywords
def infidelity(model: nn.Module, x: torch.Tensor, target, attribution, noise: float = 0.1, samples: int = 64,
               seed: int | torch.Generator = 0, *, normalize: bool = True, score: str = "logit",
               batch_size: int | None = None) -> torch.Tensor:
    """Infidelity (Yeh et al. 2019) of an attribution, ``(N,)``; lower is more faithful.

    For each image, ``samples`` perturbations ``I ~ N(0, noise²)`` per pixel and channel are drawn and
    ``(β · Σ I·Φ - (f(x) - f(x - I)))²`` is averaged, ``f`` the target's score (``score``, the logit by
    default). ``attribution`` is ``(N, C, H, W)`` (one value per input element), ``(N, H, W)`` (shared by
    the channels, so ``I·Φ`` sums the channels' perturbations), or a method name / callable computed here.

    Normalization: with ``normalize=True`` (default) ``β`` is the least-squares scale
    ``Σ(I·Φ)(Δf) / Σ(I·Φ)²`` per image, exactly Captum's ``infidelity(..., normalize=True)``, so maps
    of different units (|gradient|, occlusion drops, LIME weights) are compared fairly; with
    ``normalize=False``, ``β = 1`` (Yeh et al.'s definition as written, Captum's default). The perturbed
    images ``x - I`` are not clipped to [0, 1] (the definition's Gaussian, as Captum). With the same noise
    the result equals Captum's (``tests/test_fidelity.py``). Example::

        pl.infidelity(model, x, y, pl.saliency(model, x, y), noise=0.1, samples=64)
    """
    x, t, bs = prepare(model, x, target, batch_size, score)
    noise = check_number(noise, "noise", 0, low_open=True)
    samples = check_positive_int(samples, "samples")
    if not isinstance(normalize, bool):
        raise PellucidError(f"normalize must be True or False, got {normalize!r}")
    seed = base_seed(seed)
    a = _attribution(model, x, target, attribution)
    n = len(x)
    f0 = _scores(model, x, t, bs)
    tr = t.repeat_interleave(samples)
    sums = torch.zeros(4, n, dtype=torch.float64, device=x.device)  # Σa², Σab, Σb², Σ(a-b)²
    with model_state(model):
        for rows in chunks(n * samples, bs):
            i = torch.arange(rows.start, rows.stop, device=x.device) // samples
            pert = noise * row_noise(seed, rows, x.shape[1:], x)
            with torch.no_grad():
                fx = tr(model(x[i] - pert), rows).float()
            ai = (pert * a[i]).flatten(1).sum(1).double()
            bi = (f0[i] - fx).double()
            for j, v in enumerate((ai * ai, ai * bi, bi * bi, (ai - bi) ** 2)):
                sums[j].index_add_(0, i, v)
    aa, ab, bb, sq = sums
    if normalize:
        beta = torch.where(aa > 0, ab / aa.clamp_min(1e-300), torch.zeros_like(aa))
        value = beta * beta * aa - 2 * beta * ab + bb
    else:
        value = sq
    return (value / samples).clamp_min(0).float()


@checked_keywords
def sensitivity(model: nn.Module, x: torch.Tensor, target, method: str | MapMethod = "saliency",
                radius: float = 0.02, samples: int = 10, seed: int | torch.Generator = 0, *,
                options: dict | None = None, batch_size: int | None = None) -> torch.Tensor:
    """Max-sensitivity (Yeh et al. 2019) of a method, ``(N,)``: ``max ||Φ(x + δ) - Φ(x)|| / ||Φ(x)||``.

    ``δ`` is uniform in ``[-radius, radius]`` per pixel and channel (the L∞ ball), ``samples`` draws per
    image; ``Φ`` is ``method``'s output (a name or a callable ``(model, x, target, **options)``), compared
    as a whole with the Frobenius norm. Lower is more stable. As Captum's ``sensitivity_max`` (same
    noise, norm and division by ``||Φ(x)||``; an all-zero ``Φ(x)`` is not divided), except that the noisy
    images are clipped to [0, 1] (pellucid's pixel space), which only shrinks ``δ`` at the range's edges.

    The noisy copies of the batch are stacked on the batch axis, about ``batch_size`` images per call of
    ``method``. A seeded method (SmoothGrad, LIME, KernelSHAP: a registered seeded name, or a callable
    with a ``seed`` parameter) instead runs once per copy, on a batch shaped like ``x`` and with the same
    seed, so it draws the same noise for ``x`` and every copy (common random numbers): the result is the
    sensitivity of the smoothed map, not the method's own sampling noise (Yeh et al.'s finding that
    smoothing lowers sensitivity needs this). Example::

        pl.sensitivity(model, x, y, "smoothgrad", radius=0.02, samples=10, options={"samples": 20})
    """
    x, t, bs = prepare(model, x, target, batch_size)
    radius = check_number(radius, "radius", 0, low_open=True)
    samples = check_positive_int(samples, "samples")
    seed = base_seed(seed)
    name, fn = resolve_method(method)
    kwargs = dict(options or {})
    common = is_seeded(name, fn) or "seed" in kwargs

    def run(images: torch.Tensor, tt: Target) -> torch.Tensor:
        out = fn(model, images, tt, **kwargs)
        if not isinstance(out, torch.Tensor) or out.shape[0] != len(images):
            raise PellucidError(f"{name} must return a tensor with one map per image, got "
                                f"{getattr(out, 'shape', type(out).__name__)}")
        return out.detach().flatten(1).double()

    n = len(x)
    base = run(x, t)
    scale = base.norm(dim=1)
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    worst = torch.zeros(n, dtype=torch.float64, device=x.device)
    group = 1 if common else max(1, min(samples, bs // n))
    done = 0
    while done < samples:
        k = min(group, samples - done)
        rows = slice(done * n, (done + k) * n)  # sample-major: row s * n + i is copy s of image i
        delta = radius * (2 * row_noise(seed, rows, x.shape[1:], x, "uniform") - 1)
        maps = run((x.repeat(k, 1, 1, 1) + delta).clamp(0, 1), t.repeat(k))
        change = (maps - base.repeat(k, 1)).norm(dim=1).reshape(k, n).amax(0)
        worst = torch.maximum(worst, change / scale)
        done += k
    return worst.float()
