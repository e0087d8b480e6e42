"""Load and save images: files at the edges, tensors inside.

:func:`decode_image` is the one place where PIL opens an image (a file or uploaded bytes), and
:func:`fit_image` the one place where an image is converted to a model's channels and size.
:func:`read_image` is the two in a row; ``pl.load_image``, the batch job and the web page's uploads
all go through them, each reporting a bad image its own way (:class:`ImageError` says why).
"""

from __future__ import annotations

import math
import os
import re
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ._checks import PellucidError
from ._sizes import fit_args
from ._sizes import short as _short

FORMATS = ("PNG", "JPEG", "MPO", "WEBP")  # MPO: the JPEG variant many phone cameras write
GRAY_MODES = ("1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F")
WIDE_MODES = ("I", "I;16", "I;16L", "I;16B", "I;16N")  # 16-bit gray (PNG) and 32-bit integer images
MAX_PIXELS = 40_000_000
"""Images with more pixels are refused before they are decoded (a decompression bomb is a small file with
a huge header): the API, the CLI, the batch job (``--max-pixels``) and the web page share this limit."""
BACKGROUND = 255
"""Transparent pixels are composited on white (255 in every channel) before an image reaches a model, except
a light shape drawn by its alpha channel alone (a white glyph on transparency), which goes on black."""
UNIFORM = 32
"""A shape "drawn by its alpha": its opaque pixels (alpha >= 128) differ by at most this much per channel."""


class ImageError(PellucidError):
    """An image that cannot be read; ``kind`` is ``missing``, ``empty``, ``unknown`` (not an image),
    ``format`` (an image of a format not accepted), ``corrupt``, ``too large`` (over the pixel limit),
    ``permission`` (the file cannot be read by this user) or ``unreadable`` (another OS error)."""

    def __init__(self, message: str, kind: str):
        super().__init__(message)
        self.kind = kind



