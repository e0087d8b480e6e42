"""Attacks on the explanation itself (Ghorbani et al. 2019, "Interpretation of Neural Networks is Fragile";
Dombrowski et al. 2019, "Explanations can be manipulated and geometry is to blame"): a perturbation inside
a small L∞ ball that leaves the predicted class alone but moves the attribution map elsewhere.

For a ReLU network the map's gradient with respect to the input is zero almost everywhere (the map is
piecewise constant in ``x`` for saliency), so the attack differentiates a smooth surrogate: the same
model with every ``nn.ReLU``'s output replaced by ``softplus(input, beta)`` through forward hooks
(registered and removed by :func:`pellucid._state.model_state`; the caller's model is never modified).
Every candidate is judged on the real model: its prediction and its real map.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .._args import prepare
from .._checks import PellucidError, check_number, check_positive_int, checked_keywords
from .._grad import chunks, logits_of, quadrature, second_order
from .._state import ModelState, model_state
from ..targets import Target
from ._maps import as_map, resolve_method
from ._random import base_seed, row_noise
from .similarity import spearman, topk_overlap


@dataclass
class MapSimilarity:
    """Similarity of a map to the original, per image: ``spearman`` rank correlation and ``topk`` overlap
    (share of the original's top-``k`` pixels still in the top ``k``), both ``(N,)``, 1 = unchanged."""

    spearman: torch.Tensor
    topk: torch.Tensor
    k: int

    def mean(self) -> tuple[float, float]:
        return float(self.spearman.mean()), float(self.topk.mean())


@dataclass
class ExplanationAttack:
    """Result of :func:`explanation_attack`.

    ``image`` ``(N, C, H, W)`` the attacked images (``x`` itself where no step kept the class), ``map`` and
    ``original`` their ``(N, H, W)`` |maps| on the real model, ``similarity`` of ``map`` to ``original``,
    ``noise`` the similarity after random noise of the same size (each pixel ``±eps``: what an attack must
    beat), ``kept`` ``(N,)`` whether the real model still predicts ``predicted``; ``x`` the images attacked.
    """

    image: torch.Tensor
    map: torch.Tensor
    original: torch.Tensor
    similarity: MapSimilarity
    noise: MapSimilarity
    kept: torch.Tensor
    predicted: torch.Tensor
    method: str
    eps: float
    x: torch.Tensor | None = field(default=None, repr=False)

    def _repr_png_(self) -> bytes:
        from ..drawing import display

        return display.explanation_attack(self)


# ---------------------------------------------------------------------------------------------
# differentiable maps on the surrogate: (model, x, target, extras) -> (M, H, W) >= 0, with a graph to x

def _grad(model: nn.Module, x: torch.Tensor, target: Target) -> torch.Tensor:
    score = target(model(x))
    (g,) = torch.autograd.grad(score.sum(), x, create_graph=True)
    return g


def _saliency(model, x, target, extras):
    return _grad(model, x, target).abs().amax(1)


def _input_x_gradient(model, x, target, extras):
    return (_grad(model, x, target) * x).sum(1).abs()


def _smoothgrad(model, x, target, extras):
    noise = extras["noise"]  # (S, C, H, W) fixed draws: a smooth function of x
    s = len(noise)
    xs = (x.repeat_interleave(s, 0) + noise.repeat(len(x), 1, 1, 1)).clamp(0, 1)
    g = _grad(model, xs, target.repeat_interleave(s))
    return g.reshape(len(x), s, *x.shape[1:]).mean(1).abs().amax(1)


def _ig(model, x, target, extras):
    alphas, weights = extras["alphas"], extras["weights"]
    k = len(alphas)
    path = x.repeat_interleave(k, 0) * alphas.repeat(len(x)).reshape(-1, 1, 1, 1)  # black baseline
    g = _grad(model, path, target.repeat_interleave(k)).reshape(len(x), k, *x.shape[1:])
    return ((g * weights.reshape(1, -1, 1, 1, 1)).sum(1) * x).sum(1).abs()


_SURROGATES: dict[str, tuple[Callable, int]] = {
    "saliency": (_saliency, 1), "input_x_gradient": (_input_x_gradient, 1), "smoothgrad": (_smoothgrad, 8),
    "ig": (_ig, 8),
}
"""Methods the attack can differentiate, with the passes per image of their surrogate map."""

ATTACKABLE = tuple(_SURROGATES)


def _softplus_relus(state: ModelState, model: nn.Module, beta: float) -> int:
    """Replace the output of every ``nn.ReLU`` of ``model`` by ``softplus(input, beta)`` while ``state`` lasts."""
    count = 0
    for module in model.modules():
        if isinstance(module, nn.ReLU):
            saved: dict = {}

            def keep(_m, inputs, saved=saved):  # an in-place ReLU overwrites its input: keep a copy
                saved["x"] = inputs[0].clone() if _m.inplace else inputs[0]

            def smooth(_m, _inputs, _output, saved=saved):
                return F.softplus(saved.pop("x"), beta=beta)

            state.forward_pre_hook(module, keep)
            state.forward_hook(module, smooth)
            count += 1
    return count


def _similarity(original: torch.Tensor, maps: torch.Tensor, top) -> MapSimilarity:
    t = topk_overlap(original, maps, top)
    from .similarity import top_count

    return MapSimilarity(spearman(original, maps), t, top_count(top, original[0].numel()))


@checked_keywords
def explanation_attack(model: nn.Module, x: torch.Tensor, target=None, method: str = "saliency",
                       eps: float = 0.05, steps: int = 100, seed: int | torch.Generator = 0, *,
                       top: float | int = 0.1, beta: float = 10.0, alpha: float | None = None,
                       checks: int = 10, batch_size: int | None = None) -> ExplanationAttack:
    """Move ``method``'s map while the prediction stays: ``x'`` with ``||x' - x||∞ <= eps``, ``x'`` in [0, 1].

    Ghorbani et al.'s top-k attack: projected signed-gradient steps (``alpha``, default ``2.5 eps / steps``)
    from a random start in the ball (``seed``) that lower the share of the map's mass on the original map's
    top ``top`` pixels (a fraction or a count), through the softplus surrogate (``beta``). The real model
    judges candidates ``checks`` times along the way and at the end: the kept candidate with the lowest
    mean of rank correlation and top-k overlap with the original map wins; an image whose class flips at
    every check stays ``x`` (``kept`` is then still True, the map unmoved). ``target`` is the class whose map
    is attacked (default: the predicted class). ``method``: one of :data:`ATTACKABLE`. Maps are compared as
    absolute values, as in the sanity check. Example::

        r = pl.explanation_attack(model, x, None, "saliency", eps=0.05)
        r.similarity.spearman, r.noise.spearman, r.kept
    """
    if method not in _SURROGATES:
        raise PellucidError(f"explanation_attack differentiates {', '.join(ATTACKABLE)} (through a smooth "
                            f"surrogate); got method {method!r}")
    x, _, bs = prepare(model, x, 0 if target is None else target, batch_size)
    eps = check_number(eps, "eps", 0, 1, low_open=True, hint=" (L∞ radius in pixel units)")
    steps = check_positive_int(steps, "steps", 0)
    checks = check_positive_int(checks, "checks")
    beta = check_number(beta, "beta", 0, low_open=True, hint=" (softplus sharpness)")
    alpha = 2.5 * eps / max(1, steps) if alpha is None else check_number(alpha, "alpha", 0, low_open=True)
    seed = base_seed(seed)
    n = len(x)
    with model_state(model):
        predicted = logits_of(model, x, n, bs).argmax(1)
    if target is None:
        target = predicted
    _, t, _ = prepare(model, x, target, batch_size)
    name, real = resolve_method(method)

    def real_maps(images: torch.Tensor) -> torch.Tensor:
        return as_map(real(model, images, t), images, f"{name}'s output").abs()

    def still(images: torch.Tensor) -> torch.Tensor:
        with model_state(model):
            return logits_of(model, images, n, bs).argmax(1) == predicted

    original = real_maps(x)
    k = _similarity(original, original, top).k
    top_mask = torch.zeros_like(original.flatten(1), dtype=torch.bool)
    top_mask.scatter_(1, original.flatten(1).argsort(dim=1, descending=True, stable=True)[:, :k], True)

    surrogate, passes = _SURROGATES[method]
    extras: dict = {}
    if method == "smoothgrad":
        extras["noise"] = 0.15 * row_noise(seed + 1, slice(0, passes), x.shape[1:], x)
    if method == "ig":
        extras["alphas"], extras["weights"] = quadrature(passes, "riemann_middle", x.device)

    start = (2 * row_noise(seed, slice(0, n), x.shape[1:], x, "uniform") - 1) * eps
    adv = (x + start).clamp(0, 1)
    best, best_score = x.clone(), torch.full((n,), float("inf"), device=x.device)
    every = max(1, steps // checks)

    def judge(images: torch.Tensor) -> None:
        nonlocal best
        kept = still(images)
        sim = _similarity(original, real_maps(images), top)
        score = (sim.spearman + sim.topk) / 2
        better = kept & (score < best_score)
        best = torch.where(better.reshape(-1, 1, 1, 1), images, best)
        best_score.copy_(torch.where(better, score, best_score))

    with model_state(model) as state:
        _softplus_relus(state, model, float(beta))
        for step in range(steps):
            grads = torch.empty_like(adv)
            for rows in chunks(n, max(1, bs // passes)):
                with torch.enable_grad(), second_order():
                    xi = adv[rows].detach().requires_grad_(True)
                    m = surrogate(model, xi, t.select(torch.arange(rows.start, rows.stop)), extras).flatten(1)
                    mass = (m * top_mask[rows]).sum(1) / m.sum(1).clamp_min(1e-12)
                    (grads[rows],) = torch.autograd.grad(mass.sum(), xi)
            adv = (x + (adv - alpha * grads.sign() - x).clamp(-eps, eps)).clamp(0, 1)
            if (step + 1) % every == 0 or step + 1 == steps:
                state.remove_hooks()  # judge on the real model
                judge(adv)
                _softplus_relus(state, model, float(beta))
    if steps == 0:
        judge(adv)
    final = real_maps(best)
    sign = torch.where(row_noise(seed + 2, slice(0, n), x.shape[1:], x, "uniform") < 0.5, -1.0, 1.0)
    noisy = (x + eps * sign).clamp(0, 1)
    return ExplanationAttack(best, final, original, _similarity(original, final, top),
                             _similarity(original, real_maps(noisy), top), still(best), predicted, name, float(eps), x)
