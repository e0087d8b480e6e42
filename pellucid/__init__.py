"""pellucid: see what an image classifier looks at, how easily it is fooled, what it has learned,
and whether an explanation can be trusted.

Images are ``(N, C, H, W)`` tensors in [0, 1]; normalization lives inside the model (``pl.wrap``).
Every public name is imported here explicitly, so editors find its definition. Heavy optional
dependencies (matplotlib, FastAPI, Ray, scikit-image) load only inside the functions that need them.
"""
# isort: skip_file

from __future__ import annotations

from ._checks import PellucidError
from ._moved import install as _install_old_paths


# models, data, I/O
from .models import list_models, load_model, PixelModel, wrap
from .models.data import PHOTOS, sample_images
from .io import load_image, load_images, save_image

# where does it look
from .attribution import (
    attribution_map, cam, deeplift, deeplift_shap, explain, grad_cam, gradient, gradient_shap, guided_backprop,
    guided_grad_cam, input_x_gradient, integrated_gradients, kernel_shap, lime, occlusion, saliency, smoothgrad,
)
from .attribution.lrp import lrp, LRPResult
from .attribution.lrp.crp import reference_images, ReferenceImages

# outputs other than one class (regression: target=None; multi-label: score="sigmoid")
from .targets import segmentation_target, similarity_target

# how easily is it fooled
from .adversarial import (
    apgd, autoattack, AutoAttackResult, cw, deepfool, fab, fgsm, fooling_image, minimal_epsilon, pgd,
    robustness_curve, square,
)

# what has it learned
from .featureviz import (
    activations, blur, channel, channel_visualization, class_logit, class_visualization, compose, direction, jitter,
    l2, layer_names, neuron, Objective, pad, random_rotate, random_scale, roll, standard_transforms, total_variation,
    Visualization, visualize,
)

# what concepts it uses
from .concept import cav, CAV, Concept, concepts, Concepts, tcav, TCAVResult

# can we trust it
from .metrics import (
    compare, deletion, explanation_attack, infidelity, insertion, road, sanity_check, sensitivity, srg,
)

# sequences: the langid GRU, per-character attribution, a character attack
from .text import (
    check_words, explain_text, hotflip, text_input_x_gradient, text_integrated_gradients, text_lime, text_occlusion,
)

# a whole data set
from .batch import explain_dataset, read_results
from .dataset import diff, DiffResult, scan, ScanResult

# shortcuts (Clever Hans): planted ground truth, Decoy MNIST, and two fixes
from .shortcuts import (
    artifact_mask, clarc, ClarcModel, decoy_digits, paste_artifact, plant_artifact, train_right_reasons,
)

# pictures in Jupyter: results show themselves; pl.show draws tensors, maps and reports
from .drawing.show import show

_install_old_paths()  # old module paths (pellucid.data, pellucid.report, ...) keep working

__version__ = "0.1.0"

__all__ = [
    "artifact_mask", "clarc", "ClarcModel", "decoy_digits", "paste_artifact", "plant_artifact", "train_right_reasons",
    "activations", "apgd", "attribution_map", "autoattack", "AutoAttackResult", "blur", "cam", "channel",
    "channel_visualization", "check_words", "class_logit", "class_visualization", "compare", "compose", "cw",
    "deepfool", "deeplift", "deeplift_shap", "deletion", "diff", "DiffResult", "explain", "explain_dataset",
    "explain_text", "explanation_attack", "fab", "fgsm", "fooling_image", "grad_cam", "gradient", "gradient_shap",
    "guided_backprop", "guided_grad_cam", "hotflip", "infidelity", "input_x_gradient", "insertion",
    "integrated_gradients", "jitter", "kernel_shap", "l2", "layer_names", "lime", "list_models", "load_image",
    "load_images", "load_model", "lrp", "LRPResult", "minimal_epsilon", "neuron", "Objective", "occlusion", "pad",
    "PellucidError", "pgd", "PHOTOS", "PixelModel", "random_rotate", "random_scale", "read_results",
    "reference_images", "ReferenceImages", "road", "robustness_curve", "roll", "saliency", "sample_images",
    "sanity_check", "save_image", "scan", "ScanResult", "segmentation_target", "sensitivity", "show",
    "similarity_target", "smoothgrad", "square", "srg", "standard_transforms", "text_input_x_gradient",
    "text_integrated_gradients", "text_lime", "text_occlusion", "total_variation", "Visualization", "visualize", "wrap",
    "cav", "CAV", "Concept", "concepts", "Concepts", "direction", "tcav", "TCAVResult",
]
