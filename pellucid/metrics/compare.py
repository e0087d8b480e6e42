"""Attribution methods side by side: faithfulness, sanity and trust measures per method, and a random map."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from .._args import prepare
from .._checks import PellucidError
from ..registry import methods as registered_methods
from ._maps import Method, as_map, random_attribution, resolve_method
from .curves import Curve, _check_steps, deletion, insertion
from .sanity import SanityCheck, sanity_check

COLUMNS = ("method", "deletion AUC", "insertion AUC", "rank corr. randomized", "SSIM randomized", "seconds")


@dataclass
class Comparison:
    """``rows``: one dict per method (keys :data:`COLUMNS`), the ``"random"`` baseline last.

    Lower deletion AUC and higher insertion AUC than ``random`` mean the map ranks pixels by what
    the model uses; a low similarity after full randomization means the map depends on the weights.
    """

    rows: list[dict]
    deletion: dict[str, Curve]
    insertion: dict[str, Curve]
    sanity: dict[str, SanityCheck]

    def table(self) -> str:
        """The rows as aligned text, numbers to 3 decimals ('-' where not computed)."""
        from ..render import number

        cells = [list(COLUMNS)] + [[number(r[c]) for c in COLUMNS] for r in self.rows]
        widths = [max(len(row[j]) for row in cells) for j in range(len(COLUMNS))]
        return "\n".join("  ".join(v.ljust(w) if j == 0 else v.rjust(w) for j, (v, w) in enumerate(zip(row, widths)))
                         for row in cells)

    def __str__(self) -> str:
        return self.table()


def _methods(methods) -> dict[str, Method]:
    if methods is None:
        return registered_methods()
    if isinstance(methods, dict):
        return {str(k): resolve_method(v)[1] for k, v in methods.items()}
    if isinstance(methods, str) or callable(methods):
        methods = [methods]
    out = dict(resolve_method(m) for m in methods)
    if not out:
        raise PellucidError("methods is empty; pass at least one method name or callable")
    return out


def compare(model: nn.Module, x: torch.Tensor, target, methods: Sequence | dict | None = None, *,
            steps: int = 20, sanity: bool | Sequence[str] = True, sanity_layers: Sequence[str] | None = None,
            seed: int = 0, batch_size: int | None = None) -> Comparison:
    """Deletion AUC, insertion AUC, sanity check and runtime of each method, and a seeded random baseline.

    ``methods``: names (``pellucid.registry.methods()``), callables ``(model, x, target) -> map``
    or a ``{name: method}`` dict; default every available method. ``sanity`` runs the cascading
    randomization for all (True), none (False) or the named methods. AUCs are means over the batch.
    Example: ``print(pl.compare(model, x, y, ["saliency", "input_x_gradient"]))``.
    """
    steps = _check_steps(steps)
    x, _, _ = prepare(model, x, target, batch_size)
    table = _methods(methods)
    table["random"] = lambda _m, xx, _t: random_attribution(xx, seed)
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
        rho = sim = None
        if name in checked:
            result.sanity[name] = sanity_check(model, x, target, fn, layers=sanity_layers, seed=seed)
            result.sanity[name].method = name
            rho, sim = result.sanity[name].final()
        result.rows.append(dict(zip(COLUMNS, (name, float(result.deletion[name].auc.mean()),
                                              float(result.insertion[name].auc.mean()), rho, sim, seconds))))
    return result
