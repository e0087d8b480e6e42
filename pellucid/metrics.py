"""Can we trust the explanation: deletion/insertion curves, model-randomization sanity checks, and a
side-by-side comparison of attribution methods.

- Deletion and insertion (Petsiuk et al. 2018, RISE): remove (or insert) pixels in the order of an
  attribution map and watch the class probability; a faithful map makes it fall fast (or rise fast).
- Sanity check (Adebayo et al. 2018): randomize the model's layers from the top down on a copy; an
  explanation that depends on the model must lose its similarity to the original.
"""

from __future__ import annotations

import copy
import inspect
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ._args import prepare
from ._blur import gaussian_blur
from ._checks import PellucidError, fill_like
from ._grad import iter_logits
from ._state import model_state
from .registry import methods as registered_methods
from .targets import Target

Method = Callable[..., torch.Tensor]


# ---------------------------------------------------------------------------------------------
# attribution methods by name or callable

def resolve_method(method: str | Method) -> tuple[str, Method]:
    """``(name, fn)`` for a method name or a callable ``(model, x, target) -> (N, H, W) or (N, C, H, W)``."""
    if isinstance(method, str):
        table = registered_methods()
        if method not in table:
            raise PellucidError(f"unknown attribution method {method!r}; choose one of: {', '.join(table)}, "
                                "or pass a callable (model, x, target) -> map")
        return method, table[method]
    if callable(method):
        return getattr(method, "__name__", type(method).__name__), method
    raise PellucidError(f"method must be a name or a callable (model, x, target) -> map, got {type(method).__name__}")


def as_map(attribution: torch.Tensor, x: torch.Tensor, name: str = "attribution") -> torch.Tensor:
    """An ``(N, H, W)`` map from an ``(N, H, W)`` or ``(N, C, H, W)`` attribution (summed over channels)."""
    if not isinstance(attribution, torch.Tensor):
        raise PellucidError(f"{name} must be a tensor (N, H, W) or (N, C, H, W), got {type(attribution).__name__}")
    n, c, h, w = x.shape
    a = attribution.detach()
    if a.dim() == 4 and a.shape[0] == n and a.shape[1] in (1, c) and a.shape[2:] == (h, w):
        a = a.sum(1)
    if a.shape != (n, h, w):
        raise PellucidError(f"{name} has shape {tuple(attribution.shape)} but the images are {tuple(x.shape)}; "
                            f"expected ({n}, {h}, {w}) or ({n}, {c}, {h}, {w})")
    if not a.is_floating_point():
        a = a.float()
    if not torch.isfinite(a).all():
        raise PellucidError(f"{name} contains NaN or infinite values")
    return a.to(x.device)


# ---------------------------------------------------------------------------------------------
# deletion and insertion

@dataclass
class Curve:
    """A deletion or insertion result: ``fractions`` ``(steps,)``, ``scores`` ``(N, steps)``, ``auc`` ``(N,)``."""

    fractions: torch.Tensor
    scores: torch.Tensor
    auc: torch.Tensor


def _ranks(maps: torch.Tensor) -> torch.Tensor:
    """Position of every pixel in the descending attribution order, ``(N, H*W)`` (ties: first pixel first)."""
    flat = maps.flatten(1)
    order = flat.argsort(dim=1, descending=True, stable=True)
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(flat.shape[1], device=flat.device).expand_as(order))
    return ranks


def _check_steps(steps) -> int:
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 2:
        raise PellucidError(f"steps must be an int >= 2 (the curve's points from 0% to 100%), got {steps!r}")
    return steps


