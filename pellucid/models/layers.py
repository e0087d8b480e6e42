"""Layers by name, shared by Grad-CAM, activations, feature visualization and sanity checks."""

from __future__ import annotations

import difflib

from torch import nn

from .._checks import PellucidError
from .base import PixelModel


def inner(model: nn.Module) -> nn.Module:
    """The module whose layer names users see (the wrapped ``net`` of a ``PixelModel``)."""
    return model.net if isinstance(model, PixelModel) else model


def named_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Every sub-module by the name users write (``"layer4"``, ``"features.12"``, ``"conv2"``)."""
    return {name: m for name, m in inner(model).named_modules() if name}


def find_layer(model: nn.Module, layer: str | nn.Module) -> nn.Module:
    """The module named ``layer``; an unknown name lists the close matches and some valid names."""
    if isinstance(layer, nn.Module):
        if not any(m is layer for m in model.modules()):
            raise PellucidError(f"layer {type(layer).__name__} is not a module of this model")
        return layer
    layers = named_layers(model)
    if layer in layers:
        return layers[layer]
    close = difflib.get_close_matches(str(layer), list(layers), n=5, cutoff=0.5)
    hint = f"; close matches: {', '.join(close)}" if close else ""
    some = ", ".join(list(layers)[:12]) + (", ..." if len(layers) > 12 else "")
    raise PellucidError(f"unknown layer {layer!r}{hint}. Valid names include: {some} "
                        "(`pellucid layers --model M` lists them all)")


def conv_layers(model: nn.Module) -> dict[str, nn.Module]:
    """The model's ``Conv2d`` layers by name, input first; a clear error when there is none."""
    convs = {name: m for name, m in named_layers(model).items() if isinstance(m, nn.Conv2d)}
    if not convs:
        raise PellucidError("the model has no Conv2d layer; pass layer='name' explicitly")
    return convs


def last_conv_layer(model: nn.Module) -> str:
    """The name of the last ``Conv2d`` in the model (Grad-CAM's default layer)."""
    return list(conv_layers(model))[-1]
