"""Concept Relevance Propagation's reference images (Achtibat et al. 2023): the images, and the crops of them,
in which a channel receives the most relevance (relevance maximization) or fires most (activation
maximization). The conditional maps themselves are ``pl.lrp(..., condition={layer: channels})``."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..._args import prepare
from ..._checks import PellucidError, check_choice, check_positive_int
from ..._grad import predictions
from .core import lrp


@dataclass(frozen=True)
class ReferenceImages:
    """``images``: positions in ``x``, best first; ``scores``: the channel's relevance (or activation) in each;
    ``crops`` ``(k, C, h, w)``: the part of each image around where the channel peaks, resized to a common size;
    ``maps`` ``(k, H, W)``: the channel's conditional relevance (or its activation, upsampled) on each image."""

    images: torch.Tensor
    scores: torch.Tensor
    crops: torch.Tensor
    maps: torch.Tensor
    layer: str
    channel: int
    by: str

    def __repr__(self) -> str:
        top = ", ".join(f"{int(i)}: {float(v):.3g}" for i, v in zip(self.images[:8], self.scores[:8]))
        return (f"ReferenceImages(layer={self.layer!r}, channel={self.channel}, by={self.by!r}, "
                f"k={len(self.images)}, {{image: score}} {{{top}}})")

    def _repr_png_(self) -> bytes:
        from ...drawing import display_learned

        return display_learned.reference_png(self)


def _crop(image: torch.Tensor, heat: torch.Tensor, fraction: float) -> torch.Tensor:
    """A square of ``fraction`` of the image's shorter side around ``heat``'s maximum (``heat`` at image size)."""
    h, w = image.shape[-2:]
    side = max(1, round(fraction * min(h, w)))
    i, j = divmod(int(heat.flatten().argmax()), heat.shape[-1])
    top = min(max(i - side // 2, 0), h - side)
    left = min(max(j - side // 2, 0), w - side)
    return image[:, top:top + side, left:left + side]


def reference_images(model: nn.Module, layer: str, channel: int, x: torch.Tensor, k: int = 8, *, target=None,
                     by: str = "relevance", composite=None, crop: float = 0.5,
                     batch_size: int | None = None) -> ReferenceImages:
    """The ``k`` images of ``x`` in which ``channel`` of ``layer`` matters most: ``by="relevance"`` (the LRP
    relevance it receives for ``target``, default the predicted class: what the channel contributes to the
    decision) or ``by="activation"`` (how strongly it fires). ``crop`` is the crops' side as a fraction of the
    image. Example: ``ref = pl.reference_images(model, "layer4", 7, photos); pl.show(ref.crops)``."""
    check_choice(by, "by", ("relevance", "activation"))
    check_positive_int(k, "k")
    if isinstance(channel, bool) or not isinstance(channel, int) or channel < 0:
        raise PellucidError(f"channel must be a channel index >= 0, got {channel!r}")
    if not isinstance(crop, int | float) or isinstance(crop, bool) or not 0 < crop <= 1:
        raise PellucidError(f"crop must be a fraction of the image in (0, 1], got {crop!r}")
    x, _, bs = prepare(model, x, 0, batch_size)
    if target is None:
        target = predictions(model, x, bs).argmax(1)
    if by == "relevance":
        res = lrp(model, x, target, composite, layers=[layer], batch_size=batch_size)
        per = res.layers[layer]
    else:
        from ...featureviz import activations

        per = activations(model, x, layer)
    if per.dim() < 2 or channel >= per.shape[1]:
        raise PellucidError(f"channel {channel} is out of range: layer {layer!r} has "
                            f"{per.shape[1] if per.dim() > 1 else 0} channels")
    chan = per[:, channel].detach()
    scores = chan.flatten(1).sum(1) if chan.dim() > 1 else chan
    order = scores.argsort(descending=True)[: min(k, len(x))]
    if by == "relevance":
        maps = lrp(model, x[order], target[order] if isinstance(target, torch.Tensor) else target, composite,
                   condition={layer: [channel]}, batch_size=batch_size).sum(1)
    else:
        grid = chan[order]
        grid = grid if grid.dim() == 3 else grid.reshape(len(order), 1, 1).expand(-1, *x.shape[-2:])
        maps = F.interpolate(grid[:, None].float(), size=x.shape[-2:], mode="bilinear")[:, 0]
    side = max(1, round(crop * min(x.shape[-2:])))
    crops = torch.stack([F.interpolate(_crop(x[i], maps[n].abs() if by == "relevance" else maps[n], crop)[None],
                                       size=(side, side), mode="bilinear")[0] for n, i in enumerate(order.tolist())])
    return ReferenceImages(order, scores[order], crops.clamp(0, 1), maps, layer, channel, by)
