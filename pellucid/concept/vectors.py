"""Concept activation vectors (Kim et al. 2018): a unit direction in a layer's flattened activation space that
separates concept images from other images, found by a linear SVM or by FastCAV's mean difference
(Schmalwasser et al. 2025), with its accuracy on held-out images."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .._args import check_call
from .._checks import PellucidError, check_choice, check_images, checked_keywords, generator
from .._grad import iter_gradients
from .._state import model_state
from ..featureviz.layer_outputs import activations
from ..models.layers import find_layer
from ..targets import Target

KINDS = ("svm", "mean")
HELD_OUT = 1 / 3
"""The share of each set held out to measure a CAV's accuracy (Captum's and Kim et al.'s 0.33)."""

SVM_ALPHA = 0.01
"""The linear SVM's regularization: ``alpha / 2 ||w||^2 + mean hinge loss``, as Captum's default classifier
(scikit-learn's ``SGDClassifier(alpha=0.01)``), i.e. ``C = 1 / (alpha n)``."""


@dataclass
class CAV:
    """A concept activation vector: ``vector`` (unit length, the layer's activations flattened) points from the
    other images towards the concept; ``accuracy`` is the held-out accuracy of the linear classifier
    ``vector · a + intercept > 0``; ``shape`` the layer's activation shape (``vector.reshape(shape)``)."""

    vector: torch.Tensor
    accuracy: float
    layer: str
    kind: str
    shape: tuple
    intercept: float = 0.0

    def __repr__(self) -> str:
        return (f"CAV(layer={self.layer!r}, kind={self.kind!r}, accuracy={self.accuracy:.3f}, "
                f"dims={self.vector.numel()})")


def layer_name(model: nn.Module, layer) -> str:
    """The name users know a layer by (a module passed as ``layer`` is looked up)."""
    if isinstance(layer, str):
        return layer
    module = find_layer(model, layer)
    inner = getattr(model, "net", model)
    return next((n for n, m in inner.named_modules() if m is module), type(module).__name__)


def same_size(a: torch.Tensor, b: torch.Tensor, name_a: str, name_b: str) -> None:
    if a.shape[1:] != b.shape[1:]:
        raise PellucidError(f"{name_a} images are {tuple(a.shape[1:])} but {name_b} images are {tuple(b.shape[1:])}; "
                            "their layer activations must have one shape: give every set at one size "
                            "(pl.load_images(paths, model) sizes files for the model)")


def image_set(model: nn.Module, x, name: str, minimum: int = 2) -> torch.Tensor:
    """A checked image batch of at least ``minimum`` images (a concept needs several examples)."""
    x = check_images(x, model, name)
    if len(x) < minimum:
        raise PellucidError(f"{name} has {len(x)} image{'s' if len(x) != 1 else ''}; a concept needs at least "
                            f"{minimum} example images (typically 20-100)")
    return x


def flat_activations(model: nn.Module, x: torch.Tensor, layer, batch_size: int | None) -> torch.Tensor:
    """The layer's outputs for ``x``, one flattened row per image."""
    return activations(model, x, layer, batch_size=batch_size).flatten(1)


def layer_gradients(model: nn.Module, x: torch.Tensor, target: Target, layer, batch_size: int) -> torch.Tensor:
    """``d score / d activation`` at ``layer`` for every image of ``x``, one flattened row per image."""
    module = find_layer(model, layer)
    parts = []
    with model_state(model) as state:
        store = state.capture(module)
        for _, grad, _ in iter_gradients(model, x, len(x), target, batch_size, wrt=store):
            parts.append(grad.flatten(1))
    return torch.cat(parts)


def fit_direction(pos: torch.Tensor, neg: torch.Tensor, kind: str) -> tuple[torch.Tensor, float]:
    """The unit normal and intercept of a linear boundary with ``pos`` on its positive side (see
    :func:`fit_directions`)."""
    w, b = fit_directions(pos[None], neg[None], kind)
    return w[0], float(b[0])


