"""Which layer a CAM reads and how its output becomes a map ``(N, C, h, w)``.

A convolutional layer already gives a map. A transformer's layers give tokens: a ViT's ``(N, 1 + h*w, C)``
(a class token, then the patch tokens row by row), a Swin's ``(N, h, w, C)`` (channels last). Both are
recognized from the output shape and the input size, not from class names:

- ``(N, C, h, w)`` whose ``h, w`` divide the input's ``H, W`` alike: a map as it is;
- ``(N, h, w, C)`` whose ``h, w`` do (and ``C, h`` do not): channels last, permuted;
- ``(N, T, C)`` with ``T = k + h*w`` and ``h / w = H / W``: tokens, the ``k`` leading ones dropped (a class
  token; DeiT's class and distillation tokens; register tokens: ``k`` up to 8, the smallest that fits after 1
  and 0).

The default layer (:func:`default_layer`) comes from one forward pass of one image, cached per model
and input size: for a model whose token layers run after its last convolution (a ViT's patch embedding
is its only convolution), the first norm of the last block that starts with one (the input of the last
attention block, pytorch-grad-cam's documented choice); when the network returns to a map after those
layers (a ConvNeXt block's norm and MLP run channels-last between its convolution and its output), the
outermost module around the last convolution whose output is that map (the last stage's output);
otherwise the last ``Conv2d`` with a grid.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable

import torch
from torch import nn

from ..._checks import PellucidError
from ...models.layers import find_layer, named_layers

Reshape = Callable[[torch.Tensor], torch.Tensor]

_NORMS = (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._NormBase) + \
    ((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ())


def _same_stride(h: int, w: int, size: tuple[int, int]) -> bool:
    """``h x w`` is a grid of an ``H x W`` image: both sides shrink by the same factor (up to rounding)."""
    H, W = size
    if h < 1 or w < 1 or h * w < 2 or h > H or w > W:
        return False
    return abs(H / h - W / w) <= max(1.0, 0.05 * H / h)


PREFIX_TOKENS = (1, 0, 2, 3, 4, 5, 6, 7, 8)
"""How many leading tokens a sequence may hold before its patch grid, in the order they are tried: a class
token, none, DeiT's class and distillation tokens, register tokens. For a grid of up to 400 x 400 patches a
wrong count never gives a grid of the input's shape too (the side lengths would differ by over 5%)."""


