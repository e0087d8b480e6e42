"""FAB, the fast adaptive boundary attack (Croce & Hein 2020): a minimal-perturbation attack. Each step
linearizes the decision boundary at the current point, projects both the current point and the original
image onto that hyperplane inside the box [0, 1] (the smallest step in the norm), and moves to a convex
mix of the two projections, biased towards the original image; once a point is misclassified it steps
back towards the original (``beta``), so the search closes in on the boundary from both sides.

Targeted FAB (``targeted="top"``, AutoAttack's FAB-T) follows, in turn, the boundary towards each of the
``top_k`` most likely other classes: one gradient pass a step. Untargeted FAB picks the nearest boundary
of all classes, one gradient pass per class a step.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .._args import check_call
from .._checks import PellucidError, check_choice, check_number, check_positive_int, checked_keywords, generator
from .._grad import input_gradient, logits_of
from .._progress import bar
from .._state import model_state
from ..registry import Attack, register_attack
from ._loop import NORMS, _mask, _noise, _per_sample, _size, _start, _top_or_target

# the restart radius when ``eps`` is not given and no adversarial point is known (the reference's defaults)
RESTART_RADIUS = {"linf": 0.3, "l2": 1.0}


@checked_keywords
def fab(model: nn.Module, x: torch.Tensor, label, eps: float | None = None, steps: int = 100, norm: str = "linf",
        targeted="top", restarts: int = 1, seed: int | torch.Generator = 0, *, top_k: int = 9,
        alpha_max: float = 0.1, eta: float = 1.05, beta: float = 0.9, batch_size: int | None = None,
        progress: bool = True) -> torch.Tensor:
    """FAB (Croce & Hein 2020): the smallest adversarial perturbation it finds in the L-infinity or L2 norm.

    ``targeted``: ``"top"`` (FAB-T, as AutoAttack runs it: the boundary towards each of the ``top_k`` most
    likely other classes in turn, one gradient pass a step; broken = misclassified), ``False`` (the
    nearest boundary over all classes, one gradient pass per class a step), ``True`` or class indices
    (towards given classes, as in :func:`pgd`; broken = predicted as the target).

    Each run takes ``steps`` steps from the image itself (restarts after the first from a random point at
    half the smaller of ``eps`` and the best norm found; without either, half of 0.3 (linf) or 1.0 (l2),
    the reference's defaults). With ``eps``, an image is done as soon as a
    broken point within ``eps`` is found and only such points count; without it, every run goes on to
    shrink the perturbation. Returns, per image, the broken point of smallest norm found (the image
    itself where none was). Randomness comes from ``seed`` and does not depend on the other images.
    Shape: ``(N, C, H, W)`` in, same out.

    >>> adv = pl.fab(model, x, y, eps=8 / 255)                 # FAB-T
    >>> adv = pl.fab(model, x, y, norm="l2", targeted=False)  # minimal L2 perturbations
    """
    return _fab(model, x, label, eps, steps, norm, targeted, restarts, seed, top_k, alpha_max, eta, beta,
                batch_size, progress)[0]


def _fab(model, x, label, eps=None, steps=100, norm="linf", targeted="top", restarts=1, seed=0, top_k=9,
         alpha_max=0.1, eta=1.05, beta=0.9, batch_size=None, progress=True, rows=None):
    """:func:`fab` that also returns whether each image is broken (within ``eps`` where given), attacking
    only ``rows``. Random starts are drawn for the whole batch."""
    x, bs = check_call(model, x, batch_size)
    goal, to_target, top = _top_or_target(model, x, label, targeted)
    check_choice(norm, "norm", NORMS)
    eps_ = None if eps is None else _per_sample(eps, "eps", len(x), x.device)
    steps, restarts, top_k = (check_positive_int(v, n) for v, n in ((steps, "steps"), (restarts, "restarts"),
                                                                      (top_k, "top_k")))
    alpha_max = check_number(alpha_max, "alpha_max", 0, 1)
    eta = check_number(eta, "eta", 1)
    beta = check_number(beta, "beta", 0, 1)
    gen = generator(seed, x.device)
    goal_classes = goal.classes.to(x.device)
    with model_state(model):
        clean = logits_of(model, x, len(x), bs)
        if clean.dim() != 2:
            raise PellucidError(f"FAB needs class logits of shape (N, classes); the model returned shape "
                                f"{tuple(clean.shape)}")
        classes = clean.shape[1]
        if classes < 2:
            raise PellucidError(f"FAB crosses the boundary between classes; this model has {classes} output")
        pred = clean.argmax(1)
        # towards given classes: broken = at the target; otherwise broken = no longer the label
        reached = (pred == goal_classes) if to_target else (pred != goal_classes)
        todo = _mask(rows, len(x), x.device) & ~reached
        if eps_ is not None:
            todo &= eps_ > 0  # nothing is broken within 0
        if top:
            order = clean.argsort(1, descending=True)
            targets = [order[:, k] for k in range(1, min(top_k, classes - 1) + 1)]
        else:
            targets = [goal_classes if to_target else None]
        best = torch.full((len(x),), float("inf"), device=x.device)
        best[reached] = 0.0
        adv = x.clone()
        # an image leaves once broken within its limit; without eps it never leaves (-inf)
        limit = torch.full_like(best, float("-inf")) if eps_ is None else eps_
        with bar(len(targets) * restarts * steps, f"fab{'-t' if top else ''} {norm}", progress, unit="step") as b:
            for t in targets:
                for r in range(restarts):
                    noise = None if r == 0 else _noise(x, norm, gen)  # restarts draw for the whole batch
                    idx = torch.nonzero(todo & ~(best <= limit)).flatten()
                    if not idx.numel():
                        b.update(steps)
                        continue
                    x0 = x[idx]
                    start = x0 if noise is None else _restart(x0, noise[idx], best[idx],
                                                              None if eps_ is None else eps_[idx], norm)
                    want = goal_classes[idx]
                    done = (lambda p, i, want=want: p == want[i]) if to_target else \
                        (lambda p, i, want=want: p != want[i])
                    # towards given classes the boundary is with the runner-up at each point (y None)
                    out, size = _run(model, x0, start, None if to_target else want, None if t is None else t[idx],
                                     limit[idx], steps, norm, alpha_max, eta, beta, done, classes, bs, b)
                    better = size < best[idx]
                    adv[idx[better]], best[idx[better]] = out[better], size[better]
    broken = torch.isfinite(best) if eps_ is None else best <= eps_
    adv[~broken] = x[~broken]
    return adv, broken


def _restart(x0, noise, best, eps, norm) -> torch.Tensor:
    """A random start at half the smaller of ``eps`` and the best norm found (the reference's rule);
    without either, half of :data:`RESTART_RADIUS`."""
    known = best.clone()
    if eps is None:
        known[~torch.isfinite(known)] = RESTART_RADIUS[norm]
    else:
        known = torch.minimum(known, eps)
    return _start(x0, noise, 0.5 * known, norm)


def _run(model, x0, start, y, t, limit, steps, norm, alpha_max, eta, beta, done, classes, bs, b):
    """One FAB run from ``start``: the smallest broken point per image and its norm (inf where none).
    An image leaves once it has a broken point within ``limit``."""
    shape = x0.shape
    x0f, x1 = x0.flatten(1), start.flatten(1).clone()
    best = torch.full((len(x0),), float("inf"), device=x0.device)
    out = x0.clone()
    live = torch.arange(len(x0), device=x0.device)
    for i in range(steps):
        if not live.numel():
            b.update(steps - i)
            break
        xa, xo = x1[live], x0f[live]
        gap, w = _nearest_boundary(model, xa.reshape(-1, *shape[1:]), None if y is None else y[live],
                                   None if t is None else t[live], norm, classes, bs)
        # the linearized boundary {z : w . z = w . xa - gap}; project xa and xo onto it inside [0, 1]
        d1 = _boundary_step(xa, w, -gap, norm)
        d2 = _boundary_step(xo, w, -gap + (w * (xa - xo)).sum(1), norm)
        a1, a2 = _size(d1, norm).clamp_min(1e-8), _size(d2, norm).clamp_min(1e-8)
        alpha = (a1 / (a1 + a2)).clamp(0, alpha_max)[:, None]
        new = ((xa + eta * d1) * (1 - alpha) + (xo + eta * d2) * alpha).clamp(0, 1)
        pred = logits_of(model, new.reshape(-1, *shape[1:]), len(new), bs).argmax(1)
        hit = done(pred, live)
        if hit.any():
            size = _size(new - xo, norm).to(best.dtype)
            better = hit & (size < best[live])
            rows = live[better]
            out[rows], best[rows] = new[better].reshape(-1, *shape[1:]), size[better]
            new[hit] = xo[hit] + beta * (new[hit] - xo[hit])
        x1[live] = new
        live = live[~(best[live] <= limit[live])]
        b.update(1)
    return out, best


class _Gap:
    """``z_k - z_y`` per row for a fixed class ``k`` per row (a target of the primitive); ``y=None``: the
    most likely class other than ``k`` at the point itself (the boundary to cross to reach ``k``)."""

    def __init__(self, y: torch.Tensor | None, k: torch.Tensor):
        self.y, self.k = y, k

    def __call__(self, logits: torch.Tensor, rows=None) -> torch.Tensor:
        rows = slice(None) if rows is None else rows
        k = self.k[rows]
        y = logits.detach().scatter(1, k[:, None], float("-inf")).argmax(1) if self.y is None else self.y[rows]
        z = logits.gather(1, torch.stack([k, y], 1))
        return z[:, 0] - z[:, 1]


def _nearest_boundary(model, x, y, t, norm, classes, bs) -> tuple[torch.Tensor, torch.Tensor]:
    """``(gap, w)``: ``z_t - z_y`` and its input gradient (flattened) per row; with ``t=None``, of the class
    whose linearized boundary is nearest in ``norm`` (one gradient pass per class)."""
    if t is not None:
        grad, gap = input_gradient(model, x, _Gap(y, t), bs)  # y None: the runner-up to t
        return gap, grad.flatten(1)
    best_dist = torch.full((len(x),), float("inf"), device=x.device, dtype=x.dtype)
    gap_best, w_best = torch.zeros(len(x), device=x.device, dtype=x.dtype), torch.zeros_like(x.flatten(1))
    for k in range(classes):
        kk = torch.full_like(y, k)
        grad, gap = input_gradient(model, x, _Gap(y, kk), bs)
        w = grad.flatten(1)
        dual = w.abs().sum(1) if norm == "linf" else w.norm(dim=1)
        dist = gap.abs() / (dual + 1e-12)
        dist[y == k] = float("inf")
        closer = dist < best_dist
        best_dist[closer], gap_best[closer], w_best[closer] = dist[closer], gap[closer], w[closer]
    return gap_best, w_best


def _boundary_step(point: torch.Tensor, w: torch.Tensor, r: torch.Tensor, norm: str) -> torch.Tensor:
    """The smallest step ``d`` (in ``norm``) with ``w . d = r`` that keeps ``point + d`` in [0, 1], per row;
    where no step inside the box gets there, the step of the box that gets closest (its corner).

    Moving pixel ``i`` in the helpful direction ``sign(r w_i)`` by at most its room ``u_i``: the L-inf step of
    radius ``m`` moves each by ``min(m, u_i)``, the L2 step ``d = m w`` clipped to the box moves each by
    ``min(m |w_i|, u_i)``. Either way ``w . d = sum_i a_i min(m, c_i)`` (L-inf: ``a = |w|, c = u``; L2:
    ``a = w^2, c = u / |w|``), a piecewise linear, non-decreasing function of ``m`` solved exactly by
    :func:`_level`."""
    direction = w * torch.where(r >= 0, 1.0, -1.0).to(w.dtype)[:, None]
    room = torch.where(direction > 0, 1 - point, point)
    size = direction.abs()
    moves = size > 0
    if norm == "linf":
        a, cap = size, torch.where(moves, room, torch.zeros_like(room))
    else:
        a, cap = size * size, torch.where(moves, room / size.clamp_min(1e-30), torch.zeros_like(room))
    m = _level(a, cap, r.abs())[:, None]
    step = torch.minimum(m, cap) if norm == "linf" else torch.minimum(m * size, room)
    return step * direction.sign()


def _level(a: torch.Tensor, c: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """Per row, the smallest ``m >= 0`` with ``sum_i a_i min(m, c_i) = r`` (``a, c >= 0``); ``max_i c_i``
    where even that falls short."""
    cs, order = c.sort(1)
    as_ = a.gather(1, order)
    below = torch.cumsum(as_ * cs, 1)                          # sum over j <= k of a_j c_j
    total = as_.sum(1, keepdim=True)
    above = total - torch.cumsum(as_, 1)                       # sum over j > k of a_j
    reach = below + cs * above                                 # the value at m = c_k: non-decreasing in k
    k = (reach < r[:, None]).sum(1, keepdim=True)              # the first breakpoint that reaches r
    short = k.squeeze(1) == c.shape[1]
    k = k.clamp_max(c.shape[1] - 1)
    below_prev = F.pad(below, (1, 0)).gather(1, k)             # sum over j < k of a_j c_j
    rest = torch.cat([total, above], 1).gather(1, k)           # sum over j >= k of a_j
    m = ((r[:, None] - below_prev) / rest.clamp_min(1e-30)).squeeze(1).clamp_min(0)
    return torch.where(short, cs[:, -1], m)


def _fab_attack(model, x, label, eps, *, targeted=False, norm="linf", steps=100, seed=0, batch_size=None,
                progress=False):
    mode = "top" if targeted is False or targeted is None else targeted
    return fab(model, x, label, eps, steps, norm, mode, seed=seed, batch_size=batch_size, progress=progress)


register_attack(Attack("fab", "FAB-T", _fab_attack, seeded=True, steps=100, cost="expensive", alpha=False,
                       summary="the fast adaptive boundary attack, targeted at each of the 9 most likely "
                               "other classes in turn (Croce & Hein 2020)"))
