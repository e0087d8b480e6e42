"""How each ruled layer ran its convolution or linear map in LRP's forward pass, so that a rule can run it again.

A rule runs its layer again with modified weights (z+ on ``W+``, alpha-beta on ``W+`` and ``W-``). Calling the
module again repeats whatever its ``forward`` does before the convolution: a TensorFlow-style "same" convolution
pads its input with ``F.pad`` each time (a copy of the whole activation). During the forward pass,
:class:`~.functional.Functional` shows the :class:`Recorder` every ``conv1d/2d/3d`` and ``linear`` call on a
ruled layer's own weight, and every zero ``F.pad``; the layer's forward hook then takes the :class:`Replay` of its
call: the function, the tensor the function read (the layer's input, or that input zero-padded) and its other
arguments. A rule runs ``replay.run(x, weight, bias)`` instead of the module; it must then give relevance to the
tensor the function read and :meth:`Replay.crop` it back to the layer's input.

A call is replayed only when it is unambiguous: one batched call on the layer's weight with its own bias, reading
the layer's input (or a zero padding of it), whose result is the layer's output, neither changed in place since.
Anything else (a weight standardized in ``forward``, a second call, an activation after the call, in place or
not, an unbatched input) runs the module as before.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

CONVS = {torch.conv1d: 1, torch.conv2d: 2, torch.conv3d: 3}
LINEAR = F.linear
_AMBIGUOUS = object()


@dataclass(frozen=True)
class Replay:
    """``func(input, weight, bias, *rest, **kwargs)`` as the layer ran it; ``pads``: ``F.pad``'s widths (last dim
    first) when ``input`` is the layer's input zero-padded, else ``None`` (``input`` is the layer's input)."""

    func: Callable
    input: torch.Tensor
    rest: tuple
    kwargs: dict
    pads: tuple | None

    def run(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        return self.func(x, weight, bias, *self.rest, **self.kwargs)

    @functools.cached_property  # a replay is frozen: what it tells is worked out once
    def channel_dim(self) -> int:
        """The dimension of input channels: 1 for a convolution, the last for a linear map."""
        return 1 if self.func in CONVS else -1

    @functools.cached_property
    def groups(self) -> int:
        return int(self._conv_args[3]) if self.func in CONVS else 1

    @functools.cached_property
    def direct(self) -> bool:
        """Whether :meth:`input_grad` can compute this call's backward itself (a linear map, or a convolution whose
        stride, padding and dilation are numbers: not ``padding="same"``)."""
        if self.func is LINEAR:
            return not self.kwargs
        return all(isinstance(v, int) or isinstance(v, tuple | list) and all(isinstance(i, int) for i in v)
                   for v in self._conv_args[:3])

    @functools.cached_property
    def _conv_args(self) -> tuple:
        names = ("stride", "padding", "dilation", "groups")
        defaults = (1, 0, 1, 1)
        return tuple(self.rest[i] if i < len(self.rest) else self.kwargs.get(n, d)
                     for i, (n, d) in enumerate(zip(names, defaults)))

    def input_grad(self, grad: torch.Tensor, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """``d run(x, weight, .) / d x^T grad``: the call's own backward, without a graph."""
        if self.func is LINEAR:
            return grad.matmul(weight)
        return torch.ops.aten.convolution_backward(grad, x, weight, None, *self._backward_args, [True, False, False])[0]

    @functools.cached_property
    def _backward_args(self) -> tuple:
        """``aten.convolution_backward``'s stride, padding, dilation, transposed, output padding and groups."""
        d = CONVS[self.func]
        stride, padding, dilation, groups = self._conv_args
        per_dim = [list(v) if isinstance(v, tuple | list) else [v] * d for v in (stride, padding, dilation)]
        return (*per_dim, False, [0] * d, groups)

    def crop(self, t: torch.Tensor) -> torch.Tensor:
        """``t`` (shaped like ``input``) cut back to the layer's input: the padding removed (a view)."""
        if self.pads is None:
            return t
        for i in range(len(self.pads) // 2):
            dim, before, after = t.dim() - 1 - i, self.pads[2 * i], self.pads[2 * i + 1]
            if before or after:
                t = t.narrow(dim, before, t.shape[dim] - before - after)
        return t


class Recorder:
    """Notes the calls of ruled layers during one forward pass (:class:`~.functional.Functional` reports them);
    ``weights``: ``{id(weight): its module's bias}`` of the ruled layers."""

    def __init__(self, weights: dict[int, torch.Tensor | None]):
        self.weights = weights
        self.calls: dict[int, object] = {}
        self.padded: tuple | None = None  # (source, padded, pads) of the last zero F.pad

    def reset(self) -> None:
        """Forget what an earlier forward pass left (a call whose module's hook did not take it)."""
        self.calls.clear()
        self.padded = None

    def pad(self, source: torch.Tensor, padded: torch.Tensor, pads) -> None:
        self.padded = (source, padded, tuple(int(p) for p in pads))

    def call(self, func: Callable, args: tuple, kwargs: dict) -> torch.Tensor:
        """Run a ``conv*d`` or ``linear`` call; noted if its weight is a ruled layer's and its bias that layer's
        own."""
        output = func(*args, **kwargs)
        names = ("input", "weight", "bias")
        given = dict(zip(names, args))
        rest_kwargs = {k: v for k, v in kwargs.items() if k not in names}
        given.update((k, v) for k, v in kwargs.items() if k in names)
        weight = given.get("weight")
        key = id(weight)
        if key not in self.weights:
            return output
        if key in self.calls or given.get("bias") is not self.weights[key] or "input" not in given:
            self.calls[key] = _AMBIGUOUS  # a second call, or another bias: the module runs again instead
            return output
        x, pads, source = given["input"], None, None
        if not isinstance(x, torch.Tensor) or func in CONVS and x.dim() != CONVS[func] + 2:
            self.calls[key] = _AMBIGUOUS  # an unbatched convolution: the module runs again
            return output
        if self.padded is not None and x is self.padded[1]:
            pads, source = self.padded[2], self.padded[0]
        # the versions tell an in-place change after the call (an activation applied in place inside forward)
        self.calls[key] = (source, x, output, (x._version, output._version),
                           Replay(func, x, tuple(args[3:]), rest_kwargs, pads))
        return output

    def take(self, module: torch.nn.Module, inp: torch.Tensor, out: torch.Tensor) -> Replay | None:
        """The replay of ``module``'s call that just ran, if it was recorded unambiguously, read ``inp`` (or its
        zero padding) and made the module's output ``out`` (nothing ran after it, such as an activation)."""
        weight = module._parameters.get("weight")
        found = self.calls.pop(id(weight), None) if weight is not None else None
        if found is None or found is _AMBIGUOUS:
            return None
        source, read, output, versions, replay = found
        if output is not out or versions != (read._version, output._version):
            return None
        if read is inp:  # the call read the layer's input itself (padded, if at all, by an earlier layer)
            return dataclasses.replace(replay, pads=None) if replay.pads is not None else replay
        return replay if source is inp else None


def zero_pad(args: tuple, kwargs: dict) -> tuple | None:
    """``F.pad``'s widths if the call pads with zeros by non-negative widths, else ``None``."""
    given = dict(zip(("input", "pad", "mode", "value"), args))
    given.update(kwargs)
    pads, mode, value = given.get("pad"), given.get("mode", "constant"), given.get("value")
    if mode != "constant" or value not in (None, 0, 0.0) or pads is None:
        return None
    try:
        widths = tuple(int(p) for p in pads)
    except (TypeError, ValueError):
        return None
    return widths if all(w >= 0 for w in widths) and len(widths) % 2 == 0 else None
