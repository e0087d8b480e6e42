"""Load and save images: files at the edges, tensors inside."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ._checks import PellucidError
from .data import resize_crop


def load_image(path, model=None, size: tuple[int, int] | None = None, channels: int | None = None) -> torch.Tensor:
    """Read a PNG, JPEG or WebP file as ``(1, C, H, W)`` in [0, 1], sized for ``model``.

    Gray and RGB are converted to the model's channels; the image is resized (shorter side) and
    centre-cropped to the model's input size, or to ``size`` if given.
    """
    from PIL import Image, UnidentifiedImageError

    p = Path(path)
    if not p.exists():
        raise PellucidError(f"image file {str(p)!r} does not exist")
    if p.is_dir():
        raise PellucidError(f"{str(p)!r} is a folder, not an image file")
    try:
        with Image.open(p) as img:
            img.load()
            return pil_to_tensor(img, model, size, channels)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise PellucidError(f"cannot read image {str(p)!r}: not a valid PNG, JPEG or WebP file ({e})") from e


def pil_to_tensor(img, model=None, size: tuple[int, int] | None = None, channels: int | None = None) -> torch.Tensor:
    """A PIL image as ``(1, C, H, W)`` in [0, 1], converted and sized for ``model`` like ``load_image``."""
    input_size = getattr(model, "input_size", None)
    if channels is None:
        channels = input_size[0] if input_size else 3
    if size is None and input_size:
        size = tuple(input_size[1:])
    img = img.convert("L" if channels == 1 else "RGB")
    arr = np.asarray(img, dtype=np.float32) / 255.0
    x = torch.from_numpy(arr.copy())
    x = x[None, None] if x.dim() == 2 else x.permute(2, 0, 1)[None]
    if size is not None:
        x = resize_crop(x, tuple(size))
    return x.contiguous()


def load_images(paths, model=None) -> torch.Tensor:
    """Several files stacked into one batch, each sized for ``model``."""
    return torch.cat([load_image(p, model) for p in paths])


def to_uint8(img: torch.Tensor) -> np.ndarray:
    """``(C, H, W)`` in [0, 1] to an ``(H, W, C)`` or ``(H, W)`` uint8 array."""
    arr = (img.detach().float().clamp(0, 1).cpu().numpy() * 255).round().astype(np.uint8)
    return arr[0] if arr.shape[0] == 1 else arr.transpose(1, 2, 0)


def save_image(img: torch.Tensor, path) -> Path:
    """Write one ``(C, H, W)`` (or ``(1, C, H, W)``) image in [0, 1] as PNG."""
    from PIL import Image

    if img.dim() == 4:
        img = img[0]
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(to_uint8(img)).save(p)
    return p
