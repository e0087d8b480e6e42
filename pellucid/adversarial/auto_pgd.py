"""Auto-PGD (Croce & Hein 2020): PGD with momentum whose step size halves at checkpoints where the loss
stalls or oscillates; with the cross-entropy or the DLR loss, untargeted, towards given classes, or
towards each of the top-k other classes in turn (APGD-T, as AutoAttack runs it)."""

from __future__ import annotations

import torch
from torch import nn

from .._args import check_call, num_classes
from .._checks import check_choice, check_number, check_positive_int, checked_keywords, generator
from .._grad import logits_of
from .._progress import bar
from .._state import model_state
from ..registry import Attack, register_attack
from ._loop import NORMS, _gradient_and_logits, _mask, _noise, _per_sample, _project, _start, _top_or_target, _unit
from ._losses import Loss, check_loss


@checked_keywords
def apgd(model: nn.Module, x: torch.Tensor, label, eps: float, steps: int = 100, norm: str = "linf",
         loss: str = "ce", targeted=False, restarts: int = 1, seed: int | torch.Generator = 0, *,
         top_k: int = 9, rho: float = 0.75, batch_size: int | None = None, progress: bool = True) -> torch.Tensor:
    """Auto-PGD (Croce & Hein 2020) in the L-infinity or L2 ball of radius ``eps``.

    Each run starts at a random point of the ball (seeded) and takes ``steps`` momentum steps
    (``0.75``) of size ``2 * eps``, halved at checkpoints (after 22%, then shorter and shorter
    stretches of the run) for each image whose loss rose in at most ``rho`` of the stretch's steps or
    whose best loss did not improve since the last checkpoint; a halving restarts from the best point.
    ``loss``: ``"ce"`` (cross-entropy) or ``"dlr"`` (difference of logits ratio, scale-invariant).

    ``targeted``: ``False`` (away from ``label``), ``True`` or class indices (towards them, as in
    :func:`pgd`), or ``"top"``: APGD-T, towards each of the ``top_k`` most likely other classes in turn
    (AutoAttack: ``loss="dlr"``, 9 targets), an image counting as broken once misclassified.
    Images already fooled (misclassified, or at their target) are returned as they are; the rest run
    ``restarts`` times until fooled, and an image leaves the batch as soon as it is (early exit).
    An image that is never fooled comes back at the point of highest loss found.
    Shape: ``(N, C, H, W)`` in, same out.

    >>> adv = pl.apgd(model, x, y, eps=8 / 255)                          # APGD-CE
    >>> adv = pl.apgd(model, x, y, eps=8 / 255, loss="dlr", targeted="top")  # APGD-T
    """
    return _apgd(model, x, label, eps, steps, norm, loss, targeted, restarts, seed, top_k, rho, batch_size,
                 progress)[0]


