"""TCAV (Kim et al. 2018): how often a concept's direction raises a class score, tested against random directions.

Runs are independent replications. Kim et al. and Captum train every run's CAV on the *whole* concept set
against a new random set, so all runs share the concept set's own quirks: their scores cluster around a value
that a random "concept" set would reach just as easily, and a t-test across runs that treats them as
independent calls random sets significant far more often than ``alpha`` says (measured in README.md). Here
each run gets its own share of the concept images (``len(concept_x) // runs`` of them, no image in two runs)
and its own random images, and each random-vs-random run its own pair of random sets of that size, so under
the null hypothesis both groups of runs are independent draws of one distribution and the t-test holds.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch
from torch import nn

from .._args import prepare
from .._checks import PellucidError, check_choice, check_number, checked_keywords, generator
from .crops import crop_activations, random_boxes
from .vectors import (
    KINDS,
    fit_cav,
    fit_directions,
    flat_activations,
    image_set,
    layer_gradients,
    layer_name,
    same_size,
)

RANDOM_SIDES = (0.3, 0.7)
"""Random images when none are given: crops of ``x``'s images with sides between these fractions of theirs."""


@dataclass
class TCAVResult:
    """``scores``: per run, the fraction of ``x`` whose target score rises along the run's CAV (the TCAV
    score); ``random_scores``: the same for random-vs-random CAVs; ``p_value``: two-sided t-test of the two;
    ``significant``: ``p_value < alpha / bonferroni``. ``accuracy``: held-out accuracy of one CAV of all
    concept images against as many random ones; ``vectors``: the runs' CAVs ``(runs, D)``; ``share``: the
    concept images each run trains on."""

    scores: torch.Tensor
    random_scores: torch.Tensor
    p_value: float
    significant: bool
    accuracy: float
    layer: str
    kind: str
    alpha: float
    bonferroni: int
    vectors: torch.Tensor
    share: int

    @property
    def score(self) -> float:
        """The mean TCAV score over runs."""
        return float(self.scores.mean())

    def __repr__(self) -> str:
        return (f"TCAVResult(score={self.score:.3f}, random={float(self.random_scores.mean()):.3f}, "
                f"p_value={self.p_value:.3g}, significant={self.significant}, runs={len(self.scores)}, "
                f"layer={self.layer!r}, kind={self.kind!r}, cav accuracy={self.accuracy:.2f})")

    def _repr_png_(self) -> bytes:
        from ..drawing import display_learned

        return display_learned.tcav_png(self)


def same_gradients(grads: torch.Tensor) -> bool:
    """Whether every image's gradient ``(N, D)`` is the same (a layer followed by linear maps only)."""
    scale = float(grads.abs().max())
    return len(grads) > 1 and bool(((grads - grads[:1]).abs() <= 1e-6 * max(scale, 1e-30)).all())


def sensitive_layer(model: nn.Module, x: torch.Tensor, target, layer, batch_size: int | None = None) -> str:
    """``layer``'s name, or where the target's gradient is the same for every image of ``x`` (the layer is followed
    by linear maps only, and TCAV's scores would be 0 or 1), the nearest layer that runs before it where it is not.
    Layers are taken in the order they run (a module registered but never called is skipped)."""
    from ..featureviz.layer_outputs import each_layer_output
    from ..models.layers import find_layer, named_layers

    x, t, bs = prepare(model, x, target, batch_size)
    module = find_layer(model, layer)
    ran: list[str] = []

    def record(name: str, out) -> None:
        if isinstance(out, torch.Tensor) and name not in ran:
            ran.append(name)

    each_layer_output(model, x[:1], record)
    names = {id(m): n for n, m in named_layers(model).items()}
    own = names.get(id(module), layer_name(model, layer))
    if own not in ran:
        raise PellucidError(f"layer {own!r} does not run (or returns no tensor) on these images")
    for name in [own] + ran[: ran.index(own)][::-1]:
        if not same_gradients(layer_gradients(model, x, t, name, bs)):
            return name
    raise PellucidError(f"the target's gradient is the same for every image at {own!r} and at every layer that runs "
                        "before it: are the images identical?")


def t_test(a: torch.Tensor, b: torch.Tensor) -> float:
    """Two-sided p-value of Student's t-test of two samples (Kim et al.'s ``scipy.stats.ttest_ind``); two
    constant samples give 1 when they are equal and 0 when they are not."""
    from scipy import stats

    a, b = a.double().cpu().numpy(), b.double().cpu().numpy()
    if a.std() == 0 and b.std() == 0:
        return 1.0 if a.mean() == b.mean() else 0.0
    with warnings.catch_warnings():  # scores of nearly one value: scipy warns of precision, the p-value stands
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(stats.ttest_ind(a, b).pvalue)


