"""Fooling images (Szegedy et al. 2014): gradient ascent on a target class until the model predicts it."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from .._args import check_call
from .._checks import check_positive_int, checked_keywords, generator
from .._grad import logits_of
from .._state import model_state
from ..targets import Target
from ._loop import _ascend, _classes, _per_sample, _reached, _unit


@dataclass
class FoolingResult:
    """What :func:`fooling_image` returns; every field has one entry per image.

    ``image`` ``(N, C, H, W)``, ``steps`` the steps taken (the first step at which the model
    predicts the target), ``success``, the ``original`` predicted class and ``target``, and the
    final softmax probabilities of both, ``prob_original`` and ``prob_target``; ``x`` the starting images and
    ``names`` the model's class names (for the picture Jupyter shows).
    """

    image: torch.Tensor
    steps: torch.Tensor
    success: torch.Tensor
    original: torch.Tensor
    target: torch.Tensor
    prob_original: torch.Tensor
    prob_target: torch.Tensor
    x: torch.Tensor | None = field(default=None, repr=False)
    names: list[str] | None = field(default=None, repr=False)

    def _repr_png_(self) -> bytes:
        from ..drawing import display

        return display.fooling(self)


@checked_keywords
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
    return FoolingResult(image, steps, success, original, goal.classes, probs[rows, original],
                         probs[rows, goal.classes], x, getattr(model, "labels", None))


def random_targets(classes, num_classes: int, seed: int = 0) -> torch.Tensor:
    """One random class per image, different from ``classes[i]`` (seeded; the global RNG is untouched)."""
    classes = torch.as_tensor(classes).long().cpu()
    num_classes = check_positive_int(num_classes, "num_classes", 2)
    shift = torch.randint(1, num_classes, classes.shape, generator=generator(seed, "cpu"))
    return (classes + shift) % num_classes
