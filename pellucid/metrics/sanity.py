"""Sanity check (Adebayo et al. 2018): randomize the model's layers from the top down on a copy; an
explanation that depends on the model must lose its similarity to the original."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from .._args import prepare
from .._checks import PellucidError, checked_keywords, generator
from ._maps import MapMethod, as_map, resolve_method
from .similarity import spearman, ssim


@dataclass
class SanityCheck:
    """Similarity of the attribution after each cumulative randomization stage.

    ``stages[0]`` is ``"original"`` (the copy, nothing randomized); ``stages[s]`` names the layer
    randomized last, every layer before it in the list (closer to the output) randomized too.
    ``spearman`` and ``ssim`` are ``(stages, N)``; ``maps`` the ``(stages, N, H, W)`` |attribution|.
    """

    method: str
    stages: list[str]
    spearman: torch.Tensor
    ssim: torch.Tensor
    maps: torch.Tensor

    def _repr_png_(self) -> bytes:
        from ..drawing import display

        return display.sanity(self)

    def final(self) -> tuple[float, float]:
        """Mean Spearman and SSIM once every layer is randomized (a passing method: near 0)."""
        return float(self.spearman[-1].mean()), float(self.ssim[-1].mean())

    def plot(self) -> bytes:
        """A PNG of the mean similarity per stage (see :func:`pellucid.render.sanity_plot`)."""
        from ..drawing.render import sanity_plot

        return sanity_plot([self])


def randomizable_layers(model: nn.Module) -> list[str]:
    """Names of the modules that hold parameters themselves, from the output back to the input."""
    from ..models.layers import named_layers

    names = [name for name, m in named_layers(model).items() if any(True for _ in m.parameters(recurse=False))]
    return names[::-1]


def top_layers(model: nn.Module) -> list[str]:
    """The model's top-level blocks that hold parameters, output first (coarse sanity-check stages:
    ``fc, layer4, ..., conv1`` for a ResNet; every layer for the digits CNN)."""
    from ..models.layers import inner

    names = [name for name, m in inner(model).named_children() if any(True for _ in m.parameters())]
    return names[::-1]


def _randomize(module: nn.Module, generator: torch.Generator) -> None:
    """Re-draw every parameter of ``module`` and its sub-modules from a seeded normal distribution.

    Weights ``N(0, 1/fan_in)`` (the scale of PyTorch's default init), vectors (biases, norm scales)
    ``N(0, 0.1^2)``; BatchNorm running statistics are reset. Uses ``generator`` only.
    """
    with torch.no_grad():
        for p in module.parameters():
            std = 1 / p[0].numel() ** 0.5 if p.dim() > 1 else 0.1
            noise = torch.randn(p.shape, generator=generator, device=generator.device, dtype=p.dtype)
            p.copy_(noise.to(p.device) * std)
        for m in module.modules():
            if isinstance(m, nn.modules.batchnorm._NormBase) and m.track_running_stats:
                m.reset_running_stats()


def _absolute_map(fn: MapMethod, model: nn.Module, x: torch.Tensor, target) -> torch.Tensor:
    a = fn(model, x, target)
    if isinstance(a, torch.Tensor) and a.dim() == 4:
        a = a.abs()
    return as_map(a, x, "the method's output").abs()


@checked_keywords
def sanity_check(model: nn.Module, x: torch.Tensor, target, method: str | MapMethod, *,
                 layers: Sequence[str] | None = None, seed: int = 0) -> SanityCheck:
    """Cascading model-randomization test (Adebayo et al. 2018), on a deep copy of ``model``.

    ``layers`` (default: every module holding parameters, output first; see
    :func:`randomizable_layers`) are re-initialized one after another, cumulatively; after each
    stage the |attribution| is compared with the original by Spearman rank correlation and SSIM
    (maps min-max scaled to [0, 1]). A method that explains the model loses similarity; one that does
    not (an edge detector) keeps it. ``model`` itself is never modified.
    Example: ``r = pl.sanity_check(model, x, 3, "saliency"); r.final()``.
    """
    from ..attribution import normalize_per_image
    from ..models.layers import find_layer

    name, fn = resolve_method(method)
    x, _, _ = prepare(model, x, target, None)
    try:
        copy_ = copy.deepcopy(model)
    except Exception as e:
        raise PellucidError(f"sanity_check randomizes a copy of the model, but copy.deepcopy failed: {e}") from e
    names = list(layers) if layers is not None else randomizable_layers(copy_)
    if not names:
        raise PellucidError("the model has no layer with parameters to randomize")
    modules = [find_layer(copy_, n) for n in names]
    gen = generator(seed, x.device)
    maps = [_absolute_map(fn, copy_, x, target)]
    for module in modules:
        _randomize(module, gen)
        maps.append(_absolute_map(fn, copy_, x, target))
    maps = normalize_per_image(torch.stack(maps).flatten(0, 1)).reshape(len(maps), *maps[0].shape)
    rho = torch.stack([spearman(maps[0], m) for m in maps])
    sim = torch.stack([ssim(maps[0], m) for m in maps])
    return SanityCheck(name, ["original", *names], rho, sim, maps)
