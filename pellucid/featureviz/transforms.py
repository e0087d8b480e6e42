"""Transforms: ``(images, generator) -> images``, batch-shared random draws, differentiable, on device.

The model sees the image through them at every step (the course's roll, Lucent's pad, jitter, scale,
rotate), so that the optimized image does not rely on one exact pixel grid.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from .._blur import gaussian_blur
from .._checks import PellucidError, check_number, check_positive_int

Transform = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


def _randints(gen: torch.Generator, low: int, high: int, n: int = 2) -> list[int]:
    """``n`` ints drawn uniformly from ``low..high`` in one call."""
    return torch.randint(low, high + 1, (n,), generator=gen).tolist()


def _uniform(gen: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand((), generator=gen))


def compose(*transforms: Transform) -> Transform:
    """One transform applying ``transforms`` left to right."""
    def apply(x, gen):
        for t in transforms:
            x = t(x, gen)
        return x

    return apply


def roll(pixels: int) -> Transform:
    """The course's jitter: a circular shift by ``(oy, ox)`` drawn from ``0..pixels``."""
    check_positive_int(pixels, "roll pixels", minimum=0)

    def apply(x, gen):
        oy, ox = _randints(gen, 0, pixels)
        return torch.roll(x, shifts=(oy, ox), dims=(-2, -1)) if oy or ox else x

    return apply


def pad(width: int, value: float = 0.5) -> Transform:
    """Constant padding of ``width`` pixels on every side (Lucent pads with grey before jittering)."""
    check_positive_int(width, "pad width", minimum=0)
    return lambda x, gen: F.pad(x, (width,) * 4, value=value)


def jitter(pixels: int) -> Transform:
    """Lucent's jitter: a random crop that drops up to ``pixels`` rows and columns."""
    check_positive_int(pixels, "jitter pixels", minimum=0)

    def apply(x, gen):
        h, w = x.shape[-2:]
        if pixels >= min(h, w):
            raise PellucidError(f"jitter({pixels}) crops {pixels} pixels from a {h}x{w} image, leaving nothing; "
                                f"give at most {min(h, w) - 1}")
        dy, dx = _randints(gen, 0, pixels)
        return x[..., dy : h - pixels + dy, dx : w - pixels + dx]

    return apply


def _affine(x: torch.Tensor, scale: float, angle: float) -> torch.Tensor:
    c, s = math.cos(angle) / scale, math.sin(angle) / scale
    theta = torch.tensor([[c, -s, 0.0], [s, c, 0.0]], dtype=x.dtype, device=x.device).expand(len(x), 2, 3)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def random_scale(scales: Sequence[float] = (0.9, 1.1)) -> Transform:
    """Zoom by a factor drawn uniformly from ``scales`` (a range), keeping the size."""
    accepted = "a range of zoom factors > 0 such as (0.9, 1.1)"
    if isinstance(scales, str) or not isinstance(scales, Sequence) or not scales:
        raise PellucidError(f"scales must be {accepted}, got {scales!r}")
    values = [check_number(s, "each scale", 0, low_open=True, hint=f" ({accepted})") for s in scales]
    lo, hi = min(values), max(values)
    return lambda x, gen: _affine(x, _uniform(gen, lo, hi), 0.0)


def random_rotate(degrees: float = 10.0) -> Transform:
    """Rotate by an angle drawn uniformly from ``[-degrees, degrees]``, keeping the size."""
    check_number(degrees, "degrees", hint=" (angles are drawn from [-degrees, degrees])")
    return lambda x, gen: _affine(x, 1.0, math.radians(_uniform(gen, -degrees, degrees)))


def blur(sigma: float = 0.5) -> Transform:
    """A Gaussian blur of width ``sigma`` pixels (differentiable)."""
    return lambda x, gen: gaussian_blur(x, sigma)


def standard_transforms(pixels: int = 8) -> Transform:
    """Lucent's standard set for large models: pad, jitter, random scale and rotation, jitter."""
    return compose(pad(pixels + 4), jitter(pixels), random_scale((0.95, 1.05)), random_rotate(5), jitter(4))
