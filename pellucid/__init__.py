"""pellucid: see what an image classifier looks at, how easily it is fooled, what it has learned,
and whether an explanation can be trusted.

Images are ``(N, C, H, W)`` tensors in [0, 1]; normalization lives inside the model (``pl.wrap``).
Public names are imported lazily from their modules, so ``import pellucid`` stays fast.
"""

from __future__ import annotations

import importlib

from ._checks import PellucidError

__version__ = "0.1.0"

# public name -> module that defines it (a dict, so each feature adds one line)
_EXPORTS = {
    # models, data, I/O
    "PixelModel": "models", "load_model": "models", "wrap": "models", "list_models": "models",
    "sample_images": "data", "load_image": "io", "load_images": "io", "save_image": "io",
    # where does it look
    "gradient": "attribution", "saliency": "attribution", "input_x_gradient": "attribution",
    "smoothgrad": "attribution", "integrated_gradients": "attribution", "grad_cam": "attribution",
    "guided_grad_cam": "attribution", "occlusion": "attribution", "lime": "attribution",
    "guided_backprop": "attribution", "attribution_map": "attribution", "explain": "attribution",
    # how easily is it fooled
    "fooling_image": "adversarial", "fgsm": "adversarial", "pgd": "adversarial",
    "minimal_epsilon": "adversarial", "robustness_curve": "adversarial",
    # what has it learned
    "class_visualization": "visualize", "channel_visualization": "visualize", "visualize": "visualize",
    "activations": "visualize", "layer_names": "visualize",
    # can we trust it
    "deletion": "metrics", "insertion": "metrics", "sanity_check": "metrics", "compare": "metrics",
}

__all__ = ["PellucidError", *_EXPORTS]


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'pellucid' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
