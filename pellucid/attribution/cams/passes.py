"""The gradient-free CAMs' extra passes: Score-CAM's masked images and Ablation-CAM's ablated layers.

Both weigh channel ``k`` by the target's score on a pass where only that channel's information is kept
(Score-CAM) or removed (Ablation-CAM), so they take one pass per channel; the passes run in chunks of
``batch_size`` rows, so memory is bounded by ``batch_size``, not by the number of channels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..._grad import LayerSwap, chunks, perturbation_scores
from ...targets import Target


def score_weights(model: nn.Module, x: torch.Tensor, t: Target, acts: torch.Tensor, bs: int) -> torch.Tensor:
    """Score-CAM (Wang et al. 2020): softmax over channels of the score of ``x`` times each channel's map.

    The map is upsampled bilinearly (corners aligned, as pytorch-grad-cam) and min-max scaled to [0, 1].
    A constant channel's mask is all zeros, so all constant channels of an image share one pass (the
    score of a black image); the others take one pass each. The masked images are laid out as the model's
    convolution weights are (channels-last for a channels-last model): a mismatch makes every convolution
    reorder its weights, which cost a third of the time on a torchvision resnet18. Returns weights ``(N, C)``.
    """
    n, c = acts.shape[:2]
    flat = acts.flatten(2)
    live = flat.amax(2) > flat.amin(2)
    pairs = torch.nonzero(live)                          # (R, 2): image, channel
    dead = torch.nonzero(~live.all(1)).flatten()         # images with a constant channel: one black pass each
    img = torch.cat([pairs[:, 0], dead])
    ch = torch.cat([pairs[:, 1], torch.full_like(dead, -1)])
    size = x.shape[-2:]

    def make(rows: slice) -> torch.Tensor:
        i, k = img[rows], ch[rows]
        up = F.interpolate(acts[i, k.clamp_min(0)][:, None], size=size, mode="bilinear", align_corners=True)
        lo = up.amin((2, 3), keepdim=True)
        hi = up.amax((2, 3), keepdim=True)
        mask = (up - lo) / (hi - lo + 1e-8) * (k >= 0).to(up).reshape(-1, 1, 1, 1)
        return x[i] * mask

    scores = perturbation_scores(model, make, len(img), t.select(img), bs, follow_layout=True).to(acts.dtype)
    table = torch.empty(n, c, dtype=acts.dtype, device=acts.device)
    if len(dead):
        table[dead] = scores[len(pairs):, None]
    table[pairs[:, 0], pairs[:, 1]] = scores[: len(pairs)]
    return table.softmax(1)


def ablation_weights(model: nn.Module, state, module: nn.Module, x: torch.Tensor, t: Target, raw: torch.Tensor,
                     to_map, base: torch.Tensor, bs: int) -> torch.Tensor:
    """Ablation-CAM (Desai & Ramaswamy 2020): ``(score - score with channel k set to 0) / score``.

    ``raw`` is the layer's output ``(N, ...)`` and ``to_map`` turns it into ``(N, C, h, w)``; channel
    ``k``'s entries in ``raw`` are found by passing an index tensor through ``to_map``, so token layers
    are ablated in place. The layer's output is replaced by :class:`~pellucid._grad.LayerSwap`: the layers
    before it run once per chunk on the one image, the layers after it on ``batch_size`` ablated copies.
    Since a row costs only the layers after the CAM layer, the caller passes a larger default ``bs``.
    Returns weights ``(N, C)``.
    """
    n = len(raw)
    index = torch.arange(raw[:1].numel(), device=raw.device).reshape(raw[:1].shape)
    positions = to_map(index)[0].flatten(1)             # (C, h*w): channel k's entries in one row of raw
    c = len(positions)
    swap = LayerSwap(state, module)
    scores = torch.empty(n, c, dtype=base.dtype, device=base.device)
    with torch.no_grad():
        for i in range(n):
            for rows in chunks(c, bs):
                m = rows.stop - rows.start
                ablated = raw[i:i + 1].expand(m, *raw.shape[1:]).contiguous()
                ablated.view(m, -1).scatter_(1, positions[rows], 0)
                ti = t.select(torch.full((m,), i, dtype=torch.long))
                scores[i, rows] = swap.scores(model, x[i:i + 1], ablated, ti).to(base.dtype)
    return (base[:, None] - scores) / base[:, None]