def _apgd(model, x, label, eps, steps=100, norm="linf", loss="ce", targeted=False, restarts=1, seed=0, top_k=9,
          rho=0.75, batch_size=None, progress=True, rows=None) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`apgd` that also returns whether each image is fooled, attacking only ``rows`` (others are
    returned as they are). Random starts are drawn for the whole batch, so an image's run does not
    depend on which other images are attacked along with it."""
    x, bs = check_call(model, x, batch_size)
    goal, is_targeted, top = _top_or_target(model, x, label, targeted)
    check_choice(norm, "norm", NORMS)
    check_loss(loss, num_classes(model), is_targeted or top)
    eps_ = _per_sample(eps, "eps", len(x), x.device)
    steps = check_positive_int(steps, "steps")
    restarts = check_positive_int(restarts, "restarts")
    top_k = check_positive_int(top_k, "top_k")
    rho = check_number(rho, "rho", 0, 1, hint=" (the share of improving steps that keeps the step size)")
    gen = generator(seed, x.device)
    classes = goal.classes.to(x.device)
    with model_state(model):
        clean = logits_of(model, x, len(x), bs)
        if not is_targeted:
            y, t = classes, None
        else:  # the targeted DLR compares with the most likely class other than the target
            y, t = clean.scatter(1, classes[:, None], float("-inf")).argmax(1), classes
        done = (clean.argmax(1) == t) if is_targeted else (clean.argmax(1) != y)
        todo = _mask(rows, len(x), x.device)
        todo &= ~done
        adv, fooled = x.clone(), done.clone()
        targets = [t] if not top else [clean.argsort(1, descending=True)[:, k] for k in
                                       range(1, min(top_k, clean.shape[1] - 1) + 1)]
        runs = len(targets) * restarts
        with bar(runs * steps, f"apgd-{'t' if top else loss} {norm}", progress, unit="step") as b:
            for target in targets:
                for _ in range(restarts):
                    noise = _noise(x, norm, gen)  # for every image: each image's start depends on the seed only
                    idx = torch.nonzero(todo & ~fooled).flatten()
                    if not idx.numel():
                        b.update(steps)
                        continue
                    tt = None if target is None else target[idx]
                    a, f = _run(model, x[idx], y[idx], tt, eps_[idx], noise[idx], steps, norm, loss, rho,
                                is_targeted, bs, b)
                    better = f | ~fooled[idx]  # a fooling point, or a higher-loss point of an unfooled image
                    adv[idx[better]] = a[better]
                    fooled[idx[f]] = True
    return adv, fooled


def _run(model, x0, y, t, eps, noise, steps, norm, kind, rho, to_target, bs, b):
    """One APGD run on the images ``x0``: their adversarial points and whether each is fooled."""
    e = eps.reshape(-1, 1, 1, 1)
    x_adv = _start(x0, noise, eps, norm)
    out, fooled = x_adv.clone(), torch.zeros(len(x0), dtype=torch.bool, device=x0.device)
    n2, n_min, decrease = max(int(0.22 * steps), 1), max(int(0.06 * steps), 1), max(int(0.03 * steps), 1)

    def evaluate(xs, s):
        grad, value, logits = _gradient_and_logits(model, xs, Loss(kind, s["y"], s["t"]), bs)
        pred = logits.argmax(1)
        return grad, value, (pred == s["t"]) if to_target else (pred != s["y"])

    # the state of each image still running; rows leave it when fooled
    s = {"x0": x0, "e": e, "y": y, "t": t, "idx": torch.arange(len(x0), device=x0.device)}
    grad, value, hit = evaluate(x_adv, s)
    s.update(x=x_adv, x_old=x_adv, grad=grad, best=x_adv.clone(), grad_best=grad.clone(), loss_best=value.clone(),
             step=2 * e.clone(), history=torch.zeros(len(x0), steps, device=x0.device),
             reduced=torch.ones(len(x0), dtype=torch.bool, device=x0.device), best_last=value)
    if norm == "linf":  # the ball and [0, 1] as two bounds: one clamp per projection
        s.update(lo=(x0 - e).clamp(0, 1), hi=(x0 + e).clamp(0, 1))
    s = _leave(s, hit, out, fooled)
    k, since = n2, 0

    def proj(z):
        if norm == "linf":
            return torch.minimum(torch.maximum(z, s["lo"]), s["hi"])
        return (s["x0"] + _project(z - s["x0"], s["e"].flatten(), norm)).clamp(0, 1)

    for i in range(steps):
        if not len(s["idx"]):
            b.update(steps - i)
            break
        xa = s["x"]
        momentum, s["x_old"] = xa - s["x_old"], xa
        a = 0.75 if i > 0 else 1.0
        z = proj(xa + s["step"] * _unit(s["grad"], norm))
        xa = proj(xa + a * (z - xa) + (1 - a) * momentum)
        grad, value, hit = evaluate(xa, s)
        s.update(x=xa, grad=grad)
        s["history"][:, i] = value
        up = torch.nonzero(value > s["loss_best"]).flatten()
        if len(up):
            s["best"][up], s["grad_best"][up], s["loss_best"][up] = xa[up], grad[up], value[up]
        s = _leave(s, hit, out, fooled)
        since += 1
        if since == k:  # checkpoint
            h = s["history"]
            rises = sum((h[:, i - j] > h[:, i - j - 1]).float() for j in range(k))  # index -1: the zero column
            cut = (rises <= k * rho) | (~s["reduced"] & (s["best_last"] >= s["loss_best"]))
            s["reduced"], s["best_last"] = cut, s["loss_best"].clone()
            c = torch.nonzero(cut).flatten()
            if len(c):
                s["step"][c] /= 2
                s["x"], s["grad"] = s["x"].clone(), s["grad"].clone()
                s["x"][c], s["grad"][c] = s["best"][c], s["grad_best"][c]
            since, k = 0, max(k - decrease, n_min)
        b.update(1)
    out[s["idx"]] = s["best"]
    return out, fooled


def _leave(s: dict, hit: torch.Tensor, out: torch.Tensor, fooled: torch.Tensor) -> dict:
    """Record the fooled rows' points and drop them from the running state."""
    if not hit.any():
        return s
    gone = s["idx"][hit]
    out[gone], fooled[gone] = s["x"][hit] if "x" in s else out[gone], True
    keep = ~hit
    return {k: (v[keep] if isinstance(v, torch.Tensor) else v) for k, v in s.items()}


def _apgd_attack(model, x, label, eps, *, targeted=False, norm="linf", steps=100, seed=0, batch_size=None,
                 progress=False):
    return apgd(model, x, label, eps, steps, norm, targeted=targeted, seed=seed, batch_size=batch_size,
                progress=progress)


register_attack(Attack("apgd", "APGD-CE", _apgd_attack, seeded=True, steps=100, cost="expensive", alpha=False,
                       summary="PGD with momentum and a step size that halves where the loss stalls "
                               "(Croce & Hein 2020)"))
