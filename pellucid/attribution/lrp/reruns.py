"""How an LRP rule runs its layer again: with modified parameters (kept per module), on both signs of a signed
input side by side, or from the layer's own output.

:meth:`.rules.Rule.relevance` decides which run a group needs; these functions run it. A replayed layer
(:mod:`.replay`) runs the call it made in the forward pass, without a graph where its own backward
(:func:`input_grads`) computes the parts' input gradients; any other layer runs ``module.forward`` with its
parameters swapped in (:func:`run`).
"""

from __future__ import annotations

import functools
import weakref
from collections import OrderedDict
from collections.abc import Callable

import torch
from torch import nn

from ..._grad import layout
from .replay import Replay


@functools.cache
def _mirror_bias(epsilon: float) -> Callable[[torch.Tensor], torch.Tensor]:
    """The bias of the call on ``|x|`` in :func:`run_mirrored`: ``2 b+ - b + 2 epsilon``."""
    return lambda b: 2 * b.clamp(min=0) - b + 2 * epsilon


def run_mirrored(module: nn.Module, x: torch.Tensor, out: torch.Tensor, seen: torch.Tensor, epsilon: float,
                 replay: Replay) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A :func:`~.rules._mirrored` group from the layer's output ``out = W x + b`` and one call on ``|x|``: since
    ``W+ x+ + W- x- = (W x + |W| |x|) / 2``, ``2 z = out + run(|x|, |W|, 2 b+ - b + 2 epsilon)``, the group's sum
    with its bias and stabilizer. The relevance ``x+ W+^T s + x- W-^T s`` is likewise ``x W^T s' + |x| |W|^T s'``
    with ``s' = R / 2 z``: returns ``(|x|, s', [W, |W|])``, the weights side by side along input channels (an
    ungrouped layer), for one backward call on ``s'``.

    Where most terms of an output are negative, ``out`` and the call on ``|x|`` cancel and rounding grows with
    their ratio; a gated layer (see :meth:`.rules.Rule.relevance`) gets relevance only where ``out > 0``, where the
    positive terms outweigh the negative ones, so the ratio stays below about 2 (equal to the direct sum to
    ~1e-7 of the map's maximum on EfficientNet-Lite0). An in-place gate on the output (``y.relu_()``,
    ``y.clamp_(0, 6)``) changes it only where no relevance arrives (below 0, above a ReLU6's 6); a layer whose output
    is changed in place again after that is not gated (:func:`~.canonize._probe`)."""
    weight = module._parameters["weight"]
    wa = modified(module, "weight", weight, torch.abs)
    bias = module._parameters.get("bias")
    if bias is not None:
        c = modified(module, "bias", bias, _mirror_bias(epsilon))
    else:
        c = torch.full((weight.shape[0],), 2 * epsilon, dtype=x.dtype, device=x.device)
    xa = x.abs()
    with torch.no_grad():
        z = replay.run(xa, wa, c).add_(out)
    z = z.clamp_min_(2 * epsilon)  # rounding must not carry a sum of non-negative terms past the stabilizer
    both = modified(module, "weight", weight, side_by_side(_same, torch.abs, 1))
    return xa, torch.div(seen, z, out=z), both


def _same(p: torch.Tensor) -> torch.Tensor:
    return p


def widened(x: torch.Tensor, dim: int) -> torch.Tensor:
    """An uninitialized tensor like ``x`` with twice its channels along ``dim``, in its layout: the input of a call
    on both signs side by side, or the input's shape for a backward call of weights side by side."""
    shape = list(x.shape)
    shape[dim] *= 2
    return torch.empty(shape, dtype=x.dtype, device=x.device, memory_format=layout(x))


@functools.lru_cache(maxsize=32)  # bounded: rules built anew with their own modifiers do not pile up
def side_by_side(first: Callable, second: Callable, dim: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """A parameter modifier giving ``first(W)`` and ``second(W)`` side by side along input channels ``dim``."""
    def both(p: torch.Tensor) -> torch.Tensor:
        return torch.cat([first(p), second(p)], dim).contiguous(memory_format=layout(p))
    return both


def run_pair(module: nn.Module, params: tuple[Callable, Callable], x: torch.Tensor, fold: float,
             replay: Replay) -> tuple[torch.Tensor, torch.Tensor, float, torch.Tensor | None]:
    """The two parts of a :func:`~.rules._pairs` group (parameter modifiers ``params``) as one call: ``([x+, x-], z,
    shift, weight)``, the first part's bias carrying the stabilizer ``fold`` (``weight``: ``[W+, W-]`` when the
    replay's backward is called directly, else ``None`` and ``[x+, x-]`` requires grad)."""
    first, second = params
    dim = replay.channel_dim
    c = x.shape[dim]
    both = widened(x, dim)
    torch.clamp(x, min=0, out=both.narrow(dim, 0, c))
    torch.clamp(x, max=0, out=both.narrow(dim, c, c))
    if not replay.direct:
        both.requires_grad_(True)
    weight = modified(module, "weight", module.weight, side_by_side(first, second, 1))
    bias = module._parameters.get("bias")
    if bias is not None:
        bias = modified(module, "bias", bias, first)
    z, used = call(replay, both, weight, bias, fold)
    return both, z, fold, used


def call(replay: Replay, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
         shift: float) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The replayed call on ``x`` with these parameters, ``shift`` added to the bias: ``(z, weight)`` without a
    graph where the call's own backward is to run, else ``(z, None)`` with one (its padding is a string)."""
    if shift:
        bias = bias + shift if bias is not None else torch.full((weight.shape[0],), shift, dtype=x.dtype,
                                                                device=x.device)
    if not replay.direct:
        return replay.run(x, weight, bias), None
    with torch.no_grad():
        return replay.run(x, weight, bias), weight


def input_grads(zs: list, xs: list, seeds: list, weights: list, replay: Replay | None) -> list:
    """``d z_i / d x_i^T seed_i`` for each part: by the replayed layer's own backward where its weight is given,
    by autograd on the graph of the others."""
    grads = [None] * len(zs)
    traced = [i for i, w in enumerate(weights) if w is None]
    if traced:
        found = torch.autograd.grad([zs[i] for i in traced], [xs[i] for i in traced], [seeds[i] for i in traced])
        for i, g in zip(traced, found):
            grads[i] = g
    for i, w in enumerate(weights):
        if w is not None:
            grads[i] = replay.input_grad(seeds[i], xs[i], w)
    return grads


def run(module: nn.Module, params: Callable | None, keep_bias: bool, x: torch.Tensor, shift: float = 0.0,
        replay: Replay | None = None) -> tuple[torch.Tensor, bool, torch.Tensor | None]:
    """``module.forward(x)`` with its own parameters through ``params`` (``None``: as they are; ``keep_bias=False``:
    no bias) and no hooks run, or the layer's recorded call (``replay``) on them; whether ``shift`` went into its
    bias (the stabilizer rides along in the layer's own bias add: a pass saved); and the weight when the replay's
    own backward is to run (the call then has no graph), else ``None`` (autograd differentiates it)."""
    if replay is not None:
        weight, bias = module._parameters["weight"], module._parameters.get("bias")
        if params is not None:
            weight = modified(module, "weight", weight, params)
        if bias is not None:
            bias = (modified(module, "bias", bias, params) if params is not None else bias) if keep_bias else None
        z, used = call(replay, x, weight, bias, shift)
        return z, bool(shift), used
    saved = dict(module._parameters)
    folded = False
    try:
        for name, p in saved.items():
            if p is None:
                continue
            new = modified(module, name, p, params) if params is not None else p
            if name == "bias":
                new = new if keep_bias else torch.zeros_like(p)
                if shift:
                    new, folded = new + shift, True
            module._parameters[name] = new
        return module.forward(x), folded, None
    finally:
        module._parameters.update(saved)


_MODIFIED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
MODIFIED_PER_MODULE = 8
"""Modified parameters kept per module (alpha-beta on a gated layer with a signed input needs 5: ``|W|``, ``[W,
|W|]`` and the mirrored bias for alpha's group, ``[W-, W+]`` and ``b-`` for beta's; a layer that sees inputs of
both signs in turn needs the z+ pair's 2 as well); the least recently used goes first, so sweeping gamma or
building rules anew does not grow the cache."""


def modified(module: nn.Module, name: str, p: torch.Tensor, fn: Callable) -> torch.Tensor:
    """``fn(p)``, kept per module while ``p`` is unchanged (its storage and version): the canonical copy's
    weights stay the same from call to call, so z+ and its kin modify each weight once, not every pass. The
    cache lives as long as the module (the model's cached canonical copy)."""
    cache = _MODIFIED.setdefault(module, OrderedDict())
    stamp = (p.data_ptr(), p._version, p.dtype, p.device)
    hit = cache.get((name, fn))
    if hit is not None and hit[0] == stamp:
        cache.move_to_end((name, fn))
        return hit[1]
    with torch.no_grad():
        new = fn(p)
    cache[(name, fn)] = (stamp, new)
    cache.move_to_end((name, fn))
    while len(cache) > MODIFIED_PER_MODULE:
        cache.popitem(last=False)
    return new
