"""How much does it take: the smallest eps that flips each image, and accuracy under attack as eps grows."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from .._args import check_call
from .._checks import PellucidError, check_choice, check_number, check_positive_int, checked_keywords
from .._grad import input_gradient, logits_of
from .._progress import bar
from .._state import model_state
from ..registry import default_alpha
from ..targets import Target
from ._loop import NORMS, Adversarial, _classes, _per_sample
from .ensemble import autoattack
from .gradient import _pgd

MINIMAL_ATTACKS = ("fgsm", "pgd")  # what minimal_epsilon and robustness_curve search over (per-image eps)
CURVE_ATTACKS = (*MINIMAL_ATTACKS, "autoattack")  # robustness_curve also takes AutoAttack's worst case


def _attack_fn(model, x, labels: Target, attack: str, norm: str, steps: int, rel_alpha: float | None, seed,
               bs: int, progress: bool = False, random_start: bool = True) -> Adversarial:
    """``adversarial(eps (M,), rows (M,))``: the attack of images ``rows`` at per-image ``eps``."""
    check_choice(attack, "attack", CURVE_ATTACKS)
    if attack == "autoattack":  # APGD and FAB with ``steps`` steps, 50x as many Square queries (the registry's rule)
        return lambda eps, rows: autoattack(model, x[rows], labels.classes[rows], eps, norm, seed=seed, steps=steps,
                                            queries=50 * steps, batch_size=bs, progress=progress).adversarial
    if attack == "fgsm":
        if norm != "linf":
            raise PellucidError(f"fgsm is an L-infinity attack; norm must be 'linf', got {norm!r} (use attack='pgd')")
        with model_state(model):
            direction = -input_gradient(model, x, labels, bs)[0].sign()  # computed once: FGSM's step is eps-free
        return lambda eps, rows: (x[rows] + eps.reshape(-1, 1, 1, 1) * direction[rows]).clamp(0, 1)
    ratio = default_alpha(1.0, steps) if rel_alpha is None else rel_alpha

    def adversarial(eps: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        label = labels.classes[rows]
        return _pgd(model, x[rows], label, eps, eps * ratio, steps, norm, False, random_start, seed, True, bs,
                    progress)[0]

    return adversarial


def _fooled(model, labels: Target, bs: int, adversarial) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """``fooled(eps, rows)``: whether the attack at ``eps`` changes the prediction away from the label."""

    def fooled(eps: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        adv = adversarial(eps, rows)
        with model_state(model):
            pred = logits_of(model, adv, len(adv), bs).argmax(1).cpu()
        return pred != labels.classes[rows]

    return fooled


@checked_keywords
def minimal_epsilon(model: nn.Module, x: torch.Tensor, label, attack: str = "fgsm", *, norm: str = "linf",
                    eps_max: float | None = None, tol: float = 1e-3, grid: int = 8, steps: int = 10,
                    rel_alpha: float | None = None, batch_size: int | None = None,
                    progress: bool = True) -> torch.Tensor:
    """The smallest eps at which ``attack`` flips each image's prediction, within ``tol``.

    A scan of ``grid`` evenly spaced eps in ``(0, eps_max]`` finds the first that flips; bisection
    then narrows the bracket to ``tol``: the attack flips at the returned eps and not at ``eps - tol``.
    ``inf`` where even ``eps_max`` does not flip, ``0`` where the image is already misclassified.
    PGD runs ``steps`` steps of ``rel_alpha * eps`` (default ``2.5 / steps``), with early stop and
    without random start, so that each image's answer does not depend on the rest of the batch.
    Shape: ``(N,)``.

    >>> eps = pl.minimal_epsilon(model, x, y, attack="fgsm")
    """
    x, bs = check_call(model, x, batch_size)
    labels = _classes(model, x, label, "label")
    check_choice(norm, "norm", NORMS)
    eps_max = (1.0 if norm == "linf" else math.sqrt(x[0].numel())) if eps_max is None else eps_max
    eps_max = check_number(eps_max, "eps_max", 0, low_open=True)
    tol = check_number(tol, "tol", 0, low_open=True)
    grid = check_positive_int(grid, "grid")
    check_choice(attack, "attack", MINIMAL_ATTACKS)
    attack_at = _attack_fn(model, x, labels, attack, norm, steps, rel_alpha, 0, bs, random_start=False)
    fooled = _fooled(model, labels, bs, attack_at)
    return _search(fooled, len(x), eps_max, tol, grid, progress)


def _search(fooled, n: int, eps_max: float, tol: float, grid: int, progress: bool) -> torch.Tensor:
    """Per image, a bracket ``(lo, hi]`` with ``fooled(hi)`` and not ``fooled(lo)``, narrowed to ``tol``."""
    lo, hi = torch.zeros(n), torch.full((n,), math.inf)
    every = torch.arange(n)
    hi[fooled(torch.zeros(n), every)] = 0.0
    bisections = max(0, math.ceil(math.log2(eps_max / grid / tol)))
    with bar(grid + bisections, f"minimal eps ({n} images)", progress, unit="step") as b:
        for k in range(1, grid + 1):
            rows = every[torch.isinf(hi)]
            if rows.numel():
                e = torch.full((len(rows),), eps_max * k / grid)
                f = fooled(e, rows)
                hi[rows[f]] = e[f]
                lo[rows[~f]] = e[~f]
            b.update(1)
        for _ in range(bisections):
            rows = every[torch.isfinite(hi) & (hi - lo > tol)]
            if rows.numel():
                mid = (lo[rows] + hi[rows]) / 2
                f = fooled(mid, rows)
                hi[rows[f]], lo[rows[~f]] = mid[f], mid[~f]
            b.update(1)
    return hi


@dataclass
class RobustnessCurve:
    """Accuracy under attack (``accuracy[i]`` at ``eps[i]``), with the attack's name and norm."""

    eps: torch.Tensor
    accuracy: torch.Tensor
    attack: str
    norm: str

    def _repr_png_(self) -> bytes:
        from ..drawing import display

        return display.robustness(self)


