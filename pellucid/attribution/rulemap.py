"""One home for modified backward passes: a rule per module, applied through forward hooks.

A rule is any object with ``backward(module, inp, out, grad) -> grad for inp`` (and, optionally,
``reads_output = False`` when it never reads ``out``'s values: the module's output then goes on without a
copy, and an in-place op further on may change it). :func:`apply_rules`
registers, through the state manager, one forward hook per ruled module; the hook swaps the module's
output for an autograd node of the same value whose backward calls the rule instead of the module's own
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
    def hook(module, inputs, output):
        inp = inputs[0] if inputs else None
        if not isinstance(inp, torch.Tensor) or not isinstance(output, torch.Tensor) or not inp.requires_grad:
            return None  # off the gradient path (or not one tensor in, one out): the module's own backward
        return _RuleNode.apply(inp, [output.detach()], partial(rule.backward, module, inp, output),
                               getattr(rule, "reads_output", True))

    return hook


def apply_rules(state: ModelState, rules: Mapping[nn.Module, BackwardRule]) -> None:
    """Give each module its rule until ``state``'s context exits (hooks removed in its ``finally``)."""
    for module, rule in rules.items():
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