def _token_grid(tokens: int, size: tuple[int, int]) -> tuple[int, int, int] | None:
    """``(skip, h, w)`` for a sequence of ``tokens``: ``skip`` leading tokens (:data:`PREFIX_TOKENS`), then
    ``h x w``."""
    H, W = size
    for skip in PREFIX_TOKENS:
        k = tokens - skip
        if k < 4:
            continue
        h = round(math.sqrt(k * H / W))
        if h >= 2 and k % h == 0 and abs(h / (k // h) - H / W) <= 0.05 * H / W:
            return skip, h, k // h
    return None


def grid_kind(shape: tuple, size: tuple[int, int]) -> tuple[str, tuple[int, int], int] | None:
    """How an output of ``shape`` (batch first) holds a spatial grid: ``(kind, (h, w), skip)`` with kind
    ``"map"``, ``"channels_last"`` or ``"tokens"``; ``None`` if it holds none."""
    if len(shape) == 4:
        if _same_stride(shape[2], shape[3], size):
            return "map", (shape[2], shape[3]), 0
        if _same_stride(shape[1], shape[2], size):
            return "channels_last", (shape[1], shape[2]), 0
    if len(shape) == 3:
        found = _token_grid(shape[1], size)
        if found is not None:
            skip, h, w = found
            return "tokens", (h, w), skip
    return None


def describe_grid(shape: tuple | None, size) -> str:
    """What ``pellucid layers`` prints for a layer's grid: ``"grid 14x14 (tokens, 1 skipped)"`` or ``""``."""
    if shape is None or size is None:
        return ""
    found = grid_kind((1, *shape), tuple(size[-2:]))
    if found is None:
        return ""
    kind, (h, w), skip = found
    return {"map": f"grid {h}x{w}", "channels_last": f"grid {h}x{w} (channels last)",
            "tokens": f"grid {h}x{w} (tokens" + (f", {skip} skipped)" if skip else ")")}[kind]


def make_reshape(kind: str, hw: tuple[int, int], skip: int) -> Reshape:
    """The function that turns the layer's output into ``(N, C, h, w)`` (a view where possible)."""
    h, w = hw
    if kind == "map":
        return lambda t: t
    if kind == "channels_last":
        return lambda t: t.permute(0, 3, 1, 2)
    return lambda t: t[:, skip:].reshape(t.shape[0], h, w, t.shape[2]).permute(0, 3, 1, 2)


def shown(layer) -> str:
    return layer if isinstance(layer, str) else type(layer).__name__


def layer_reshape(out, layer, size: tuple[int, int]) -> Reshape:
    """The reshape of a layer's output, from its shape; a clear error when it holds no spatial grid."""
    if isinstance(out, torch.Tensor):
        found = grid_kind(tuple(out.shape), size)
        if found is not None:
            return make_reshape(*found)
    got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
    raise PellucidError(
        f"layer {shown(layer)!r} gives output {got}, not a spatial map: a CAM needs a map (N, C, h, w), "
        "channels-last (N, h, w, C) or tokens (N, [1 +] h*w, C) for this input size; pick such a layer "
        "(`pellucid layers --model M` marks them) or pass reshape=fn giving (N, C, h, w)")


# ---------------------------------------------------------------------------------------------
# the default layer

_DEFAULTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def default_layer(model: nn.Module, x: torch.Tensor) -> str:
    """The CAM layer for ``model`` at ``x``'s size (one forward of one image, cached per size)."""
    key = (tuple(x.shape[1:]), sum(1 for _ in model.modules()))
    cached = _DEFAULTS.setdefault(model, {})
    if key not in cached:
        cached[key] = _find_default(model, x[:1])
    return cached[key]


def _find_default(model: nn.Module, x1: torch.Tensor) -> str:
    """Run ``x1`` once, recording the start order, output grid and children of every layer."""
    from ..._state import model_state

    layers = named_layers(model)
    names = {m: n for n, m in layers.items()}
    started: list[str] = []
    ended: list[str] = []
    grids: dict[str, tuple] = {}
    size = tuple(x1.shape[-2:])
    with model_state(model) as state:
        for name, m in layers.items():
            state.forward_pre_hook(m, lambda _m, _i, n=name: started.append(n))

            def record(_m, _i, out, n=name):
                ended.append(n)
                if isinstance(out, torch.Tensor) and n not in grids:
                    found = grid_kind(tuple(out.shape), size)
                    if found is not None:
                        grids[n] = found

            state.forward_hook(m, record)
        with torch.no_grad():
            model(x1)
    order = {n: i for i, n in enumerate(dict.fromkeys(started))}
    convs = [n for n in order if isinstance(layers[n], nn.Conv2d) and grids.get(n, ("",))[0] == "map"]
    last_conv = order[convs[-1]] if convs else -1
    tokens = [n for n in order if n in grids and grids[n][0] != "map" and order[n] > last_conv]
    if not tokens:
        if convs:
            return convs[-1]
        raise PellucidError("no layer of this model gives a spatial grid (a conv map, channels-last map or "
                            "square token grid) at this input size; pass layer='name' and reshape=fn giving "
                            "(N, C, h, w)")
    if convs:  # back to a map after the token layers: they ran inside convolutional blocks (ConvNeXt)
        end = {n: i for i, n in enumerate(dict.fromkeys(ended))}
        last = max(end[n] for n in tokens)
        parts = convs[-1].split(".")
        around = [p for p in (".".join(parts[:k]) for k in range(1, len(parts)))
                  if grids.get(p, ("",))[0] == "map" and end.get(p, -1) > last]
        if around:
            return around[0]
    # the last block whose first child to run is a norm with a token grid: that norm
    best = None
    for m in layers.values():
        kids = [names[c] for c in m.children() if names.get(c) in order]
        if not kids:
            continue
        first = min(kids, key=order.get)
        if isinstance(layers[first], _NORMS) and first in tokens and (best is None or order[first] > order[best]):
            best = first
    return best if best is not None else tokens[-1]


def resolve(model: nn.Module, x: torch.Tensor, layer) -> tuple[nn.Module, str | nn.Module]:
    """The module to hook and how to name it in messages."""
    name = default_layer(model, x) if layer is None else layer
    return find_layer(model, name), name
