"""What has it learned: feature visualization by gradient ascent on the input.

One loop, :func:`visualize`, maximizes an :class:`Objective` (class logit, channel, neuron, penalties;
they add, subtract and scale) of images produced by a parameterization (``"pixel"`` or Lucid's
colour-decorrelated ``"fourier"``) and seen by the model through random transforms (roll, pad, jitter,
scale, rotate, blur). :func:`class_visualization` (Simonyan et al. 2014, Yosinski et al. 2015) and
:func:`channel_visualization` are a few lines on top of it; :func:`activations` reads any layer.

Gradients come from the one primitive (:func:`pellucid._grad.iter_gradients`): straight to the
parameterization when the batch is one chunk, else on the model input chunk by chunk and carried back
by one vector-Jacobian product; parameters stay frozen and every hook is removed by
:func:`pellucid._state.model_state`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ._checks import PellucidError, check_choice, check_images, check_positive_int
from ._grad import _cat, iter_gradients, iter_logits, num_classes, resolve_batch_size
from ._state import model_state
from .data import gaussian_filter
from .models import find_layer, named_layers
from .targets import Target, as_target

PARAMS = ("pixel", "fourier")
OPTIMIZERS = ("normalized", "adam")


# ---------------------------------------------------------------------------------------------
# objectives: a score per image to maximize, composable with +, - and scalar *

@dataclass
class Capture:
    """What an objective sees for one chunk of rows: logits, the model input and captured layers."""

    logits: torch.Tensor
    input: torch.Tensor
    layers: dict
    rows: slice


class Objective:
    """A score per image to maximize. ``bind(model, n)`` validates it and returns ``Capture -> (M,)``.

    Objectives compose: ``class_logit(3) - 1e-3 * l2()``, ``channel("conv2", 5) + neuron("conv3", 1)``.
    ``+``, ``-`` and scalar ``*`` only ever make weighted sums, so a composite is kept as its list of
    ``(weight, term)`` and scored with one fused multiply-add per extra term.
    """

    def __init__(self, bind: Callable, name: str, layers: Sequence = ()):
        self._bind, self.name, self.layers = bind, name, tuple(layers)
        self.terms: tuple[tuple[float, Objective], ...] = ((1.0, self),)

    def bind(self, model: nn.Module, n: int) -> Callable[[Capture], torch.Tensor]:
        if len(self.terms) == 1 and self.terms[0][1] is self:
            return self._bind(model, n)
        (w0, first), *rest = [(w, term._bind(model, n)) for w, term in self.terms]

        def score(cap):
            out = first(cap) if w0 == 1 else first(cap) * w0
            for w, fn in rest:
                out = torch.add(out, fn(cap), alpha=w)
            return out

        return score

    @staticmethod
    def _sum(terms, name: str) -> Objective:
        out = Objective(None, name, tuple(dict.fromkeys(k for _, t in terms for k in t.layers)))
        out.terms = tuple(terms)
        return out

    def _combine(self, other, sign: float, symbol: str) -> Objective:
        if not isinstance(other, Objective):
            raise PellucidError(f"objectives combine with objectives (e.g. class_logit(3) - 1e-3 * l2()), "
                                f"got {type(other).__name__} {other!r}")
        terms = self.terms + tuple((sign * w, t) for w, t in other.terms)
        return Objective._sum(terms, f"{self.name} {symbol} {other.name}")

    def __add__(self, other) -> Objective:
        return self._combine(other, 1.0, "+")

    def __radd__(self, other) -> Objective:  # so that sum([...]) works
        return self if isinstance(other, int) and other == 0 else self._combine(other, 1.0, "+")

    def __sub__(self, other) -> Objective:
        return self._combine(other, -1.0, "-")

    def __mul__(self, k) -> Objective:
        if isinstance(k, bool) or not isinstance(k, int | float):
            raise PellucidError(f"an objective can only be scaled by a number, got {type(k).__name__}")
        return Objective._sum(tuple((k * w, t) for w, t in self.terms), f"{k:g} * ({self.name})")

    __rmul__ = __mul__

    def __neg__(self) -> Objective:
        return -1 * self

    def __repr__(self) -> str:
        return f"Objective({self.name})"


def as_objective(value) -> Objective:
    """An Objective as is; a callable ``logits -> (N,)`` as a score; an int or ints as :func:`class_logit`."""
    if isinstance(value, Objective):
        return value
    if callable(value) and not isinstance(value, torch.Tensor):
        return Objective(lambda m, n: lambda cap: Target(None, value)(cap.logits), getattr(value, "__name__", "fn"))
    return class_logit(value)


def class_logit(target, score: str = "logit") -> Objective:
    """The class score (raw logit by default; ``score="softmax"`` is the probability) of ``target``.

    ``target`` is an int (every image) or one int per image, checked against the model's classes.
    """
    def bind(model, n):
        t = as_target(target, n, num_classes(model), score)
        return lambda cap: t(cap.logits, cap.rows)

    return Objective(bind, f"{score}[{target}]")


def _layer_key(layer) -> str | nn.Module:
    if not isinstance(layer, str | nn.Module):
        raise PellucidError(f"layer must be a layer name (see `pellucid layers`) or a module, got {layer!r}")
    return layer


def _per_row(value, n: int, name: str) -> torch.Tensor:
    idx = torch.as_tensor(value)
    if idx.dtype in (torch.bool,) or idx.is_floating_point() or idx.dim() > 1:
        raise PellucidError(f"{name} must be an int or a 1-D sequence of ints, got {value!r}")
    idx = idx.long().reshape(-1)
    if idx.numel() == 1:
        idx = idx.expand(n)
    if idx.numel() != n:
        raise PellucidError(f"got {idx.numel()} {name}s for {n} images; pass one int, or one per image")
    if (idx < 0).any():
        raise PellucidError(f"{name} {int(idx[idx < 0][0])} is negative; indices start at 0")
    return idx


def _layer_output(cap: Capture, layer, what: str, index: torch.Tensor) -> torch.Tensor:
    out = cap.layers[layer]
    if not isinstance(out, torch.Tensor) or out.dim() < 2:
        raise PellucidError(f"layer {layer!r} does not output a (N, C, ...) tensor; pick another layer")
    if int(index.max()) >= out.shape[1]:
        raise PellucidError(f"{what} {int(index.max())} is out of range: layer {layer!r} has "
                            f"{what}s 0..{out.shape[1] - 1}")
    rows = torch.arange(out.shape[0], device=out.device)
    return out[rows, index[cap.rows].to(out.device)]


def channel(layer: str | nn.Module, index) -> Objective:
    """Mean activation of channel ``index`` (an int, or one per image) of ``layer``."""
    key = _layer_key(layer)

    def bind(model, n):
        idx = _per_row(index, n, "channel")
        return lambda cap: _layer_output(cap, key, "channel", idx).reshape(len(cap.logits), -1).mean(1)

    return Objective(bind, f"channel[{layer}:{index}]", [key])


def neuron(layer: str | nn.Module, index, y: int | None = None, x: int | None = None) -> Objective:
    """Activation of channel ``index`` of ``layer`` at one position ``(y, x)`` (default: the centre)."""
    key = _layer_key(layer)

    def bind(model, n):
        idx = _per_row(index, n, "channel")

        def fn(cap):
            maps = _layer_output(cap, key, "channel", idx)
            if maps.dim() != 3:
                raise PellucidError(f"neuron needs a layer with (N, C, H, W) output; {layer!r} gives "
                                    f"{maps.dim() + 1} dims")
            h, w = maps.shape[-2:]
            yy, xx = h // 2 if y is None else y, w // 2 if x is None else x
            if not (0 <= yy < h and 0 <= xx < w):
                raise PellucidError(f"neuron position ({yy}, {xx}) is outside layer {layer!r}'s {h}x{w} maps")
            return maps[:, yy, xx]

        return fn

    return Objective(bind, f"neuron[{layer}:{index}@{y},{x}]", [key])


def l2() -> Objective:
    """The squared L2 norm ``||I||²`` of each image the model sees (subtract it as a penalty)."""
    return Objective(lambda m, n: lambda cap: cap.input.square().sum(tuple(range(1, cap.input.dim()))), "l2")


def total_variation() -> Objective:
    """Anisotropic total variation: the sum of absolute differences of neighbouring pixels."""
    def tv(cap):
        x = cap.input
        return (x[..., 1:, :] - x[..., :-1, :]).abs().flatten(1).sum(1) + \
            (x[..., :, 1:] - x[..., :, :-1]).abs().flatten(1).sum(1)

    return Objective(lambda m, n: tv, "total_variation")


# ---------------------------------------------------------------------------------------------
# transforms: ``(images, generator) -> images``, batch-shared random draws, differentiable, on device

Transform = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


def _randints(gen: torch.Generator, low: int, high: int, n: int = 2) -> list[int]:
    """``n`` ints drawn uniformly from ``low..high`` in one call."""
    return torch.randint(low, high + 1, (n,), generator=gen).tolist()


def _uniform(gen: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand((), generator=gen))


def compose(*transforms: Transform) -> Transform:
    """One transform applying ``transforms`` left to right."""
    def apply(x, gen):
        for t in transforms:
            x = t(x, gen)
        return x

    return apply


def roll(pixels: int) -> Transform:
    """The course's jitter: a circular shift by ``(oy, ox)`` drawn from ``0..pixels``."""
    def apply(x, gen):
        oy, ox = _randints(gen, 0, pixels)
        return torch.roll(x, shifts=(oy, ox), dims=(-2, -1)) if oy or ox else x

    return apply