def resize_crop(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize the shorter side to fit, then centre-crop to ``size`` (bilinear, antialiased)."""
    h, w = x.shape[-2:]
    th, tw = size
    scale = max(th / h, tw / w)
    nh, nw = max(th, round(h * scale)), max(tw, round(w * scale))
    if (nh, nw) != (h, w):
        x = F.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False, antialias=True)
    top, left = (nh - th) // 2, (nw - tw) // 2
    return x[..., top : top + th, left : left + tw].clamp(0, 1)

def _sniff(head: bytes) -> str | None:
    """The format the first bytes claim: PNG, JPEG, WEBP or None."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    return "WEBP" if head[:4] == b"RIFF" and head[8:12] == b"WEBP" else None


def too_large(what: str, pixels: int | None, size: tuple[int, int] | None, limit: int) -> ImageError:
    """The one message for an image over the pixel limit (API, CLI, batch row and web page alike)."""
    dims = f"{size[0]}x{size[1]} = " if size else ""
    count = f"{dims}{pixels:,} pixels" if pixels is not None else "more pixels than PIL opens safely"
    return ImageError(f"{what} is too large: {count}; at most {limit:,} pixels are accepted "
                      "(a larger image is refused before it is decoded)", "too large")


def check_source(source) -> None:
    """A file path (``str`` or ``os.PathLike``) or the bytes of an image file, else a clear error."""
    if isinstance(source, str) and not source.strip():
        raise ImageError("the image path is an empty string; give the path of a PNG, JPEG or WebP file", "missing")
    if not isinstance(source, (bytes, bytearray, str, os.PathLike)):
        raise PellucidError(f"an image must be a file path (str or pathlib.Path) or the bytes of a PNG, JPEG or "
                            f"WebP file, got {type(source).__name__} {_short(source)}")


def _open(source: bytes | str | Path, limit: int = MAX_PIXELS):
    """``(PIL image, description for messages, first bytes)``; not decoded yet."""
    import io

    from PIL import Image

    check_source(source)
    if isinstance(source, (bytes, bytearray)):
        what, head, stream = "the upload", bytes(source[:16]), io.BytesIO(source)
        if not source:
            raise ImageError("the upload is empty: choose a PNG, JPEG or WebP image", "empty")
    else:
        p = Path(source)
        what = f"image {str(p)!r}"
        if p.is_symlink() and not p.exists():
            raise ImageError(f"image file {str(p)!r} is a broken symbolic link or a symbolic link loop", "missing")
        if not p.exists():
            raise ImageError(f"image file {str(p)!r} does not exist", "missing")
        if p.is_dir():
            raise ImageError(f"{str(p)!r} is a folder, not an image file", "missing")
        try:
            with open(p, "rb") as f:
                head = f.read(16)
        except PermissionError as e:
            raise ImageError(f"cannot read {what}: permission denied (check the file's permissions)",
                             "permission") from e
        except OSError as e:
            raise ImageError(f"cannot read {what}: {e.strerror or e}", "unreadable") from e
        stream = p
    try:
        with warnings.catch_warnings():  # PIL's warning band lies above MAX_PIXELS: the caller's limit decides
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(stream), what, head
    except Image.DecompressionBombError as e:  # PIL's own limit, above ours: refused at the header
        pixels = re.search(r"\((\d+) pixels\)", str(e))
        raise too_large(what, int(pixels.group(1)) if pixels else None, None, limit) from e
    except Exception as e:  # noqa: BLE001 (PIL parses hostile bytes: any failure means a bad file)
        if _sniff(head):
            raise ImageError(f"cannot read {what}: not a valid PNG, JPEG or WebP file; the {_sniff(head)} data is "
                             f"corrupt or truncated ({e})", "corrupt") from e
        raise ImageError(f"cannot read {what}: not a PNG, JPEG or WebP image (its content was checked, "
                         "not its name)", "unknown") from e


def decode_image(source: bytes | str | Path, *, formats: tuple[str, ...] | None = None,
                 max_pixels: int | None = MAX_PIXELS, max_side: int | None = None,
                 shrink_to: int | None = None) -> torch.Tensor:
    """A file or the bytes of one as a ``(C, H, W)`` uint8 tensor: ``C = 1`` for gray images, else 3.

    Images are turned upright by their EXIF orientation tag (phone photos). 16-bit images keep their
    range (65535 becomes 255, mid-grey stays mid-grey); transparent pixels are composited on a white
    background (:data:`BACKGROUND`), so a shape on a transparent background is the shape on white, except
    a light one-colour shape drawn by its alpha (a white glyph), which goes on black. ``formats`` limits
    the accepted formats (default: any PIL reads); images over ``max_pixels`` pixels (default
    :data:`MAX_PIXELS`) or ``max_side`` pixels a side are refused before they are decoded; ``shrink_to``
    scales larger images down (aspect kept) to at most that many pixels a side. Raises :class:`ImageError`.
    """
    from PIL import Image

    pil_limit = 2 * Image.MAX_IMAGE_PIXELS if Image.MAX_IMAGE_PIXELS else None  # PIL refuses these at the header
    limit = min(x for x in (max_pixels, pil_limit) if x is not None) if (max_pixels or pil_limit) else None
    img, what, _ = _open(source, limit or 0)
    with img:
        if formats is not None and img.format not in formats:
            raise ImageError(f"{img.format} images are not accepted: use a PNG, JPEG or WebP image", "format")
        w, h = img.size
        if limit is not None and w * h > limit:
            raise too_large(what, w * h, (w, h), limit)
        if max_side is not None and max(w, h) > max_side:
            raise ImageError(f"{what} is {w}x{h} pixels; at most {max_side}x{max_side} is accepted", "too large")
        fmt = img.format
        try:
            img.load()
            arr = _pixels(_upright(img))
        except Exception as e:  # noqa: BLE001 (any failure while decoding means bad data)
            raise ImageError(f"cannot read {what}: not a valid PNG, JPEG or WebP file; the {fmt} data is corrupt "
                             f"or truncated ({e})", "corrupt") from e
    if shrink_to is not None and max(arr.shape[:2]) > shrink_to:
        small = Image.fromarray(arr[..., 0] if arr.shape[2] == 1 else arr)
        small.thumbnail((shrink_to, shrink_to))
        arr = np.asarray(small).reshape(small.size[1], small.size[0], -1)
    return torch.from_numpy(np.array(arr)).permute(2, 0, 1).contiguous()  # a copy: PIL's arrays are read-only


def _upright(img):
    """The image as it is meant to be seen: rotated or mirrored by its EXIF orientation tag (phone photos
    are stored sideways with a tag); images without the tag are returned as they are."""
    from PIL import ImageOps

    if img.getexif().get(0x0112, 1) in (1, None):  # 0x0112: Orientation; 1: upright
        return img
    return ImageOps.exif_transpose(img)


def _pixels(img) -> np.ndarray:
    """A decoded PIL image as ``(H, W, 1)`` (gray) or ``(H, W, 3)`` uint8: 16-bit values scaled to 8 bits,
    alpha composited on :data:`BACKGROUND`."""
    gray = img.mode in GRAY_MODES
    if img.mode in WIDE_MODES:
        wide = np.asarray(img).astype(np.float64)
        return np.clip(np.rint(wide / 257.0), 0, 255).astype(np.uint8)[..., None]
    if img.mode == "F":
        return np.asarray(img.convert("L"))[..., None]
    if img.mode in ("RGBA", "RGBa", "LA", "La", "PA") or "transparency" in img.info:
        rgba = np.asarray(img.convert("RGBA"))
        background = _background(rgba)
        rgba = rgba.astype(np.uint32)
        alpha = rgba[..., 3:]
        rgb = (rgba[..., :3] * alpha + background * (255 - alpha) + 127) // 255
        rgb = rgb.astype(np.uint8)
        if gray:
            r, g, b = (rgb[..., i].astype(np.uint32) for i in range(3))
            return ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16).astype(np.uint8)[..., None]
        return rgb
    return np.asarray(img.convert("L"))[..., None] if gray else np.asarray(img.convert("RGB"))


