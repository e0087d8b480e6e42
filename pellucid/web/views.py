"""What the page shows of a result: PNGs (images, overlays, differences) and the top-5 predictions.

Overlays are drawn by :func:`pellucid.overlay.overlay_rgb`, the renderer of the report and the batch job.
"""

from __future__ import annotations

import io

import numpy as np
import torch

from ..drawing.overlay import ALPHA, as_uint8, enlarge, image_array, overlay_rgb

SIDE = 224  # small images (28x28 digits) are enlarged by an integer factor up to this side


def as_image(t: torch.Tensor) -> torch.Tensor:
    """``(C, H, W)`` on the CPU from one image or a batch of one."""
    t = t.detach().float().cpu()
    return t[0] if t.dim() == 4 else t


def png(arr: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def _shown(arr: np.ndarray) -> bytes:
    """A float ``(H, W, 3)`` picture as a PNG, small ones enlarged with sharp pixels."""
    return png(enlarge(as_uint8(arr), max(1, SIDE // max(arr.shape[:2]))))


def image_png(img: torch.Tensor) -> bytes:
    """``(C, H, W)`` in [0, 1] as a PNG, small images enlarged."""
    return _shown(image_array(as_image(img)))


def overlay_png(img: torch.Tensor, heat: torch.Tensor, alpha: float = ALPHA) -> bytes:
    """An attribution map over the gray image (the one colour rule of :mod:`pellucid.overlay`)."""
    return _shown(overlay_rgb(as_image(img), heat, alpha=alpha))


def difference_png(x: torch.Tensor, adv: torch.Tensor) -> tuple[bytes, float]:
    """``adv - x`` magnified to fill the range around mid-gray; returns the PNG and the factor."""
    d = as_image(adv) - as_image(x)
    peak = float(d.abs().max())
    k = 0.5 / peak if peak > 0 else 1.0
    return image_png((0.5 + k * d).clamp(0, 1)), k


def logits(model, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x)


def top5(model, x: torch.Tensor) -> list[dict]:
    """The five most probable classes of one image: class, label, probability."""
    from .._grad import predictions

    probs = predictions(model, x)
    top = probs[0].topk(min(5, probs.shape[1]))
    label = getattr(model, "label", str)
    return [{"class": int(k), "label": label(int(k)), "p": round(float(p), 6)} for p, k in zip(top.values, top.indices)]