def pad(width: int, value: float = 0.5) -> Transform:
    """Constant padding of ``width`` pixels on every side (Lucent pads with grey before jittering)."""
    return lambda x, gen: F.pad(x, (width,) * 4, value=value)


def jitter(pixels: int) -> Transform:
    """Lucent's jitter: a random crop that drops up to ``pixels`` rows and columns."""
    def apply(x, gen):
        dy, dx = _randints(gen, 0, pixels)
        h, w = x.shape[-2:]
        return x[..., dy : h - pixels + dy, dx : w - pixels + dx]

    return apply


def _affine(x: torch.Tensor, scale: float, angle: float) -> torch.Tensor:
    c, s = math.cos(angle) / scale, math.sin(angle) / scale
    theta = torch.tensor([[c, -s, 0.0], [s, c, 0.0]], dtype=x.dtype, device=x.device).expand(len(x), 2, 3)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def random_scale(scales: Sequence[float] = (0.9, 1.1)) -> Transform:
    """Zoom by a factor drawn uniformly from ``scales`` (a range), keeping the size."""
    lo, hi = min(scales), max(scales)
    return lambda x, gen: _affine(x, _uniform(gen, lo, hi), 0.0)


def random_rotate(degrees: float = 10.0) -> Transform:
    """Rotate by an angle drawn uniformly from ``[-degrees, degrees]``, keeping the size."""
    return lambda x, gen: _affine(x, 1.0, math.radians(_uniform(gen, -degrees, degrees)))