def fit_directions(pos: torch.Tensor, neg: torch.Tensor, kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit normals ``(R, D)`` and intercepts ``(R,)`` of ``R`` boundaries, each with ``pos[r]`` ``(P, D)`` on
    its positive side and ``neg[r]`` ``(Q, D)`` on the other.

    ``"mean"`` is FastCAV: centred on the mean ``mu`` of all rows, the normal is the concept rows' mean minus
    ``mu`` (for sets of one size, half the difference of the two means) and the boundary passes through
    ``mu``; all ``R`` at once. ``"svm"`` is :func:`linear_svm`, one boundary at a time.
    """
    if kind == "mean":
        mean_pos = pos.mean(1)
        mu = (pos.shape[1] * mean_pos + neg.shape[1] * neg.mean(1)) / (pos.shape[1] + neg.shape[1])
        w = mean_pos - mu
        b = -(w * mu).sum(1)
    else:
        fits = [linear_svm(p, q) for p, q in zip(pos, neg)]
        w = torch.stack([f[0] for f in fits])
        b = torch.tensor([f[1] for f in fits], dtype=w.dtype, device=w.device)
    norm = w.norm(dim=1)
    if not (norm > 0).all():
        raise PellucidError("the concept and the other images give one mean activation at this layer: no direction "
                            "separates them (pick another layer, or concept images that differ from the others)")
    return w / norm[:, None], b / norm


def linear_svm(pos: torch.Tensor, neg: torch.Tensor, tol: float = 1e-4,
               max_steps: int = 100_000) -> tuple[torch.Tensor, float]:
    """A linear SVM (hinge loss, ``C = 1 / (SVM_ALPHA n)``, intercept not penalized, as Captum's ``SGDClassifier``
    minimizes) solved exactly: SMO with LIBSVM's choice of the most violating pair (Fan et al. 2005) on the
    ``n x n`` Gram matrix of the centred rows. A layer has far more dimensions than there are images, so the
    Gram matrix is cheap and each step costs ``O(n)``: the same solution as scikit-learn's ``SVC(kernel=
    "linear")``, many times faster than it or the ``SGDClassifier`` on the same rows (``benchmarks/concepts.py``).
    """
    import numpy as np

    rows = torch.cat([pos, neg])
    mu = rows.mean(0)
    centred = rows - mu
    y = np.r_[np.ones(len(pos)), -np.ones(len(neg))]
    c = 1.0 / (SVM_ALPHA * len(rows))
    k = (centred @ centred.T).double().cpu().numpy()
    q = k * np.outer(y, y)
    a, g = np.zeros(len(y)), -np.ones(len(y))             # dual variables and the gradient q @ a - 1
    for _ in range(max_steps):
        up = np.where((y > 0) & (a < c) | (y < 0) & (a > 0), -y * g, -np.inf)
        low = np.where((y > 0) & (a > 0) | (y < 0) & (a < c), -y * g, np.inf)
        i, j = int(up.argmax()), int(low.argmin())
        gap = up[i] - low[j]
        if gap < tol:
            break
        step = gap / max(k[i, i] + k[j, j] - 2 * k[i, j], 1e-12)
        step = min(step, c - a[i] if y[i] > 0 else a[i], a[j] if y[j] > 0 else c - a[j])
        a[i] += y[i] * step
        a[j] -= y[j] * step
        g += step * (y[i] * q[:, i] - y[j] * q[:, j])
    free = (a > 0) & (a < c)
    b = float((-y * g)[free].mean()) if free.any() else float((up.max() + low.min()) / 2)
    coef = torch.as_tensor(a * y, dtype=rows.dtype, device=rows.device)
    w = coef @ centred
    return w, b - float(w @ mu)


def held_out_split(n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded train and held-out row indices of a set of ``n >= 2``: a third held out, at least one each."""
    order = torch.randperm(n, generator=gen)
    test = min(n - 1, max(1, round(n * HELD_OUT)))
    return order[test:], order[:test]


def draw_seed(gen: torch.Generator) -> int:
    """An int seed for scikit-learn, drawn from the generator."""
    return int(torch.randint(2**31 - 1, (1,), generator=gen))


def fit_cav(pos: torch.Tensor, neg: torch.Tensor, kind: str, gen: torch.Generator) -> tuple[torch.Tensor, float, float]:
    """Fit on a seeded two-thirds of each set; return the unit vector, intercept and held-out accuracy."""
    (p_train, p_test), (n_train, n_test) = held_out_split(len(pos), gen), held_out_split(len(neg), gen)
    w, b = fit_direction(pos[p_train], neg[n_train], kind)
    hits = torch.cat([(pos[p_test] @ w + b) > 0, (neg[n_test] @ w + b) <= 0])
    return w, b, float(hits.float().mean())


@checked_keywords
def cav(model: nn.Module, layer: str | nn.Module, concept_x: torch.Tensor, other_x: torch.Tensor, *,
        kind: str = "svm", seed: int | torch.Generator = 0, batch_size: int | None = None) -> CAV:
    """The concept activation vector of ``concept_x`` against ``other_x`` at ``layer`` (Kim et al. 2018).

    A linear classifier separates the two sets' flattened activations; the CAV is its unit normal, pointing
    towards the concept. ``kind="svm"``: a linear SVM (hinge loss, ``alpha=0.01`` as Captum's default
    ``SGDClassifier``, solved exactly: :func:`linear_svm`); ``kind="mean"``: FastCAV (Schmalwasser et al.
    2025), the concept mean minus the mean of both sets, faster still and close to the SVM's direction in
    wide layers. The
    classifier is fitted on a seeded two thirds of each set and ``.accuracy`` measured on the rest.

    Example: ``v = pl.cav(model, "layer3", striped, random, kind="mean")``; ``v.vector``, ``v.accuracy``.
    """
    check_choice(kind, "kind", KINDS)
    check_call(model, concept_x, batch_size)
    concept_x, other_x = image_set(model, concept_x, "concept_x"), image_set(model, other_x, "other_x")
    same_size(concept_x, other_x, "concept_x", "other_x")
    gen = generator(seed, "cpu")
    acts = activations(model, torch.cat([concept_x, other_x]), layer, batch_size=batch_size)
    shape, acts = tuple(acts.shape[1:]), acts.flatten(1)
    w, b, acc = fit_cav(acts[: len(concept_x)], acts[len(concept_x):], kind, gen)
    return CAV(w, acc, layer_name(model, layer), kind, shape, b)
