"""pellucid: see what an image classifier looks at, how easily it is fooled, what it has learned,
and whether an explanation can be trusted.

Images are ``(N, C, H, W)`` tensors in [0, 1]; normalization lives inside the model (``pl.wrap``).
Public names are imported lazily from their modules, so ``import pellucid`` stays fast.
"""

from __future__ import annotations

import importlib
import sys
import types

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
    "class_visualization": "featureviz", "channel_visualization": "featureviz", "visualize": "featureviz",
    "activations": "featureviz", "layer_names": "featureviz", "Visualization": "featureviz", "Objective": "featureviz",
    "class_logit": "featureviz", "channel": "featureviz", "neuron": "featureviz", "l2": "featureviz",
    "total_variation": "featureviz", "compose": "featureviz", "roll": "featureviz", "pad": "featureviz",
    "jitter": "featureviz", "random_scale": "featureviz", "random_rotate": "featureviz", "blur": "featureviz",
    "standard_transforms": "featureviz",
    # can we trust it
    "deletion": "metrics", "insertion": "metrics", "sanity_check": "metrics", "compare": "metrics",
    # sequences: the langid GRU, per-character attribution, a character attack
    "check_words": "text.attribution", "explain_text": "text.attribution",
    "text_input_x_gradient": "text.attribution", "text_integrated_gradients": "text.attribution",
    "text_occlusion": "text.attribution", "text_lime": "text.attribution", "hotflip": "text.attack",
    # a whole data set
    "explain_dataset": "batch", "read_results": "batch",
}

__all__ = ["PellucidError", *_EXPORTS]


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'pellucid' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


class _Package(types.ModuleType):
    """Keeps ``pl.visualize`` the function: importing the submodule of the same name would replace it."""

    def __setattr__(self, name, value):
        if isinstance(value, types.ModuleType) and _EXPORTS.get(name) == name:
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
