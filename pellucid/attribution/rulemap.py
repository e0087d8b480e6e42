"""One home for modified backward passes: a rule per module, applied through forward hooks.

A rule is any object with ``backward(module, inp, out, grad) -> grad for inp`` (and, optionally,
``reads_output = False`` when it never reads ``out``'s values: the module's output then goes on without a
copy, and an in-place op further on may change it), or with ``bind(module, inp, out)`` that returns, during
the forward pass, the backward of this one call (``grad -> grad for inp``; ``None`` leaves the call alone).
:func:`apply_rules` registers, through the state manager, one forward hook per ruled module; the hook swaps the
module's output for an autograd node of the same value whose backward calls the rule instead of the module's own
derivative. ``inp`` and ``out`` keep their graph, so a rule may differentiate the module itself
(``torch.autograd.grad(out, inp, v)``) or run it again with other parameters on another input.

LRP's rules map relevance at a layer's output to relevance at its input (:mod:`.lrp.rules`); DeepLIFT's
multipliers and guided backpropagation's ReLU are rules of the same shape (``grad * multiplier``,
``grad.clamp_min(0) * (out > 0)``) and are meant to move here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial
from typing import Protocol

import torch
from torch import nn

from .._state import ModelState


class BackwardRule(Protocol):
    def backward(self, module: nn.Module, inp: torch.Tensor, out: torch.Tensor,
                 grad: torch.Tensor) -> torch.Tensor: ...


class _RuleNode(torch.autograd.Function):
    """The value of ``out`` (``box[0]``); backward calls ``call(grad)`` for the gradient of ``inp``."""

    @staticmethod
    def forward(ctx, inp, box, call, copy):
        ctx.call = call
        # a copy has its own storage: an in-place op further on (a ReLU) cannot change the output a rule reads;
        # without one, the value (not an input of this node) becomes the node's output as it is
        return box[0].clone() if copy else box[0]

    @staticmethod
    def backward(ctx, grad):
        with torch.enable_grad():
            return ctx.call(grad), None, None, None


def _hook(rule: BackwardRule) -> Callable:
    bind = getattr(rule, "bind", None)

    def hook(module, inputs, output):
        inp = inputs[0] if inputs else None
        value = output[0] if isinstance(output, tuple) and output else output  # (values, indices) of a pool
        if not isinstance(inp, torch.Tensor) or not isinstance(value, torch.Tensor):
            return None  # not a tensor in and one out: the module's own backward
        if bind is not None:  # it may keep books on every call, on the gradient path or not
            call = bind(module, inp, value)
        else:
            call = partial(rule.backward, module, inp, value) if inp.requires_grad else None
        if call is None or not inp.requires_grad:
            return None  # off the gradient path: the module's own backward
        node = _RuleNode.apply(inp, [value.detach()], call, getattr(rule, "reads_output", True))
        return (node, *output[1:]) if value is not output else node

    return hook


def apply_rules(state: ModelState, rules: Mapping[nn.Module, BackwardRule]) -> None:
    """Give each module its rule until ``state``'s context exits (hooks removed in its ``finally``)."""
    for module, rule in rules.items():
        if getattr(module, "inplace", None) is True:
            state.set_attr(module, "inplace", False)
        state.forward_hook(module, _hook(rule))


class _Tap(torch.autograd.Function):
    """The value of ``x``; backward hands the gradient arriving at it to ``seen`` and passes it on."""

    @staticmethod
    def forward(ctx, x, seen):
        ctx.seen = seen
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        ctx.seen(grad)
        return grad, None


def tap(x: torch.Tensor, seen: Callable[[torch.Tensor], None]) -> torch.Tensor:
    """``x`` through a node that shows ``seen`` the gradient that reaches it (only what flows through it)."""
    return _Tap.apply(x, seen) if x.requires_grad else x
