"""Class activation maps: Grad-CAM and guided Grad-CAM, on a layer's activations and gradients."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .._args import prepare
from .._checks import PellucidError
from .._grad import iter_gradients
from .._state import model_state
from ..layers import find_layer, last_conv_layer
from ..registry import Method, register_method
from .gradients import guided_backprop

# ---------------------------------------------------------------------------------------------
# Grad-CAM and guided backpropagation

def _check_spatial(out, layer) -> None:
    """A CAM needs a layer whose output is a map ``(N, C, h, w)``; say so before torch fails."""
    if not isinstance(out, torch.Tensor) or out.dim() != 4:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        shown = layer if isinstance(layer, str) else type(layer).__name__
        raise PellucidError(f"layer {shown!r} gives output {shape}, not a spatial map (N, C, h, w); pick a "
                            "convolutional layer (`pellucid layers --model M` lists them with their shapes)")


def grad_cam(model: nn.Module, x: torch.Tensor, target, layer: str | nn.Module | None = None, *,
             relu: bool = True, score: str = "logit", batch_size: int | None = None) -> torch.Tensor:
    """Grad-CAM (Selvaraju et al. 2017): channel-weighted activations of a conv layer.

    Channel weights are the spatial mean of d score / d activation; the map is ReLU'd and upsampled
    bilinearly to the input size. ``layer=None`` picks the last ``Conv2d``; names are those of
    ``pellucid layers`` (``"layer4"``, ``"features.12"``). Shape: ``(N, H, W)``.
    Example: ``cam = pl.grad_cam(model, x, target=281, layer="layer4")``.
    """
    x, t, bs = prepare(model, x, target, batch_size, score)
    name = last_conv_layer(model) if layer is None else layer
    module = find_layer(model, name)
    cams = []
    with model_state(model) as state:
        store = state.capture(module)
        state.forward_hook(module, lambda _m, _i, out: _check_spatial(out, name))
        for _, grad, _ in iter_gradients(model, x, len(x), t, bs, wrt=store):
            act = store["output"]
            cams.append((grad.mean((2, 3), keepdim=True) * act.detach()).sum(1, keepdim=True))
    cam = torch.cat(cams)
    if relu:
        cam = cam.clamp_min(0)
    return F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]


def guided_grad_cam(model: nn.Module, x: torch.Tensor, target, layer: str | nn.Module | None = None, *,
                    score: str = "logit", batch_size: int | None = None) -> torch.Tensor:
    """Guided Grad-CAM (Selvaraju et al. 2017): guided backprop times the upsampled Grad-CAM map.

    Shape: ``(N, C, H, W)``. Example: ``ggc = pl.guided_grad_cam(model, x, 3)``.
    """
    cam = grad_cam(model, x, target, layer, score=score, batch_size=batch_size)
    return guided_backprop(model, x, target, score=score, batch_size=batch_size) * cam[:, None]


def _guided_grad_cam_map(model, x, target, **kw):
    """Guided Grad-CAM, max over channels of its absolute value."""
    return guided_grad_cam(model, x, target, **kw).abs().amax(1)


register_method(Method("gradcam", "Grad-CAM", grad_cam, summary="channel-weighted activations of the last conv layer"))
register_method(Method("guided_gradcam", "Guided Grad-CAM", _guided_grad_cam_map, sanity="never", grid=False,
                       summary="guided backprop times Grad-CAM"))
