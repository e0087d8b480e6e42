"""Where does the model look: attribution maps, every one a few lines over the gradient primitive.

- ``gradients``: the input gradient, saliency, gradient x input, SmoothGrad, Integrated Gradients,
  guided backpropagation;
- ``cams``: the CAM family (Grad-CAM, Grad-CAM++, XGrad-CAM, HiResCAM, LayerCAM, Score-CAM,
  Ablation-CAM, Eigen-CAM) for CNNs and transformers, and guided Grad-CAM;
- ``perturbation``: occlusion and LIME;
- ``lrp``: Layer-wise Relevance Propagation (rules, composites, canonization) on ``rulemap``, the one home
  for modified backward passes;
- ``by_name``: maps by method name, read from the records in :mod:`pellucid.registry`.

Many-pass methods (IG steps, SmoothGrad samples, occlusion windows, LIME samples) describe their rows
with a row-maker and let ``_grad`` run them ``batch_size`` rows at a time, so memory depends on
``batch_size`` only.
"""

from .by_name import attribution_map, explain
from .cams import cam, grad_cam, guided_grad_cam
from .gradients import (
    gradient,
    guided_backprop,
    input_x_gradient,
    integrated_gradients,
    make_baseline,
    normalize_per_image,
    saliency,
    smoothgrad,
)
from .lrp import LRPResult  # pl.lrp is pellucid.attribution.lrp.lrp: the package keeps its name
from .perturbation import LimeResult, lime, occlusion, slic_segments
from .reference import deeplift, deeplift_shap
from .shap import ShapResult, gradient_shap, kernel_shap

__all__ = [
    "LimeResult", "attribution_map", "cam", "explain", "grad_cam", "gradient", "guided_backprop", "guided_grad_cam",
    "input_x_gradient", "integrated_gradients", "lime", "make_baseline", "normalize_per_image", "occlusion",
    "saliency", "slic_segments", "smoothgrad",
]
__all__ += ["LRPResult", "ShapResult", "deeplift", "deeplift_shap", "gradient_shap", "kernel_shap"]
