"""The outputs of a model's layers: :func:`activations`, :func:`layer_names` with their output shapes,
and the activation maps of a conv layer's filters (:func:`filter_maps`, :func:`filter_layer`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from .._checks import PellucidError, check_images
from .._grad import iter_logits, resolve_batch_size
from .._state import model_state
from ..models.layers import conv_layers, find_layer, named_layers
from .params import _model_device


def activations(model: nn.Module, x: torch.Tensor, layer: str | nn.Module, *,
                batch_size: int | None = None) -> torch.Tensor:
    """The output of ``layer`` for images ``x``, e.g. ``(N, C, H, W)`` for a conv layer.

    The layer is read by a forward hook that is removed on return. Example:
    ``maps = pl.activations(model, x, "conv2")[:, 5]`` is filter 5's activation map per image.
    """
    x = check_images(x, model)
    module = find_layer(model, layer)
    outs = []
    with model_state(model) as state:
        store = state.capture(module)
        for _rows, _ in iter_logits(model, x, len(x), resolve_batch_size(batch_size, x, model)):
            out = store.get("output")
            if not isinstance(out, torch.Tensor):
                raise PellucidError(f"layer {layer!r} outputs a {type(out).__name__}, not a tensor")
            outs.append(out.detach().contiguous())  # a channels-last layer hands back the usual layout
    return torch.cat(outs)


def each_layer_output(model: nn.Module, x: torch.Tensor, read: Callable[[str, object], None]) -> None:
    """One forward of ``x`` without gradients, ``read(name, output)`` called as each named layer finishes (in the
    order the layers run; a layer the forward does not reach is never read). The hooks go with the state manager."""
    with model_state(model) as state:
        for name, m in named_layers(model).items():
            state.forward_hook(m, lambda _m, _inputs, out, n=name: read(n, out))
        with torch.no_grad():
            model(x)


def _check_size(size) -> tuple[int, ...]:
    """The input size without the batch axis, ``(C, H, W)`` for an image model: ints >= 1."""
    try:
        items = tuple(size)
    except TypeError:
        items = ()
    if not items or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in items):
        raise PellucidError(f"size must be the model's input shape without the batch axis, ints >= 1 such as "
                            f"(3, 224, 224), got {size!r}")
    return items


def layer_names(model: nn.Module, size: Sequence[int] | None = None) -> list[tuple[str, str, tuple | None]]:
    """``(name, type, output shape)`` of every layer ``layer=`` accepts, from one forward of a blank image.

    The shape is ``None`` for layers the forward does not reach or that output a non-tensor. ``size``:
    the input shape without the batch axis (default: ``model.input_size``).
    """
    given = size is not None
    size = _check_size(size) if given else getattr(model, "input_size", None)
    layers = named_layers(model)
    shapes: dict[str, tuple] = {}

    def shape(name: str, out) -> None:
        shapes.setdefault(name, tuple(out.shape[1:]) if isinstance(out, torch.Tensor) else None)

    if size is not None:
        try:
            each_layer_output(model, torch.full((1, *size), 0.5, device=_model_device(model)), shape)
        except (RuntimeError, ValueError) as e:
            if not given:
                raise
            want = getattr(model, "input_size", None)
            raise PellucidError(f"the model cannot run on an input of size {size} "
                                f"({str(e).splitlines()[0][:160]}); give its input size"
                                f"{f' {tuple(want)}' if want else ', e.g. (3, 224, 224)'}") from e
    return [(name, type(m).__name__, shapes.get(name)) for name, m in layers.items()]


def filter_layer(model: nn.Module) -> str:
    """The conv layer whose filters the report shows: the second ``Conv2d`` (the first if only one)."""
    convs = list(conv_layers(model))
    return convs[min(1, len(convs) - 1)]


def filter_maps(model: nn.Module, layer: str | nn.Module, channels: Sequence[int], x: torch.Tensor) -> torch.Tensor:
    """Activation maps ``(K, N, h, w)`` of ``channels`` of a conv ``layer`` on images ``x``."""
    acts = activations(model, x, layer)
    if acts.dim() != 4:
        raise PellucidError(f"layer {layer!r} outputs shape {tuple(acts.shape)}; activation maps need (N, C, H, W)")
    bad = [c for c in channels if not 0 <= c < acts.shape[1]]
    if bad:
        raise PellucidError(f"channel {bad[0]} is out of range: layer {layer!r} has channels 0..{acts.shape[1] - 1}")
    return acts[:, list(channels)].transpose(0, 1)
