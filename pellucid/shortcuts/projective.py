"""Projective ClArC (Anders et al. 2022, "Finding and removing Clever Hans"): remove an artifact from a model
without retraining, by projecting its direction out of one layer's activations."""

from __future__ import annotations

import copy

import torch
from torch import nn

from .._checks import PellucidError, check_choice, check_images, model_dtype
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
    """A model corrected by Projective ClArC: a copy of the original's network whose ``layer`` output passes
    through :class:`Projection` (``.projection``, a forward hook on that layer of the copy). Layer names, labels,
    input size and normalization are the original's; the original is not changed."""

    def __init__(self, base: PixelModel, layer: str, projection: Projection):
        super().__init__(copy.deepcopy(base.net), None, None, base.labels, base.input_size, f"{base.name} (ClArC)")
        self.mean, self.std = (None if t is None else t.clone() for t in (base.mean, base.std))
        for attr in ("samples", "cpu_batch_size"):
            if hasattr(base, attr):
                setattr(self, attr, getattr(base, attr))
        self.layer = layer
        self.projection = projection
        find_layer(self, layer).register_forward_hook(projection.hook)  # a copy of the model rebinds it
        self.train(base.training)


def _layer_name(model: PixelModel, layer) -> str:
    module = find_layer(model, layer)
    if isinstance(layer, str):
        return layer
    return next(name for name, m in named_layers(model).items() if m is module)


def _flat_activations(model: PixelModel, x: torch.Tensor, layer: str, what: str, batch_size):
    """``(activations flattened to (N, D) in float64, the layer's output shape without the batch axis)``."""
    out = activations(model, check_images(x, model, what), layer, batch_size=batch_size)
    return out.flatten(1).double(), out.shape[1:]


def clarc(model: nn.Module, layer, artifact_x: torch.Tensor, clean_x: torch.Tensor, *, direction: str = "mean",
          batch_size: int | None = None) -> ClarcModel:
    """Projective ClArC: a corrected copy of ``model`` that cannot see the artifact at ``layer``.

    The artifact's direction ``v`` at ``layer`` (a name from ``pl.layer_names(model)``, or the module) is a
    concept activation vector from images with the artifact (``artifact_x``) and without it (``clean_x``,
    best of the same classes): ``direction="mean"`` (default), the difference of their mean activations (the
    "pattern" CAV that Pahde et al. 2023 find follows the artifact best), or ``"linear"``, the normal of a
    logistic regression between the two. The returned model replaces the layer's activation ``a`` (flattened,
    as in the paper) by ``a - (v . a - v . z) v``, ``z`` the clean images' mean activation: the artifact
    direction is held at its clean value for every input. ``model`` itself is not changed. Example::

        fixed = pl.clarc(model, "relu3", x_planted[marked], x[(y == 3) & ~marked])
    """
    if not isinstance(model, nn.Module):
        raise PellucidError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    check_choice(direction, "direction", ("mean", "linear"))
    base = model if isinstance(model, PixelModel) else wrap(model)
    name = _layer_name(base, layer)
    art, shape = _flat_activations(base, artifact_x, name, "artifact_x", batch_size)
    clean, _ = _flat_activations(base, clean_x, name, "clean_x", batch_size)
    v = art.mean(0) - clean.mean(0) if direction == "mean" else _logistic_normal(art, clean)
    norm = v.norm()
    if not torch.isfinite(norm) or norm <= 1e-12 * max(1.0, float(art.abs().max())):
        raise PellucidError(f"artifact_x and clean_x give the same activations at layer {name!r}: there is no "
                            "artifact direction to remove (are the artifact images really different?)")
    v = v / norm
    dtype = model_dtype(base) or torch.float32
    projection = Projection(v.reshape(shape).to(dtype), (clean.mean(0) @ v).to(dtype))
    return ClarcModel(base, name, projection)


def _logistic_normal(art: torch.Tensor, clean: torch.Tensor, steps: int = 200) -> torch.Tensor:
    """The unit normal of an L2-regularized logistic regression separating ``art`` (1) from ``clean`` (0),
    on standardized features mapped back to the activations' axes (L-BFGS, deterministic)."""
    a = torch.cat([art, clean])
    t = torch.cat([torch.ones(len(art)), torch.zeros(len(clean))]).to(a)
    mu, sd = a.mean(0), a.std(0).clamp_min(1e-6)
    z = (a - mu) / sd
    w = torch.zeros(z.shape[1], dtype=a.dtype, device=a.device, requires_grad=True)
    b = torch.zeros((), dtype=a.dtype, device=a.device, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = nn.functional.binary_cross_entropy_with_logits(z @ w + b, t) + 1e-3 * w.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return w.detach() / sd
