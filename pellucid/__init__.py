"""pellucid: see what an image classifier looks at, how easily it is fooled, what it has learned,
and whether an explanation can be trusted.

Images are ``(N, C, H, W)`` tensors in [0, 1]; normalization lives inside the model (``pl.wrap``).
Every public name is imported here explicitly, so editors find its definition. Heavy optional
dependencies (matplotlib, FastAPI, Ray, scikit-image) load only inside the functions that need them.
"""

from __future__ import annotations

from ._checks import PellucidError

# models, data, I/O
from .models import PixelModel, list_models, load_model, wrap  # isort: skip
# how easily is it fooled
from .adversarial import fgsm, fooling_image, minimal_epsilon, pgd, robustness_curve
from .adversarial import AutoAttackResult, apgd, autoattack, cw, deepfool, square

# where does it look
from .attribution import (
    attribution_map,
    cam,
    deeplift,
    deeplift_shap,
    explain,
    grad_cam,
    gradient,
    gradient_shap,
    guided_backprop,
    guided_grad_cam,
    input_x_gradient,
    integrated_gradients,
    kernel_shap,
    lime,
    occlusion,
    saliency,
    smoothgrad,
)

# a whole data set
from .batch import explain_dataset, read_results
from .data import PHOTOS, sample_images

# what has it learned
from .featureviz import (
    Objective,
    Visualization,
    activations,
    blur,
    channel,
    channel_visualization,
    class_logit,
    class_visualization,
    compose,
    jitter,
    l2,
    layer_names,
    neuron,
    pad,
    random_rotate,
    random_scale,
    roll,
    standard_transforms,
    total_variation,
    visualize,
)
from .io import load_image, load_images, save_image

# outputs other than one class (regression: target=None; multi-label: score="sigmoid")
from .targets import segmentation_target, similarity_target

# can we trust it
from .metrics import compare, deletion, explanation_attack, infidelity, insertion, road, sanity_check, sensitivity

# sequences: the langid GRU, per-character attribution, a character attack
from .text import (
    check_words,
    explain_text,
    hotflip,
    text_input_x_gradient,
    text_integrated_gradients,
    text_lime,
    text_occlusion,
)

__version__ = "0.1.0"

__all__ = [
    "PHOTOS", "Objective", "PellucidError", "PixelModel", "Visualization", "activations", "attribution_map",
    "blur", "cam", "channel", "channel_visualization", "check_words", "class_logit", "class_visualization", "compare",
    "compose", "deletion", "explain", "explain_dataset", "explain_text", "fgsm", "fooling_image", "grad_cam",
    "gradient", "guided_backprop", "guided_grad_cam", "hotflip", "input_x_gradient", "insertion",
    "integrated_gradients", "jitter", "l2", "layer_names", "lime", "list_models", "load_image", "load_images",
    "load_model", "minimal_epsilon", "neuron", "occlusion", "pad", "pgd", "random_rotate", "random_scale",
    "read_results", "robustness_curve", "roll", "saliency", "sample_images", "sanity_check", "save_image",
    "smoothgrad", "standard_transforms", "text_input_x_gradient", "text_integrated_gradients", "text_lime",
    "text_occlusion", "total_variation", "visualize", "wrap",
]
__all__ += ["deeplift", "deeplift_shap", "gradient_shap", "kernel_shap"]
__all__ += ["segmentation_target", "similarity_target"]
__all__ += ["explanation_attack", "infidelity", "road", "sensitivity"]
__all__ += ["AutoAttackResult", "apgd", "autoattack", "cw", "deepfool", "square"]
