"""Concept discovery by CRAFT (Fel et al. 2023): the concepts a class is made of, found in the model's own
activations.

Crops of the class's images (a grid of overlapping squares, each resized to the image's size) go through the
model up to a spatial layer; their non-negative activations, averaged over positions, are factorized by NMF,
``A ≈ U W``: each of the ``n`` rows of ``W`` is a concept (a direction in channel space), ``U`` says how much of
it each crop holds. A concept's importance for the class is its total Sobol index: the concepts' coefficients
at every position of an image are scaled by random masks (a scrambled Sobol' design), the layer's output
rebuilt from them replaces the real one, and the variance of the class score that each concept's mask
explains, interactions included, is estimated with Jansen's estimator and averaged over the images. A
concept's map is its coefficient at each position of each image.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .._args import check_call, num_classes
from .._checks import PellucidError, check_number, checked_keywords, generator
from .._grad import LayerSwap, chunks, logits_of
from .._state import model_state
from ..featureviz.layer_outputs import activations, each_layer_output
from ..models.layers import find_layer
from ..targets import as_indices, as_target
from .crops import crop_activations, cut, grid_boxes
from .sobol import design, jansen_total
from .vectors import draw_seed, layer_name

SUFFIX_ROWS = 128
"""Masked rows per pass of the layers after the concept layer (the layers before it run once per pass)."""


@dataclass
class Concept:
    """One concept: ``importance`` for the class (total Sobol index), ``vector`` its direction in the layer's
    channel space (a row of NMF's ``W``; visualize it with ``pl.direction(layer, vector)``), ``crops`` the crops
    that hold most of it ``(k, C, H, W)`` with their ``boxes`` ``(k, 5)`` (image, top, left, height, width),
    ``maps`` ``(N, H, W)``: how much of it is at each pixel of each image (its NMF coefficient, upsampled)."""

    index: int
    importance: float
    vector: torch.Tensor
    crops: torch.Tensor
    boxes: torch.Tensor
    maps: torch.Tensor
    layer: str

    def __repr__(self) -> str:
        return f"Concept(index={self.index}, importance={self.importance:.3f}, layer={self.layer!r})"


@dataclass
class Concepts:
    """CRAFT's result: ``concepts`` by decreasing importance, the NMF's relative reconstruction ``error``
    ``||A - U W|| / ||A||`` over the crops, the ``layer``, the ``target`` class, every crop's ``boxes`` and its
    NMF ``coefficients`` ``(crops, n)`` (column ``k`` belongs to the concept with ``index`` k)."""

    concepts: list[Concept]
    error: float
    layer: str
    target: int
    boxes: torch.Tensor
    coefficients: torch.Tensor = field(repr=False)

    def __repr__(self) -> str:
        top = ", ".join(f"{c.index}: {c.importance:.2f}" for c in self.concepts[:5])
        return (f"Concepts(target={self.target}, layer={self.layer!r}, n={len(self.concepts)}, "
                f"error={self.error:.3f}, importance {{{top}{', ...' if len(self.concepts) > 5 else ''}}})")

    def _repr_png_(self) -> bytes:
        from ..drawing import display_learned

        return display_learned.concepts_png(self)


def _spatial_layers(model: nn.Module, x1: torch.Tensor) -> list[tuple[str, bool]]:
    """Each layer whose output is a spatial map ``(N, C, h, w)`` with ``h*w > 1``, in the order they finish, and
    whether that output has no negative value."""
    done: list[tuple[str, bool]] = []

    def record(name: str, out) -> None:
        if isinstance(out, torch.Tensor) and out.dim() == 4 and out.shape[-1] * out.shape[-2] > 1:
            done.append((name, bool(out.min() >= 0)))

    each_layer_output(model, x1, record)
    return done


def concept_layers(model: nn.Module, x1: torch.Tensor) -> list[str]:
    """The layers CRAFT can factorize, in the order they finish: spatial maps ``(N, C, h, w)`` with no negative
    value on ``x1``."""
    return list(dict.fromkeys(n for n, nonneg in _spatial_layers(model, x1) if nonneg))  # a module run twice: once


def concept_layer(model: nn.Module, x1: torch.Tensor) -> str:
    """The default layer: the last to finish whose output is a spatial map ``(N, C, h, w)`` with ``h*w > 1`` and
    no negative value (NMF needs them non-negative), i.e. the last spatial layer before global pooling."""
    done = _spatial_layers(model, x1)
    if not done:
        raise PellucidError("no layer of this model outputs a spatial map (N, C, h, w); CRAFT needs one")
    good = [n for n, nonneg in done if nonneg]
    if not good:
        raise PellucidError(f"no spatial layer of this model has non-negative outputs (the last is {done[-1][0]!r}); "
                            "CRAFT factorizes non-negative activations: pass layer= a layer after a ReLU")
    return good[-1]


def _spatial(model: nn.Module, x1: torch.Tensor, layer) -> None:
    out = activations(model, x1, layer)
    if out.dim() != 4:
        raise PellucidError(f"layer {layer!r} outputs {tuple(out.shape[1:])} per image, not a spatial map (C, h, w): "
                            "CRAFT needs a conv layer's output; leave layer=None for the last spatial layer")


def _class(model: nn.Module, x: torch.Tensor, target, batch_size: int) -> int:
    """``target`` as one class index; ``None``: the class the model predicts most often on ``x``."""
    if target is None:
        with model_state(model):
            return int(logits_of(model, x, len(x), batch_size).argmax(1).mode().values)
    if not isinstance(target, numbers.Integral) and not (isinstance(target, torch.Tensor) and target.numel() == 1):
        raise PellucidError(f"target must be one class index (the class whose concepts are wanted) or None, got "
                            f"{type(target).__name__} {target!r}"[:200])
    return int(as_indices(target, 1, "target", num_classes(model))[0])


def _fit_nmf(acts: torch.Tensor, n: int, seed: int):
    from sklearn.decomposition import NMF

    low = float(acts.min())
    if low < -1e-5:
        raise PellucidError(f"the layer's activations go down to {low:.3g}; CRAFT factorizes non-negative activations:"
                            " pass layer= a layer after a ReLU (leave layer=None to pick one)")
    a = acts.clamp_min(0).double().cpu().numpy()
    nmf = NMF(n_components=n, init="nndsvda", max_iter=2000, random_state=seed)
    u = nmf.fit_transform(a)
    error = float(((a - u @ nmf.components_) ** 2).sum() ** 0.5 / max((a ** 2).sum() ** 0.5, 1e-12))
    return nmf, torch.as_tensor(u, dtype=acts.dtype), error


def _importance(model, x, t, module, coeffs, w, designs, gen) -> torch.Tensor:
    """Mean over images of each concept's total Sobol index for the target score (coefficients ``(N, h, w, n)``)."""
    n = coeffs.shape[-1]
    total = torch.zeros(n, dtype=torch.float64)
    with model_state(model) as state, torch.no_grad():
        swap = LayerSwap(state, module)
        for i in range(len(x)):
            masks = design(n, designs, draw_seed(gen)).to(coeffs)
            scores = []
            for rows in chunks(len(masks), SUFFIX_ROWS):
                rebuilt = torch.einsum("rk,hwk,kc->rchw", masks[rows], coeffs[i], w).contiguous()
                scores.append(swap.scores(model, x[i:i + 1], rebuilt, t.select(torch.full((len(rebuilt),), i))))
            total += jansen_total(torch.cat(scores), n, designs)
    return (total / len(x)).float()


@checked_keywords
def concepts(model: nn.Module, x: torch.Tensor, target=None, *, layer: str | nn.Module | None = None, n: int = 10,
             crop_size: float = 0.3, designs: int = 64, top: int = 8,
             seed: int | torch.Generator = 0, batch_size: int | None = None) -> Concepts:
    """CRAFT (Fel et al. 2023): the ``n`` concepts that ``x`` (images of one class) are made of, for ``target``.

    Crops of every image (CRAFT's grid of squares with sides ``crop_size`` of the image's, overlapping by 20%,
    resized to the image's size) are factorized by NMF at ``layer`` (``None``: the last spatial layer with
    non-negative outputs, before global pooling). Each concept gets its importance for ``target`` (total Sobol
    index from ``designs`` scrambled Sobol' designs per image; ``None``: the class predicted most often on
    ``x``), its ``top`` most typical crops and its maps.

    Example: ``c = pl.concepts(model, dogs, 207)``; ``c.concepts[0].crops`` shows the most important concept.
    """
    n = check_number(n, "n", 1, integer=True, hint=" (how many concepts)")
    crop_size = check_number(crop_size, "crop_size", 0, 1, low_open=True, hint=" (a fraction of the image side)")
    designs = check_number(designs, "designs", 2, integer=True)
    top = check_number(top, "top", 1, integer=True)
    x, bs = check_call(model, x, batch_size)
    cls = _class(model, x, target, bs)
    t = as_target(cls, len(x), num_classes(model))
    layer = concept_layer(model, x[:1]) if layer is None else layer
    _spatial(model, x[:1], layer)
    module = find_layer(model, layer)
    gen = generator(seed, "cpu")
    boxes = grid_boxes(x, crop_size)
    acts = crop_activations(model, x, boxes, layer, batch_size, reduce=lambda a: a.mean((2, 3)))
    if n > min(acts.shape):
        raise PellucidError(f"n={n} concepts need at least {n} crops and {n} channels; the layer has "
                            f"{acts.shape[1]} channels and there are {len(acts)} crops: lower n or crop_size, or "
                            "add images")
    nmf, u, error = _fit_nmf(acts, n, draw_seed(gen))
    w = torch.as_tensor(nmf.components_, dtype=acts.dtype, device=x.device)
    image_acts = activations(model, x, layer, batch_size=batch_size).clamp_min(0)
    rows = image_acts.permute(0, 2, 3, 1).reshape(-1, image_acts.shape[1])
    coeffs = torch.as_tensor(nmf.transform(rows.double().cpu().numpy()), dtype=acts.dtype, device=x.device)
    coeffs = coeffs.reshape(*image_acts.shape[:1], *image_acts.shape[2:], n)
    importance = _importance(model, x, t, module, coeffs, w, designs, gen)
    maps = F.interpolate(coeffs.permute(0, 3, 1, 2), size=x.shape[-2:], mode="bilinear", align_corners=False)
    name = layer_name(model, layer)
    found = []
    for k in range(n):
        best = u[:, k].argsort(descending=True)[:top]
        found.append(Concept(k, float(importance[k]), w[k], cut(x, boxes[best]), boxes[best], maps[:, k], name))
    found.sort(key=lambda c: -c.importance)
    return Concepts(found, error, name, cls, boxes, u)