class _Draws:
    """Seeded sets of random rows: each set comes from one permutation, so its rows differ; a new permutation
    starts when the current one has too few rows left (rows repeat across sets only when the pool is small)."""

    def __init__(self, total: int, gen: torch.Generator):
        self.total, self.gen, self.left = total, gen, torch.empty(0, dtype=torch.long)

    def take(self, size: int) -> torch.Tensor:
        if len(self.left) < size:
            self.left = torch.randperm(self.total, generator=self.gen)
        out, self.left = self.left[:size], self.left[size:]
        return out


def tcav_runs(grads: torch.Tensor, concept: torch.Tensor, random: torch.Tensor, runs: int, kind: str,
              gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Concept scores, random-vs-random scores and the concept runs' CAVs, from flattened layer gradients
    ``(N, D)`` and activations of the concept and random images (the core of :func:`tcav`, no model pass)."""
    share = len(concept) // runs
    mine = torch.randperm(len(concept), generator=gen)[: runs * share].reshape(runs, share)
    draws = _Draws(len(random), gen)
    theirs = torch.stack([draws.take(share) for _ in range(runs)])
    pairs = torch.stack([draws.take(2 * share) for _ in range(runs)])
    vectors = fit_directions(concept[mine], random[theirs], kind)[0]
    nulls = fit_directions(random[pairs[:, :share]], random[pairs[:, share:]], kind)[0]
    scores = ((grads @ vectors.to(grads).T) > 0).float().mean(0)
    return scores, ((grads @ nulls.to(grads).T) > 0).float().mean(0), vectors


@checked_keywords
def tcav(model: nn.Module, x: torch.Tensor, target, layer: str | nn.Module, concept_x: torch.Tensor, *,
         random_x: torch.Tensor | None = None, runs: int = 20, kind: str = "svm", seed: int | torch.Generator = 0,
         alpha: float = 0.05, bonferroni: int = 1, batch_size: int | None = None) -> TCAVResult:
    """Testing with Concept Activation Vectors (Kim et al. 2018): does ``concept_x`` matter for ``target`` on ``x``?

    A run's TCAV score is the fraction of ``x`` whose target score has a positive directional derivative
    along the run's CAV at ``layer``. ``runs`` concept runs (each on its own share of ``concept_x`` against
    its own random images) are compared with as many random-vs-random runs by a two-sided t-test;
    ``significant`` is ``p_value < alpha / bonferroni`` (``bonferroni``: how many concepts or layers you
    test). ``random_x``: the random images; ``None`` uses random crops of ``x``'s images (sides 30-70% of the
    image's, resized to its size), so the test asks whether the concept matters more than parts of the
    images themselves. Activations and gradients are computed once and shared by all runs.

    Example: ``r = pl.tcav(model, zebras, 340, "layer3", striped, random_x=others)``; ``r.score``, ``r.p_value``.
    """
    check_choice(kind, "kind", KINDS)
    runs = check_number(runs, "runs", 2, integer=True,
                        hint=" (the t-test compares runs with random runs: one run has no spread)")
    alpha = check_number(alpha, "alpha", 0, 1, low_open=True, high_open=True)
    bonferroni = check_number(bonferroni, "bonferroni", 1, integer=True, hint=" (how many tests are made)")
    x, t, bs = prepare(model, x, target, batch_size)
    concept_x = image_set(model, concept_x, "concept_x")
    same_size(x, concept_x, "x", "concept_x")
    share = len(concept_x) // runs
    if share < 1:
        raise PellucidError(f"concept_x has {len(concept_x)} images for runs={runs}: each run trains on its own "
                            "concept images (at least one), so pass runs <= the number of concept images "
                            f"(runs={len(concept_x)}) or more concept images")
    gen = generator(seed, "cpu")
    concept = flat_activations(model, concept_x, layer, batch_size)  # a bad layer fails here, clearly
    grads = layer_gradients(model, x, t, layer, bs)
    if same_gradients(grads):
        raise PellucidError(f"at layer {layer_name(model, layer)!r} the target's gradient is the same for every image "
                            "(only linear layers follow it, or the images are identical), so each run's TCAV score "
                            "could only be 0 or 1; choose an earlier layer, e.g. "
                            f"{sensitive_layer(model, x, target, layer, bs)!r}")
    if random_x is None:
        boxes = random_boxes(x, torch.randint(len(x), (3 * runs * share,), generator=gen), gen, RANDOM_SIDES)
        random = crop_activations(model, x, boxes, layer, batch_size, reduce=lambda a: a.flatten(1))
    else:
        random_x = image_set(model, random_x, "random_x", 2 * share)
        same_size(x, random_x, "x", "random_x")
        random = flat_activations(model, random_x, layer, batch_size)
    scores, nulls, vectors = tcav_runs(grads, concept, random, runs, kind, gen)
    p = t_test(scores, nulls)
    some = torch.randperm(len(random), generator=gen)[: len(concept)]
    accuracy = fit_cav(concept, random[some], kind, gen)[2]
    return TCAVResult(scores, nulls, p, bool(p < alpha / bonferroni) and not math.isnan(p), accuracy,
                      layer_name(model, layer), kind, alpha, bonferroni, vectors, share)
