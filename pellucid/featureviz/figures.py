"""The report's "What has it learned" figures: class visualizations and one conv layer's filters."""

from __future__ import annotations

import torch
from torch import nn

from .._args import num_classes
from .._state import model_state
from ..models.layers import find_layer
from .layer_outputs import filter_layer, filter_maps
from .loop import channel_visualization, class_visualization

LEARNED_STEPS = 100  # the report's optimization steps (tests lower it)


def learned_figures(model: nn.Module, x: torch.Tensor, predicted: torch.Tensor, seed: int = 0,
                    channels: int = 8, images: int = 4) -> tuple[bytes, bytes, str]:
    """The report's "What has it learned" pictures: class visualizations and one conv layer's filters.

    Every class of a model with at most 10 classes (all of ``digits``), else the predicted classes (up to
    4, with the Fourier parameterization). Returns ``(classes PNG, filters PNG, layer name)``.
    """
    from ..drawing import render

    k = num_classes(model)
    classes = list(range(k)) if k is not None and k <= 10 else list(dict.fromkeys(predicted.tolist()))[:4]
    param = "pixel" if k is not None and k <= 10 else "fourier"
    v = class_visualization(model, classes, steps=LEARNED_STEPS, seed=seed, param=param)
    with torch.no_grad(), model_state(model):
        probs = model(v.image).softmax(1)[range(len(classes)), classes]
    label = getattr(model, "label", str)
    titles = [f"{label(c)} ({100 * float(p):.0f}%)" for c, p in zip(classes, probs)]
    layer = filter_layer(model)
    chans = list(range(min(channels, find_layer(model, layer).out_channels)))
    shown = x[:images]
    f = channel_visualization(model, layer, chans, steps=LEARNED_STEPS, seed=seed)
    filters = render.filter_grid(f.image, filter_maps(model, layer, chans, shown), shown, chans)
    return render.image_grid(v.image, titles), filters, layer