def _background(rgba: np.ndarray) -> int:
    """:data:`BACKGROUND`, or black (0) for a light shape that lives in the alpha channel: its opaque pixels
    (alpha >= 128) are one light colour (within :data:`UNIFORM`) and other pixels are transparent. On
    white such a glyph (how drawing tools export a white digit) would vanish into a constant image; on
    black it is a bright stroke on dark, as the digits are. Other images are composited on white."""
    shape = rgba[..., 3] >= 128
    if not shape.any() or shape.all():
        return BACKGROUND
    colours = rgba[..., :3][shape]
    lo, hi = colours.min(0).astype(int), colours.max(0).astype(int)
    if (hi - lo).max() > UNIFORM:
        return BACKGROUND
    r, g, b = (lo + hi) / 2
    return 0 if 0.299 * r + 0.587 * g + 0.114 * b > 127 else BACKGROUND


def to_channels(img: torch.Tensor, channels: int) -> torch.Tensor:
    """A ``(C, H, W)`` uint8 image with 1 or 3 channels as ``channels`` channels; colour to gray by
    PIL's ITU-R 601-2 luma rule, in integers, so the result equals PIL's ``convert("L")``."""
    if img.shape[0] == channels:
        return img
    if channels == 3:
        return img.expand(3, -1, -1).contiguous()
    r, g, b = img.to(torch.int32)
    return ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16).to(torch.uint8)[None]


def fit_image(img: torch.Tensor, model=None, size: tuple[int, int] | None = None,
              channels: int | None = None) -> torch.Tensor:
    """A decoded ``(C, H, W)`` uint8 image as ``(1, C', H', W')`` float in [0, 1] for ``model`` (or an
    explicit ``(C, H, W)``): converted to its channels, resized (shorter side) and centre-cropped."""
    channels, size = fit_args(model, size, channels)
    x = to_channels(img, channels).float()[None] / 255.0
    if size is not None:
        x = resize_crop(_trim_extreme(x, size), size)
    return x.contiguous()


