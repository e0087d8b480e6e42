"""Square attack (Andriushchenko et al. 2020): random search over square-shaped updates, with the model's
scores only (no gradients). Each query changes one square window of the current best point and keeps
the change if the margin loss drops; the window shrinks on a fixed schedule."""

from __future__ import annotations

import math

import torch
from torch import nn

from .._args import check_call
from .._checks import PellucidError, check_choice, check_number, checked_keywords, generator
from .._grad import logits_of
from .._progress import bar
from .._state import model_state
from ..registry import Attack, register_attack
from ._loop import NORMS, _attack_target, _mask, _per_sample
from ._losses import margin


@checked_keywords
def square(model: nn.Module, x: torch.Tensor, label, eps: float, queries: int = 5000, norm: str = "linf",
           seed: int | torch.Generator = 0, targeted=False, *, p_init: float = 0.8, batch_size: int | None = None,
           progress: bool = True) -> torch.Tensor:
    """Score-based Square attack (Andriushchenko et al. 2020) in the L-infinity or L2 ball of radius ``eps``.

    Starts from vertical stripes of ``+-eps`` (linf) or a grid of ``+-`` square patterns (l2), then makes
    up to ``queries - 1`` random square updates (one forward pass each, no gradients), keeping each
    that lowers the margin ``z_label - max_other`` (targeted: ``max_other - z_target``). The square's
    area starts at ``p_init`` of the image and halves on AutoAttack's schedule. An image leaves the
    batch once fooled. Randomness comes from ``seed`` and does not depend on the other images of the
    batch. ``targeted`` as in :func:`pgd`. Shape: ``(N, C, H, W)`` in, same out.

    >>> adv = pl.square(model, x, y, eps=0.1, queries=1000)
    """
    return _square(model, x, label, eps, queries, norm, seed, targeted, p_init, batch_size, progress)[0]