@checked_keywords
def robustness_curve(model: nn.Module, x: torch.Tensor, label, eps_values: Sequence[float],
                     attack: str = "pgd", *, norm: str = "linf", steps: int = 10, rel_alpha: float | None = None,
                     seed: int = 0, batch_size: int | None = None, progress: bool = True) -> RobustnessCurve:
    """Accuracy of ``model`` on ``x`` under ``attack`` at each eps of ``eps_values``.

    All eps values run as one batch (the images repeated once per eps, each with its own radius).
    PGD takes ``steps`` steps of ``rel_alpha * eps`` (default ``2.5 / steps``) from a random start,
    and an image stops once misclassified (its first fooling point is kept). ``attack="autoattack"``:
    :func:`autoattack` with APGD of ``steps`` steps and ``50 * steps`` Square queries. Render it with
    ``pellucid.render.robustness_plot``.

    >>> curve = pl.robustness_curve(model, x, y, [0, 0.05, 0.1, 0.2])
    """
    x, bs = check_call(model, x, batch_size)
    labels = _classes(model, x, label, "label")
    check_choice(norm, "norm", NORMS)
    eps = torch.as_tensor(eps_values, dtype=torch.float32).flatten()
    if not eps.numel():
        raise PellucidError("eps_values is empty; pass at least one eps, e.g. [0, 0.05, 0.1]")
    _per_sample(eps, "eps", len(eps), "cpu")
    n, e = len(x), len(eps)
    big, big_labels = x.repeat(e, 1, 1, 1), labels.repeat(e)
    adversarial = _attack_fn(model, big, big_labels, attack, norm, steps, rel_alpha, seed, bs, progress)
    fooled = _fooled(model, big_labels, bs, adversarial)(eps.repeat_interleave(n).to(x.device), torch.arange(n * e))
    accuracy = 1 - fooled.reshape(e, n).float().mean(1)
    return RobustnessCurve(eps, accuracy, attack, norm)


def default_eps(x: torch.Tensor) -> list[float]:
    """Eps values for a robustness curve: MNIST's usual range for gray images, up to 16/255 for photos."""
    if x.shape[1] == 1:
        return [0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3]
    return [0.0, 0.5 / 255, 1 / 255, 2 / 255, 4 / 255, 8 / 255, 16 / 255]
