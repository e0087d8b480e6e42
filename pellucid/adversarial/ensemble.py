"""AutoAttack (Croce & Hein 2020): the worst case over a fixed suite of attacks, each run on the images
the previous ones left standing. An image counts as broken only when the model misclassifies the
returned point (checked with one more forward pass), so the result is never weaker than any part.
``"standard"`` runs APGD-CE, APGD-T (targeted DLR, 9 classes), FAB-T (9 classes) and Square, as the
reference implementation does.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from .._args import check_call
from .._checks import PellucidError, check_choice, check_positive_int, checked_keywords
from .._grad import logits_of
from .._state import model_state
from ..registry import Attack, register_attack
from ._loop import NORMS, _classes, _per_sample
from .auto_pgd import _apgd
from .boundary import _fab
from .score_based import _square

VERSIONS = ("standard", "plus")


def suite(version: str, steps: int, queries: int, targets: int) -> list[tuple[str, dict]]:
    """The attacks of a version, in order: ``(name, options)``."""
    if version == "standard":
        return [("apgd-ce", {"loss": "ce", "steps": steps}),
                ("apgd-t", {"loss": "dlr", "targeted": "top", "top_k": targets, "steps": steps}),
                ("fab-t", {"targeted": "top", "top_k": targets, "steps": steps}),
                ("square", {"queries": queries})]
    return [("apgd-ce", {"loss": "ce", "steps": steps, "restarts": 5}),
            ("apgd-dlr", {"loss": "dlr", "steps": steps, "restarts": 5}),
            ("fab", {"targeted": False, "steps": steps, "restarts": 5}),
            ("square", {"queries": queries}),
            ("apgd-t", {"loss": "dlr", "targeted": "top", "top_k": targets, "steps": steps}),
            ("fab-t", {"targeted": "top", "top_k": targets, "steps": steps})]


@dataclass
class AutoAttackResult:
    """``adversarial`` (N, C, H, W): each image's adversarial point (the image itself where no attack
    broke it); ``broken_by[i]``: the attack that broke image ``i``, ``"clean"`` where it was already
    misclassified, ``None`` where it stood; ``robust_accuracy`` and ``clean_accuracy`` over the batch; for the
    picture Jupyter shows: the clean images ``x``, their ``label``, the softmax ``clean_probs`` and ``probs``
    (N, K) of ``x`` and ``adversarial``, and the model's class ``names``."""

    adversarial: torch.Tensor
    broken_by: list
    robust_accuracy: float
    clean_accuracy: float
    eps: torch.Tensor
    norm: str
    attacks: list = field(default_factory=list)
    x: torch.Tensor | None = field(default=None, repr=False)
    label: torch.Tensor | None = field(default=None, repr=False)
    clean_probs: torch.Tensor | None = field(default=None, repr=False)
    probs: torch.Tensor | None = field(default=None, repr=False)
    names: list[str] | None = field(default=None, repr=False)

    @property
    def robust(self) -> torch.Tensor:
        """``(N,)`` bool: whether each image withstood every attack."""
        return torch.tensor([b is None for b in self.broken_by])

    def counts(self) -> dict:
        """How many images each attack broke (``"clean"``: misclassified already)."""
        return {name: sum(b == name for b in self.broken_by) for name in ["clean", *self.attacks]}

    def _repr_png_(self) -> bytes:
        from ..drawing import display

        return display.autoattack(self)

    def _repr_html_(self) -> str:
        from ..drawing import display

        return display.autoattack_html(self)

    def _repr_mimebundle_(self, include=None, exclude=None) -> dict:
        from ..drawing import display

        png = display.autoattack(self)
        return display.bundle(png, display.autoattack_html(self, png))


