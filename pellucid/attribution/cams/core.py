"""The CAM family: a layer's activations ``A (N, C, h, w)`` weighted channel by channel, summed, ReLU'd
and upsampled. Each method is the one small function that weighs them (pytorch-grad-cam's design):

- gradient CAMs, from ``G = d score / d A`` (one gradient pass, on the shared primitive):
  ``gradcam`` (Selvaraju et al. 2017) ``mean(G) * A``; ``gradcam++`` (Chattopadhay et al. 2018, eq. 19);
  ``xgradcam`` (Fu et al. 2020) ``sum(G * A) / sum(A)``; ``hirescam`` (Draelos & Carin 2020) ``G * A``
  element-wise; ``layercam`` (Jiang et al. 2021) ``relu(G) * A`` element-wise;
- gradient-free: ``scorecam`` (Wang et al. 2020) and ``ablationcam`` (Desai & Ramaswamy 2020), one
  masked or ablated pass per channel in chunks of ``batch_size``; ``eigencam`` (Muhammad & Yeasin 2020),
  the first principal component of ``A``, its sign chosen to agree with the mean activation.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..._args import prepare
from ..._checks import PellucidError, check_choice, checked_keywords
from ..._grad import iter_gradients, iter_logits
from ..._state import model_state
from .grids import layer_reshape, resolve
from .passes import ablation_weights, score_weights

# ---------------------------------------------------------------------------------------------
# channel weightings: (activations, gradients) -> weighted activations, all (N, C, h, w)

def _gradcam(a, g):
    return g.mean((2, 3), keepdim=True) * a


def _gradcam_pp(a, g):
    g2 = g * g
    alpha = g2 / (2 * g2 + a.sum((2, 3), keepdim=True) * g2 * g + 1e-6)
    alpha = torch.where(g != 0, alpha, torch.zeros_like(alpha))
    return (g.clamp_min(0) * alpha).sum((2, 3), keepdim=True) * a


def _xgradcam(a, g):
    return (g * a / (a.sum((2, 3), keepdim=True) + 1e-7)).sum((2, 3), keepdim=True) * a


def _hirescam(a, g):
    return g * a


def _layercam(a, g):
    return g.clamp_min(0) * a


GRADIENT_CAMS: dict[str, Callable] = {"gradcam": _gradcam, "gradcam++": _gradcam_pp, "xgradcam": _xgradcam,
                                      "hirescam": _hirescam, "layercam": _layercam}
METHODS = (*GRADIENT_CAMS, "scorecam", "ablationcam", "eigencam")
SMOOTHING = (None, "aug", "eigen")
ABLATION_CHUNK = 8
"""Ablation-CAM's default chunk in images per model call: 8 x the default batch size, since each row runs
only the layers after the CAM layer while the layers before it run once per chunk (on resnet18 ``layer4``
at 112², chunks of 8 spent 95% of the time in those batch-1 prefixes)."""
SCORE_CHUNK = 2
"""Score-CAM's default chunk: 2 x the default batch size, its passes being forward only (resnet18 at 112²:
16 masked images per call 5% faster than 8, 32 slower)."""


def principal_map(a: torch.Tensor) -> torch.Tensor:
    """``(N, C, h, w) -> (N, h, w)``: each image's projection on the first principal component of its
    pixels (centered over pixels, as Eigen-CAM), signed to correlate positively with the mean activation."""
    n, _, h, w = a.shape
    m = torch.nan_to_num(a.flatten(2).transpose(1, 2).double())      # (N, hw, C)
    centered = m - m.mean(1, keepdim=True)
    vh = torch.linalg.svd(centered, full_matrices=False).Vh          # (N, k, C)
    p = (centered @ vh[:, 0, :, None])[..., 0]                        # (N, hw)
    mean = m.mean(2)
    sign = torch.sign((p * (mean - mean.mean(1, keepdim=True))).sum(1, keepdim=True))
    return (p * torch.where(sign == 0, torch.ones_like(sign), sign)).reshape(n, h, w).to(a.dtype)


# ---------------------------------------------------------------------------------------------

@checked_keywords
def cam(model: nn.Module, x: torch.Tensor, target, method: str = "gradcam", layer: str | nn.Module | None = None,
        *, reshape: Callable | None = None, smooth: str | None = None, relu: bool = True, score: str = "logit",
        batch_size: int | None = None) -> torch.Tensor:
    """A class activation map of ``method`` at ``layer``, ``(N, H, W)`` upsampled to the input.

    ``method``: ``gradcam``, ``gradcam++``, ``xgradcam``, ``hirescam``, ``layercam`` (one gradient pass),
    ``scorecam``, ``ablationcam`` (one pass per channel, ``batch_size`` at a time) or ``eigencam`` (one
    forward, class-agnostic). ``layer=None`` picks the last conv layer of a CNN, and the first norm of the
    last transformer block of a ViT or Swin; token outputs become their grid (a ViT's class token dropped),
    or pass ``reshape=fn`` turning the layer's output into ``(N, C, h, w)``. ``smooth="eigen"`` takes the
    first principal component of the weighted activations instead of their sum; ``smooth="aug"`` averages
    the maps of the image and its mirror at brightness 0.9, 1 and 1.1 (pytorch-grad-cam's test-time
    augmentation, clamped to [0, 1]). Example: ``m = pl.cam(model, x, 281, "scorecam", layer="layer4")``.
    """
    check_choice(method, "CAM method", METHODS)
    check_choice(smooth, "smooth", SMOOTHING)
    if reshape is not None and not callable(reshape):
        raise PellucidError(f"reshape must be a function (layer output) -> (N, C, h, w), got {type(reshape).__name__}")
    x, t, bs = prepare(model, x, target, batch_size, score)
    if smooth == "aug":
        return _augmented(model, x, t, method, layer, reshape, relu, bs)
    module, name = resolve(model, x, layer)
    size = tuple(x.shape[-2:])
    to_map = reshape
    parts = []

    def as_map(out):
        nonlocal to_map
        if to_map is None:
            to_map = layer_reshape(out, name, size)
        mapped = to_map(out)
        if not isinstance(mapped, torch.Tensor) or mapped.dim() != 4:
            got = tuple(mapped.shape) if isinstance(mapped, torch.Tensor) else type(mapped).__name__
            raise PellucidError(f"reshape must give (N, C, h, w) for layer {name!r}, got {got}")
        return mapped

    reduce = principal_map if (smooth == "eigen" or method == "eigencam") else (lambda w: w.sum(1))
    with model_state(model) as state:
        store = state.capture(module)
        if method in GRADIENT_CAMS:
            weigh = GRADIENT_CAMS[method]
            for _, grad, _ in iter_gradients(model, x, len(x), t, bs, wrt=store):
                parts.append(reduce(weigh(as_map(store["output"].detach()), as_map(grad))))
        else:
            raws, bases = [], []
            for rows, out in iter_logits(model, x, len(x), bs):
                raws.append(store["output"].detach())
                if method == "ablationcam":
                    bases.append(t(out, rows))
            raw = torch.cat(raws)
            acts = as_map(raw)
            if method == "scorecam":
                chunk = bs if batch_size is not None else SCORE_CHUNK * bs
                acts = score_weights(model, x, t, acts, chunk)[:, :, None, None] * acts
            elif method == "ablationcam":
                # a row runs only the layers after the CAM layer; the layers before it run once per chunk
                chunk = bs if batch_size is not None else ABLATION_CHUNK * bs
                weights = ablation_weights(model, state, module, x, t, raw, to_map, torch.cat(bases), chunk)
                acts = weights.to(acts.dtype)[:, :, None, None] * acts
            parts.append(reduce(acts))
    maps = torch.cat(parts)[:, None]
    if relu:
        maps = maps.clamp_min(0)
    return F.interpolate(maps, size=size, mode="bilinear", align_corners=False)[:, 0]


def _augmented(model, x, t, method, layer, reshape, relu, bs) -> torch.Tensor:
    """Test-time augmentation: mirror x brightness (0.9, 1, 1.1), stacked on the batch axis, maps averaged."""
    factors = (0.9, 1.0, 1.1)
    views = [(x.flip(-1) if flip else x) * k for flip in (False, True) for k in factors]
    maps = cam(model, torch.cat(views).clamp(0, 1), t.repeat(len(views)), method, layer, reshape=reshape,
               relu=relu, batch_size=bs).reshape(len(views), *x.shape[:1], *x.shape[-2:])
    maps = torch.cat([maps[: len(factors)], maps[len(factors):].flip(-1)])
    return maps.mean(0)


@checked_keywords
def grad_cam(model: nn.Module, x: torch.Tensor, target, layer: str | nn.Module | None = None, *,
             relu: bool = True, score: str = "logit", batch_size: int | None = None) -> torch.Tensor:
    """Grad-CAM (Selvaraju et al. 2017): channel-weighted activations of a conv layer.

    Channel weights are the spatial mean of d score / d activation; the map is ReLU'd and upsampled
    bilinearly to the input size. ``layer=None`` picks the last ``Conv2d`` (a transformer's last block);
    names are those of ``pellucid layers`` (``"layer4"``, ``"features.12"``). Shape: ``(N, H, W)``.
    The ``gradcam`` member of :func:`cam`. Example: ``cam = pl.grad_cam(model, x, target=281, layer="layer4")``.
    """
    return cam(model, x, target, "gradcam", layer, relu=relu, score=score, batch_size=batch_size)
