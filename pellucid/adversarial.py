"""How easily is it fooled: fooling images, FGSM, PGD, the smallest flipping epsilon, robustness curves.

Every attack is a loop of the one gradient primitive (:func:`pellucid._grad.input_gradient`) inside
:func:`pellucid._state.model_state`. The loss is the cross-entropy, through a ``"log_softmax"``
target: ``d CE(label) / dx = -d log_softmax[label] / dx``. Inputs and outputs are in pixel space
[0, 1]. With early stopping only the rows still running go through the model.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ._checks import PellucidError, check_choice, check_positive_int
from ._grad import _cat, check_call, input_gradient, logits_of
from ._state import model_state
from .targets import Target, as_target

NORMS = ("linf", "l2")
ATTACKS = ("fgsm", "pgd")


# ---------------------------------------------------------------------------------------------
# argument checks


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
    if callable(value) and not isinstance(value, torch.Tensor):
        raise PellucidError(f"{name} must be class indices (an int or one per image), not a callable")
    return as_target(value, len(x), getattr(model, "num_classes", None), "log_softmax", name)


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
    goal = _classes(model, x, targeted, "targeted")
    same = torch.nonzero(goal.classes == labels.classes).flatten()
    if same.numel():
        i = int(same[0])
        raise PellucidError(f"targeted attack: target {int(goal.classes[i])} equals the label of image {i}; "
                            "pick a target class different from the true class")
    return goal, True


def _bar(total: int, progress: bool, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=not progress, leave=False, delay=0.5, unit="step")


def _generator(seed, device) -> torch.Generator:
    if isinstance(seed, torch.Generator):
        return seed
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise PellucidError(f"seed must be an int or a torch.Generator, got {seed!r}")
    return torch.Generator(device=device).manual_seed(seed)


# ---------------------------------------------------------------------------------------------
# the loop every attack shares


class _Recording:
    """A target that also keeps the logits of each chunk, so one pass gives gradient and prediction."""

    def __init__(self, target: Target):
        self.target, self.logits = target, []

    def __call__(self, logits: torch.Tensor, rows=None) -> torch.Tensor:
        self.logits.append(logits.detach())
        return self.target(logits, rows)


def _gradient_and_logits(model, x, target: Target, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    rec = _Recording(target)
    grad, _ = input_gradient(model, x, rec, batch_size)
    return grad, _cat(rec.logits)


Attack = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
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
    with _bar(steps, progress, desc) as bar:
        for _ in range(steps):
            every = len(active) == len(x)  # no gather / scatter while every image runs
            running = x if every else x[active]
            grad, logits = _gradient_and_logits(model, running, target if every else target.select(active),
                                                batch_size)
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
            bar.update(1)
            if done is not None:
                bar.set_postfix(running=len(active), refresh=False)
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


# ---------------------------------------------------------------------------------------------
# fooling images


@dataclass
class FoolingResult:
    """What :func:`fooling_image` returns; every field has one entry per image.

    ``image`` ``(N, C, H, W)``, ``steps`` the steps taken (the first step at which the model
    predicts the target), ``success``, the ``original`` predicted class and ``target``, and the
    final softmax probabilities of both, ``prob_original`` and ``prob_target``.
    """

    image: torch.Tensor
    steps: torch.Tensor
    success: torch.Tensor
    original: torch.Tensor
    target: torch.Tensor
    prob_original: torch.Tensor
    prob_target: torch.Tensor


def fooling_image(model: nn.Module, x: torch.Tensor, target, lr: float = 1.0, max_steps: int = 100, *,
                  clamp: bool = True, batch_size: int | None = None, progress: bool = True) -> FoolingResult:
    """Fooling images (Szegedy et al. 2014): gradient ascent on the target logit until it is predicted.

    Each step is ``x += lr * g / ||g||_2`` with ``g = d logit[target] / dx``; an image stops as soon
    as the model predicts its target (finished images leave the batch). ``clamp`` keeps [0, 1].
    Shape: ``x`` ``(N, C, H, W)``, ``target`` an int or one per image.

    >>> r = pl.fooling_image(model, x, target=3)
    >>> r.image, r.steps, r.success
    """
    x, bs = check_call(model, x, batch_size)
    goal = _classes(model, x, target, "target")
    logit = Target(goal.classes, None, "logit")
    lr_ = _per_sample(lr, "lr", len(x), x.device)
    max_steps = check_positive_int(max_steps, "max_steps")

    def step(xi: torch.Tensor, grad: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        out = xi + lr_[rows.to(lr_.device)].reshape(-1, 1, 1, 1) * _unit(grad, "l2")
        return out.clamp(0, 1) if clamp else out

    with model_state(model):
        original = logits_of(model, x, len(x), bs).argmax(1).cpu()
        image, steps, success = _ascend(model, x, logit, max_steps, step, _reached(goal.classes, True), bs,
                                        progress, "fooling image")
        probs = logits_of(model, image, len(x), bs).softmax(1).cpu()
    rows = torch.arange(len(x))
    return FoolingResult(image, steps, success, original, goal.classes,
                         probs[rows, original], probs[rows, goal.classes])


# ---------------------------------------------------------------------------------------------
# FGSM and PGD


def fgsm(model: nn.Module, x: torch.Tensor, label, eps: float, targeted=False, *,
         batch_size: int | None = None) -> torch.Tensor:
    """Fast gradient sign method (Goodfellow et al. 2015), L-infinity.

    ``x + eps * sign(d CE(label) / dx)`` (away from the label), or ``x - eps * sign(d CE(target) / dx)``
    when targeted, clamped to [0, 1]. ``eps`` is a number or one per image. ``targeted``: ``False``,
    ``True`` (``label`` holds the targets) or the target classes (``label`` the true ones).
    Shape: ``(N, C, H, W)`` in, same out.

    >>> adv = pl.fgsm(model, x, y, eps=0.1)
    """
    x, bs = check_call(model, x, batch_size)
    goal, is_targeted = _attack_target(model, x, label, targeted)
    eps_ = _per_sample(eps, "eps", len(x), x.device).reshape(-1, 1, 1, 1)
    with model_state(model):
        grad, _ = input_gradient(model, x, goal, bs)
    direction = grad.sign() if is_targeted else -grad.sign()  # grad is of log_softmax = -CE
    return (x + eps_ * direction).clamp(0, 1)


def pgd(model: nn.Module, x: torch.Tensor, label, eps: float, alpha: float, steps: int, norm: str = "linf",
        targeted=False, random_start: bool = True, seed: int | torch.Generator = 0, early_stop: bool = False, *,
        batch_size: int | None = None, progress: bool = True) -> torch.Tensor:
    """Projected gradient descent (Madry et al. 2018) in the L-infinity or L2 ball of radius ``eps``.

    ``steps`` steps of size ``alpha`` on the cross-entropy (sign of the gradient for ``"linf"``,
    the L2-normalized gradient for ``"l2"``), each followed by a projection onto the eps-ball and
    into [0, 1]. ``random_start`` starts at a uniform point of the ball (seeded). ``early_stop``
    stops each image once it is misclassified (or classified as the target): it takes no more
    steps and leaves the batch. ``eps`` and ``alpha`` are numbers or one per image; ``targeted`` as
    in :func:`fgsm`. Shape: ``(N, C, H, W)`` in, same out.

    >>> adv = pl.pgd(model, x, y, eps=0.1, alpha=0.01, steps=40)
    """
    return _pgd(model, x, label, eps, alpha, steps, norm, targeted, random_start, seed, early_stop,
                batch_size, progress)[0]


def _pgd(model, x, label, eps, alpha, steps, norm="linf", targeted=False, random_start=True, seed=0,
         early_stop=False, batch_size=None, progress=True) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`pgd` that also returns the steps each image took."""
    x, bs = check_call(model, x, batch_size)
    goal, is_targeted = _attack_target(model, x, label, targeted)
    check_choice(norm, "norm", NORMS)
    eps_ = _per_sample(eps, "eps", len(x), x.device)
    alpha_ = _per_sample(alpha, "alpha", len(x), x.device)
    steps = check_positive_int(steps, "steps")
    sign = 1.0 if is_targeted else -1.0  # the gradient is of log_softmax = -CE
    start = _random_start(x, eps_, norm, _generator(seed, x.device)) if random_start else x

    def step(xi: torch.Tensor, grad: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        x0, a, e = (x, alpha_, eps_) if len(rows) == len(x) else (t[rows.to(x.device)] for t in (x, alpha_, eps_))
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


# ---------------------------------------------------------------------------------------------
# how much does it take


def _attack_fn(model, x, labels: Target, attack: str, norm: str, steps: int, rel_alpha: float | None, seed,
               bs: int, progress: bool = False, random_start: bool = True) -> Attack:
    """``adversarial(eps (M,), rows (M,))``: the attack of images ``rows`` at per-image ``eps``."""
    check_choice(attack, "attack", ATTACKS)
    if attack == "fgsm":
        if norm != "linf":
            raise PellucidError(f"fgsm is an L-infinity attack; norm must be 'linf', got {norm!r} (use attack='pgd')")
        with model_state(model):
            direction = -input_gradient(model, x, labels, bs)[0].sign()  # computed once: FGSM's step is eps-free
        return lambda eps, rows: (x[rows] + eps.reshape(-1, 1, 1, 1) * direction[rows]).clamp(0, 1)
    ratio = 2.5 / steps if rel_alpha is None else rel_alpha

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
    eps_max = float(_per_sample(eps_max, "eps_max", 1, "cpu", 1e-12)[0])
    tol = float(_per_sample(tol, "tol", 1, "cpu", 1e-12)[0])
    grid = check_positive_int(grid, "grid")
    attack_at = _attack_fn(model, x, labels, attack, norm, steps, rel_alpha, 0, bs, random_start=False)
    fooled = _fooled(model, labels, bs, attack_at)
    return _search(fooled, len(x), eps_max, tol, grid, progress)


def _search(fooled, n: int, eps_max: float, tol: float, grid: int, progress: bool) -> torch.Tensor:
    """Per image, a bracket ``(lo, hi]`` with ``fooled(hi)`` and not ``fooled(lo)``, narrowed to ``tol``."""
    lo, hi = torch.zeros(n), torch.full((n,), math.inf)
    every = torch.arange(n)
    hi[fooled(torch.zeros(n), every)] = 0.0
    bisections = max(0, math.ceil(math.log2(eps_max / grid / tol)))
    with _bar(grid + bisections, progress, f"minimal eps ({n} images)") as bar:
        for k in range(1, grid + 1):
            rows = every[torch.isinf(hi)]
            if rows.numel():
                e = torch.full((len(rows),), eps_max * k / grid)
                f = fooled(e, rows)
                hi[rows[f]] = e[f]
                lo[rows[~f]] = e[~f]
            bar.update(1)
        for _ in range(bisections):
            rows = every[torch.isfinite(hi) & (hi - lo > tol)]
            if rows.numel():
                mid = (lo[rows] + hi[rows]) / 2
                f = fooled(mid, rows)
                hi[rows[f]], lo[rows[~f]] = mid[f], mid[~f]
            bar.update(1)
    return hi


@dataclass
class RobustnessCurve:
    """Accuracy under attack (``accuracy[i]`` at ``eps[i]``), with the attack's name and norm."""

    eps: torch.Tensor
    accuracy: torch.Tensor
    attack: str
    norm: str


def robustness_curve(model: nn.Module, x: torch.Tensor, label, eps_values: Sequence[float],
                     attack: str = "pgd", *, norm: str = "linf", steps: int = 10, rel_alpha: float | None = None,
                     seed: int = 0, batch_size: int | None = None, progress: bool = True) -> RobustnessCurve:
    """Accuracy of ``model`` on ``x`` under ``attack`` at each eps of ``eps_values``.

    All eps values run as one batch (the images repeated once per eps, each with its own radius).
    PGD takes ``steps`` steps of ``rel_alpha * eps`` (default ``2.5 / steps``) from a random start,
    and an image stops once misclassified (its first fooling point is kept). Render it with
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


def random_targets(classes, num_classes: int, seed: int = 0) -> torch.Tensor:
    """One random class per image, different from ``classes[i]`` (seeded; the global RNG is untouched)."""
    classes = torch.as_tensor(classes).long().cpu()
    num_classes = check_positive_int(num_classes, "num_classes", 2)
    shift = torch.randint(1, num_classes, classes.shape, generator=_generator(seed, "cpu"))
    return (classes + shift) % num_classes


def default_eps(x: torch.Tensor) -> list[float]:
    """Eps values for a robustness curve: MNIST's usual range for gray images, up to 16/255 for photos."""
    if x.shape[1] == 1:
        return [0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3]
    return [0.0, 0.5 / 255, 1 / 255, 2 / 255, 4 / 255, 8 / 255, 16 / 255]
