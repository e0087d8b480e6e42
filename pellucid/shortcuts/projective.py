"""Projective ClArC (Anders et al. 2022, "Finding and removing Clever Hans"): remove an artifact from a model
without retraining, by projecting its direction out of one layer's activations."""

from __future__ import annotations

import copy

import torch
from torch import nn

from .._checks import PellucidError, check_images, model_dtype
from ..featureviz.layer_outputs import activations
from ..models.base import PixelModel, wrap
from ..models.layers import find_layer, named_layers


class Projection(nn.Module):
    """The forward hook of Projective ClArC: ``a -> a - (v . a - v . z) v`` on a layer's flattened output.

    ``direction`` is the unit artifact direction ``v`` (the layer's output shape), ``clean`` the projection
    ``v . z`` of the clean images' mean activation ``z``: every activation's component along ``v`` is set to
    the clean images' mean, everything orthogonal to ``v`` is kept.
    """

    def __init__(self, direction: torch.Tensor, clean: torch.Tensor):
        super().__init__()
        self.register_buffer("direction", direction)
        self.register_buffer("clean", clean)

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        v = self.direction.to(a)
        along = a.reshape(len(a), -1) @ v.flatten() - self.clean.to(a)
        return a - along.reshape(-1, *([1] * v.dim())) * v

    def hook(self, _module: nn.Module, _inputs, output):
        return self(output)


class ClarcModel(PixelModel):
    """A model corrected by Projective ClArC: a copy of the original's network whose ``layers`` outputs pass
    through their :class:`Projection` (``projections``, forward hooks on those layers of the copy; a ClArC of a
    corrected model adds one). Layer names, labels, input size and normalization are the original's; the
    original is not changed."""

    def __init__(self, base: PixelModel, layer: str, projection: Projection):
        copied = copy.deepcopy(base)  # one copy: the hooks of earlier projections stay bound to their copies
        name = base.name if isinstance(base, ClarcModel) else f"{base.name} (ClArC)"
        super().__init__(copied.net, None, None, base.labels, base.input_size, name)
        self.mean, self.std = copied.mean, copied.std
        for attr in ("samples", "cpu_batch_size"):
            if hasattr(base, attr):
                setattr(self, attr, getattr(base, attr))
        self.layers = [*getattr(copied, "layers", []), layer]
        self.projections = nn.ModuleList([*getattr(copied, "projections", []), projection])
        find_layer(self, layer).register_forward_hook(projection.hook)  # a deep copy rebinds it to its copy
        self.train(base.training)


def _layer_name(model: PixelModel, layer) -> str:
    module = find_layer(model, layer)
    if isinstance(layer, str):
        return layer
    name = next((name for name, m in named_layers(model).items() if m is module), None)
    if name is None:
        raise PellucidError(f"layer {type(layer).__name__} is the whole network, not one of its layers: pass a layer "
                            "name from pl.layer_names(model)")
    return name


def _flat_activations(model: PixelModel, x: torch.Tensor, layer: str, what: str, batch_size):
    """``(activations flattened to (N, D) in float64, the layer's output shape without the batch axis)``."""
    out = activations(model, check_images(x, model, what), layer, batch_size=batch_size)
    return out.flatten(1).double(), out.shape[1:]


def clarc(model: nn.Module, layer, artifact_x: torch.Tensor, clean_x: torch.Tensor, *,
          batch_size: int | None = None) -> ClarcModel:
    """Projective ClArC: a corrected copy of ``model`` that cannot see the artifact at ``layer``.

    The artifact's direction ``v`` at ``layer`` (a name from ``pl.layer_names(model)``, or the module) is the
    difference of the mean activations of images with the artifact (``artifact_x``) and without it
    (``clean_x``), the "pattern" concept activation vector. The returned model replaces the layer's activation
    ``a`` (flattened, as in the paper) by ``a - (v . a - v . z) v``, ``z`` the clean images' mean activation:
    the artifact direction is held at its clean value for every input, all else passes. Paired images (the
    same images with the artifact pasted in, and without) give the cleanest direction; otherwise take images
    of the same classes (the artifact carriers of a class, and the rest of that class). ``model`` itself is
    not changed. Example::

        fixed = pl.clarc(model, "relu2", pl.paste_artifact(x, "checker"), x)
    """
    if not isinstance(model, nn.Module):
        raise PellucidError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    base = model if isinstance(model, PixelModel) else wrap(model)
    name = _layer_name(base, layer)
    art, shape = _flat_activations(base, artifact_x, name, "artifact_x", batch_size)
    clean, _ = _flat_activations(base, clean_x, name, "clean_x", batch_size)
    v = art.mean(0) - clean.mean(0)
    norm = v.norm()
    if not torch.isfinite(norm) or norm <= 1e-12 * max(1.0, float(art.abs().max())):
        raise PellucidError(f"artifact_x and clean_x give the same mean activation at layer {name!r}: there is no "
                            "artifact direction to remove (do the artifact images carry the artifact?)")
    v = v / norm
    dtype = model_dtype(base) or torch.float32
    projection = Projection(v.reshape(shape).to(dtype), (clean.mean(0) @ v).to(dtype))
    return ClarcModel(base, name, projection)
