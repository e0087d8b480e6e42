"""One record per model, per method and per attack: what ``load_model``, the CLI, the report, the web
page, the batch job and ``compare`` know about them.

A method's module defines its function and registers its record next to it::

    register_method(Method("ig", "Integrated Gradients", _ig_map, options=_ig_options, ...))

Front ends read :func:`models`, :func:`methods` and :func:`attacks` only, so adding a method (or a
built-in model) is one function (or loader) plus one record; ``tests/test_registry.py`` and
``tests/test_layout.py`` fail if a front end misses a registered name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from importlib.util import find_spec
from typing import Any

import torch

from ._checks import PellucidError, keyword_names, option_names, unknown_keyword

COSTS = ("cheap", "moderate", "expensive")
MODALITIES = ("image", "text")
MODEL_KINDS = ("cnn", "transformer", "text")
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
    ``pellucid explain`` shows it by default; ``attention`` whether it holds on models with attention (DeepLIFT's
    rescale rule has none for LayerNorm and softmax, so its completeness check fails there): the report leaves
    a method that does not out of a transformer's tables.
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
    modality: str = "image"
    attention: bool = True

    def __post_init__(self):
        if self.cost not in COSTS or self.sanity not in SANITY or self.modality not in MODALITIES:
            raise ValueError(f"method record {self.name!r}: cost must be one of {COSTS}, sanity one of {SANITY}, "
                             f"modality one of {MODALITIES}")

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
_METHODS: dict[str, Method] = {}                      # image methods by name
_OTHER_METHODS: dict[str, dict[str, Method]] = {}     # modality -> name -> record (text)
_ALIASES: dict[tuple[str, str], str] = {}             # (modality, old name) -> name
_ATTACKS: dict[str, Attack] = {}


def _table(modality: str) -> dict[str, Method]:
    return _METHODS if modality == "image" else _OTHER_METHODS.setdefault(modality, {})


def register_method(record: Method, aliases: tuple[str, ...] = ()) -> Method:
    table = _table(record.modality)
    if record.name in table and table[record.name].fn is not record.fn:
        raise ValueError(f"{record.modality} attribution method {record.name!r} is registered twice")
    table[record.name] = record
    _ALIASES.update({(record.modality, a): record.name for a in aliases})
    return record


def register_attack(record: Attack) -> Attack:
    if record.name in _ATTACKS and _ATTACKS[record.name].fn is not record.fn:
        raise ValueError(f"attack {record.name!r} is registered twice")
    _ATTACKS[record.name] = record
    return record


def methods(modality: str = "image") -> dict[str, Method]:
    """Every registered attribution method for ``modality`` (``image`` or ``text``), by short name, in
    registration order."""
    return dict(_table(modality))


def attacks() -> dict[str, Attack]:
    """Every registered attack, by short name."""
    return dict(_ATTACKS)


def method(name: str, modality: str = "image") -> Method:
    """The record of the method called ``name`` (or an old name of it); a clear error lists the choices."""
    table = methods(modality)
    name = _ALIASES.get((modality, name), name) if isinstance(name, str) else name
    if name not in table:
        what = f"attribution method {name!r}" if modality == "image" else f"method {name!r} for {modality}"
        raise PellucidError(f"unknown {what}; choose one of: {', '.join(table)}")
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


# ---------------------------------------------------------------------------------------------
# models


@dataclass(frozen=True)
class Model:
    """A model ``load_model`` knows: ``loader(weights)`` builds it in eval mode, in pixel space.

    ``input_size`` is ``(C, H, W)`` (``None`` for text); ``samples`` the sample set ``sample_images``
    gives for it; ``kind`` one of :data:`MODEL_KINDS`; ``labels()`` its class names; ``extra`` the
    ``pellucid[extra]`` it needs, with ``needs`` the module that extra installs; ``weights`` says where
    weights come from: ``"builtin"`` (shipped or trained on first use, cached) or ``"file"`` (``weights=FILE``
    or the torch hub cache); ``trains`` whether a fresh machine trains it on first use; ``ready()`` why it
    cannot be built without a ``weights`` argument (``None`` when it can).
    """

    name: str
    title: str
    loader: Callable[[Any], Any]
    input_size: tuple[int, ...] | None = None
    samples: str | None = None
    kind: str = "cnn"
    labels: Callable[[], list[str]] | None = None
    extra: str | None = None
    needs: str | None = None
    weights: str = "builtin"
    trains: bool = False
    ready: Callable[[], str | None] | None = None

    def __post_init__(self):
        if self.kind not in MODEL_KINDS or self.weights not in ("builtin", "file"):
            raise ValueError(f"model record {self.name!r}: kind must be one of {MODEL_KINDS}, weights "
                             "'builtin' or 'file'")

    def missing(self) -> str | None:
        """Why this model cannot be built here (the install command), or ``None`` when it can."""
        if self.needs is None:
            return None
        try:
            found = find_spec(self.needs) is not None
        except (ImportError, ValueError):
            found = False
        install = f"pip install 'pellucid[{self.extra}]'" if self.extra else f"pip install {self.needs}"
        return None if found else f"needs the {self.needs} package, which is not installed: {install}"

    def load(self, weights=None):
        return self.loader(weights)


@dataclass(frozen=True)
class ModelFamily:
    """Many models behind one rule (every torchvision classifier; every timm one as ``timm:NAME``): ``record(name)``
    gives the record of a member that ``match(name)`` accepts; ``featured`` are listed by name."""

    name: str
    title: str
    match: Callable[[str], bool]
    record: Callable[[str], Model]
    featured: tuple[str, ...] = ()
    members: Callable[[], list[str]] = list


_MODELS: dict[str, Model] = {}
_FAMILIES: dict[str, ModelFamily] = {}


def register_model(record: Model) -> Model:
    if record.name in _MODELS and _MODELS[record.name].loader is not record.loader:
        raise ValueError(f"model {record.name!r} is registered twice")
    _MODELS[record.name] = record
    return record


def register_family(family: ModelFamily) -> ModelFamily:
    _FAMILIES[family.name] = family
    for name in family.featured:
        register_model(family.record(name))
    return family


def models() -> dict[str, Model]:
    """Every model registered by name (built-ins and the featured members of each family)."""
    return dict(_MODELS)


def families() -> dict[str, ModelFamily]:
    return dict(_FAMILIES)


def model_record(name: str) -> Model:
    """The record of the model called ``name``; a clear error lists the choices and close matches."""
    if not isinstance(name, str):
        raise PellucidError(f"a model name must be a str (see `pellucid models`), got {type(name).__name__} "
                            f"{name!r}")
    if name in _MODELS:
        return _MODELS[name]
    for family in _FAMILIES.values():
        if family.match(name):
            return family.record(name)
    import difflib

    known = list(_MODELS)
    others = [m for f in _FAMILIES.values() for m in f.members()]
    close = difflib.get_close_matches(name, known + others, n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    fams = "; ".join(f"{f.name}: {f.title}" for f in _FAMILIES.values())
    raise PellucidError(f"unknown model {name!r}; known: {', '.join(known)}" + (f"; {fams}" if fams else "")
                        + f".{hint}")
