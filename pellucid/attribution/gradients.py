"""Gradient methods: the input gradient and what is built from it (saliency, gradient x input,
SmoothGrad, Integrated Gradients, guided backpropagation), each a few lines over ``_grad``."""

from __future__ import annotations

import inspect
from collections.abc import Callable

import torch
from torch import nn

from .._args import prepare
from .._blur import gaussian_blur
from .._checks import (
    PellucidError,
    check_choice,
    check_number,
    check_positive_int,
    checked_keywords,
    fill_like,
    forwards,
    generator,
    keyword_names,
    option_names,
    unknown_keyword,
)
from .._grad import input_gradient, path_integral, perturbation_scores, quadrature
from .._state import model_state
from ..registry import Method, register_method
from .rulemap import apply_rules

LOSSES = {"logit": "logit", "cross_entropy": "log_softmax"}


@checked_keywords
def gradient(model: nn.Module, x: torch.Tensor, target, *, score: str = "logit",
             batch_size: int | None = None) -> torch.Tensor:
    """d score / d x for every image, ``(N, C, H, W)``.

    ``score`` is ``"logit"`` (default, as in the papers), ``"log_softmax"`` (minus the
    cross-entropy loss) or ``"softmax"``. Example: ``g = pl.gradient(model, x, target=3)``.
    """
    x, t, bs = prepare(model, x, target, batch_size, score)
    with model_state(model):
        return input_gradient(model, x, t, bs)[0]


@checked_keywords
def input_x_gradient(model: nn.Module, x: torch.Tensor, target, *, score: str = "logit",
                     batch_size: int | None = None) -> torch.Tensor:
    """Gradient times input (Shrikumar et al. 2016), ``(N, C, H, W)``."""
    return x.detach() * gradient(model, x, target, score=score, batch_size=batch_size)


def normalize_per_image(maps: torch.Tensor) -> torch.Tensor:
    """Min-max scale each map of a batch to [0, 1] (a constant map becomes 0)."""
    flat = maps.flatten(1)
    lo, hi = flat.min(1).values, flat.max(1).values
    span = (hi - lo).clamp_min(torch.finfo(maps.dtype).tiny)
    shape = (-1,) + (1,) * (maps.dim() - 1)
    return (maps - lo.reshape(shape)) / span.reshape(shape)


@checked_keywords
def saliency(model: nn.Module, x: torch.Tensor, target, *, loss: str = "logit", normalize: bool = False,
             batch_size: int | None = None) -> torch.Tensor:
    """Vanilla-gradient saliency (Simonyan et al. 2014): max over channels of |d score / d x|.

    Shape: ``(N, H, W)``. ``loss="cross_entropy", normalize=True`` gives the NTU homework variant:
    the gradient of the cross-entropy loss, min-max normalized per image.
    """
    check_choice(loss, "loss", LOSSES)
    maps = gradient(model, x, target, score=LOSSES[loss], batch_size=batch_size).abs().amax(1)
    return normalize_per_image(maps) if normalize else maps


# ---------------------------------------------------------------------------------------------
# SmoothGrad and Integrated Gradients

