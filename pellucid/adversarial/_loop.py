"""The loop every attack shares and the checks of its arguments: per-image numbers, classes to move
away from or towards, seeds; one step of the gradient primitive per iteration, with early exit."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from .._checks import PellucidError
from .._grad import _cat, input_gradient, logits_of
from .._progress import bar
from ..targets import Target, as_target

NORMS = ("linf", "l2")


def _per_sample(value, name: str, n: int, device, minimum: float = 0.0) -> torch.Tensor:
    """A float or ``n`` floats (one per image) as an ``(n,)`` tensor; each must be >= ``minimum``."""
    if isinstance(value, bool):
        raise PellucidError(f"{name} must be a number >= {minimum:g}, got bool {value!r}")
    try:
        v = torch.as_tensor(value, dtype=torch.float32).to(device)
    except (TypeError, ValueError, RuntimeError) as e:
        raise PellucidError(f"{name} must be a number >= {minimum:g} or one per image, got {value!r}") from e
    if v.dim() == 0:
        v = v.expand(n)
    if v.dim() != 1 or v.numel() != n:
        raise PellucidError(f"got {v.numel()} values of {name} for {n} images; pass one number, or one per image")
    bad = v[~(v >= minimum) | ~torch.isfinite(v)]
    if bad.numel():
        raise PellucidError(f"{name} must be a finite number >= {minimum:g}, got {float(bad[0]):g}")
    return v


def _classes(model: nn.Module, x: torch.Tensor, value, name: str) -> Target:
    """Class indices (an int or one per image) as a cross-entropy :class:`Target`; no callables."""
    if value is None or (callable(value) and not isinstance(value, torch.Tensor)):
        hint = ("; fgsm and pgd also take a score (a callable output -> (N,) scores, or None for a single-output "
                "model) to push down or up") if name == "label" else ""
        raise PellucidError(f"{name} must be class indices (an int or one per image), got "
                            f"{'None' if value is None else 'a callable'}{hint}")
    return as_target(value, len(x), getattr(model, "num_classes", None), "log_softmax", name)


def _score_target(model: nn.Module, x: torch.Tensor, label, targeted) -> tuple[Target, bool]:
    """FGSM and PGD: class indices as in :func:`_attack_target`, or a score to push down (``targeted=False``)
    or up (``targeted=True``): a callable ``output -> (N,)`` scores (a segmentation or similarity target,
    a regression output read from a dict), or ``None`` (the output of a single-output model)."""
    if label is not None and not (callable(label) and not isinstance(label, torch.Tensor)):
        return _attack_target(model, x, label, targeted)
    if not (targeted is False or targeted is None or targeted is True):  # not ==: 1 is a class, not True
        raise PellucidError(f"with a score target (a callable or None), targeted must be False (push the score "
                            f"down) or True (push it up), got {targeted!r}")
    return as_target(label, len(x), getattr(model, "num_classes", None), "logit", "label").bind(model, x), \
        bool(targeted)


def _attack_target(model, x, label, targeted) -> tuple[Target, bool]:
    """The class to move towards (targeted) or away from (untargeted), and whether it is targeted.

    ``targeted=False``: ``label`` holds the true classes. ``targeted=True``: ``label`` holds the
    target classes (torchattacks' convention). ``targeted=K`` (an int or one per image): the
    targets, and ``label`` the true classes, which must differ from them.
    """
    labels = _classes(model, x, label, "label")
    if targeted is False or targeted is None:
        return labels, False
    if targeted is True:
        return labels, True
    if isinstance(targeted, str):
        raise PellucidError(f"targeted must be False, True or class indices, got {targeted!r} "
                            "('top' is for apgd and fab)")
    goal = _classes(model, x, targeted, "targeted")
    same = torch.nonzero(goal.classes == labels.classes).flatten()
    if same.numel():
        i = int(same[0])
        raise PellucidError(f"targeted attack: target {int(goal.classes[i])} equals the label of image {i}; "
                            "pick a target class different from the true class")
    return goal, True


def _top_or_target(model, x, label, targeted) -> tuple[Target, bool, bool]:
    """APGD and FAB: ``targeted="top"`` (each of the top-k other classes in turn: ``label`` holds the true
    classes) or as in :func:`_attack_target`. Returns the classes, whether they are targets, whether "top"."""
    top = isinstance(targeted, str)
    if top and targeted != "top":
        raise PellucidError(f"targeted must be False, True, class indices or 'top', got {targeted!r}")
    if top:
        return _classes(model, x, label, "label"), False, True
    return (*_attack_target(model, x, label, targeted), False)


# ---------------------------------------------------------------------------------------------
# the loop every attack shares


class _Recording:
    """A target that also keeps the logits of each chunk, so one pass gives gradient and prediction."""

    def __init__(self, target: Target):
        self.target, self.logits = target, []

    def __call__(self, logits, rows=None) -> torch.Tensor:
        if isinstance(logits, torch.Tensor):  # a score target may read a dict or a tuple: nothing to predict
            self.logits.append(logits.detach())
        return self.target(logits, rows)


def _gradient_and_logits(model, x, target, batch_size: int,
                         keep: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """The input gradient, the scores and (with ``keep``) the logits of the same pass."""
    if not keep:
        return (*input_gradient(model, x, target, batch_size), None)
    rec = _Recording(target)
    grad, score = input_gradient(model, x, rec, batch_size)
    return grad, score, _cat(rec.logits) if rec.logits else None


Adversarial = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Step = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
Done = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _ascend(model, start: torch.Tensor, target: Target, steps: int, step: Step, done: Done | None,
            batch_size: int, progress: bool, desc: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Take up to ``steps`` steps ``x <- step(x, grad, rows)`` on every image.

    With ``done(logits, rows)`` an image stops as soon as it is done: from then on it leaves the
    batch. Returns the images, the steps each took, and (with ``done``) whether each ended done.
    Run inside ``model_state``.
    """
    x = start.clone()
    taken = torch.zeros(len(x), dtype=torch.long)
    active = torch.arange(len(x))
    with bar(steps, desc, progress, unit="step") as b:
        for _ in range(steps):
            every = len(active) == len(x)  # no gather / scatter while every image runs
            running = x if every else x[active]
            grad, _, logits = _gradient_and_logits(model, running, target if every else target.select(active),
                                                   batch_size, keep=done is not None)
            if done is not None:
                keep = ~done(logits, active).cpu()
                if not keep.all():
                    active, grad = active[keep], grad[keep.to(grad.device)]
                    if not active.numel():
                        break
                    running = x[active]
            if len(active) == len(x):  # every image steps: no scatter
                x = step(running, grad, active)
                taken += 1
            else:
                x[active] = step(running, grad, active)
                taken[active] += 1
            b.update(1)
            if done is not None:
                b.set_postfix(running=len(active), refresh=False)
    finished = torch.zeros(len(x), dtype=torch.bool)
    if done is not None:
        finished[:] = True
        if active.numel():
            logits = logits_of(model, x[active], len(active), batch_size)
            finished[active] = done(logits, active).cpu()
    return x, taken, finished


def _reached(classes: torch.Tensor, targeted: bool) -> Done:
    """Done when the prediction is the target (targeted) or no longer the label (untargeted)."""

    def done(logits: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        pred, want = logits.argmax(1), classes[rows].to(logits.device)
        return pred == want if targeted else pred != want

    return done


def _mask(rows, n: int, device) -> torch.Tensor:
    """``(n,)`` bool: the images to attack, ``rows`` (every image where ``None``)."""
    m = torch.zeros(n, dtype=torch.bool, device=device) if rows is not None else \
        torch.ones(n, dtype=torch.bool, device=device)
    if rows is not None:
        m[torch.as_tensor(rows, device=device)] = True
    return m


def _noise(x: torch.Tensor, norm: str, gen: torch.Generator) -> torch.Tensor:
    """A random start direction for every image of ``x``: uniform in [-1, 1] (linf) or Gaussian (l2), drawn
    for the whole batch, so an image's draw depends on the seed only."""
    if norm == "linf":
        return torch.rand(x.shape, generator=gen, device=x.device, dtype=x.dtype) * 2 - 1
    return torch.randn(x.shape, generator=gen, device=x.device, dtype=x.dtype)


def _start(x0: torch.Tensor, noise: torch.Tensor, radius: torch.Tensor, norm: str) -> torch.Tensor:
    """A random start: each image moved by ``noise`` scaled to norm ``radius`` (``(M,)``), clamped to [0, 1]."""
    r = radius.reshape(-1, 1, 1, 1).to(x0.dtype)
    return (x0 + r * noise / _size(noise, norm).clamp_min(1e-12).reshape(-1, 1, 1, 1)).clamp(0, 1)


def _size(d: torch.Tensor, norm: str) -> torch.Tensor:
    """``(M,)``: the L-inf or L2 norm of each row of ``d``."""
    d = d.flatten(1)
    return d.abs().amax(1) if norm == "linf" else d.norm(dim=1)


def _unit(v: torch.Tensor, norm: str) -> torch.Tensor:
    """The steepest-ascent direction of unit ``norm``: ``sign(v)`` (linf) or ``v / ||v||_2`` (l2)."""
    if norm == "linf":
        return v.sign()
    return v / v.flatten(1).norm(dim=1).clamp_min(1e-12).reshape(-1, 1, 1, 1)


def _project(delta: torch.Tensor, eps: torch.Tensor, norm: str) -> torch.Tensor:
    """Project each perturbation onto its eps-ball (``eps`` is ``(M,)``)."""
    e = eps.reshape(-1, 1, 1, 1)
    if norm == "linf":
        return torch.maximum(torch.minimum(delta, e), -e)
    size = delta.flatten(1).norm(dim=1).reshape(-1, 1, 1, 1)
    return delta * torch.where(size > e, e / size.clamp_min(1e-12), torch.ones_like(size))