@checked_keywords
def autoattack(model: nn.Module, x: torch.Tensor, label, eps: float, norm: str = "linf", version: str = "standard",
               seed: int | torch.Generator = 0, *, steps: int = 100, queries: int = 5000, targets: int = 9,
               batch_size: int | None = None, progress: bool = True) -> AutoAttackResult:
    """The robust accuracy of ``model`` on ``x`` at ``eps``: the worst case over a suite of attacks.

    ``version="standard"``: APGD-CE (``steps`` steps), APGD-T (targeted DLR towards each of the
    ``targets`` most likely other classes, ``steps`` steps each), FAB-T (the same classes, ``steps``
    steps each) and Square (``queries`` queries), each on the images still correctly classified after
    the ones before. ``"plus"``: APGD-CE, APGD-DLR and untargeted FAB with 5 restarts (FAB: one gradient
    pass per class a step), Square, APGD-T and FAB-T. Every attack uses ``seed``; its random draws do not depend
    on which images are still standing, so an attack inside AutoAttack breaks at least the images it
    breaks run alone on the whole batch (up to floating-point noise). ``eps`` is a number or one per
    image; an image with ``eps`` 0 is not attacked.

    >>> r = pl.autoattack(model, x, y, eps=8 / 255)
    >>> r.robust_accuracy, r.broken_by
    """
    x, bs = check_call(model, x, batch_size)
    y = _classes(model, x, label, "label").classes.to(x.device)
    check_choice(norm, "norm", NORMS)
    check_choice(version, "version", VERSIONS)
    eps_ = _per_sample(eps, "eps", len(x), x.device)
    for value, name in ((steps, "steps"), (targets, "targets")):
        check_positive_int(value, name)
    if isinstance(queries, bool) or not isinstance(queries, int) or queries < 1:
        raise PellucidError(f"queries must be an int >= 1, got {queries!r}")
    plan = suite(version, steps, queries, targets)
    with model_state(model):
        clean_probs = logits_of(model, x, len(x), bs).softmax(1)
    standing = clean_probs.argmax(1) == y
    clean_accuracy = float(standing.float().mean())
    broken_by: list = ["clean" if not s else None for s in standing.tolist()]
    adv = x.clone()
    for name, options in plan:
        rows = torch.nonzero(standing & (eps_ > 0)).flatten()
        if not rows.numel():
            break
        common = dict(seed=seed, batch_size=bs, progress=progress, rows=rows)
        if name == "square":
            out, _ = _square(model, x, y, eps_, norm=norm, **options, **common)
        elif name.startswith("fab"):
            out, _ = _fab(model, x, y, eps_, norm=norm, **options, **common)
        else:
            out, _ = _apgd(model, x, y, eps_, norm=norm, **options, **common)
        with model_state(model):  # broken only if the model misclassifies the point returned
            now = logits_of(model, out[rows], len(rows), bs).argmax(1)
        hit = rows[now != y[rows]]
        adv[hit] = out[hit]
        standing[hit] = False
        for i in hit.tolist():
            broken_by[i] = name
    robust = float(standing.float().mean())
    with model_state(model):
        probs = logits_of(model, adv, len(adv), bs).softmax(1)
    return AutoAttackResult(adv, broken_by, robust, clean_accuracy, eps_.cpu(), norm, [n for n, _ in plan], x, y,
                            clean_probs, probs, getattr(model, "labels", None))


def _autoattack_images(model, x, label, eps, *, targeted=False, norm="linf", steps=100, seed=0, batch_size=None,
                       progress=False):
    if targeted is not False and targeted is not None:
        raise PellucidError("autoattack is untargeted; leave targeted unset")
    return autoattack(model, x, label, eps, norm, seed=seed, steps=steps, queries=max(1, 50 * steps),
                      batch_size=batch_size, progress=progress).adversarial


register_attack(Attack("autoattack", "AutoAttack", _autoattack_images, seeded=True, steps=100, cost="expensive",
                       alpha=False,
                       summary="the worst case over APGD-CE, APGD-T, FAB-T and Square, each on the images "
                               "still standing (Croce & Hein 2020); steps = APGD and FAB steps, 50x as many "
                               "Square queries"))
