"""Attribution maps as the metrics take them: a method by name or callable, an ``(N, H, W)`` map from an
``(N, H, W)`` or ``(N, C, H, W)`` attribution, and the seeded random map every method must beat."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable

import torch

from .._checks import PellucidError, generator
from ..registry import methods as registered_methods

MapMethod = Callable[..., torch.Tensor]
"""A map-making callable ``(model, x, target) -> map`` (a registry record is one; not the ``Method`` record)."""


# ---------------------------------------------------------------------------------------------
# attribution methods by name or callable

def resolve_method(method: str | MapMethod) -> tuple[str, MapMethod]:
    """``(name, fn)`` for a method name or a callable ``(model, x, target) -> (N, H, W) or (N, C, H, W)``."""
    if isinstance(method, str):
        table = registered_methods()
        if method not in table:
            raise PellucidError(f"unknown attribution method {method!r}; choose one of: {', '.join(table)}, "
                                "or pass a callable (model, x, target) -> map")
        return method, table[method]
    if callable(method):
        return getattr(method, "__name__", type(method).__name__), method
    raise PellucidError(f"method must be a name or a callable (model, x, target) -> map, got {type(method).__name__}")


def as_map(attribution: torch.Tensor, x: torch.Tensor, name: str = "attribution") -> torch.Tensor:
    """An ``(N, H, W)`` map from an ``(N, H, W)`` or ``(N, C, H, W)`` attribution (summed over channels)."""
    if not isinstance(attribution, torch.Tensor):
        raise PellucidError(f"{name} must be a tensor (N, H, W) or (N, C, H, W), got {type(attribution).__name__}")
    n, c, h, w = x.shape
    a = attribution.detach()
    if a.dim() == 4 and a.shape[0] == n and a.shape[1] in (1, c) and a.shape[2:] == (h, w):
        a = a.sum(1)
    if a.shape != (n, h, w):
        raise PellucidError(f"{name} has shape {tuple(attribution.shape)} but the images are {tuple(x.shape)}; "
                            f"expected ({n}, {h}, {w}) or ({n}, {c}, {h}, {w})")
    if not a.is_floating_point():
        a = a.float()
    if not torch.isfinite(a).all():
        raise PellucidError(f"{name} contains NaN or infinite values")
    return a.to(x.device)


def map_of(model, x, target, attribution) -> torch.Tensor:
    """The ``(N, H, W)`` map of ``attribution``: a tensor, or a method name / callable computed here."""
    if isinstance(attribution, str) or (callable(attribution) and not isinstance(attribution, torch.Tensor)):
        _, fn = resolve_method(attribution)
        attribution = fn(model, x, target)
    return as_map(attribution, x)


def random_attribution(x: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """A uniformly random ``(N, H, W)`` map: the baseline every method must beat. Seeded, no global RNG."""
    gen = generator(seed, x.device)
    return torch.rand(x.shape[0], *x.shape[2:], generator=gen, device=x.device)


def accepts(fn: Callable, keyword: str) -> bool:
    """Whether ``fn`` takes ``keyword`` (by name or through ``**kwargs``)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == keyword or p.kind is p.VAR_KEYWORD for p in params)


def is_seeded(name: str, fn) -> bool:
    """Whether the method draws random numbers from a ``seed`` argument."""
    if isinstance(fn, functools.partial):
        if "seed" in fn.keywords:
            return True
        fn = fn.func
    record = registered_methods().get(name)
    if record is not None and record.fn is fn:  # the record says (its signature may list a seed it rarely uses)
        return record.seeded
    if getattr(fn, "seeded", False):
        return True
    try:
        return "seed" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
