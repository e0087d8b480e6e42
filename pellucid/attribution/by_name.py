"""Methods by name: one map per registered method (the grid of ``pellucid explain`` and the report)."""

from __future__ import annotations

import torch
from torch import nn

from .._checks import PellucidError, checked_keywords
from .._progress import bar
from ..registry import grid_methods, method, methods


def attribution_map(name: str, model: nn.Module, x: torch.Tensor, target, **kwargs) -> torch.Tensor:
    """The ``(N, H, W)`` map of the registered method called ``name``.

    Example: ``pl.attribution_map("ig", model, x, 3, steps=32)``.
    """
    return method(name)(model, x, target, **kwargs)


def _names(value) -> list[str]:
    """Method names from a sequence, a comma-separated string or ``None`` (the default grid)."""
    if value is None:
        return list(grid_methods())
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    names = list(value)
    table = methods()
    unknown = [m for m in names if m not in table]
    if unknown or not names:
        shown = ", ".join(map(repr, unknown)) or "(none)"
        raise PellucidError(f"unknown attribution method {shown}; choose from: {', '.join(table)}")
    return names


@checked_keywords
def explain(model: nn.Module, x: torch.Tensor, target, methods=None, *, seed: int = 0,
            batch_size: int | None = None, quick: bool = False, progress: bool = False,
            options: dict[str, dict] | None = None) -> dict[str, torch.Tensor]:
    """``{name: (N, H, W) map}`` for each method name (default: the registered grid methods).

    ``methods`` is a list of names or one comma-separated string (``"saliency,ig"``). Each method runs
    with the defaults its record gives for these images (``quick`` cuts samples on large images), updated
    by ``options[name]`` (``{"lrp": {"composite": "epsilon_gamma_box"}}``).
    """
    names = _names(methods)
    options = options or {}
    unused = [m for m in options if m not in names]
    if unused:
        raise PellucidError(f"options given for {', '.join(map(repr, unused))}, which is not among the methods run "
                            f"({', '.join(names)})")
    maps = {}
    with bar(len(names), "explaining", progress) as b:
        for name in names:
            b.set_postfix_str(name)
            record = method(name)
            kw = {**record.defaults(x, seed, quick), **options.get(name, {})}
            maps[name] = record(model, x, target, batch_size=batch_size, **kw)
            b.update()
    return maps
