"""Load and save images: files at the edges, tensors inside.

:func:`decode_image` is the one place where PIL opens an image (a file or uploaded bytes), and
:func:`fit_image` the one place where an image is converted to a model's channels and size.
:func:`read_image` is the two in a row; ``pl.load_image``, the batch job and the web page's uploads
all go through them, each reporting a bad image its own way (:class:`ImageError` says why).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ._checks import PellucidError
from .data import resize_crop

FORMATS = ("PNG", "JPEG", "MPO", "WEBP")  # MPO: the JPEG variant many phone cameras write
GRAY_MODES = ("1", "L", "LA", "I", "I;16", "F")


class ImageError(PellucidError):
    """An image that cannot be read; ``kind`` is ``missing``, ``empty``, ``unknown`` (not an image),
    ``format`` (an image of a format not accepted), ``corrupt`` or ``too large``."""

    def __init__(self, message: str, kind: str):
        super().__init__(message)
        self.kind = kind


def _sniff(head: bytes) -> str | None:
    """The format the first bytes claim: PNG, JPEG, WEBP or None."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    return "WEBP" if head[:4] == b"RIFF" and head[8:12] == b"WEBP" else None


def _open(source: bytes | str | Path):
    """``(PIL image, description for messages, first bytes)``; not decoded yet."""
    import io

    from PIL import Image, UnidentifiedImageError

    if isinstance(source, (bytes, bytearray)):
        what, head, stream = "the upload", bytes(source[:16]), io.BytesIO(source)
        if not source:
            raise ImageError("the upload is empty: choose a PNG, JPEG or WebP image", "empty")
    else:
        p = Path(source)
        what = f"image {str(p)!r}"
        if not p.exists():
            raise ImageError(f"image file {str(p)!r} does not exist", "missing")
        if p.is_dir():
            raise ImageError(f"{str(p)!r} is a folder, not an image file", "missing")
        with open(p, "rb") as f:
            head = f.read(16)
        stream = p
    try:
        return Image.open(stream), what, head
    except Image.DecompressionBombError as e:
        raise ImageError(f"{what} is too large to open safely ({e})", "too large") from e
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        if _sniff(head):
            raise ImageError(f"cannot read {what}: not a valid PNG, JPEG or WebP file; the {_sniff(head)} data is "
                             f"corrupt or truncated ({e})", "corrupt") from e
        raise ImageError(f"cannot read {what}: not a PNG, JPEG or WebP image (its content was checked, "
                         "not its name)", "unknown") from e


def decode_image(source: bytes | str | Path, *, formats: tuple[str, ...] | None = None,
                 max_pixels: int | None = None, max_side: int | None = None,
                 shrink_to: int | None = None) -> torch.Tensor:
    """A file or the bytes of one as a ``(C, H, W)`` uint8 tensor: ``C = 1`` for gray images, else 3.

    ``formats`` limits the accepted formats (default: any PIL reads); images over ``max_pixels``
    pixels or ``max_side`` pixels a side are refused before they are decoded; ``shrink_to`` scales
    larger images down (aspect kept) to at most that many pixels a side. Raises :class:`ImageError`.
    """
    from PIL import Image

    img, what, _ = _open(source)
    with img:
        if formats is not None and img.format not in formats:
            raise ImageError(f"{img.format} images are not accepted: use a PNG, JPEG or WebP image", "format")
        w, h = img.size
        if max_side is not None and max(w, h) > max_side:
            raise ImageError(f"{what} is {w}x{h} pixels; at most {max_side}x{max_side} is accepted", "too large")
        if max_pixels is not None and w * h > max_pixels:
            raise ImageError(f"image too large: {w}x{h} = {w * h:,} pixels, above max_pixels={max_pixels:,}",
                             "too large")
        fmt = img.format
        try:
            img.load()
            img = img.convert("L" if img.mode in GRAY_MODES else "RGB")
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
            raise ImageError(f"cannot read {what}: not a valid PNG, JPEG or WebP file; the {fmt} data is corrupt "
                             f"or truncated ({e})", "corrupt") from e
    if shrink_to is not None:
        img.thumbnail((shrink_to, shrink_to))
    arr = torch.from_numpy(np.array(img, dtype=np.uint8))
    return arr[None] if arr.dim() == 2 else arr.permute(2, 0, 1).contiguous()


def to_channels(img: torch.Tensor, channels: int) -> torch.Tensor:
    """A ``(C, H, W)`` uint8 image with 1 or 3 channels as ``channels`` channels; colour to gray by
    PIL's ITU-R 601-2 luma rule, in integers, so the result equals PIL's ``convert("L")``."""
    if img.shape[0] == channels:
        return img
    if channels == 3:
        return img.expand(3, -1, -1).contiguous()
    r, g, b = img.to(torch.int32)
    return ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16).to(torch.uint8)[None]


def _fit_args(model, size, channels) -> tuple[int, tuple[int, int] | None]:
    """The channels and size a model (or an explicit ``(C, H, W)``) takes; explicit arguments win."""
    input_size = tuple(model) if isinstance(model, (tuple, list)) else getattr(model, "input_size", None)
    if channels is None:
        channels = input_size[0] if input_size else 3
    if size is None and input_size and len(input_size) == 3:
        size = tuple(input_size[1:])
    return channels, (tuple(size) if size is not None else None)


def fit_image(img: torch.Tensor, model=None, size: tuple[int, int] | None = None,
              channels: int | None = None) -> torch.Tensor:
    """A decoded ``(C, H, W)`` uint8 image as ``(1, C', H', W')`` float in [0, 1] for ``model`` (or an
    explicit ``(C, H, W)``): converted to its channels, resized (shorter side) and centre-cropped."""
    channels, size = _fit_args(model, size, channels)
    x = to_channels(img, channels).float()[None] / 255.0
    if size is not None:
        x = resize_crop(x, size)
    return x.contiguous()


def read_image(source: bytes | str | Path, model=None, size: tuple[int, int] | None = None,
               channels: int | None = None, **limits) -> torch.Tensor:
    """A file or its bytes as ``(1, C, H, W)`` in [0, 1], sized for ``model`` (or a ``(C, H, W)``):
    :func:`decode_image` (``limits``: its keyword arguments) then :func:`fit_image`."""
    return fit_image(decode_image(source, **limits), model, size, channels)


def load_image(path, model=None, size: tuple[int, int] | None = None, channels: int | None = None) -> torch.Tensor:
    """Read a PNG, JPEG or WebP file as ``(1, C, H, W)`` in [0, 1], sized for ``model``.

    Gray and RGB are converted to the model's channels; the image is resized (shorter side) and
    centre-cropped to the model's input size, or to ``size`` if given.
    """
    return read_image(path, model, size, channels)


def load_images(paths, model=None) -> torch.Tensor:
    """Several files stacked into one batch, each sized for ``model``."""
    return torch.cat([load_image(p, model) for p in paths])


def quantize(img: torch.Tensor) -> torch.Tensor:
    """``(C, H, W)`` in [0, 1] as ``(C, H, W)`` uint8 (what an 8-bit image file holds)."""
    return (img.detach().float().clamp(0, 1).cpu() * 255).round().to(torch.uint8)


def to_uint8(img: torch.Tensor) -> np.ndarray:
    """``(C, H, W)`` in [0, 1] to an ``(H, W, C)`` or ``(H, W)`` uint8 array."""
    arr = quantize(img).numpy()
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
