"""Parameterizations: a leaf tensor that is optimized, and the images it stands for.

``"pixel"`` is the image itself (the course's); ``"fourier"`` is Lucid's colour-decorrelated spectrum.
"""

from __future__ import annotations

import torch
from torch import nn

from .._checks import PellucidError, check_choice, check_images

PARAMS = ("pixel", "fourier")

# Lucid's square root of the ImageNet colour covariance, columns scaled to unit max norm
_COLOR_SQRT = torch.tensor([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]])
_COLOR = _COLOR_SQRT / _COLOR_SQRT.norm(dim=0).max()


class PixelParam:
    """The image itself, clamped to [0, 1] after every step (the course's parameterization)."""

    def __init__(self, start: torch.Tensor):
        self.tensor = start.clone(memory_format=torch.contiguous_format).requires_grad_(True)

    def image(self) -> torch.Tensor:
        return self.tensor

    @torch.no_grad()
    def project(self) -> None:
        self.tensor.clamp_(0, 1)


def _mix(matrix: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Mix the colour channels of ``z`` (N, C, H, W) by a (C, C) matrix, keeping the contiguous layout.

    (An einsum returns a channels-last tensor here, which makes every convolution of the model copy
    its weights to match: 10% of a resnet18 step.)
    """
    return torch.matmul(matrix, z.flatten(2)).view_as(z)


class FourierParam:
    """Lucid/Lucent's image: a spectrum scaled by 1/frequency, colour-decorrelated, then a sigmoid.

    Gradient steps on the spectrum favour low frequencies and natural colour statistics, which gives
    far more readable images of large models than steps on pixels (Olah et al. 2017).
    """

    def __init__(self, start: torch.Tensor, decay: float = 1.0):
        h, w = start.shape[-2:]
        fy = torch.fft.fftfreq(h, device=start.device)[:, None]
        fx = torch.fft.rfftfreq(w, device=start.device)[None, :]
        freqs = (fx**2 + fy**2).sqrt()
        self.scale = (1.0 / freqs.clamp_min(1.0 / max(h, w)) ** decay).to(start.dtype)
        self.size = (h, w)
        color = _COLOR.to(start.device, start.dtype)
        self.color = color if start.shape[1] == 3 else None
        z = torch.logit(start.clamp(1e-3, 1 - 1e-3))  # invert sigmoid, colour mixing and spectrum scale
        if self.color is not None:
            z = _mix(torch.linalg.inv(color), z)
        spectrum = torch.fft.rfft2(z * 4.0, norm="ortho") / self.scale
        self.tensor = torch.view_as_real(spectrum).contiguous().requires_grad_(True)
        # scale and Lucid's 1/4 in one real product per step, laid out like the spectrum's last three
        # dims (a broadcast over the trailing real/imaginary dim is 5x slower)
        self._factor = (self.scale / 4.0)[..., None].expand(*self.scale.shape, 2).contiguous()

    def image(self) -> torch.Tensor:
        spectrum = torch.view_as_complex(self.tensor * self._factor)  # real maths: no complex copy
        z = torch.fft.irfft2(spectrum, s=self.size, norm="ortho")
        if self.color is not None:
            z = _mix(self.color, z)
        return torch.sigmoid(z)

    def project(self) -> None:
        pass


def make_param(param: str, start, n: int, shape, model, gen: torch.Generator, device) -> PixelParam | FourierParam:
    """The parameterization, from ``start`` images (copied) or from noise of the model's input size."""
    check_choice(param, "param", PARAMS)
    if start is not None:
        start = check_images(start, model, "start").clone()
        return PixelParam(start) if param == "pixel" else FourierParam(start)
    shape = shape or getattr(model, "input_size", None)
    if shape is None or len(shape) != 3:
        raise PellucidError(f"cannot tell the image size: pass size=(C, H, W) (got {shape!r}); "
                            "pl.wrap(..., input_size=(C, H, W)) records it on the model")
    if param == "pixel":  # the course's start: standard normal noise in the model's normalized space
        mean, std = _norm_stats(model, shape[0])
        noise = torch.randn((n, *shape), generator=gen) * std + mean if std is not None else torch.rand((n, *shape),
                                                                                                       generator=gen)
        return PixelParam(noise.clamp(0, 1).to(device))
    p = FourierParam(torch.full((n, *shape), 0.5, device=device))  # Lucent: a faint random spectrum
    with torch.no_grad():
        p.tensor.add_(0.01 * torch.randn(p.tensor.shape, generator=gen).to(device))
    return p


def _norm_stats(model: nn.Module, channels: int) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """The ``(1, C, 1, 1)`` mean and std inside a :class:`PixelModel` (``None`` if it has none)."""
    mean, std = getattr(model, "mean", None), getattr(model, "std", None)
    if not isinstance(std, torch.Tensor):
        return None, None
    mean = mean.detach().cpu() if isinstance(mean, torch.Tensor) else torch.zeros(())
    return mean.expand(1, channels, 1, 1), std.detach().cpu().expand(1, channels, 1, 1)


def _model_device(model: nn.Module) -> torch.device:
    p = next(iter(model.parameters()), None)
    return p.device if p is not None else torch.device("cpu")
