"""How far is the nearest wrong answer: minimal L2 perturbations by Carlini-Wagner (an optimization in
tanh space) and DeepFool (steps to the nearest linearized decision boundary)."""

from __future__ import annotations

import math

import torch
from torch import nn

from .._args import check_call
from .._checks import check_number, check_positive_int, checked_keywords
from .._grad import _cat, iter_gradients, logits_of
from .._progress import bar
from .._state import model_state
from ..registry import Attack, register_attack
from ._loop import _attack_target, _classes, _per_sample, _project
from ._losses import margin


@checked_keywords
def cw(model: nn.Module, x: torch.Tensor, label, c: float = 1.0, kappa: float = 0.0, steps: int = 100,
       lr: float = 0.01, targeted=False, *, batch_size: int | None = None, progress: bool = True) -> torch.Tensor:
    """Carlini-Wagner L2 (Carlini & Wagner 2017): the smallest fooling point Adam finds.

    Minimizes ``||a - x||_2^2 + c * max(z_label - max_other, -kappa)`` (targeted: ``max_other - z_target``)
    over ``a = (tanh(w) + 1) / 2``, which keeps ``a`` in [0, 1], from ``a = x``, with Adam (``lr``) for
    ``steps`` steps. Returns, per image, the fooling point of smallest L2 distance seen, or the image
    itself where none fooled. Every ``steps // 10`` steps an image whose objective went up stops (it
    leaves the batch). ``c`` is a number or one per image; ``targeted`` as in :func:`pgd`.
    Shape: ``(N, C, H, W)`` in, same out.

    >>> adv = pl.cw(model, x, y, c=1.0, steps=100)
    """
    x, bs = check_call(model, x, batch_size)
    goal, is_targeted = _attack_target(model, x, label, targeted)
    c_ = _per_sample(c, "c", len(x), x.device)
    kappa = check_number(kappa, "kappa", 0)
    lr = check_number(lr, "lr", 0, low_open=True)
    steps = check_positive_int(steps, "steps")
    y = goal.classes.to(x.device)
    sign = -1.0 if is_targeted else 1.0
    w = torch.atanh((x * 2 - 1).clamp(-1 + 1e-6, 1 - 1e-6))
    m1, m2 = torch.zeros_like(w), torch.zeros_like(w)
    best, best_l2 = x.clone(), torch.full((len(x),), math.inf, device=x.device)
    prev = torch.full((len(x),), math.inf, device=x.device)
    idx, every = torch.arange(len(x), device=x.device), max(steps // 10, 1)
    with model_state(model), bar(steps, "cw l2", progress, unit="step") as b:
        for i in range(steps):
            a = (torch.tanh(w) + 1) / 2
            yi, ci, kept = y[idx], c_[idx], []

            def f(logits, rows, yi=yi, ci=ci, kept=kept):
                kept.append(logits.detach())
                return ci[rows] * (sign * margin(logits, yi[rows])).clamp_min(-kappa)

            grads, fs = zip(*[(g, s) for _, g, s in iter_gradients(model, a, len(a), f, bs)])
            grad_f, fv, pred = _cat(grads), _cat(fs), _cat(kept).argmax(1)
            l2 = (a - x[idx]).flatten(1).pow(2).sum(1)
            fooled = (pred == yi) if is_targeted else (pred != yi)
            better = fooled & (l2 < best_l2[idx])
            best[idx[better]], best_l2[idx[better]] = a[better], l2[better]
            keep = torch.ones_like(fooled)
            if i % every == 0:  # an image whose objective went up since the last check stops
                cost = l2 + fv
                keep = ~(cost > prev[idx])
                prev[idx] = cost
            # Adam on w (torch.optim.Adam's update, per image)
            g = (2 * (a - x[idx]) + grad_f) * (1 - torch.tanh(w) ** 2) / 2
            m1 = 0.9 * m1 + 0.1 * g
            m2 = 0.999 * m2 + 0.001 * g * g
            t = i + 1
            w = w - lr / (1 - 0.9 ** t) * m1 / (m2.sqrt() / math.sqrt(1 - 0.999 ** t) + 1e-8)
            if not keep.all():
                idx, w, m1, m2 = idx[keep], w[keep], m1[keep], m2[keep]
                if not len(idx):
                    break
            b.update(1)
    return best


@checked_keywords
def deepfool(model: nn.Module, x: torch.Tensor, label, steps: int = 50, overshoot: float = 0.02, *,
             candidates: int = 10, batch_size: int | None = None, progress: bool = True) -> torch.Tensor:
    """DeepFool (Moosavi-Dezfooli et al. 2016): steps to the nearest decision boundary of the linearized
    model, in L2.

    Each step linearizes ``z_k - z_label`` for the ``candidates - 1`` classes most likely at ``x`` (one
    gradient per class, stacked on the batch axis), moves to the nearest of those hyperplanes, and adds
    that move to the total ``r``; the point is ``clip(x + (1 + overshoot) * r, 0, 1)``. An image stops
    once misclassified (it leaves the batch), or after ``steps`` steps. Images misclassified already are
    returned as they are. Shape: ``(N, C, H, W)`` in, same out.

    >>> adv = pl.deepfool(model, x, y)
    """
    x, bs = check_call(model, x, batch_size)
    y = _classes(model, x, label, "label").classes.to(x.device)
    steps = check_positive_int(steps, "steps")
    candidates = check_positive_int(candidates, "candidates", 2)
    overshoot = check_number(overshoot, "overshoot", 0)
    out = x.clone()
    with model_state(model):
        clean = logits_of(model, x, len(x), bs)
        k = min(candidates, clean.shape[1]) - 1
        order = clean.scatter(1, y[:, None], float("-inf")).argsort(1, descending=True)[:, :k]
        idx = torch.nonzero(clean.argmax(1) == y).flatten()
        total = torch.zeros_like(x)
        xi = x.clone()
        with bar(steps, "deepfool", progress, unit="step") as b:
            for _ in range(steps):
                if not len(idx):
                    break
                cur, yi, ci, kept = xi[idx], y[idx], order[idx], []

                def diff(logits, rows, yi=yi, ci=ci, kept=kept):
                    r = torch.arange(rows.start, rows.stop, device=logits.device)
                    kept.append(logits.detach())
                    i, j = r // k, r % k
                    return logits.gather(1, ci[i, j][:, None]).squeeze(1) - logits.gather(1, yi[i][:, None]).squeeze(1)

                def make(rows, cur=cur):
                    return cur[torch.arange(rows.start, rows.stop, device=cur.device) // k]

                grads, fs = zip(*[(g, s) for _, g, s in iter_gradients(model, make, len(idx) * k, diff, bs)])
                wk, fk = _cat(grads).reshape(len(idx), k, *x.shape[1:]), _cat(fs).reshape(len(idx), k)
                pred = _cat(kept)[::k].argmax(1)
                done = pred != yi
                if done.any():
                    out[idx[done]] = cur[done]
                    idx, wk, fk = idx[~done], wk[~done], fk[~done]
                    if not len(idx):
                        break
                size = wk.flatten(2).norm(dim=2).clamp_min(1e-12)
                dist = fk.abs() / size
                near = dist.argmin(1)
                rows = torch.arange(len(idx), device=x.device)
                w_near = wk[rows, near]
                r = ((dist[rows, near] + 1e-4) / size[rows, near]).reshape(-1, 1, 1, 1) * w_near
                total[idx] += r
                xi[idx] = (x[idx] + (1 + overshoot) * total[idx]).clamp(0, 1)
                b.update(1)
        out[idx] = xi[idx]
    return out


def _within(x, adv, eps, norm):
    """The point ``adv`` pulled into the eps-ball around ``x`` (what the front ends ask of an attack)."""
    e = _per_sample(eps, "eps", len(x), x.device)
    return (x + _project(adv - x, e, norm)).clamp(0, 1)


def _cw_attack(model, x, label, eps, *, targeted=False, norm="linf", steps=100, batch_size=None, progress=False):
    x, _ = check_call(model, x, batch_size)
    _per_sample(eps, "eps", len(x), x.device)
    return _within(x, cw(model, x, label, steps=steps, targeted=targeted, batch_size=batch_size,
                         progress=progress), eps, norm)


def _deepfool_attack(model, x, label, eps, *, targeted=False, norm="linf", steps=50, batch_size=None,
                     progress=False):
    x, _ = check_call(model, x, batch_size)
    _per_sample(eps, "eps", len(x), x.device)
    if targeted is not False and targeted is not None:
        from .._checks import PellucidError

        raise PellucidError("deepfool is untargeted; leave targeted unset")
    return _within(x, deepfool(model, x, label, steps, batch_size=batch_size, progress=progress), eps, norm)


register_attack(Attack("cw", "Carlini-Wagner L2", _cw_attack, steps=100, cost="expensive", alpha=False,
                       summary="the smallest fooling point Adam finds in tanh space (Carlini & Wagner 2017), "
                               "pulled into the eps-ball"))
register_attack(Attack("deepfool", "DeepFool", _deepfool_attack, steps=50, cost="moderate", alpha=False,
                       summary="steps to the nearest linearized decision boundary (Moosavi-Dezfooli et al. "
                               "2016), pulled into the eps-ball"))
