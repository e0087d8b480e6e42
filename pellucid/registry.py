"""One record per method and per attack: what the CLI, the report, the web page, the batch job and
``compare`` know about them.

A method's module defines its function and registers its record next to it::

    register_method(Method("ig", "Integrated Gradients", _ig_map, options=_ig_options, ...))

Front ends read :func:`methods` and :func:`attacks` only, so adding a method is one function plus
one record; ``tests/test_registry.py`` fails if a front end misses a registered name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property

import torch

from ._checks import PellucidError, keyword_names, option_names, unknown_keyword

COSTS = ("cheap", "moderate", "expensive")
"""Cost classes: ``cheap`` is one or a few gradient passes per image, ``moderate`` tens, ``expensive``
hundreds or more (report and web page run ``expensive`` methods with their ``quick`` options)."""

SANITY = ("always", "small", "never")
"""When the report runs the model-randomization sanity check on a method: on every image size, on small
images only (the check costs one method run per randomized layer), or never (the map does not depend
on the gradients in a way the check can rank, or it is too slow)."""


def _no_options(x: torch.Tensor, seed: int, quick: bool) -> dict:
    return {}


@dataclass(frozen=True)
class Method:
    """An attribution method: ``fn(model, x, target, **options) -> (N, H, W)`` map.

    ``options(x, seed, quick)`` gives the keyword arguments that suit the images (window sizes, seeds,
    and with ``quick=True`` fewer samples for large images); ``report`` the cheaper settings of the
    report's faithfulness table; ``signed`` whether the map has a meaningful sign; ``grid`` whether
    ``pellucid explain`` shows it by default.
    """

    name: str
    title: str
    fn: Callable[..., torch.Tensor]
    seeded: bool = False
    cost: str = "cheap"
    options: Callable[[torch.Tensor, int, bool], dict] = _no_options
    report: dict = field(default_factory=dict)
    sanity: str = "always"
    signed: bool = False
    grid: bool = True
    summary: str = ""

    def __post_init__(self):
        if self.cost not in COSTS or self.sanity not in SANITY:
            raise ValueError(f"method record {self.name!r}: cost must be one of {COSTS}, sanity one of {SANITY}")

    def defaults(self, x: torch.Tensor, seed: int = 0, quick: bool = False) -> dict:
        """Keyword arguments for these images (a seed is included for seeded methods)."""
        kw = dict(self.options(x, seed, quick))
        if self.seeded:
            kw.setdefault("seed", seed)
        return kw

    @cached_property
    def keywords(self) -> tuple[str, ...] | None:
        """The options ``fn`` accepts (its signature's keyword names); ``None`` when it passes any on."""
        return keyword_names(self.fn)

    def __call__(self, model, x, target, **kwargs) -> torch.Tensor:
        """The map; an unknown option is a :class:`PellucidError` naming it and the accepted ones."""
        accepted = self.keywords
        if accepted is not None and kwargs:
            error = unknown_keyword(kwargs, accepted, f"method {self.name!r}", option_names(self.fn))
            if error is not None:
                raise error
        return self.fn(model, x, target, **kwargs)


def default_alpha(eps: float, steps: int) -> float:
    """PGD's step size when none is given: ``2.5 * eps / steps`` (Madry et al. 2018), the one rule."""
    return 2.5 * eps / max(1, steps)


@dataclass(frozen=True)
class Attack:
    """An attack: ``fn(model, x, label, eps, *, targeted, norm, steps, alpha, seed, batch_size, progress)``
    returns adversarial images in [0, 1] within ``eps`` of ``x`` in ``norm``.

    ``iterative`` attacks use ``steps`` (and, with ``alpha``, a step size); ``norms`` are the balls it
    supports.
    """

    name: str
    title: str
    fn: Callable[..., torch.Tensor]
    seeded: bool = False
    iterative: bool = True
    norms: tuple[str, ...] = ("linf", "l2")
    steps: int = 10
    cost: str = "cheap"
    summary: str = ""
    alpha: bool = True

    def run(self, model, x, label, eps: float, *, targeted=False, norm: str = "linf", steps: int | None = None,
            alpha: float | None = None, seed: int = 0, batch_size: int | None = None,
            progress: bool = False) -> torch.Tensor:
        """Run the attack with front-end arguments: ``steps`` defaults to the record's, ``alpha`` to
        :func:`default_alpha` (for attacks that take one); arguments the attack does not use are ignored."""
        if norm not in self.norms:
            raise PellucidError(f"{self.name} supports norm {', '.join(self.norms)}, got {norm!r}")
        kw = {"targeted": targeted, "batch_size": batch_size}
        if self.seeded:
            kw["seed"] = seed
        if self.iterative:
            steps = self.steps if steps is None else steps
            kw.update(steps=steps, progress=progress)
            if self.alpha:
                kw["alpha"] = default_alpha(eps, steps) if alpha is None else alpha
        if len(self.norms) > 1:
            kw["norm"] = norm
        return self.fn(model, x, label, eps, **kw)


# filled by the modules that define the methods, all imported by ``pellucid/__init__.py`` (importing any
# part of pellucid imports the package first, so the tables are complete whenever they are read)
_METHODS: dict[str, Method] = {}
_ATTACKS: dict[str, Attack] = {}


def register_method(record: Method) -> Method:
    if record.name in _METHODS and _METHODS[record.name].fn is not record.fn:
        raise ValueError(f"attribution method {record.name!r} is registered twice")
    _METHODS[record.name] = record
    return record


def register_attack(record: Attack) -> Attack:
    if record.name in _ATTACKS and _ATTACKS[record.name].fn is not record.fn:
        raise ValueError(f"attack {record.name!r} is registered twice")
    _ATTACKS[record.name] = record
    return record


def methods() -> dict[str, Method]:
    """Every registered attribution method, by short name, in registration order."""
    return dict(_METHODS)


def attacks() -> dict[str, Attack]:
    """Every registered attack, by short name."""
    return dict(_ATTACKS)


def method(name: str) -> Method:
    """The record of the method called ``name``; a clear error lists the choices."""
    table = methods()
    if name not in table:
        raise PellucidError(f"unknown attribution method {name!r}; choose one of: {', '.join(table)}")
    return table[name]


def attack(name: str) -> Attack:
    """The record of the attack called ``name``; a clear error lists the choices."""
    table = attacks()
    if name not in table:
        raise PellucidError(f"unknown attack {name!r}; choose one of: {', '.join(table)}")
    return table[name]


def grid_methods() -> tuple[str, ...]:
    """The methods ``pellucid explain`` and the report's grid show by default."""
    return tuple(name for name, m in methods().items() if m.grid)