def _trim_extreme(x: torch.Tensor, size: tuple[int, int], ratio: int = 8) -> torch.Tensor:
    """Centre-crop an image whose long side, once the short side is resized, would exceed ``ratio`` times
    the target's (a 1 x 10,000,000 strip would be resized to 28 x 280,000,000 before the crop): only the
    part the crop keeps, with a margin, is resized. Ordinary images are left alone."""
    h, w = x.shape[-2:]
    th, tw = size
    scale = max(th / h, tw / w)
    if h * scale <= ratio * th and w * scale <= ratio * tw:
        return x
    keep_h, keep_w = min(h, math.ceil(ratio * th / scale)), min(w, math.ceil(ratio * tw / scale))
    top, left = (h - keep_h) // 2, (w - keep_w) // 2
    return x[..., top : top + keep_h, left : left + keep_w]


def read_image(source: bytes | str | Path, model=None, size: tuple[int, int] | None = None,
               channels: int | None = None, **limits) -> torch.Tensor:
    """A file or its bytes as ``(1, C, H, W)`` in [0, 1], sized for ``model`` (or a ``(C, H, W)``):
    :func:`decode_image` (``limits``: its keyword arguments) then :func:`fit_image`."""
    return fit_image(decode_image(source, **limits), model, size, channels)


def load_image(path, model=None, size: tuple[int, int] | None = None, channels: int | None = None) -> torch.Tensor:
    """Read a PNG, JPEG or WebP file as ``(1, C, H, W)`` in [0, 1], sized for ``model``.

    ``model``: a model, a model's name (``"digits"``: its input size, no weights are read) or an input
    size ``(C, H, W)``. Gray and RGB are converted to the model's channels (or ``channels``: 1 or 3); the
    image is resized (shorter side) and centre-cropped to the model's input size, or to ``size``
    (``(H, W)``; one int is a square). Photos are turned upright by their EXIF orientation; 16-bit images
    are scaled (65535 is 1.0); transparent pixels are composited on white (:data:`BACKGROUND`), a light
    glyph drawn by its alpha on black. A file that is missing, unreadable, not an image, corrupt or over
    :data:`MAX_PIXELS` pixels raises :class:`ImageError` (a :class:`~pellucid.PellucidError`) that says
    which; other bad arguments a PellucidError that names them.
    """
    return read_image(path, model, size, channels)


def load_images(paths, model=None, size: tuple[int, int] | None = None, channels: int | None = None
                ) -> torch.Tensor:
    """Several files stacked into one batch, each sized for ``model`` (one path is a batch of one)."""
    if isinstance(paths, (str, bytes, os.PathLike)):
        paths = [paths]
    try:
        paths = list(paths)
    except TypeError:
        raise PellucidError(f"paths must be a list of image files, got {type(paths).__name__} {_short(paths)}"
                            ) from None
    if not paths:
        raise PellucidError("no image files given (an empty list); give at least one PNG, JPEG or WebP file")
    return torch.cat([load_image(p, model, size, channels) for p in paths])


def quantize(img: torch.Tensor) -> torch.Tensor:
    """``(C, H, W)`` in [0, 1] as ``(C, H, W)`` uint8 (what an 8-bit image file holds)."""
    return (img.detach().float().clamp(0, 1).cpu() * 255).round().to(torch.uint8)


def to_uint8(img: torch.Tensor) -> np.ndarray:
    """``(C, H, W)`` in [0, 1] to an ``(H, W, C)`` or ``(H, W)`` uint8 array."""
    arr = quantize(img).numpy()
    return arr[0] if arr.shape[0] == 1 else arr.transpose(1, 2, 0)