def blurred(x: torch.Tensor, sigma: float = 5.0, kernel_size: int = 11) -> torch.Tensor:
    """RISE's insertion start: Gaussian blur with kernel 11 and sigma 5, reflect-padded, the kernel capped to
    the image (equals ``torchvision.transforms.functional.gaussian_blur``)."""
    k = min(kernel_size, 2 * ((min(x.shape[-2:]) - 1) // 2) + 1)
    return gaussian_blur(x, sigma, k // 2, mode="reflect")


def _curve(model: nn.Module, x: torch.Tensor, target: Target, maps: torch.Tensor, start: torch.Tensor,
           changed: torch.Tensor, steps: int, batch_size: int) -> Curve:
    """Scores of ``start`` with the top ``k/(steps-1)`` fraction of pixels taken from ``changed``."""
    n, _, h, w = x.shape
    ranks = _ranks(maps)
    fractions = torch.linspace(0, 1, steps, device=x.device)
    counts = (fractions * h * w).round().long()

    def rows(sl: slice) -> torch.Tensor:
        idx = torch.arange(sl.start, sl.stop, device=x.device)
        i, k = idx // steps, idx % steps
        mask = (ranks[i] < counts[k, None]).reshape(-1, 1, h, w)
        return torch.where(mask, changed[i], start[i])

    tr = target.repeat_interleave(steps)
    scores = torch.empty(n * steps, device=x.device)
    with model_state(model):
        for sl, logits in iter_logits(model, rows, n * steps, batch_size):
            scores[sl] = tr(logits, sl).float()
    scores = scores.reshape(n, steps)
    return Curve(fractions, scores, torch.trapezoid(scores, fractions, dim=1))


def _attribution_map(model, x, target, attribution) -> torch.Tensor:
    if isinstance(attribution, str) or (callable(attribution) and not isinstance(attribution, torch.Tensor)):
        _, fn = resolve_method(attribution)
        attribution = fn(model, x, target)
    return as_map(attribution, x)


def deletion(model: nn.Module, x: torch.Tensor, target, attribution: torch.Tensor | str | Method, *,
             steps: int = 50, baseline: float | torch.Tensor = 0.0, score: str = "softmax",
             batch_size: int | None = None) -> Curve:
    """Deletion curve (Petsiuk et al. 2018): pixels set to ``baseline``, most important first.

    ``attribution`` is an ``(N, H, W)`` or ``(N, C, H, W)`` map (channels are summed), or a method
    name / callable computed here. The curve has ``steps`` points at fractions ``0, 1/(steps-1), ..., 1``
    of the pixels removed; ``score`` is the class probability by default. Lower AUC = more faithful.
    Shape: ``scores (N, steps)``, ``auc (N,)``. Example: ``pl.deletion(model, x, 3, pl.saliency(model, x, 3)).auc``.
    """
    steps = _check_steps(steps)
    x, t, bs = prepare(model, x, target, batch_size, score)
    maps = _attribution_map(model, x, target, attribution)
    return _curve(model, x, t, maps, x, fill_like(baseline, x, "baseline"), steps, bs)


def insertion(model: nn.Module, x: torch.Tensor, target, attribution: torch.Tensor | str | Method, *,
              steps: int = 50, baseline: float | torch.Tensor | str = "blur", score: str = "softmax",
              batch_size: int | None = None) -> Curve:
    """Insertion curve (Petsiuk et al. 2018): pixels copied onto a blurred image, most important first.

    ``baseline="blur"`` is RISE's start (Gaussian blur, kernel 11, sigma 5); a float or tensor works too.
    Higher AUC = more faithful. Shapes and arguments as :func:`deletion`.
    """
    steps = _check_steps(steps)
    x, t, bs = prepare(model, x, target, batch_size, score)
    maps = _attribution_map(model, x, target, attribution)
    if isinstance(baseline, str):
        if baseline != "blur":
            raise PellucidError(f"insertion baseline must be 'blur', a float or a tensor, got {baseline!r}")
        start = blurred(x)
    else:
        start = fill_like(baseline, x, "baseline")
    return _curve(model, x, t, maps, start, x, steps, bs)


def random_attribution(x: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """A uniformly random ``(N, H, W)`` map: the baseline every method must beat. Seeded, no global RNG."""
    gen = torch.Generator(device=x.device).manual_seed(seed)
    return torch.rand(x.shape[0], *x.shape[2:], generator=gen, device=x.device)


# ---------------------------------------------------------------------------------------------
# similarity of two maps

def average_ranks(values: torch.Tensor) -> torch.Tensor:
    """Ranks ``0..M-1`` along the last dim, ties sharing their average rank (as ``scipy.stats.rankdata``)."""
    flat = values.reshape(-1, values.shape[-1]).double()
    out = torch.empty_like(flat)
    for r, row in enumerate(flat):
        sorted_vals, order = row.sort(stable=True)
        _, inverse, counts = torch.unique_consecutive(sorted_vals, return_inverse=True, return_counts=True)
        first = counts.cumsum(0) - counts
        out[r, order] = (first + (counts - 1) / 2).to(out.dtype)[inverse]
    return out.reshape(values.shape)


def spearman(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spearman rank correlation of each pair of maps ``(N, ...)``, ``(N,)`` (0 where a map is constant)."""
    ra, rb = average_ranks(a.flatten(1)), average_ranks(b.flatten(1))
    ra, rb = ra - ra.mean(1, keepdim=True), rb - rb.mean(1, keepdim=True)
    denom = (ra.norm(dim=1) * rb.norm(dim=1))
    return torch.where(denom > 0, (ra * rb).sum(1) / denom.clamp_min(1e-300), torch.zeros_like(denom)).float()


def ssim(a: torch.Tensor, b: torch.Tensor, data_range: float = 1.0, win_size: int = 7) -> torch.Tensor:
    """Mean structural similarity of each pair of ``(N, H, W)`` maps, ``(N,)``.

    Wang et al. 2004 with ``skimage.metrics.structural_similarity``'s defaults: a 7x7 uniform window,
    sample covariance, K1=0.01, K2=0.03, averaged over the valid (uncropped) region.
    """
    win = min(win_size, *a.shape[-2:])
    win -= 1 - win % 2
    pair = torch.stack([a, b], 1).double()
    mean = lambda t: F.avg_pool2d(t, win, stride=1)  # noqa: E731
    mu = mean(pair)
    ux, uy = mu[:, 0], mu[:, 1]
    cov = win * win / (win * win - 1)
    vx = cov * (mean(pair[:, :1] ** 2)[:, 0] - ux**2)
    vy = cov * (mean(pair[:, 1:] ** 2)[:, 0] - uy**2)
    vxy = cov * (mean(pair[:, :1] * pair[:, 1:])[:, 0] - ux * uy)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux**2 + uy**2 + c1) * (vx + vy + c2))
    return s.flatten(1).mean(1).float()


# ---------------------------------------------------------------------------------------------
# sanity check: cascading model randomization

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

    def final(self) -> tuple[float, float]:
        """Mean Spearman and SSIM once every layer is randomized (a passing method: near 0)."""
        return float(self.spearman[-1].mean()), float(self.ssim[-1].mean())

    def plot(self) -> bytes:
        """A PNG of the mean similarity per stage (see :func:`pellucid.render.sanity_plot`)."""
        from .render import sanity_plot

        return sanity_plot([self])


def randomizable_layers(model: nn.Module) -> list[str]:
    """Names of the modules that hold parameters themselves, from the output back to the input."""
    from .layers import named_layers

    names = [name for name, m in named_layers(model).items() if any(True for _ in m.parameters(recurse=False))]
    return names[::-1]


def top_layers(model: nn.Module) -> list[str]:
    """The model's top-level blocks that hold parameters, output first (coarse sanity-check stages:
    ``fc, layer4, ..., conv1`` for a ResNet; every layer for the digits CNN)."""
    from .layers import inner

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


def _absolute_map(fn: Method, model: nn.Module, x: torch.Tensor, target) -> torch.Tensor:
    a = fn(model, x, target)
    if isinstance(a, torch.Tensor) and a.dim() == 4:
        a = a.abs()
    return as_map(a, x, "the method's output").abs()


def sanity_check(model: nn.Module, x: torch.Tensor, target, method: str | Method, *,
                 layers: Sequence[str] | None = None, seed: int = 0) -> SanityCheck:
    """Cascading model-randomization test (Adebayo et al. 2018), on a deep copy of ``model``.

    ``layers`` (default: every module holding parameters, output first; see
    :func:`randomizable_layers`) are re-initialized one after another, cumulatively; after each
    stage the |attribution| is compared with the original by Spearman rank correlation and SSIM
    (maps min-max scaled to [0, 1]). A method that explains the model loses similarity; one that does
    not (an edge detector) keeps it. ``model`` itself is never modified.
    Example: ``r = pl.sanity_check(model, x, 3, "saliency"); r.final()``.
    """
    from .attribution import normalize_per_image
    from .layers import find_layer

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
    gen = torch.Generator(device=x.device).manual_seed(seed)
    maps = [_absolute_map(fn, copy_, x, target)]
    for module in modules:
        _randomize(module, gen)
        maps.append(_absolute_map(fn, copy_, x, target))
    maps = normalize_per_image(torch.stack(maps).flatten(0, 1)).reshape(len(maps), *maps[0].shape)
    rho = torch.stack([spearman(maps[0], m) for m in maps])
    sim = torch.stack([ssim(maps[0], m) for m in maps])
    return SanityCheck(name, ["original", *names], rho, sim, maps)


# ---------------------------------------------------------------------------------------------
# compare methods side by side

COLUMNS = ("method", "deletion AUC", "insertion AUC", "rank corr. randomized", "SSIM randomized", "seconds")


@dataclass
class Comparison:
    """``rows``: one dict per method (keys :data:`COLUMNS`), the ``"random"`` baseline last.

    Lower deletion AUC and higher insertion AUC than ``random`` mean the map ranks pixels by what
    the model uses; a low similarity after full randomization means the map depends on the weights.
    """

    rows: list[dict]
    deletion: dict[str, Curve]
    insertion: dict[str, Curve]
    sanity: dict[str, SanityCheck]

    def table(self) -> str:
        """The rows as aligned text, numbers to 3 decimals ('-' where not computed)."""
        from .render import number

        cells = [list(COLUMNS)] + [[number(r[c]) for c in COLUMNS] for r in self.rows]
        widths = [max(len(row[j]) for row in cells) for j in range(len(COLUMNS))]
        return "\n".join("  ".join(v.ljust(w) if j == 0 else v.rjust(w) for j, (v, w) in enumerate(zip(row, widths)))
                         for row in cells)

    def __str__(self) -> str:
        return self.table()


def _methods(methods) -> dict[str, Method]:
    if methods is None:
        return registered_methods()
    if isinstance(methods, dict):
        return {str(k): resolve_method(v)[1] for k, v in methods.items()}
    if isinstance(methods, str) or callable(methods):
        methods = [methods]
    out = dict(resolve_method(m) for m in methods)
    if not out:
        raise PellucidError("methods is empty; pass at least one method name or callable")
    return out


def compare(model: nn.Module, x: torch.Tensor, target, methods: Sequence | dict | None = None, *,
            steps: int = 20, sanity: bool | Sequence[str] = True, sanity_layers: Sequence[str] | None = None,
            seed: int = 0, batch_size: int | None = None) -> Comparison:
    """Deletion AUC, insertion AUC, sanity check and runtime of each method, and a seeded random baseline.

    ``methods``: names (``pellucid.registry.methods()``), callables ``(model, x, target) -> map``
    or a ``{name: method}`` dict; default every available method. ``sanity`` runs the cascading
    randomization for all (True), none (False) or the named methods. AUCs are means over the batch.
    Example: ``print(pl.compare(model, x, y, ["saliency", "input_x_gradient"]))``.
    """
    steps = _check_steps(steps)
    x, _, _ = prepare(model, x, target, batch_size)
    table = _methods(methods)
    table["random"] = lambda _m, xx, _t: random_attribution(xx, seed)
    checked = set(table) if sanity is True else set() if sanity is False else set(sanity) | {"random"}
    if checked - set(table):
        raise PellucidError(f"sanity names {sorted(checked - set(table))} are not among the compared methods: "
                            f"{', '.join(table)}")
    result = Comparison([], {}, {}, {})
    for name, fn in table.items():
        start = time.perf_counter()
        maps = as_map(fn(model, x, target), x, f"{name}'s output")
        seconds = time.perf_counter() - start
        result.deletion[name] = deletion(model, x, target, maps, steps=steps, batch_size=batch_size)
        result.insertion[name] = insertion(model, x, target, maps, steps=steps, batch_size=batch_size)
        rho = sim = None
        if name in checked:
            result.sanity[name] = sanity_check(model, x, target, fn, layers=sanity_layers, seed=seed)
            result.sanity[name].method = name
            rho, sim = result.sanity[name].final()
        result.rows.append(dict(zip(COLUMNS, (name, float(result.deletion[name].auc.mean()),
                                              float(result.insertion[name].auc.mean()), rho, sim, seconds))))
    return result


def accepts(fn: Callable, keyword: str) -> bool:
    """Whether ``fn`` takes ``keyword`` (by name or through ``**kwargs``)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == keyword or p.kind is p.VAR_KEYWORD for p in params)
