"""FGSM and PGD: one signed step, and projected gradient descent in an L-infinity or L2 ball."""

from __future__ import annotations

import torch
from torch import nn

from .._args import check_call
from .._checks import PellucidError, check_choice, check_number, check_positive_int, checked_keywords, generator
from .._grad import input_gradient
from .._state import model_state
from ..registry import Attack, register_attack
from ._loop import NORMS, _ascend, _per_sample, _project, _reached, _score_target, _unit


@checked_keywords
def fgsm(model: nn.Module, x: torch.Tensor, label, eps: float, targeted=False, *,
         batch_size: int | None = None) -> torch.Tensor:
    """Fast gradient sign method (Goodfellow et al. 2015), L-infinity.

    ``x + eps * sign(d CE(label) / dx)`` (away from the label), or ``x - eps * sign(d CE(target) / dx)``
    when targeted, clamped to [0, 1]. ``eps`` is a number or one per image. ``targeted``: ``False``,
    ``True`` (``label`` holds the targets) or the target classes (``label`` the true ones).
    ``label`` may also be a score instead of classes: a callable ``output -> (N,)`` scores (such as
    :func:`pl.segmentation_target`) or ``None`` (a single-output model's output); the attack pushes the
    score down, or up with ``targeted=True``. Shape: ``(N, C, H, W)`` in, same out.

    >>> adv = pl.fgsm(model, x, y, eps=0.1)
    """
    x, bs = check_call(model, x, batch_size)
    eps_ = _per_sample(eps, "eps", len(x), x.device).reshape(-1, 1, 1, 1)
    goal, is_targeted = _score_target(model, x, label, targeted)
    with model_state(model):
        grad, _ = input_gradient(model, x, goal, bs)
    direction = grad.sign() if is_targeted else -grad.sign()  # grad is of log_softmax = -CE
    return (x + eps_ * direction).clamp(0, 1)


@checked_keywords
def pgd(model: nn.Module, x: torch.Tensor, label, eps: float, alpha: float, steps: int, norm: str = "linf",
        targeted=False, random_start: bool = True, seed: int | torch.Generator = 0, early_stop: bool = False, *,
        momentum: float = 0.0, batch_size: int | None = None, progress: bool = True) -> torch.Tensor:
    """Projected gradient descent (Madry et al. 2018) in the L-infinity or L2 ball of radius ``eps``.

    ``steps`` steps of size ``alpha`` on the cross-entropy (sign of the gradient for ``"linf"``,
    the L2-normalized gradient for ``"l2"``), each followed by a projection onto the eps-ball and
    into [0, 1]. ``random_start`` starts at a uniform point of the ball (seeded). ``early_stop``
    stops each image once it is misclassified (or classified as the target): it takes no more
    steps and leaves the batch. ``eps`` and ``alpha`` are numbers or one per image; ``targeted`` as
    in :func:`fgsm`. ``momentum=mu`` > 0 is MI-FGSM (Dong et al. 2018): each step follows
    ``g <- mu * g + grad / mean|grad|`` instead of the gradient (with ``random_start=False``, as
    the paper). ``label`` may be a score to push down (or up, ``targeted=True``) as in :func:`fgsm`; then
    ``early_stop`` does not apply. Shape: ``(N, C, H, W)`` in, same out.

    >>> adv = pl.pgd(model, x, y, eps=0.1, alpha=0.01, steps=40)
    """
    return _pgd(model, x, label, eps, alpha, steps, norm, targeted, random_start, seed, early_stop,
                batch_size, progress, momentum)[0]


def _pgd(model, x, label, eps, alpha, steps, norm="linf", targeted=False, random_start=True, seed=0,
         early_stop=False, batch_size=None, progress=True, momentum=0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`pgd` that also returns the steps each image took."""
    x, bs = check_call(model, x, batch_size)
    check_choice(norm, "norm", NORMS)
    eps_ = _per_sample(eps, "eps", len(x), x.device)
    alpha_ = _per_sample(alpha, "alpha", len(x), x.device)
    steps = check_positive_int(steps, "steps")
    goal, is_targeted = _score_target(model, x, label, targeted)
    if early_stop and goal.classes is None:
        raise PellucidError("early_stop needs class labels (it stops at a changed prediction); a score target "
                            "has no prediction to change: leave early_stop=False")
    sign = 1.0 if is_targeted else -1.0  # the gradient is of log_softmax = -CE (or of the score)
    start = _random_start(x, eps_, norm, generator(seed, x.device)) if random_start else x
    mu = check_number(momentum, "momentum", 0)
    past = torch.zeros_like(x) if mu else None  # MI-FGSM's accumulated direction

    def step(xi: torch.Tensor, grad: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        x0, a, e = (x, alpha_, eps_) if len(rows) == len(x) else (t[rows.to(x.device)] for t in (x, alpha_, eps_))
        if past is not None:
            r = rows.to(x.device)
            past[r] = grad = mu * past[r] + grad / grad.abs().flatten(1).mean(1).clamp_min(1e-12).reshape(-1, 1, 1, 1)
        moved = xi + a.reshape(-1, 1, 1, 1) * sign * _unit(grad, norm)
        return (x0 + _project(moved - x0, e, norm)).clamp_(0, 1)

    done = _reached(goal.classes, is_targeted) if early_stop else None
    with model_state(model):
        adv, taken, _ = _ascend(model, start, goal, steps, step, done, bs, progress, f"pgd {norm}")
    return adv, taken


def _random_start(x: torch.Tensor, eps: torch.Tensor, norm: str, gen: torch.Generator) -> torch.Tensor:
    """A uniform point of each eps-ball around ``x`` (torchattacks' scheme), clamped to [0, 1]."""
    e = eps.reshape(-1, 1, 1, 1)
    if norm == "linf":
        noise = torch.rand(x.shape, generator=gen, device=x.device, dtype=x.dtype) * 2 - 1
        return (x + noise * e).clamp(0, 1)
    direction = torch.randn(x.shape, generator=gen, device=x.device, dtype=x.dtype)
    radius = torch.rand((len(x), 1, 1, 1), generator=gen, device=x.device, dtype=x.dtype)
    return (x + _unit(direction, "l2") * radius * e).clamp(0, 1)


register_attack(Attack("fgsm", "FGSM", fgsm, iterative=False, norms=("linf",),
                       summary="one signed-gradient step of size eps (Goodfellow et al. 2015)"))
register_attack(Attack("pgd", "PGD", pgd, seeded=True, steps=40,
                       summary="projected gradient descent from a random start (Madry et al. 2018)"))
