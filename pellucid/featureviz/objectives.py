"""Objectives: a score per image to maximize, composable with ``+``, ``-`` and scalar ``*``.

:func:`class_logit`, :func:`channel`, :func:`neuron` and :func:`direction` read the model's logits or a layer
(captured by a forward hook); :func:`l2` and :func:`total_variation` are penalties on the image the model sees.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from .._args import num_classes
from .._checks import PellucidError, check_number
from ..targets import Target, as_indices, as_target


@dataclass
class Capture:
    """What an objective sees for one chunk of rows: logits, the model input and captured layers."""

    logits: torch.Tensor
    input: torch.Tensor
    layers: dict
    rows: slice


class Objective:
    """A score per image to maximize. ``bind(model, n)`` validates it and returns ``Capture -> (M,)``.

    Objectives compose: ``class_logit(3) - 1e-3 * l2()``, ``channel("conv2", 5) + neuron("conv3", 1)``.
    ``+``, ``-`` and scalar ``*`` only ever make weighted sums, so a composite is kept as its list of
    ``(weight, term)`` and scored with one fused multiply-add per extra term.
    """

    def __init__(self, bind: Callable, name: str, layers: Sequence = ()):
        self._bind, self.name, self.layers = bind, name, tuple(layers)
        self.terms: tuple[tuple[float, Objective], ...] = ((1.0, self),)

    def bind(self, model: nn.Module, n: int) -> Callable[[Capture], torch.Tensor]:
        if len(self.terms) == 1 and self.terms[0][1] is self:
            return self._bind(model, n)
        (w0, first), *rest = [(w, term._bind(model, n)) for w, term in self.terms]

        def score(cap):
            out = first(cap) if w0 == 1 else first(cap) * w0
            for w, fn in rest:
                out = torch.add(out, fn(cap), alpha=w)
            return out

        return score

    @staticmethod
    def _sum(terms, name: str) -> Objective:
        out = Objective(None, name, tuple(dict.fromkeys(k for _, t in terms for k in t.layers)))
        out.terms = tuple(terms)
        return out

    def _combine(self, other, sign: float, symbol: str) -> Objective:
        if not isinstance(other, Objective):
            raise PellucidError(f"objectives combine with objectives (e.g. class_logit(3) - 1e-3 * l2()), "
                                f"got {type(other).__name__} {other!r}")
        terms = self.terms + tuple((sign * w, t) for w, t in other.terms)
        return Objective._sum(terms, f"{self.name} {symbol} {other.name}")

    def __add__(self, other) -> Objective:
        return self._combine(other, 1.0, "+")

    def __radd__(self, other) -> Objective:  # so that sum([...]) works
        return self if isinstance(other, int) and other == 0 else self._combine(other, 1.0, "+")

    def __sub__(self, other) -> Objective:
        return self._combine(other, -1.0, "-")

    def __mul__(self, k) -> Objective:
        if isinstance(k, bool) or not isinstance(k, numbers.Real):
            raise PellucidError(f"an objective can only be scaled by a number, got {type(k).__name__}")
        k = check_number(k, "an objective's weight")
        return Objective._sum(tuple((k * w, t) for w, t in self.terms), f"{k:g} * ({self.name})")

    __rmul__ = __mul__

    def __neg__(self) -> Objective:
        return -1 * self

    def __repr__(self) -> str:
        return f"Objective({self.name})"


def as_objective(value) -> Objective:
    """An Objective as is; a callable ``logits -> (N,)`` as a score; an int or ints as :func:`class_logit`."""
    if isinstance(value, Objective):
        return value
    if callable(value) and not isinstance(value, torch.Tensor):
        return Objective(lambda m, n: lambda cap: Target(None, value)(cap.logits), getattr(value, "__name__", "fn"))
    return class_logit(value)


def class_logit(target, score: str = "logit") -> Objective:
    """The class score (raw logit by default; ``score="softmax"`` is the probability) of ``target``.

    ``target`` is an int (every image) or one int per image, checked against the model's classes.
    """
    def bind(model, n):
        t = as_target(target, n, num_classes(model), score)
        return lambda cap: t(cap.logits, cap.rows)

    return Objective(bind, f"{score}[{target}]")


def _layer_key(layer) -> str | nn.Module:
    if not isinstance(layer, str | nn.Module):
        raise PellucidError(f"layer must be a layer name (see `pellucid layers`) or a module, got {layer!r}")
    return layer


def _per_row(value, n: int, name: str) -> torch.Tensor:
    """Indices (a channel): one int for every image, or one per image (a one-element sequence counts as one)."""
    try:
        m = 1 if isinstance(value, numbers.Integral) else len(value)
    except TypeError:  # a 0-dim tensor, or no sequence at all: as_indices says which
        m = 1
    idx = as_indices(value, m, name, None, name)
    if m == 1:
        return idx.expand(n)
    if m != n:
        raise PellucidError(f"got {m} {name}s for {n} images; pass one int, or one per image")
    return idx


def _layer_output(cap: Capture, layer, what: str, index: torch.Tensor) -> torch.Tensor:
    out = cap.layers[layer]
    if not isinstance(out, torch.Tensor) or out.dim() < 2:
        raise PellucidError(f"layer {layer!r} does not output a (N, C, ...) tensor; pick another layer")
    if int(index.max()) >= out.shape[1]:
        raise PellucidError(f"{what} {int(index.max())} is out of range: layer {layer!r} has "
                            f"{what}s 0..{out.shape[1] - 1}")
    rows = torch.arange(out.shape[0], device=out.device)
    return out[rows, index[cap.rows].to(out.device)]


def channel(layer: str | nn.Module, index) -> Objective:
    """Mean activation of channel ``index`` (an int, or one per image) of ``layer``."""
    key = _layer_key(layer)

    def bind(model, n):
        idx = _per_row(index, n, "channel")
        return lambda cap: _layer_output(cap, key, "channel", idx).reshape(len(cap.logits), -1).mean(1)

    return Objective(bind, f"channel[{layer}:{index}]", [key])


def neuron(layer: str | nn.Module, index, y: int | None = None, x: int | None = None) -> Objective:
    """Activation of channel ``index`` of ``layer`` at one position ``(y, x)`` (default: the centre)."""
    key = _layer_key(layer)

    def bind(model, n):
        idx = _per_row(index, n, "channel")

        def fn(cap):
            maps = _layer_output(cap, key, "channel", idx)
            if maps.dim() != 3:
                raise PellucidError(f"neuron needs a layer with (N, C, H, W) output; {layer!r} gives "
                                    f"{maps.dim() + 1} dims")
            h, w = maps.shape[-2:]
            yy, xx = h // 2 if y is None else y, w // 2 if x is None else x
            if not (0 <= yy < h and 0 <= xx < w):
                raise PellucidError(f"neuron position ({yy}, {xx}) is outside layer {layer!r}'s {h}x{w} maps")
            return maps[:, yy, xx]

        return fn

    return Objective(bind, f"neuron[{layer}:{index}@{y},{x}]", [key])


def direction(layer: str | nn.Module, vector) -> Objective:
    """The activation of ``layer`` along ``vector``: a CAV, an NMF concept, any direction.

    A vector of the layer's channel count ``C`` is a direction in channel space, scored at every position
    and averaged (an NMF concept of :func:`pellucid.concepts`); a vector of the layer's whole flattened size
    is dotted with the flattened activations (a CAV of :func:`pellucid.cav`). ``vector`` may also be such a
    result itself (its ``.vector``). Example: ``pl.visualize(model, pl.direction("layer3", cav))``.
    """
    key = _layer_key(layer)
    v = getattr(vector, "vector", vector)
    if not isinstance(v, torch.Tensor) or not v.is_floating_point() or v.numel() == 0:
        raise PellucidError(f"vector must be a float tensor (a direction in {layer!r}'s activations) or a result "
                            f"with a .vector such as pl.cav's, got {type(vector).__name__}")
    if not torch.isfinite(v).all():
        raise PellucidError("vector contains NaN or infinite values")
    v = v.detach().flatten()

    def score(cap):
        out = cap.layers[key]
        if not isinstance(out, torch.Tensor) or out.dim() < 2:
            raise PellucidError(f"layer {layer!r} does not output a (N, C, ...) tensor; pick another layer")
        w = v.to(out)
        if len(w) == out[0].numel():
            return out.flatten(1) @ w
        if len(w) == out.shape[1]:
            return torch.einsum("nc...,c->n...", out, w).reshape(len(out), -1).mean(1)
        raise PellucidError(f"vector has {len(w)} values but layer {layer!r} outputs {tuple(out.shape[1:])}: give "
                            f"{out.shape[1]} (a channel direction) or {out[0].numel()} (the flattened output)")

    return Objective(lambda m, n: score, f"direction[{layer}]", [key])


def l2() -> Objective:
    """The squared L2 norm ``||I||²`` of each image the model sees (subtract it as a penalty)."""
    return Objective(lambda m, n: lambda cap: cap.input.square().sum(tuple(range(1, cap.input.dim()))), "l2")


def total_variation() -> Objective:
    """Anisotropic total variation: the sum of absolute differences of neighbouring pixels."""
    def tv(cap):
        x = cap.input
        return (x[..., 1:, :] - x[..., :-1, :]).abs().flatten(1).sum(1) + \
            (x[..., :, 1:] - x[..., :, :-1]).abs().flatten(1).sum(1)

    return Objective(lambda m, n: tv, "total_variation")
