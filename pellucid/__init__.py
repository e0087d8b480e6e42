"""pellucid: see what an image classifier looks at, how easily it is fooled, what it has learned,
and whether an explanation can be trusted.

Images are ``(N, C, H, W)`` tensors in [0, 1]; normalization lives inside the model (``pl.wrap``).
"""

from ._checks import PellucidError
from .attribution import gradient, input_x_gradient, saliency
from .data import sample_images
from .io import load_image, save_image
from .models import PixelModel, load_model, wrap

__version__ = "0.1.0"

__all__ = [
    "PellucidError",
    "PixelModel",
    "gradient",
    "input_x_gradient",
    "load_image",
    "load_model",
    "sample_images",
    "saliency",
    "save_image",
    "wrap",
]
