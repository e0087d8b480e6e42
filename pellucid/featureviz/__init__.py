"""What has it learned: feature visualization by gradient ascent on the input.

One loop, :func:`visualize` (``loop.py``), maximizes an :class:`Objective` (``objectives.py``: class
logit, channel, neuron, penalties; they add, subtract and scale) of images produced by a
parameterization (``params.py``: ``"pixel"`` or Lucid's colour-decorrelated ``"fourier"``), seen by the
model through random transforms (``transforms.py``: roll, pad, jitter, scale, rotate, blur) and stepped
by the course's normalized step or Adam (``optim.py``). :func:`class_visualization` (Simonyan et al.
2014, Yosinski et al. 2015) and :func:`channel_visualization` are a few lines on top of the loop;
:func:`activations` reads any layer (``layer_outputs.py``); ``figures.py`` draws the report's pictures.
"""

from __future__ import annotations

from .figures import learned_figures
from .layer_outputs import activations, filter_layer, filter_maps, layer_names
from .loop import Visualization, channel_visualization, class_visualization, visualize
from .objectives import Capture, Objective, as_objective, channel, class_logit, direction, l2, neuron, total_variation
from .params import FourierParam, PixelParam, make_param
from .transforms import Transform, blur, compose, jitter, pad, random_rotate, random_scale, roll, standard_transforms

__all__ = [
    "visualize", "Visualization", "class_visualization", "channel_visualization",
    "Objective", "Capture", "as_objective", "class_logit", "channel", "direction", "neuron", "l2", "total_variation",
    "Transform", "compose", "roll", "pad", "jitter", "random_scale", "random_rotate", "blur", "standard_transforms",
    "PixelParam", "FourierParam", "make_param",
    "activations", "layer_names", "filter_layer", "filter_maps", "learned_figures",
]
