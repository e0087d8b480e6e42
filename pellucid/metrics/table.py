"""Attribution methods side by side: faithfulness, sanity and trust measures per method, and a random map."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from .._args import prepare
from .._checks import PellucidError, checked_keywords
from ..registry import methods as registered_methods
from ._maps import MapMethod, as_map, is_seeded, random_attribution, resolve_method
from .curves import Curve, _check_steps, deletion, insertion
from .fidelity import infidelity, sensitivity
from .imputation import FRACTIONS, road
from .manipulation import ATTACKABLE, ExplanationAttack, explanation_attack
from .sanity import SanityCheck, sanity_check
from .similarity import spearman

COLUMNS = ("method", "deletion AUC", "insertion AUC", "ROAD AUC", "infidelity", "sensitivity", "seed stability",
           "attack rank corr.", "rank corr. randomized", "SSIM randomized", "seconds")
"""One column per measure. Better is: lower deletion AUC, higher insertion AUC, lower ROAD AUC (most relevant
removed first), lower infidelity and sensitivity, seed stability (rank correlation of two seeds' maps) near 1,
attack rank corr. (rank correlation with the original map after :func:`explanation_attack`) near 1, and low
similarity after randomizing the model."""

BETTER = {"deletion AUC": "lower", "insertion AUC": "higher", "ROAD AUC": "lower", "infidelity": "lower",
          "sensitivity": "lower", "seed stability": "higher", "attack rank corr.": "higher",
          "rank corr. randomized": "lower", "SSIM randomized": "lower"}
"""The better direction of each measure of :data:`COLUMNS`."""

TRUST = ("road", "infidelity", "sensitivity", "stability", "attack")
"""The trust measures :func:`compare` runs beside deletion/insertion; see its ``trust`` argument."""

TRUST_SETTINGS = {
    "road": {"fractions": FRACTIONS},
    "infidelity": {"samples": 32, "noise": 0.1},
    "sensitivity": {"samples": 5, "radius": 0.02},
    "stability": {},
    "attack": {"eps": 0.05, "steps": 20, "checks": 4},
}
"""Default settings per trust measure (keyword arguments of :func:`road`, :func:`infidelity`,
:func:`sensitivity` and :func:`explanation_attack`); a ``"methods"`` entry limits a measure to those names."""


@dataclass
class Comparison:
    """``rows``: one dict per method (keys :data:`COLUMNS`), the ``"random"`` baseline last.

    Lower deletion AUC and higher insertion AUC than ``random`` mean the map ranks pixels by what
    the model uses; a low similarity after full randomization means the map depends on the weights.
    ``road`` holds the ROAD curves, ``trust`` the per-image values of the other trust measures
    (``{method: {measure: (N,) tensor}}``) and ``attacks`` the :class:`ExplanationAttack` results.
    """

    rows: list[dict]
    deletion: dict[str, Curve]
    insertion: dict[str, Curve]
    sanity: dict[str, SanityCheck]
    road: dict[str, Curve] = field(default_factory=dict)
    trust: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)
    attacks: dict[str, ExplanationAttack] = field(default_factory=dict)

    def table(self, columns: Sequence[str] | None = None) -> str:
        """The rows as aligned text, numbers to 3 decimals ('-' where not computed); ``columns``: default
        :data:`COLUMNS` less the trust columns nothing was computed for."""
        from ..drawing.render import number

        columns = list(columns or self.columns())
        cells = [columns] + [[number(r[c]) for c in columns] for r in self.rows]
        widths = [max(len(row[j]) for row in cells) for j in range(len(columns))]
        return "\n".join("  ".join(v.ljust(w) if j == 0 else v.rjust(w) for j, (v, w) in enumerate(zip(row, widths)))
                         for row in cells)

    def columns(self) -> list[str]:
        """:data:`COLUMNS` without the trust columns that are empty in every row."""
        optional = set(COLUMNS[3:8])
        return [c for c in COLUMNS if c not in optional or any(r[c] is not None for r in self.rows)]

    def __str__(self) -> str:
        return self.table()

    def _repr_png_(self) -> bytes:
        from ..drawing import display

        return display.comparison(self)

    def _repr_html_(self) -> str:
        from ..drawing import display

        return display.comparison_html(self, BETTER)

    def _repr_mimebundle_(self, include=None, exclude=None) -> dict:
        from ..drawing import display

        png = display.comparison(self)
        return display.bundle(png, display.comparison_html(self, BETTER, png))


def _methods(methods, model: nn.Module) -> dict[str, MapMethod]:
    if methods is None:  # every registered method that holds on this model (DeepLIFT not on attention)
        from ..attribution.lrp.canonize import has_attention

        attention = has_attention(model)
        return {name: m for name, m in registered_methods().items() if m.attention or not attention}
    if isinstance(methods, dict):
        return {str(k): resolve_method(v)[1] for k, v in methods.items()}
    if isinstance(methods, str) or callable(methods):
        methods = [methods]
    out = dict(resolve_method(m) for m in methods)
    if not out:
        raise PellucidError("methods is empty; pass at least one method name or callable")
    return out


def _trust(trust) -> dict[str, dict]:
    """``True`` / ``False`` / names / ``{name: settings}`` as ``{measure: settings}`` (defaults filled in)."""
    if trust is True:
        chosen = {name: {} for name in TRUST}
    elif trust is False or trust is None:
        chosen = {}
    elif isinstance(trust, dict):
        chosen = {k: dict(v or {}) for k, v in trust.items()}
    elif isinstance(trust, str):
        chosen = {trust: {}}
    else:
        chosen = {k: {} for k in trust}
    unknown = sorted(set(chosen) - set(TRUST))
    if unknown:
        raise PellucidError(f"unknown trust measures {unknown}; choose from {', '.join(TRUST)}")
    return {k: {**TRUST_SETTINGS[k], **v} for k, v in chosen.items()}


def _random_map(seed: int):
    def random(_model, x, _target, seed: int = seed):
        return random_attribution(x, seed)

    return random


def _measure(model, x, target, name: str, fn, maps, trust: dict, seed: int, batch_size) -> tuple[dict, dict]:
    """The trust measures of one method: ``(per-image values by measure, extra results)``."""
    values, extra = {}, {}

    def wanted(measure: str) -> dict | None:
        if measure not in trust:
            return None
        kw = dict(trust[measure])
        allowed = kw.pop("methods", None)
        return kw if allowed is None or name in allowed or name == "random" else None

    if (kw := wanted("road")) is not None:
        extra["road"] = road(model, x, target, maps, seed=seed, batch_size=batch_size, **kw)
    if (kw := wanted("infidelity")) is not None:
        values["infidelity"] = infidelity(model, x, target, maps, seed=seed, batch_size=batch_size, **kw)
    if (kw := wanted("sensitivity")) is not None:
        values["sensitivity"] = sensitivity(model, x, target, fn, seed=seed, batch_size=batch_size, **kw)
    if wanted("stability") is not None and is_seeded(name, fn):
        other = as_map(fn(model, x, target, seed=seed + 1), x, f"{name}'s output")
        values["seed stability"] = spearman(maps.abs(), other.abs())
    if (kw := wanted("attack")) is not None and name in ATTACKABLE:
        extra["attack"] = explanation_attack(model, x, target, name, seed=seed, batch_size=batch_size, **kw)
        values["attack rank corr."] = extra["attack"].similarity.spearman
    return values, extra


@checked_keywords
def compare(model: nn.Module, x: torch.Tensor, target, methods: Sequence | dict | None = None, *,
            steps: int = 20, sanity: bool | Sequence[str] = True, sanity_layers: Sequence[str] | None = None,
            trust: bool | Sequence[str] | dict = True, seed: int = 0, batch_size: int | None = None) -> Comparison:
    """Deletion, insertion and ROAD AUCs, infidelity, max-sensitivity, seed stability, explanation-attack
    similarity, sanity check and runtime of each method, and a seeded random baseline.

    ``methods``: names (``pellucid.registry.methods()``), callables ``(model, x, target) -> map`` or a ``{name:
    method}`` dict; default every registered method that holds on the model (not DeepLIFT on a transformer).
    ``sanity`` runs the cascading randomization for all (True), none (False) or the named methods. ``trust`` picks
    the trust measures (:data:`TRUST`: all with True, none with False, some by name, or ``{measure: settings}``
    overriding :data:`TRUST_SETTINGS`, e.g. ``{"sensitivity": {"samples": 3, "methods": ["saliency"]}}``). Seed
    stability is computed for seeded methods only (a second run with ``seed + 1``), the explanation attack for
    :data:`ATTACKABLE` methods only; other cells are ``None``. Values are means over the batch.
    Example: ``print(pl.compare(model, x, y, ["saliency", "input_x_gradient"]))``.
    """
    steps = _check_steps(steps)
    x, _, _ = prepare(model, x, target, batch_size)
    measures = _trust(trust)
    table = _methods(methods, model)
    table["random"] = _random_map(seed)
    checked = set(table) if sanity is True else set() if sanity is False else set(sanity) | {"random"}
    if checked - set(table):
        raise PellucidError(f"sanity names {sorted(checked - set(table))} are not among the compared methods: "
                            f"{', '.join(table)}")
    result = Comparison([], {}, {}, {})
    for name, fn in table.items():
        start = time.perf_counter()
        maps = as_map(fn(model, x, target), x, f"{name}'s output")
        seconds = time.perf_counter() - start
        result.deletion[name] = deletion(model, x, target, maps, steps=steps, batch_size=batch_size)
        result.insertion[name] = insertion(model, x, target, maps, steps=steps, batch_size=batch_size)
        values, extra = _measure(model, x, target, name, fn, maps, measures, seed, batch_size)
        if "road" in extra:
            result.road[name] = extra["road"]
            values["ROAD AUC"] = extra["road"].auc
        if "attack" in extra:
            result.attacks[name] = extra["attack"]
        result.trust[name] = values
        rho = sim = None
        if name in checked:
            result.sanity[name] = sanity_check(model, x, target, fn, layers=sanity_layers, seed=seed)
            result.sanity[name].method = name
            rho, sim = result.sanity[name].final()
        row = dict.fromkeys(COLUMNS)
        row.update({k: float(v.mean()) for k, v in values.items()})
        row.update({"method": name, "deletion AUC": float(result.deletion[name].auc.mean()),
                    "insertion AUC": float(result.insertion[name].auc.mean()), "rank corr. randomized": rho,
                    "SSIM randomized": sim, "seconds": seconds})
        result.rows.append(row)
    return result
