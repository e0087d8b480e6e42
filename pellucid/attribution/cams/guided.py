"""Guided Grad-CAM: guided backpropagation times the upsampled Grad-CAM map."""

from __future__ import annotations

import torch
from torch import nn

from ..._checks import checked_keywords, forwards
from ..gradients import guided_backprop
from .core import grad_cam


@checked_keywords
def guided_grad_cam(model: nn.Module, x: torch.Tensor, target, layer: str | nn.Module | None = None, *,
                    score: str = "logit", batch_size: int | None = None) -> torch.Tensor:
    """Guided Grad-CAM (Selvaraju et al. 2017): guided backprop times the upsampled Grad-CAM map.

    Shape: ``(N, C, H, W)``. Example: ``ggc = pl.guided_grad_cam(model, x, 3)``.
    """
    cam = grad_cam(model, x, target, layer, score=score, batch_size=batch_size)
    return guided_backprop(model, x, target, score=score, batch_size=batch_size) * cam[:, None]


@forwards(guided_grad_cam)
def guided_grad_cam_map(model, x, target, **kw):
    """Guided Grad-CAM, max over channels of its absolute value."""
    return guided_grad_cam(model, x, target, **kw).abs().amax(1)
