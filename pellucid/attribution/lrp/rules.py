"""LRP rules as data: each is a few parts, each part an input modifier and a parameter modifier.

A rule maps the relevance ``R`` at a layer's output to the relevance at its input. Each part ``p`` runs the
layer with modified parameters on a modified input, ``z_p = layer[params_p](x_p)``; the parts of a group
add up (with their signs) to the group's denominator ``z_g``; then ``s_g = R / stabilize(z_g)`` (only where
the group's ``where`` holds) and ``R_in = sum_g weight_g sum_p sign_p * x_p * d z_p / d x_p^T s_g``. The
definitions follow Zennit 0.5.1's ``rules.py`` (``Epsilon``, ``Gamma``, ``ZPlus``, ``AlphaBeta``, ``ZBox``,
``Flat``, ``WSquare``), biases and stabilizers included, so that Zennit is an oracle.

Every conservative rule gives ``sum(R_in) = sum(R) - absorbed``, where ``absorbed`` is what the biases and
the stabilizer keep (:meth:`Rule.relevance` computes it in closed form when asked).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ..._checks import PellucidError
from .replay import Replay
from .reruns import input_grads, run, run_mirrored, run_pair, widened

STABILIZER = 1e-6
"""The stabilizer of every rule but epsilon (Zennit's ``stabilizer``): ``z + 1e-6 * sign(z)``."""


SCRATCH_SAFE = (nn.modules.conv._ConvNd, nn.Linear, nn.modules.batchnorm._BatchNorm)
"""Layers whose backward does not read their output: a rule may reuse the memory of their re-run outputs (a
user's module that ends in, say, a tanh saves its output, so its re-runs are left alone)."""


# input modifiers
def positive(x: torch.Tensor) -> torch.Tensor:
    return x.clamp(min=0)


def negative(x: torch.Tensor) -> torch.Tensor:
    return x.clamp(max=0)


def ones(x: torch.Tensor) -> torch.Tensor:
    return torch.ones_like(x)


def constant(value: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """An input modifier giving ``value`` broadcast to the input (z^B's bounds)."""
    def fill(x: torch.Tensor) -> torch.Tensor:
        v = value.to(x)
        try:
            return v.expand(x.shape).clone()
        except RuntimeError:
            raise PellucidError(f"the zbox bounds have shape {tuple(v.shape)} (one per image channel) but the layer's "
                                f"input has shape {tuple(x.shape)}: zbox belongs on the layer that reads the "
                                "image; map this layer to another rule") from None
    return fill


# parameter modifiers: param -> modified param (applied to the weight and, unless the part drops it, the bias)
def plus(p: torch.Tensor) -> torch.Tensor:
    return p.clamp(min=0)


def minus(p: torch.Tensor) -> torch.Tensor:
    return p.clamp(max=0)


def square(p: torch.Tensor) -> torch.Tensor:
    return p * p


@functools.cache  # one function per gamma: the modified weights are cached per (module, function)
def gamma_plus(gamma: float) -> Callable[[torch.Tensor], torch.Tensor]:
    return lambda p: p + gamma * p.clamp(min=0)


@functools.cache
def gamma_minus(gamma: float) -> Callable[[torch.Tensor], torch.Tensor]:
    return lambda p: p + gamma * p.clamp(max=0)


def divide(r: torch.Tensor, z: torch.Tensor, epsilon: float | None) -> torch.Tensor:
    """``R / (z + epsilon * sign(z))``, the sign of 0 taken as +1 (Zennit's ``Stabilizer``); ``epsilon=None``:
    LRP-0, ``R / z`` where ``z != 0`` and 0 elsewhere (no stabilizer, no division by zero)."""
    if epsilon is None:  # r / 0 is infinite (or NaN for 0 / 0): those become 0, in one pass
        return torch.div(r, z).nan_to_num_(nan=0.0, posinf=0.0, neginf=0.0)
    stabilized = torch.copysign(torch.tensor(epsilon, dtype=z.dtype, device=z.device), z).add_(z)
    return torch.div(r, stabilized, out=stabilized) if stabilized.shape == torch.broadcast_shapes(r.shape, z.shape) \
        else r / stabilized


@dataclass(frozen=True)
class Part:
    """The layer run on ``inputs(x)`` with each parameter through ``params``; ``bias=False`` zeroes the bias.
    ``None`` means unchanged (a part with neither reuses the forward pass's own graph)."""

    inputs: Callable[[torch.Tensor], torch.Tensor] | None = None
    params: Callable[[torch.Tensor], torch.Tensor] | None = None
    bias: bool = True
    sign: float = 1.0

    @property
    def plain(self) -> bool:
        return self.inputs is None and self.params is None and self.bias


@dataclass(frozen=True)
class Group:
    """Parts whose outputs add up to one denominator; ``weight`` scales the group's relevance (alpha, -beta);
    ``where(z)`` restricts it to some outputs of the unmodified layer (gamma: ``z > 0`` or ``z < 0``); ``sign``
    is the sign the denominator always has (z+: +1): the stabilizer then rides in the layer's bias add."""

    parts: tuple[Part, ...]
    weight: float = 1.0
    where: Callable[[torch.Tensor], torch.Tensor] | None = None
    sign: float | None = None  # the sign the parts' sum always has (z+ >= 0), if any


@dataclass(frozen=True)
class Rule:
    """An LRP rule: groups of parts and the stabilizer ``epsilon`` of their sum (``None``: none, LRP-0)."""

    name: str
    groups: tuple[Group, ...]
    epsilon: float | None = STABILIZER

    @property
    def reads_output(self) -> bool:
        """Whether the rule reads the forward pass's output (the module's output must then stay unchanged)."""
        return any(p.plain for g in self.groups for p in g.parts) or any(g.where for g in self.groups)

    def relevance(self, module: nn.Module, inp: torch.Tensor, out: torch.Tensor, r: torch.Tensor,
                  absorbed: bool = False, replay: Replay | None = None,
                  gated: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(R_in, absorbed per image or None)`` for relevance ``r`` at ``module``'s output ``out``.

        ``inp`` and ``out`` are the forward pass's tensors (with their graph: a plain part differentiates it).
        ``replay``: how the layer ran its convolution or linear map (:mod:`.replay`); the parts then run that call
        on the tensor it read (no second padding), and a group of a positive and a negative part runs as one call
        on both halves side by side (``[x+, x-]`` against ``[W+, W-]``: one convolution instead of two).
        ``gated``: the network reads the layer's output only through a ReLU-like gate, so no relevance arrives where
        the output is <= 0; z+ (and alpha's group) on a signed input then runs from the layer's own output and one
        call on ``|x|`` (:func:`.reruns.run_mirrored`), whose rounding the gate keeps small.
        """
        x = inp.detach() if replay is None else replay.input.detach()
        direct = replay is not None and replay.direct  # the layer's own backward is called, not autograd
        nonneg = None if not _skippable(self) else _nonnegative(inp, x)
        zs, xs, seeds, scale, paired, weights = [], [], [], [], [], []
        entering = r.flatten(1).sum(1) if absorbed else None
        leaving = torch.zeros_like(entering) if absorbed else None
        for group in self.groups:
            if group.weight == 0:
                continue
            if gated and direct and replay.groups == 1 and not (absorbed or nonneg) and _mirrored(group, self.epsilon):
                seen = r if group.where is None else r * group.where(out.detach())
                xa, s, both = run_mirrored(module, x, out.detach(), seen, self.epsilon, replay)
                zs.append(None)
                xs.append(widened(x, replay.channel_dim))
                seeds.append(s)
                scale.append(group.weight)
                paired.append((x, xa))
                weights.append(both)
                continue
            parts, shift = [], 0.0  # shift: the stabilizer, when a part's bias carried it
            if replay is not None and not absorbed and not nonneg and _pairs(group, replay):
                fold = 0.0 if group.sign is None or self.epsilon is None else group.sign * self.epsilon
                params = (group.parts[0].params, group.parts[1].params)
                xp, zp, shift, weight = run_pair(module, params, x, fold, replay)
                parts.append((group.parts[0], xp, zp, weight))
                pair = True
            else:
                pair = False
                for part in group.parts:
                    if nonneg and part.inputs is negative and not part.bias:
                        continue  # x has no negative values: this part's input and output are all zeros
                    if part.plain:
                        parts.append((part, inp, out, None))
                        continue
                    xp = (x if part.inputs is positive and nonneg else _part_input(part, x, inp, replay))
                    xp = xp.detach() if direct else xp.detach().requires_grad_(True)
                    fold = 0.0 if shift or group.sign is None or self.epsilon is None or part.sign != 1 \
                        else group.sign * self.epsilon
                    zp, folded, weight = run(module, part.params, part.bias, xp, fold, replay)
                    shift = shift or (fold if folded else 0.0)
                    parts.append((part, xp, zp, weight))
            if not parts:
                continue
            # the parts' own outputs (no plain part: none is the forward pass's tensor, which later layers saved)
            # are scratch: nothing reads their values again (a convolution's backward does not), so their sum
            # and the division can go into their memory
            scratch = (replay is not None or isinstance(module, SCRATCH_SAFE)) and not any(
                p.plain or zp.data_ptr() in (xp.data_ptr(), x.data_ptr()) for p, xp, zp, _ in parts)
            z = _signed_sum([(p.sign, zp.detach()) for p, _, zp, _ in parts], inplace=scratch)  # stabilized if shift
            seen = r if group.where is None else r * group.where(out.detach())
            if shift and not absorbed and scratch and replay is not None and z.device.type == "cpu":
                # a CPU convolution or matmul sums its terms directly: terms of one sign plus the stabilizer in the
                # bias stay beyond it, so the guard below has nothing to do (one pass over z saved)
                s = torch.div(seen, z, out=z)
            elif shift and not absorbed and scratch:
                # z is the parts' own output (or their sum), which nothing else reads: divide in its memory
                s = torch.div(seen, z.clamp_min_(shift) if shift > 0 else z.clamp_max_(shift), out=z)
            elif shift:  # z already carries the stabilizer; the clamp only guards against rounding (a conv's sum of
                # non-negative terms may come out a hair below 0 in some algorithms), as Zennit's sign rule does
                s = seen / (z.clamp_min(shift) if shift > 0 else z.clamp_max(shift))
            else:
                s = divide(seen, z, self.epsilon)
            for part, xp, zp, weight in parts:
                zs.append(zp)
                xs.append(xp)
                seeds.append(s)
                scale.append(group.weight * part.sign)
                paired.append(pair)
                weights.append(weight)
            if absorbed:
                bias = _signed_sum([(p.sign, run(module, p.params, p.bias, torch.zeros_like(x if p.plain else xp), 0.0,
                                                  replay)[0].detach()) for p, xp, _, _ in parts])
                leaving += group.weight * (s * (z - shift - bias)).flatten(1).sum(1)
        grads = input_grads(zs, xs, seeds, weights, replay)
        # a gradient is a fresh tensor (unless autograd passed a seed through): products and sum go into its memory
        taken = {t.data_ptr() for t in (r, *seeds)}
        fresh = len({g.data_ptr() for g in grads} - taken) == len(grads)
        terms = []
        for k, xp, g, pair in zip(scale, xs, grads, paired):
            if isinstance(pair, tuple):  # a mirrored group: [W^T s', |W|^T s'] side by side, against x and |x|
                c = x.shape[replay.channel_dim]
                first, second = g.narrow(replay.channel_dim, 0, c), g.narrow(replay.channel_dim, c, c)
                prod = first.mul_(pair[0]) if fresh else first * pair[0]
                terms.append((k, replay.crop(torch.addcmul(prod, second, pair[1]))))
            elif pair:  # [x+, x-] side by side: the two halves' products add up
                c = x.shape[replay.channel_dim]
                prod = g.mul_(xp.detach()) if fresh else xp.detach() * g
                g = torch.add(prod.narrow(replay.channel_dim, 0, c), prod.narrow(replay.channel_dim, c, c))
                terms.append((k, replay.crop(g)))
            elif replay is not None and replay.pads is not None and xp is not inp:  # the padding has no relevance
                terms.append((k, replay.crop(g.mul_(xp.detach()) if fresh else g * xp.detach())))
            else:
                terms.append((k, g.mul_(xp.detach()) if fresh else xp.detach() * g))
        r_in = _signed_sum(terms, inplace=True)  # each term is a tensor of its own (a fresh gradient or a product)
        if r_in is None:  # every part skipped or zero-weighted: nothing passes
            r_in = torch.zeros_like(inp)
        return r_in, (entering - leaving if absorbed else None)



def _part_input(part: Part, x: torch.Tensor, inp: torch.Tensor, replay: Replay | None) -> torch.Tensor:
    """The part's input: its modifier on ``x`` (the tensor the layer's call read). A padded replay's padding stays
    zero: a modifier that keeps 0 at 0 commutes with the padding; ones or bounds go on the layer's input first."""
    if part.inputs is None:
        return x
    if replay is None or replay.pads is None or part.inputs in (positive, negative):
        return part.inputs(x)
    return nn.functional.pad(part.inputs(inp.detach()), replay.pads)


def _nonnegative(inp: torch.Tensor, x: torch.Tensor) -> bool:
    """Whether ``x`` has no negative value: known from the operation that made ``inp`` (a ReLU, a clamp at 0 or
    above), else read from the values."""
    fn = inp.grad_fn
    kind = type(fn).__name__ if fn is not None else ""
    if kind == "ReluBackward0":
        return True
    if kind == "HardtanhBackward0" and fn._saved_min_val >= 0:
        return True
    if kind in ("ClampBackward1", "ClampMinBackward0"):
        low, high = getattr(fn, "_saved_min", None), getattr(fn, "_saved_max", None)
        if isinstance(low, int | float) and low >= 0 and (high is None or high >= low):  # min > max gives max
            return True
    return bool(_flat(x).min() >= 0)


def _halves(group: Group) -> bool:
    """Whether ``group`` is a part on ``x+`` with the bias and a part on ``x-`` without, both of sign +1."""
    if len(group.parts) != 2:
        return False
    a, b = group.parts
    return a.inputs is positive and b.inputs is negative and a.bias and not b.bias and a.sign == b.sign == 1


def _pairs(group: Group, replay: Replay) -> bool:
    """Whether ``group`` is :func:`_halves` with modified parameters on both parts: it then runs as one call on
    ``[x+, x-]`` (an ungrouped layer only)."""
    return _halves(group) and replay.groups == 1 and all(p.params is not None for p in group.parts)


def _mirrored(group: Group, epsilon: float | None) -> bool:
    """Whether ``group`` is ``x+`` through ``W+`` with its bias and ``x-`` through ``W-`` (z+, alpha's group), of
    sign +1 and stabilized: its sum is ``(W x + |W| |x|) / 2`` plus its bias, the layer's own output and one call
    on ``|x|`` (:func:`.reruns.run_mirrored`) instead of a call on both signs of ``x``. (Beta's group, ``(W x - |W| |x|)
    / 2``, cancels where relevance does arrive: 1% of the map's maximum on EfficientNet-Lite0; it keeps its parts.)"""
    return _halves(group) and epsilon is not None and group.sign == 1 \
        and (group.parts[0].params, group.parts[1].params) == (plus, minus)


def _signed_sum(terms: list[tuple[float, torch.Tensor]], inplace: bool = False) -> torch.Tensor | None:
    """``sum(k * t)`` without a copy for a single term of weight 1 (these tensors are whole activations);
    ``inplace``: the terms are the caller's own scratch tensors, and the sum goes into the first one."""
    total = None
    for k, t in terms:
        if total is None:
            total = t if k == 1 else t.mul_(k) if inplace else k * t
        else:
            total = total.add_(t, alpha=k) if inplace else total + t if k == 1 else total.add(t, alpha=k)
    return total


def _flat(x: torch.Tensor) -> torch.Tensor:
    """``x``'s values as one dense row, without the copy a reduction makes of a channels-last tensor."""
    if x.is_contiguous() or x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last):
        return x.as_strided((x.numel(),), (1,))
    return x


def _skippable(rule: Rule) -> bool:
    return any(p.inputs is negative and not p.bias for g in rule.groups for p in g.parts)


# ---------------------------------------------------------------------------------------------
# the rules by name

RULES = ("zero", "epsilon", "gamma", "alpha2beta1", "alpha1beta0", "zplus", "flat", "wsquare", "zbox")


def _alpha_beta(name: str, alpha: float, beta: float) -> Rule:
    return Rule(name, (
        Group((Part(positive, plus), Part(negative, minus, bias=False)), alpha, sign=1.0),
        Group((Part(positive, minus), Part(negative, plus, bias=False)), -beta, sign=-1.0),
    ))


def check_number(value, name: str, strict: bool) -> float:
    """A number > 0 (``strict``) or >= 0; the message names the value and why."""
    ok = isinstance(value, int | float) and not isinstance(value, bool) and value == value
    if not ok or (value <= 0 if strict else value < 0):
        why = ("; the epsilon rule divides by z + epsilon * sign(z), so 0 would divide by zero (composite='zero' is "
               "LRP-0 without a stabilizer)") if name == "epsilon" else ""
        raise PellucidError(f"{name} must be a number {'>' if strict else '>='} 0, got {value!r}{why}")
    return float(value)


def make_rule(name: str, epsilon: float = 1e-6, gamma: float = 0.25, low=0.0, high=1.0) -> Rule:
    """The rule called ``name`` (one of :data:`RULES`); ``low``/``high`` are z^B's bounds on the layer's input."""
    if not isinstance(name, str) or name not in RULES:
        raise PellucidError(f"unknown LRP rule {name!r}; choose one of: {', '.join(RULES)} (or pass a Rule)")
    if name == "epsilon":
        check_number(epsilon, "epsilon", strict=True)
    if name == "gamma":
        check_number(gamma, "gamma", strict=False)
    if name == "zero":
        return Rule("zero", (Group((Part(),)),), None)
    if name == "epsilon":
        return Rule("epsilon", (Group((Part(),)),), epsilon)
    if name == "zplus":
        return Rule("zplus", (Group((Part(positive, plus), Part(negative, minus, bias=False)), sign=1.0),))
    if name == "alpha2beta1":
        return _alpha_beta(name, 2.0, 1.0)
    if name == "alpha1beta0":
        return _alpha_beta(name, 1.0, 0.0)
    if name == "gamma":
        up, down = gamma_plus(gamma), gamma_minus(gamma)
        return Rule("gamma", (
            Group((Part(positive, up), Part(negative, down, bias=False)), where=lambda z: (z > 0).to(z)),
            Group((Part(positive, down), Part(negative, up, bias=False)), where=lambda z: (z < 0).to(z)),
        ))
    if name == "flat":
        return Rule("flat", (Group((Part(ones, torch.ones_like, bias=False),), sign=1.0),))
    if name == "wsquare":
        return Rule("wsquare", (Group((Part(ones, square),), sign=1.0),))
    if name == "zbox":
        low, high = torch.as_tensor(low, dtype=torch.float32), torch.as_tensor(high, dtype=torch.float32)
        return Rule("zbox", (Group((Part(), Part(constant(low), plus, sign=-1.0),
                                    Part(constant(high), minus, sign=-1.0))),))
    raise PellucidError(f"unknown LRP rule {name!r}; choose one of: {', '.join(RULES)} (or pass a Rule)")