def gaussian_blur(x: torch.Tensor, sigma: float, truncate: float = 4.0) -> torch.Tensor:
    """Separable Gaussian blur on the tensor's device: scipy's ``gaussian_filter(mode="mirror")``."""
    if sigma <= 0:
        return x
    radius = min(int(truncate * sigma + 0.5), min(x.shape[-2:]) - 1)
    if radius < 1:
        return x
    return gaussian_filter(x, sigma, radius, mode="reflect")


def blur(sigma: float = 0.5) -> Transform:
    """A Gaussian blur of width ``sigma`` pixels (differentiable)."""
    return lambda x, gen: gaussian_blur(x, sigma)


def standard_transforms(pixels: int = 8) -> Transform:
    """Lucent's standard set for large models: pad, jitter, random scale and rotation, jitter."""
    return compose(pad(pixels + 4), jitter(pixels), random_scale((0.95, 1.05)), random_rotate(5), jitter(4))


# ---------------------------------------------------------------------------------------------
# parameterizations: a leaf tensor that is optimized, and the images it stands for

# Lucid's square root of the ImageNet colour covariance, columns scaled to unit max norm
_COLOR_SQRT = torch.tensor([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]])
_COLOR = _COLOR_SQRT / _COLOR_SQRT.norm(dim=0).max()


class PixelParam:
    """The image itself, clamped to [0, 1] after every step (the course's parameterization)."""

    def __init__(self, start: torch.Tensor):
        self.tensor = start.clone(memory_format=torch.contiguous_format).requires_grad_(True)

    def image(self) -> torch.Tensor:
        return self.tensor

    @torch.no_grad()
    def project(self) -> None:
        self.tensor.clamp_(0, 1)


