"""Crops of a batch, each resized to the batch's image size: random ones are TCAV's random images when none are
given, a grid of them CRAFT's pieces of images. A crop is a box ``(image, top, left, height, width)`` in pixels."""

from __future__ import annotations

import torch
from torch import nn

from .._grad import chunks, resolve_batch_size
from ..featureviz.layer_outputs import activations


def random_boxes(x: torch.Tensor, image: torch.Tensor, gen: torch.Generator, sides: tuple[float, float]
                 ) -> torch.Tensor:
    """Seeded boxes ``(len(image), 5)``, one in each of ``x[image]``: a side between ``sides`` of the image's
    (the same fraction for height and width), anywhere inside it."""
    _, _, height, width = x.shape
    count = len(image)
    side = sides[0] + (sides[1] - sides[0]) * torch.rand(count, generator=gen)
    h = (side * height).round().clamp(1, height).long()
    w = (side * width).round().clamp(1, width).long()
    top = (torch.rand(count, generator=gen) * (height - h + 1)).long()
    left = (torch.rand(count, generator=gen) * (width - w + 1)).long()
    return torch.stack([image, top, left, h, w], 1)


def grid_boxes(x: torch.Tensor, side: float, overlap: float = 0.2) -> torch.Tensor:
    """CRAFT's crops: in every image the same grid of squares, ``side`` times the image's shorter side, ``overlap``
    of a side apart, the last row and column flush with the border, so that every pixel, corners included, lies
    in a crop (random positions would cover a 4-pixel corner of a 28-pixel digit in 1-2% of 8-pixel crops,
    the grid in 8%)."""
    n, _, height, width = x.shape
    p = max(1, round(side * min(height, width)))
    stride = max(1, round((1 - overlap) * p))

    def starts(total: int) -> list[int]:
        out = list(range(0, total - p + 1, stride))
        return out if out[-1] == total - p else out + [total - p]

    grid = torch.tensor([(t, left) for t in starts(height) for left in starts(width)])
    image = torch.arange(n).repeat_interleave(len(grid))
    return torch.cat([image[:, None], grid.repeat(n, 1), torch.full((len(image), 2), p)], 1)


def cut(x: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """The boxes' pixels, each resized (bilinear, torchvision's ``roi_align``) to ``x``'s image size."""
    from torchvision.ops import roi_align

    b = boxes.to(x.device, torch.float32)
    rois = torch.stack([b[:, 0], b[:, 2], b[:, 1], b[:, 2] + b[:, 4], b[:, 1] + b[:, 3]], 1).to(x.dtype)
    out = roi_align(x, rois, output_size=tuple(x.shape[-2:]), spatial_scale=1.0, sampling_ratio=1, aligned=True)
    return out.clamp(0, 1)


def crop_activations(model: nn.Module, x: torch.Tensor, boxes: torch.Tensor, layer, batch_size: int | None,
                     reduce=None) -> torch.Tensor:
    """The layer's activations of every crop, built chunk by chunk (``reduce`` maps each chunk's activations,
    e.g. a spatial mean), so memory holds one chunk of crops at a time."""
    bs = resolve_batch_size(batch_size, x, model)
    parts = []
    for rows in chunks(len(boxes), max(bs, 64)):
        acts = activations(model, cut(x, boxes[rows]), layer, batch_size=bs)
        parts.append(acts if reduce is None else reduce(acts))
    return torch.cat(parts)
