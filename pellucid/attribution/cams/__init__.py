"""Class activation maps: the CAM family (:func:`cam`), Grad-CAM and guided Grad-CAM, on a layer's
activations and gradients, for CNNs and for transformers' token grids.

- ``core``: :func:`cam` and one channel weighting per method; Eigen-CAM's principal component;
- ``passes``: Score-CAM's masked and Ablation-CAM's ablated passes, ``batch_size`` at a time;
- ``grids``: which layer (the default per model) and how its output becomes ``(N, C, h, w)``;
- ``guided``: guided Grad-CAM.

Records: every method is registered (the CLI, report, web page, batch job and ``compare`` list them);
only ``gradcam`` and ``guided_gradcam`` are in the default grid, as before. Score-CAM and Ablation-CAM
are ``expensive`` (one pass per channel) and skip the randomization check (one such run per randomized
layer). Eigen-CAM runs it: it uses no gradient and ignores the target, and the check shows exactly that
(its map does not change when the layers after the CAM layer are randomized).
"""

from ..._checks import forwards
from ...registry import Method, register_method
from .core import GRADIENT_CAMS, METHODS, cam, grad_cam, principal_map
from .grids import default_layer, describe_grid, grid_kind
from .guided import guided_grad_cam, guided_grad_cam_map

__all__ = ["GRADIENT_CAMS", "METHODS", "cam", "default_layer", "describe_grid", "grad_cam", "grid_kind",
           "guided_grad_cam", "principal_map"]


def _variant(method: str):
    def fn(model, x, target, **kw):
        return cam(model, x, target, method, **kw)

    fn = forwards(cam, bound=("method",))(fn)
    fn.__name__ = fn.__qualname__ = f"cam_{method.replace('+', 'p')}"
    fn.__doc__ = f"``pl.cam(model, x, target, {method!r}, ...)``, shape ``(N, H, W)``."
    return fn


_TITLES = {"gradcam++": ("Grad-CAM++", "gradients weighted by their positive second-order share"),
           "xgradcam": ("XGrad-CAM", "gradients times activations, normalized per channel"),
           "hirescam": ("HiResCAM", "element-wise gradients times activations"),
           "layercam": ("LayerCAM", "element-wise positive gradients times activations"),
           "scorecam": ("Score-CAM", "the score of the image masked by each channel, softmaxed"),
           "ablationcam": ("Ablation-CAM", "the score drop when each channel is zeroed"),
           "eigencam": ("Eigen-CAM", "first principal component of the activations (class-agnostic)")}

register_method(Method("gradcam", "Grad-CAM", grad_cam, summary="channel-weighted activations of the last conv layer"))
register_method(Method("guided_gradcam", "Guided Grad-CAM", guided_grad_cam_map, sanity="never", grid=False,
                       summary="guided backprop times Grad-CAM"))
for _name, (_title, _summary) in _TITLES.items():
    _expensive = _name in ("scorecam", "ablationcam")
    register_method(Method(_name, _title, _variant(_name), cost="expensive" if _expensive else "cheap",
                           sanity="never" if _expensive else "always", grid=False, summary=_summary))