def save_image(img, path) -> Path:
    """Write one image as a PNG (or the format of ``path``'s extension, e.g. ``.jpg``, ``.webp``).

    ``img``: ``(C, H, W)`` or ``(1, C, H, W)`` with 1 (grey), 3 (RGB) or 4 (RGBA) channels, floats in
    [0, 1]; a 2-D ``(H, W)`` tensor is written as one grey image, a uint8 tensor as 0..255, a numpy
    array like a tensor. A batch of several images, other channel counts, NaN, values outside [0, 1]
    and a path that cannot be written raise :class:`~pellucid.PellucidError` before anything is written;
    the caller's tensor is never changed.
    """
    from PIL import Image

    arr = _image_array(img)
    p = _writable(path)
    try:
        Image.fromarray(arr).save(p)
    except (OSError, ValueError) as e:  # PIL: a mode the format cannot hold (RGBA as JPEG), a full disk
        raise PellucidError(f"cannot write image {str(p)!r}: {e}") from e
    return p


def _image_array(img) -> np.ndarray:
    """What :func:`save_image` writes, as ``(H, W)`` or ``(H, W, C)`` uint8, or a clear error."""
    if isinstance(img, np.ndarray):
        img = torch.from_numpy(np.array(img))
    if not isinstance(img, torch.Tensor):
        raise PellucidError(f"save_image takes an image tensor (C, H, W) in [0, 1], got {type(img).__name__}")
    shape = tuple(img.shape)
    if img.dim() == 4 and shape[0] == 1:
        img = img[0]
    elif img.dim() == 4:
        raise PellucidError(f"save_image writes one image, got a batch of {shape[0]} {shape}; "
                            "save each: for i, im in enumerate(x): pl.save_image(im, f'image{i}.png')")
    elif img.dim() == 2:
        img = img[None]  # one grey image
    elif img.dim() != 3:
        raise PellucidError(f"save_image takes an image of shape (C, H, W), (1, C, H, W) or (H, W), got {shape}")
    if img.shape[0] not in (1, 3, 4) or 0 in img.shape:
        hint = "; channels go first: x.permute(2, 0, 1)" if img.shape[-1] in (1, 3, 4) else ""
        raise PellucidError(f"save_image writes 1 (grey), 3 (RGB) or 4 (RGBA) channels of at least 1x1 pixels, "
                            f"got shape {shape}{hint}")
    if img.dtype == torch.uint8:
        arr = img.detach().cpu().numpy()
    elif img.is_floating_point() or img.dtype == torch.bool:
        x = img.detach().float().cpu()
        if not torch.isfinite(x).all():
            raise PellucidError("the image contains NaN or infinite values; save_image writes finite values in "
                                "[0, 1]")
        lo, hi = float(x.min()), float(x.max())
        if lo < -1e-6 or hi > 1 + 1e-6:
            raise PellucidError(f"the image has values in [{lo:.4g}, {hi:.4g}]; save_image writes [0, 1] "
                                "(pixel space): rescale it, e.g. (x - x.min()) / (x.max() - x.min())")
        arr = quantize(x).numpy()
    else:
        raise PellucidError(f"save_image takes floats in [0, 1] or uint8 in 0..255, got dtype {img.dtype}")
    return arr[0] if arr.shape[0] == 1 else arr.transpose(1, 2, 0)


def _writable(path) -> Path:
    """``path`` as a Path whose folder exists (created if need be), or a clear error: an extension PIL
    cannot write, a folder where the file goes, a file where a folder goes."""
    from PIL import Image

    if not isinstance(path, (str, os.PathLike)) or not str(path).strip():
        raise PellucidError(f"path must be a file path (str or pathlib.Path) such as 'out.png', got {_short(path)}")
    p = Path(path)
    if p.is_dir():
        raise PellucidError(f"cannot write image {str(p)!r}: it is a folder; give a file name such as "
                            f"{str(p / 'image.png')!r}")
    Image.init()
    if Image.registered_extensions().get(p.suffix.lower()) not in Image.SAVE:
        raise PellucidError(f"cannot write image {str(p)!r}: unknown extension {p.suffix or '(none)'!r}; "
                            "use .png (or .jpg, .webp)")
    for parent in p.parents:
        if parent.exists() or parent.is_symlink():
            if not parent.is_dir():
                raise PellucidError(f"cannot write image {str(p)!r}: {str(parent)!r} is a file, not a folder")
            break
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise PellucidError(f"cannot write image {str(p)!r}: cannot make its folder ({e.strerror or e})") from e
    return p