def _accepts(fn: Callable, name: str) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def smoothgrad(model: nn.Module, x: torch.Tensor, target, samples: int = 50, sigma: float = 0.15,
               method: Callable = gradient, seed: int = 0, *, batch_size: int | None = None,
               **kwargs) -> torch.Tensor:
    """SmoothGrad (Smilkov et al. 2017): the mean of ``method`` over noisy copies of ``x``.

    Noise is Gaussian with std ``sigma`` times the input range (1 for pixel space [0, 1]); noisy
    images are clipped to [0, 1]. ``method(model, x_noisy, target, **kwargs)`` is any attribution,
    e.g. ``pl.integrated_gradients``. Noise samples are stacked on the batch axis and the noise comes
    from ``seed`` only. Shape: that of ``method``'s output. Example::

        sg = pl.smoothgrad(model, x, 3, samples=50, sigma=0.15, method=pl.integrated_gradients, steps=20)
    """
    x, t, bs = prepare(model, x, target, batch_size)
    check_positive_int(samples, "samples")
    sigma = check_number(sigma, "sigma", 0, hint=" (noise std relative to the input range)")
    if not callable(method):
        raise PellucidError(f"method must be a function (model, x, target, **kw), got {type(method).__name__}")
    theirs = keyword_names(method)  # the extra keywords go to method: unknown ones are named here, before any work
    if theirs is not None and kwargs:
        name, own = getattr(method, "__name__", "method"), option_names(smoothgrad)
        error = unknown_keyword(kwargs, (*theirs, *own), f"smoothgrad (with method {name})",
                                [*own, *(f"{name}'s {k}" for k in option_names(method) if k not in own)])
        if error is not None:
            raise error
    if _accepts(method, "batch_size"):
        kwargs["batch_size"] = bs
    gen = generator(seed, x.device)
    group = max(1, min(samples, bs // len(x)))  # noise samples per call of method
    total, done = None, 0
    while done < samples:
        k = min(group, samples - done)
        xs = x.repeat(k, *([1] * (x.dim() - 1)))
        noise = torch.randn(xs.shape, generator=gen, device=x.device, dtype=x.dtype)
        out = method(model, (xs + sigma * noise).clamp(0, 1), t.repeat(k), **kwargs)
        out = out.reshape(k, len(x), *out.shape[1:]).sum(0)
        total = out if total is None else total + out
        done += k
    return total / samples


def make_baseline(baseline, x: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """The IG reference image for each row of ``x``: a number, a tensor, ``"blur"`` or ``"noise"``.

    A tensor broadcasts to ``x``; one whose batch divides ``x``'s is repeated (as under SmoothGrad).
    ``"blur"`` is ``x`` blurred with sigma = max(H, W) / 8; ``"noise"`` is uniform noise from ``seed``.
    """
    if isinstance(baseline, str):
        check_choice(baseline, "baseline", ("blur", "noise"))
        if baseline == "blur":
            sigma = max(x.shape[-2:]) / 8
            return gaussian_blur(x, sigma, max(1, int(3 * sigma)), mode="replicate")
        gen = generator(seed, x.device)
        return torch.rand(x.shape, generator=gen, device=x.device, dtype=x.dtype)
    if isinstance(baseline, torch.Tensor) and baseline.dim() == x.dim():
        n = len(baseline)
        if n not in (1, len(x)) and len(x) % n == 0:
            baseline = baseline.repeat(len(x) // n, *([1] * (x.dim() - 1)))
    return fill_like(baseline, x, "baseline", ", 'blur' or 'noise'")


@checked_keywords
def integrated_gradients(model: nn.Module, x: torch.Tensor, target, baseline=0.0, steps: int = 50, *,
                         rule: str = "gausslegendre", return_error: bool = False, score: str = "logit",
                         batch_size: int | None = None, seed: int = 0):
    """Integrated Gradients (Sundararajan et al. 2017): ``(x - b) * mean gradient on the path b -> x``.

    The path integral uses ``rule`` (Gauss-Legendre by default, as Captum: completeness error well
    under 1% at 50-128 steps). Shape: ``(N, C, H, W)``. With ``return_error=True`` also returns the
    per-sample relative completeness error ``|sum(attr) - (f(x) - f(b))| / |f(x) - f(b)|``.
    Example: ``attr, err = pl.integrated_gradients(model, x, 3, baseline="blur", return_error=True)``.
    """
    x, t, bs = prepare(model, x, target, batch_size, score)
    b = make_baseline(baseline, x, seed)
    alphas, weights = quadrature(steps, rule, device=x.device)
    with model_state(model):
        attr = (x - b) * path_integral(model, x, b, t, alphas, weights, bs)
        if not return_error:
            return attr
        ends = torch.cat([x, b])
        f = perturbation_scores(model, ends, 2 * len(x), t.repeat(2), bs)
    delta = f[: len(x)] - f[len(x):]
    err = (attr.flatten(1).sum(1) - delta).abs() / delta.abs().clamp_min(1e-6)
    return attr, err


# ---------------------------------------------------------------------------------------------
# guided backpropagation

class _Guided:
    """Guided backpropagation's rule for a ReLU: only positive gradients pass, and only where the ReLU passed its
    input (``0 < out``, and ``out < upper`` for a clipped ReLU like ReLU6)."""

    def __init__(self, upper: float | None):
        self.upper = upper

    def backward(self, module, inp, out, grad):
        out = out.detach()
        passed = (out > 0) if self.upper is None else (out > 0) & (out < self.upper)
        return grad.clamp_min(0) * passed


def _guide(module: nn.Module) -> _Guided | None:
    """The guided rule for ``module``, or None for a module that is not a ReLU."""
    if isinstance(module, nn.ReLU):
        return _Guided(None)
    if isinstance(module, nn.ReLU6):
        return _Guided(6.0)
    if isinstance(module, nn.Hardtanh) and module.min_val == 0:  # ReLU6 is a Hardtanh(0, 6)
        return _Guided(float(module.max_val))
    return None


@checked_keywords
def guided_backprop(model: nn.Module, x: torch.Tensor, target, *, score: str = "logit",
                    batch_size: int | None = None) -> torch.Tensor:
    """Guided backpropagation (Springenberg et al. 2015): only positive gradients pass ReLU modules.

    Shape: ``(N, C, H, W)``. ReLUs are found as ``nn.ReLU`` and ``nn.ReLU6`` modules (a ReLU6 passes
    gradients where ``0 < out < 6``); functional relus are not guided.
    """
    x, t, bs = prepare(model, x, target, batch_size, score)
    with model_state(model) as state:
        apply_rules(state, {m: rule for m in model.modules() if (rule := _guide(m)) is not None})
        return input_gradient(model, x, t, bs)[0]


# ---------------------------------------------------------------------------------------------
# records: (N, H, W) maps for the front ends

@forwards(input_x_gradient)
def _input_x_gradient_map(model, x, target, **kw):
    """Gradient x input, summed over channels (signed)."""
    return input_x_gradient(model, x, target, **kw).sum(1)


@forwards(smoothgrad)
def _smoothgrad_map(model, x, target, **kw):
    """SmoothGrad of the gradient, reduced like saliency: max over channels of |mean gradient|."""
    return smoothgrad(model, x, target, **kw).abs().amax(1)


@forwards(integrated_gradients)
def _ig_map(model, x, target, **kw):
    """Integrated Gradients summed over channels (signed; sums to f(x) - f(baseline))."""
    return integrated_gradients(model, x, target, **kw).sum(1)


def _many_samples(x: torch.Tensor, quick: bool) -> bool:
    return quick and max(x.shape[-2:]) > 64


register_method(Method("saliency", "Saliency", saliency, summary="max over channels of |d score / d x|"))
register_method(Method("input_x_gradient", "Gradient × input", _input_x_gradient_map, signed=True, grid=False,
                       summary="gradient times input, summed over channels"))
register_method(Method(
    "smoothgrad", "SmoothGrad", _smoothgrad_map, seeded=True, cost="moderate", sanity="small",
    options=lambda x, seed, quick: {"samples": 16 if _many_samples(x, quick) else 50},
    report={"samples": 8}, summary="saliency averaged over noisy copies"))
register_method(Method(
    "ig", "Integrated Gradients", _ig_map, cost="moderate", sanity="small", signed=True,
    options=lambda x, seed, quick: {"steps": 32 if _many_samples(x, quick) else 50},
    report={"steps": 16}, summary="gradients along the path from a black image, summed over channels"))
