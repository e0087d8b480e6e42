"""The one heat-map overlay: an attribution map over its image as an RGB array, one colour rule.

The report (``render.show_map``), the web page and the batch job all draw maps with
:func:`overlay_rgb`, so one map looks the same everywhere: signed maps diverge around 0 (``RdBu_r``)
with symmetric limits at the 99.5th percentile of |map|; unsigned maps run from 0 in ``inferno``;
the image below is shown in gray. numpy and matplotlib's colormaps only (no pyplot).
"""

from __future__ import annotations

import numpy as np
import torch

SIGNED_CMAP, UNSIGNED_CMAP = "RdBu_r", "inferno"
ALPHA = 0.6  # weight of the colours over the gray image


def image_array(img: torch.Tensor) -> np.ndarray:
    """``(C, H, W)`` in [0, 1] to an ``(H, W, 3)`` float array."""
    arr = img.detach().float().clamp(0, 1).cpu().numpy()
    arr = np.repeat(arr, 3, axis=0) if arr.shape[0] == 1 else arr[:3]
    return arr.transpose(1, 2, 0)


def is_signed(m: np.ndarray) -> bool:
    """Whether a map has both signs (and so is drawn diverging around 0)."""
    return bool((m < 0).any() and (m > 0).any())


def heat_limits(m: np.ndarray, signed: bool, percentile: float = 99.5) -> tuple[float, float]:
    """Colour limits: the ``percentile`` of |m| (so one outlier pixel does not wash out the map)."""
    peak = float(np.percentile(np.abs(m), percentile)) or float(np.abs(m).max()) or 1.0
    return (-peak, peak) if signed else (float(min(m.min(), 0.0)), peak)


def heat_colours(heat, limits: tuple[float, float] | None = None, signed: bool | None = None) -> np.ndarray:
    """``(H, W)`` map to ``(H, W, 3)`` colours in [0, 1] by the one colour rule (``limits`` and ``signed``
    override the map's own, e.g. one scale and one colour map shared by several maps: :func:`shared_scale`)."""
    from matplotlib import colormaps

    m = _numpy(heat)
    signed = is_signed(m) if signed is None else signed
    lo, hi = limits if limits is not None else heat_limits(m, signed)
    cmap = colormaps[SIGNED_CMAP if signed else UNSIGNED_CMAP]
    return cmap(np.clip((m - lo) / max(hi - lo, 1e-12), 0, 1))[..., :3]


def shared_scale(maps) -> tuple[tuple[float, float], bool]:
    """One ``(limits, signed)`` for several maps drawn side by side: diverging if any has both signs."""
    m = np.concatenate([_numpy(one).ravel() for one in maps])
    signed = is_signed(m)
    return heat_limits(m, signed), signed


def overlay_rgb(image: torch.Tensor | None, heat, limits: tuple[float, float] | None = None,
                alpha: float = ALPHA, signed: bool | None = None) -> np.ndarray:
    """The map over the gray image as an ``(H, W, 3)`` float array in [0, 1].

    ``image`` is ``(C, H, W)`` in [0, 1] (or ``None``: the colours alone); a map of another size is
    resized to the image bilinearly.
    """
    if image is None:
        return heat_colours(heat, limits, signed)
    image = image.detach().float().cpu()
    heat = torch.as_tensor(_numpy(heat))
    if heat.shape[-2:] != image.shape[-2:]:
        heat = torch.nn.functional.interpolate(heat[None, None], size=image.shape[-2:], mode="bilinear")[0, 0]
    gray = image_array(image).mean(2, keepdims=True)
    return ((1 - alpha) * gray + alpha * heat_colours(heat, limits, signed)).clip(0, 1)


def as_uint8(arr: np.ndarray) -> np.ndarray:
    """A float array in [0, 1] as uint8 (what the PNGs of the web page and the batch job hold)."""
    return (np.clip(arr, 0, 1) * 255).round().astype(np.uint8)


def enlarge(arr: np.ndarray, factor: int) -> np.ndarray:
    """Pixels repeated ``factor`` times along both axes: small images (28x28 digits) kept sharp."""
    return arr.repeat(factor, 0).repeat(factor, 1) if factor > 1 else arr


def _numpy(heat) -> np.ndarray:
    if isinstance(heat, torch.Tensor):
        return heat.detach().float().cpu().numpy()
    return np.asarray(heat, dtype=np.float32)