def _mix(matrix: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Mix the colour channels of ``z`` (N, C, H, W) by a (C, C) matrix, keeping the contiguous layout.

    (An einsum returns a channels-last tensor here, which makes every convolution of the model copy
    its weights to match: 10% of a resnet18 step.)
    """
    return torch.matmul(matrix, z.flatten(2)).view_as(z)


class FourierParam:
    """Lucid/Lucent's image: a spectrum scaled by 1/frequency, colour-decorrelated, then a sigmoid.

    Gradient steps on the spectrum favour low frequencies and natural colour statistics, which gives
    far more readable images of large models than steps on pixels (Olah et al. 2017).
    """

    def __init__(self, start: torch.Tensor, decay: float = 1.0):
        h, w = start.shape[-2:]
        fy = torch.fft.fftfreq(h, device=start.device)[:, None]
        fx = torch.fft.rfftfreq(w, device=start.device)[None, :]
        freqs = (fx**2 + fy**2).sqrt()
        self.scale = (1.0 / freqs.clamp_min(1.0 / max(h, w)) ** decay).to(start.dtype)
        self.size = (h, w)
        color = _COLOR.to(start.device, start.dtype)
        self.color = color if start.shape[1] == 3 else None
        z = torch.logit(start.clamp(1e-3, 1 - 1e-3))  # invert sigmoid, colour mixing and spectrum scale
        if self.color is not None:
            z = _mix(torch.linalg.inv(color), z)
        spectrum = torch.fft.rfft2(z * 4.0, norm="ortho") / self.scale
        self.tensor = torch.view_as_real(spectrum).contiguous().requires_grad_(True)
        # scale and Lucid's 1/4 in one real product per step, laid out like the spectrum's last three
        # dims (a broadcast over the trailing real/imaginary dim is 5x slower)
        self._factor = (self.scale / 4.0)[..., None].expand(*self.scale.shape, 2).contiguous()

    def image(self) -> torch.Tensor:
        spectrum = torch.view_as_complex(self.tensor * self._factor)  # real maths: no complex copy
        z = torch.fft.irfft2(spectrum, s=self.size, norm="ortho")
        if self.color is not None:
            z = _mix(self.color, z)
        return torch.sigmoid(z)

    def project(self) -> None:
        pass


def make_param(param: str, start, n: int, shape, model, gen: torch.Generator, device) -> PixelParam | FourierParam:
    """The parameterization, from ``start`` images (copied) or from noise of the model's input size."""
    check_choice(param, "param", PARAMS)
    if start is not None:
        start = check_images(start, model, "start").clone()
        return PixelParam(start) if param == "pixel" else FourierParam(start)
    shape = shape or getattr(model, "input_size", None)
    if shape is None or len(shape) != 3:
        raise PellucidError(f"cannot tell the image size: pass size=(C, H, W) (got {shape!r}); "
                            "pl.wrap(..., input_size=(C, H, W)) records it on the model")
    if param == "pixel":  # the course's start: standard normal noise in the model's normalized space
        mean, std = _norm_stats(model, shape[0])
        noise = torch.randn((n, *shape), generator=gen) * std + mean if std is not None else torch.rand((n, *shape),
                                                                                                       generator=gen)
        return PixelParam(noise.clamp(0, 1).to(device))
    p = FourierParam(torch.full((n, *shape), 0.5, device=device))  # Lucent: a faint random spectrum
    with torch.no_grad():
        p.tensor.add_(0.01 * torch.randn(p.tensor.shape, generator=gen).to(device))
    return p


def _norm_stats(model: nn.Module, channels: int) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """The ``(1, C, 1, 1)`` mean and std inside a :class:`PixelModel` (``None`` if it has none)."""
    mean, std = getattr(model, "mean", None), getattr(model, "std", None)
    if not isinstance(std, torch.Tensor):
        return None, None
    mean = mean.detach().cpu() if isinstance(mean, torch.Tensor) else torch.zeros(())
    return mean.expand(1, channels, 1, 1), std.detach().cpu().expand(1, channels, 1, 1)


def _model_device(model: nn.Module) -> torch.device:
    p = next(iter(model.parameters()), None)
    return p.device if p is not None else torch.device("cpu")


# ---------------------------------------------------------------------------------------------
# the one optimization loop

@dataclass
class Visualization:
    """The result of :func:`visualize`.

    ``image`` ``(N, C, H, W)`` in [0, 1]; ``snapshots`` step -> images after that step (1-based);
    ``history`` name -> ``(steps, N)`` values per step (``"objective"`` and any tracked quantity,
    e.g. ``"probability"``, ``"activation"``), measured on the transformed images the model saw.
    """

    image: torch.Tensor
    snapshots: dict[int, torch.Tensor] = field(default_factory=dict)
    history: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def objective(self) -> torch.Tensor:
        return self.history["objective"]

    @property
    def probability(self) -> torch.Tensor | None:
        return self.history.get("probability")

    @property
    def activation(self) -> torch.Tensor | None:
        return self.history.get("activation")


class _Scorer:
    """The callable target of one step: builds a :class:`Capture` per chunk, records tracked values."""

    def __init__(self, objective, trackers: dict, layers: dict, inputs: dict):
        self.objective, self.trackers, self.layers, self.inputs = objective, trackers, layers, inputs
        self.start, self.records = 0, {}

    def reset(self) -> None:
        self.start, self.records = 0, {k: [] for k in self.trackers}

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        rows = slice(self.start, self.start + len(logits))
        self.start = rows.stop
        cap = Capture(logits, self.inputs["x"], {k: s["output"] for k, s in self.layers.items()}, rows)
        with torch.no_grad():
            for name, fn in self.trackers.items():
                self.records[name].append(fn(cap).detach())
        return self.objective(cap)


def _fit(x: torch.Tensor, size) -> torch.Tensor:
    """Transforms that pad or crop change the size; the model sees the parameterization's size."""
    if x.shape[-2:] == size:
        return x
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


def _check_args(steps, lr, blur_every, blur_sigma, snapshots):
    check_positive_int(steps, "steps")
    check_positive_int(blur_every, "blur_every", minimum=0)
    if lr is not None and not (isinstance(lr, int | float) and lr > 0):
        raise PellucidError(f"lr must be a positive number, got {lr!r}")
    if not (isinstance(blur_sigma, int | float) and blur_sigma >= 0):
        raise PellucidError(f"blur_sigma must be a number >= 0, got {blur_sigma!r}")
    bad = [s for s in snapshots if isinstance(s, bool) or not isinstance(s, int) or not 1 <= s <= steps]
    if bad:
        raise PellucidError(f"snapshots must be steps in 1..{steps}, got {bad[0]!r}")


def visualize(model: nn.Module, objective, *, n: int | None = None, size: Sequence[int] | None = None,
              start: torch.Tensor | None = None, param: str = "pixel", transforms: Transform | None = None,
              steps: int = 100, lr: float | None = None, optimizer: str | None = None, blur_every: int = 0,
              blur_sigma: float = 0.5, snapshots: Sequence[int] = (), track: dict | None = None, seed: int = 0,
              batch_size: int | None = None, progress: bool | None = None,
              callback: Callable[[int, torch.Tensor], None] | None = None) -> Visualization:
    """Maximize ``objective`` over images by gradient ascent; the loop every visualization uses.

    Each step draws the ``transforms`` (one random draw per step for the whole batch, from a
    ``torch.Generator`` seeded with ``seed``), takes the input gradient of the objective with the one
    gradient primitive, carries it back through the transforms and the parameterization, and steps:
    ``optimizer="normalized"`` is the course's ``x += lr * g / ||g||`` per image (default for
    ``param="pixel"``, lr 25), ``"adam"`` is Lucent's Adam (default for ``"fourier"``, lr 0.05). Pixel
    images are clamped to [0, 1]; every ``blur_every`` steps they are blurred by ``blur_sigma``.

    ``objective``: an :class:`Objective`, a class index (or one per image), or ``logits -> (N,)``.
    ``n`` images of ``size`` (default: ``model.input_size``) start from seeded noise, or from ``start``.
    ``callback(step, images)`` is called at every snapshot step, while the loop runs (for streaming).
    Example::

        v = pl.visualize(model, channel("conv2", 5) - 1e-3 * total_variation(), n=1, transforms=roll(2))
    """
    if not isinstance(model, nn.Module):
        raise PellucidError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    objective = as_objective(objective)
    optimizer = optimizer or ("normalized" if param == "pixel" else "adam")
    check_choice(optimizer, "optimizer", OPTIMIZERS)
    lr = lr if lr is not None else (25.0 if optimizer == "normalized" else 0.05)
    _check_args(steps, lr, blur_every, blur_sigma, snapshots)
    if n is None:
        n = len(start) if start is not None else 1
    n = check_positive_int(n, "n")
    if start is not None and len(start) != n:
        raise PellucidError(f"start has {len(start)} images but n={n}")
    gen = torch.Generator().manual_seed(seed)
    p = make_param(param, start, n, size, model, gen, start.device if start is not None else _model_device(model))
    bind = objective.bind(model, n)
    trackers = {k: as_objective(v).bind(model, n) for k, v in (track or {}).items()}
    keys = list(dict.fromkeys(objective.layers + sum((as_objective(v).layers for v in (track or {}).values()), ())))
    modules = {k: find_layer(model, k) for k in keys}  # unknown names fail here, with close matches
    with model_state(model) as state:
        return _optimize(model, state, p, _Scorer(bind, trackers, {k: state.capture(m) for k, m in modules.items()},
                                                  _capture_input(state, model)),
                         transforms, steps, lr, optimizer, blur_every, blur_sigma, set(snapshots), gen,
                         batch_size, progress, callback)


def _capture_input(state, model) -> dict:
    inputs: dict = {}

    def hook(_m, args):
        inputs["x"] = args[0]

    state.forward_pre_hook(model, hook)
    return inputs


def _optimize(model, state, p, scorer, transforms, steps, lr, optimizer, blur_every, blur_sigma, snapshots, gen,
              batch_size, progress, callback) -> Visualization:
    from tqdm import tqdm

    n = len(p.image())
    bs = resolve_batch_size(batch_size, p.image())
    one = n <= bs
    opt = _Adam(p.tensor, lr) if optimizer == "adam" else None
    std = _norm_stats(model, p.tensor.shape[1])[1] if isinstance(p, PixelParam) else None
    std = std.to(p.tensor.device, p.tensor.dtype) if std is not None else None
    std = float(std.flatten()[0]) if std is not None and bool((std == std.flatten()[0]).all()) else std
    history: dict[str, list] = {k: [] for k in ("objective", *scorer.trackers)}
    shots: dict[int, torch.Tensor] = {}
    for step in tqdm(range(1, steps + 1), desc="visualizing", disable=None if progress is None else not progress,
                     leave=False, mininterval=0.5):
        scorer.reset()
        with torch.enable_grad():
            img = p.image()
            seen = _fit(transforms(img, gen), img.shape[-2:]) if transforms is not None else img
            # one chunk: one backward pass from the objective to the parameterization; more chunks
            # take input gradients chunk by chunk, then one pass back through transforms and param
            parts = list(iter_gradients(model, seen, n, Target(None, scorer), bs, wrt=p.tensor if one else None))
            g = _cat([grad for _, grad, _ in parts])
            history["objective"].append(_cat([score for _, _, score in parts]))
            if not one and seen is not p.tensor:
                (g,) = torch.autograd.grad(seen, p.tensor, grad_outputs=g)
        _step(p, g, lr, opt, std)
        if blur_every and (step - 1) % blur_every == 0 and isinstance(p, PixelParam):
            with torch.no_grad():
                p.tensor.copy_(gaussian_blur(p.tensor, blur_sigma))
        for k, parts in scorer.records.items():
            history[k].append(_cat(parts))
        if step in snapshots:
            shots[step] = p.image().detach().clone()
            if callback is not None:
                callback(step, shots[step])
    with torch.no_grad():
        image = p.image().detach().clone()
    return Visualization(image, shots, {k: torch.stack(v) for k, v in history.items()})


class _Adam:
    """``torch.optim.Adam`` (defaults) ascending one tensor: PyTorch's fused kernel where it has one.

    The same update as ``torch.optim.Adam`` on ``-g``, without the optimizer's per-step bookkeeping,
    which costs as much as the model's forward pass on a small image. ``torch._fused_adam_`` (the
    kernel behind ``Adam(fused=True)``) does the step in one pass; without it, six tensor ops.
    """

    def __init__(self, tensor: torch.Tensor, lr: float, betas=(0.9, 0.999), eps: float = 1e-8,
                 fused: bool | None = None):
        self.tensor, self.lr, self.betas, self.eps, self.t = tensor, lr, betas, eps, 0
        self.m, self.v = torch.zeros_like(tensor), torch.zeros_like(tensor)
        if fused is None:
            fused = hasattr(torch, "_fused_adam_") and tensor.device.type in ("cpu", "cuda") and \
                tensor.dtype in (torch.float32, torch.float64) and tensor.is_contiguous()
        self.fused = fused
        self._steps = [torch.zeros((), dtype=torch.float32, device=tensor.device)] if fused else []

    @torch.no_grad()
    def step(self, g: torch.Tensor) -> None:
        (b1, b2), self.t = self.betas, self.t + 1
        if self.fused:
            self._steps[0].fill_(self.t)
            torch._fused_adam_([self.tensor], [g.contiguous()], [self.m], [self.v], [], self._steps, lr=self.lr,
                               beta1=b1, beta2=b2, weight_decay=0.0, eps=self.eps, amsgrad=False, maximize=True)
            return
        root = math.sqrt(1 - b2**self.t)  # bias corrections folded into two scalars
        self.m.lerp_(g, 1 - b1)
        self.v.mul_(b2).addcmul_(g, g, value=1 - b2)
        denom = self.v.sqrt().add_(self.eps * root)
        self.tensor.addcdiv_(self.m, denom, value=self.lr * root / (1 - b1**self.t))


COURSE_SIZE = 3 * 224 * 224  # the course's image: its step lr * g / ||g|| moves lr / 388 RMS per value


def _step(p, g: torch.Tensor, lr: float, opt, std: torch.Tensor | float | None) -> None:
    """Ascend: Adam on ``-g``, or the course's normalized step; then project (clamp pixels).

    The course steps ``lr * g / ||g||`` on a 3x224x224 image in the model's normalized space. Here the
    step is taken in that space too (``std`` converts) and scaled by ``sqrt(values / 150528)``, so that
    every pixel moves as far as in the course at any image size (the course's step exactly at 224²).
    """
    with torch.no_grad():
        if opt is not None:
            opt.step(g)
        else:
            size = lr * math.sqrt(g[0].numel() / COURSE_SIZE)
            if isinstance(std, float):  # one std for every channel: the normalized step is a scaled pixel step
                size, std = size * std, None
            gn = g if std is None else g * std  # d objective / d normalized input
            norm = torch.linalg.vector_norm(gn.flatten(1), dim=1, keepdim=True).clamp_min_(1e-12)
            # x += size * gn / ||gn|| * std, one fused op per image row
            p.tensor.view(len(g), -1).addcdiv_((gn if std is None else gn * std).flatten(1), norm, value=size)
        p.project()


# ---------------------------------------------------------------------------------------------
# the course's visualizations, built on the loop

_l2, _channel = l2, channel


def _default_snapshots(steps: int) -> tuple[int, ...]:
    """Step 1 and the quarters, as the course reports show them: 1, 25, 50, 75, 100 for 100 steps."""
    return tuple(sorted({1, *(max(1, steps * q // 4) for q in (1, 2, 3, 4))}))


def class_visualization(model: nn.Module, target, steps: int = 100, lr: float | None = 25, l2: float = 1e-3,
                        jitter: int = 16, blur_every: int = 10, blur_sigma: float = 0.5, seed: int = 0, *,
                        param: str = "pixel", snapshots: Sequence[int] | None = None,
                        size: Sequence[int] | None = None, batch_size: int | None = None,
                        progress: bool | None = None, callback: Callable | None = None) -> Visualization:
    """Class visualization (Simonyan et al. 2014, Yosinski et al. 2015), as in the CS231n exercise.

    From seeded noise, each step rolls the image by up to ``jitter`` pixels (given, like ``lr``, for
    the course's 224² images and scaled with the image side: 2 px at 28²), ascends
    ``logit[target] - l2 * ||I||²`` with the course's normalized step of size ``lr``, rolls back,
    clamps to [0, 1], and every ``blur_every`` steps blurs by ``blur_sigma``. ``target``: an int or
    one class per image (a batch). ``param="fourier"`` optimizes Lucid's decorrelated spectrum with
    Adam instead (``lr`` then defaults to 0.05; no periodic blur), which reads better on large models.

    Returns a :class:`Visualization`: ``.image`` ``(N, C, H, W)``, ``.snapshots`` (default steps 1 and
    the quarters) and ``.probability`` ``(steps, N)``, the target's softmax per step. Example::

        v = pl.class_visualization(pl.load_model("digits"), target=range(10))
    """
    if isinstance(target, range):
        target = list(target)
    n = len(target) if isinstance(target, Sequence | torch.Tensor) and not isinstance(target, str) else 1
    t = as_target(target, n, num_classes(model))  # range checks before any work
    check_positive_int(jitter, "jitter", minimum=0)
    side = (size or getattr(model, "input_size", None) or (0, 224, 224))[-1]
    jitter = max(1, round(jitter * side / 224)) if jitter else 0  # the course's 16 px at 224; 2 px at 28
    if param != "pixel" and lr == 25:
        lr = None
    objective = class_logit(t) - l2 * _l2() if l2 else class_logit(t)
    track = {} if t.classes is None else {"probability": class_logit(Target(t.classes, None, "softmax"))}
    return visualize(model, objective, n=n, size=size, param=param, transforms=roll(jitter) if jitter else None,
                     steps=steps, lr=lr, blur_every=blur_every if param == "pixel" else 0, blur_sigma=blur_sigma,
                     snapshots=_default_snapshots(steps) if snapshots is None else snapshots,
                     track=track, seed=seed, batch_size=batch_size, progress=progress, callback=callback)


def channel_visualization(model: nn.Module, layer: str | nn.Module, channel, steps: int = 100, seed: int = 0,
                          start: torch.Tensor | None = None, *, lr: float | None = None, jitter: int = 2,
                          blur_every: int = 0, blur_sigma: float = 0.5, param: str = "pixel",
                          transforms: Transform | None = None, snapshots: Sequence[int] = (),
                          batch_size: int | None = None, progress: bool | None = None,
                          callback: Callable | None = None) -> Visualization:
    """Filter visualization: maximize the mean activation of ``channel`` of ``layer`` (a forward hook).

    ``channel`` is an int, or one per image (a batch, e.g. ``range(16)`` for every filter of a
    layer). Starts from seeded noise, or from ``start`` images (the homework's variant); steps as
    :func:`visualize` (default transforms: a roll of up to ``jitter`` pixels). ``.activation`` holds
    the channel's mean activation per step, ``(steps, N)``. Show it beside :func:`activations`. Example::

        v = pl.channel_visualization(model, "conv2", channel=range(32))
    """
    find_layer(model, layer)
    chans = list(channel) if isinstance(channel, Sequence | range | torch.Tensor) else channel
    n = len(start) if start is not None else (len(chans) if isinstance(chans, list) else 1)
    objective = _channel(layer, chans)
    if transforms is None and jitter:
        transforms = roll(check_positive_int(jitter, "jitter", minimum=0))
    v = visualize(model, objective, n=n, start=start, param=param, transforms=transforms, steps=steps, lr=lr,
                  blur_every=blur_every, blur_sigma=blur_sigma, snapshots=snapshots, seed=seed,
                  batch_size=batch_size, progress=progress, callback=callback)
    v.history["activation"] = v.history["objective"]  # the objective is the channel's mean activation
    return v


def activations(model: nn.Module, x: torch.Tensor, layer: str | nn.Module, *,
                batch_size: int | None = None) -> torch.Tensor:
    """The output of ``layer`` for images ``x``, e.g. ``(N, C, H, W)`` for a conv layer.

    The layer is read by a forward hook that is removed on return. Example:
    ``maps = pl.activations(model, x, "conv2")[:, 5]`` is filter 5's activation map per image.
    """
    x = check_images(x, model)
    module = find_layer(model, layer)
    outs = []
    with model_state(model) as state:
        store = state.capture(module)
        for _rows, _ in iter_logits(model, x, len(x), resolve_batch_size(batch_size, x)):
            out = store.get("output")
            if not isinstance(out, torch.Tensor):
                raise PellucidError(f"layer {layer!r} outputs a {type(out).__name__}, not a tensor")
            outs.append(out.detach().contiguous())  # a channels-last layer hands back the usual layout
    return torch.cat(outs)


def _shape_recorder(shapes: dict, name: str) -> Callable:
    def hook(_m, _inputs, out) -> None:
        shapes.setdefault(name, tuple(out.shape[1:]) if isinstance(out, torch.Tensor) else None)

    return hook


def layer_names(model: nn.Module, size: Sequence[int] | None = None) -> list[tuple[str, str, tuple | None]]:
    """``(name, type, output shape)`` of every layer ``layer=`` accepts, from one forward of a blank image.

    The shape is ``None`` for layers the forward does not reach or that output a non-tensor.
    """
    size = size or getattr(model, "input_size", None)
    layers = named_layers(model)
    shapes: dict[str, tuple] = {}
    if size is not None:
        with model_state(model) as state:
            for name, m in layers.items():
                state.forward_hook(m, _shape_recorder(shapes, name))
            with torch.no_grad():
                model(torch.full((1, *size), 0.5, device=_model_device(model)))
    return [(name, type(m).__name__, shapes.get(name)) for name, m in layers.items()]


def filter_layer(model: nn.Module) -> str:
    """The conv layer whose filters the report shows: the second ``Conv2d`` (the first if only one)."""
    convs = [name for name, m in named_layers(model).items() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise PellucidError("the model has no Conv2d layer; pass layer='name' explicitly")
    return convs[min(1, len(convs) - 1)]


def filter_maps(model: nn.Module, layer: str | nn.Module, channels: Sequence[int], x: torch.Tensor) -> torch.Tensor:
    """Activation maps ``(K, N, h, w)`` of ``channels`` of a conv ``layer`` on images ``x``."""
    acts = activations(model, x, layer)
    if acts.dim() != 4:
        raise PellucidError(f"layer {layer!r} outputs shape {tuple(acts.shape)}; activation maps need (N, C, H, W)")
    bad = [c for c in channels if not 0 <= c < acts.shape[1]]
    if bad:
        raise PellucidError(f"channel {bad[0]} is out of range: layer {layer!r} has channels 0..{acts.shape[1] - 1}")
    return acts[:, list(channels)].transpose(0, 1)


LEARNED_STEPS = 100  # the report's optimization steps (tests lower it)


def learned_figures(model: nn.Module, x: torch.Tensor, predicted: torch.Tensor, seed: int = 0,
                    channels: int = 8, images: int = 4) -> tuple[bytes, bytes, str]:
    """The report's "What has it learned" pictures: class visualizations and one conv layer's filters.

    Every class of a model with at most 10 classes (all of ``digits``), else the predicted classes (up to
    4, with the Fourier parameterization). Returns ``(classes PNG, filters PNG, layer name)``.
    """
    from . import render

    k = num_classes(model)
    classes = list(range(k)) if k is not None and k <= 10 else list(dict.fromkeys(predicted.tolist()))[:4]
    param = "pixel" if k is not None and k <= 10 else "fourier"
    v = class_visualization(model, classes, steps=LEARNED_STEPS, seed=seed, param=param)
    with torch.no_grad(), model_state(model):
        probs = model(v.image).softmax(1)[range(len(classes)), classes]
    label = getattr(model, "label", str)
    titles = [f"{label(c)} ({100 * float(p):.0f}%)" for c, p in zip(classes, probs)]
    layer = filter_layer(model)
    chans = list(range(min(channels, find_layer(model, layer).out_channels)))
    shown = x[:images]
    f = channel_visualization(model, layer, chans, steps=LEARNED_STEPS, seed=seed)
    filters = render.filter_grid(f.image, filter_maps(model, layer, chans, shown), shown, chans)
    return render.image_grid(v.image, titles), filters, layer