def _square(model, x, label, eps, queries=5000, norm="linf", seed=0, targeted=False, p_init=0.8, batch_size=None,
            progress=True, rows=None) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`square` that also returns whether each image is fooled, attacking only ``rows``."""
    x, bs = check_call(model, x, batch_size)
    goal, is_targeted = _attack_target(model, x, label, targeted)
    check_choice(norm, "norm", NORMS)
    eps_ = _per_sample(eps, "eps", len(x), x.device)
    if isinstance(queries, bool) or not isinstance(queries, int) or queries < 1:
        raise PellucidError(f"queries must be an int >= 1, got {queries!r}")
    p_init = check_number(p_init, "p_init", 0, 1, low_open=True, hint=" (the first square's share of the image)")
    if p_init > 1:
        raise PellucidError(f"p_init must be in (0, 1], got {p_init:g}")
    gen = generator(seed, x.device)
    n, c, h, w = x.shape
    y = goal.classes.to(x.device)
    sign = -1.0 if is_targeted else 1.0

    def loss(xs, ys):  # the margin to push below 0
        return sign * margin(logits_of(model, xs, len(xs), bs), ys)

    def choice(shape):  # +-1, drawn for every image of the batch
        return torch.randint(0, 2, shape, generator=gen, device=x.device).to(x.dtype) * 2 - 1

    with model_state(model):
        todo = _mask(rows, n, x.device)
        idx = torch.nonzero(todo).flatten()
        e = eps_[idx].reshape(-1, 1, 1, 1)
        x0 = x[idx]
        if norm == "linf":
            best = (x0 + e * choice((n, c, 1, w))[idx]).clamp(0, 1)
        else:
            best = (x0 + _unit_l2(_l2_start(choice, h, w, n, c, x)[idx]) * e).clamp(0, 1)
        adv = x.clone()
        m = loss(best, y[idx])
        with bar(queries - 1, f"square {norm}", progress, unit="query") as b:
            for i in range(queries - 1):
                p = _p_schedule(p_init, int(i / queries * 10000))
                draw = _draw(gen, choice, p, n, c, h, w, norm, x)
                run = m > 0
                if not run.all():  # fooled images leave the batch
                    adv[idx[~run]] = best[~run]
                    idx, x0, e, best, m = idx[run], x0[run], e[run], best[run], m[run]
                if not len(idx):
                    break
                new = _propose(x0, best, e, draw, idx, norm)
                m_new = loss(new, y[idx])
                better = m_new < m
                best = torch.where(better.reshape(-1, 1, 1, 1), new, best)
                m = torch.where(better, m_new, m)
                b.update(1)
                b.set_postfix(running=len(idx), refresh=False)
        adv[idx] = best
        pred = logits_of(model, adv, n, bs).argmax(1)
    fooled = ((pred == y) if is_targeted else (pred != y)) & todo
    return adv, fooled


def _p_schedule(p_init: float, it: int) -> float:
    """The fraction of pixels a square covers at (rescaled) iteration ``it`` of 10,000."""
    for limit, div in ((10, 1), (50, 2), (200, 4), (500, 8), (1000, 16), (2000, 32), (4000, 64), (6000, 128),
                       (8000, 256)):
        if it <= limit:
            return p_init / div
    return p_init / 512


def _draw(gen, choice, p, n, c, h, w, norm, x) -> dict:
    """The random numbers of one query, drawn for every image (so they do not depend on which run)."""
    features = c * h * w
    if norm == "linf":
        s = min(max(int(round(math.sqrt(p * features / c))), 1), h, w)
        at = torch.randint(0, h - s + 1, (1,), generator=gen, device=x.device).item(), \
            torch.randint(0, w - s + 1, (1,), generator=gen, device=x.device).item()
        return {"s": s, "at": at, "signs": choice((n, c, 1, 1))}
    s = max(int(round(math.sqrt(p * features / c))), 3)
    s = min(s + (s % 2 == 0), h, w)
    at = [torch.randint(0, size - s + 1, (1,), generator=gen, device=x.device).item() for size in (h, w, h, w)]
    flip = bool(torch.rand(1, generator=gen, device=x.device).item() > 0.5)
    return {"s": s, "at": at, "signs": choice((n, c, 1, 1)), "eta": _eta(s, x, flip)}


def _propose(x0, best, e, draw, idx, norm) -> torch.Tensor:
    s, signs = draw["s"], draw["signs"][idx]
    if norm == "linf":  # the square's pixels move to x0 +- eps (one sign per image and channel)
        (vh, vw), new = draw["at"], best.clone()
        win = (slice(None), slice(None), slice(vh, vh + s), slice(vw, vw + s))
        new[win] = (x0[win] + e * signs).clamp(0, 1)
        return new
    vh, vw, vh2, vw2 = draw["at"]
    w1 = (slice(None), slice(None), slice(vh, vh + s), slice(vw, vw + s))
    w2 = (slice(None), slice(None), slice(vh2, vh2 + s), slice(vw2, vw2 + s))
    delta = best - x0
    norm_window = delta[w1].flatten(2).norm(dim=2)[..., None, None]
    norm_image = delta.flatten(1).norm(dim=1).reshape(-1, 1, 1, 1)
    mask = torch.zeros_like(delta[:, :1])
    mask[w1] = 1
    mask[w2] = 1
    norm_windows = (delta * mask).flatten(1).norm(dim=1).reshape(-1, 1, 1, 1)
    new = draw["eta"] * signs + delta[w1] / (1e-12 + norm_window)
    budget = ((e ** 2 - norm_image ** 2).clamp_min(0) / delta.shape[1] + norm_windows ** 2).sqrt()
    new = new / (1e-12 + new.flatten(2).norm(dim=2)[..., None, None]) * budget
    delta[w2] = 0.0
    delta[w1] = new
    return (x0 + _unit_l2(delta) * e).clamp(0, 1)


def _unit_l2(d: torch.Tensor) -> torch.Tensor:
    return d / (d.flatten(1).norm(dim=1).reshape(-1, 1, 1, 1) + 1e-12)


def _eta_rect(a: int, b: int, x) -> torch.Tensor:
    out = torch.zeros(a, b, device=x.device, dtype=x.dtype)
    ca, cb = a // 2, b // 2
    for k in range(max(ca, cb) + 1):
        out[max(ca - k, 0):min(ca - k + 2 * k + 1, a), max(cb - k, 0):min(cb - k + 2 * k + 1, b)] += 1.0 / (k + 1) ** 2
    return out / out.norm()


def _eta(s: int, x, flip: bool) -> torch.Tensor:
    """The l2 square's pattern: two opposite halves of concentric rings, unit norm."""
    out = torch.cat([_eta_rect(s // 2, s, x), -_eta_rect(s - s // 2, s, x)])
    out = out / out.norm()
    return out.T if flip else out


def _l2_start(choice, h, w, n, c, x) -> torch.Tensor:
    """A grid of ``+-`` square patterns (5 to a side), one sign per image, channel and cell."""
    delta = torch.zeros(n, c, h, w, device=x.device, dtype=x.dtype)
    s = max(h // 5, 1)
    start = (h - s * 5) // 2
    for vh in range(start, start + s * (h // s), s):
        for vw in range(start, start + s * (w // s), s):
            if vh + s <= h and vw + s <= w:
                delta[:, :, vh:vh + s, vw:vw + s] += _eta(s, x, False) * choice((n, c, 1, 1))
    return delta


def _square_attack(model, x, label, eps, *, targeted=False, norm="linf", steps=5000, seed=0, batch_size=None,
                   progress=False):
    return square(model, x, label, eps, steps, norm, seed, targeted, batch_size=batch_size, progress=progress)


register_attack(Attack("square", "Square", _square_attack, seeded=True, steps=1000, cost="expensive", alpha=False,
                       summary="random search over squares with the scores only, no gradients "
                               "(Andriushchenko et al. 2020); steps = queries"))
