"""The one optimization loop, :func:`visualize`, and the course's visualizations built on it.

Gradients come from the one primitive (:func:`pellucid._grad.iter_gradients`): straight to the
parameterization when the batch is one chunk, else on the model input chunk by chunk and carried back
by one vector-Jacobian product; parameters stay frozen and every hook is removed by
:func:`pellucid._state.model_state`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .._args import num_classes
from .._blur import gaussian_blur
from .._checks import PellucidError, check_choice, check_number, check_positive_int, checked_keywords, generator
from .._grad import _cat, iter_gradients, resolve_batch_size
from .._progress import bar
from .._state import model_state
from ..models.layers import find_layer
from ..targets import Target, as_target
from .objectives import Capture, as_objective, class_logit
from .objectives import channel as _channel
from .objectives import l2 as _l2
from .optim import _Adam, _step
from .params import PixelParam, _model_device, _norm_stats, make_param
from .transforms import Transform, roll

OPTIMIZERS = ("normalized", "adam")


@dataclass
class Visualization:
    """The result of :func:`visualize`.

    ``image`` ``(N, C, H, W)`` in [0, 1]; ``snapshots`` step -> images after that step (1-based);
    ``history`` name -> ``(steps, N)`` values per step (``"objective"`` and any tracked quantity,
    e.g. ``"probability"``, ``"activation"``), measured on the transformed images the model saw; ``labels``
    what each image is of (the class names of :func:`class_visualization`, the channels of
    :func:`channel_visualization`), for its picture.
    """

    image: torch.Tensor
    snapshots: dict[int, torch.Tensor] = field(default_factory=dict)
    history: dict[str, torch.Tensor] = field(default_factory=dict)
    labels: list[str] = field(default_factory=list)

    @property
    def objective(self) -> torch.Tensor:
        return self.history["objective"]

    @property
    def probability(self) -> torch.Tensor | None:
        return self.history.get("probability")

    @property
    def activation(self) -> torch.Tensor | None:
        return self.history.get("activation")

    def _repr_png_(self) -> bytes:
        from ..drawing import display

        return display.visualization(self)


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
    if lr is not None:
        check_number(lr, "lr", 0, low_open=True, hint=" (the step size)")
    check_number(blur_sigma, "blur_sigma", 0)
    bad = [s for s in snapshots if isinstance(s, bool) or not isinstance(s, int) or not 1 <= s <= steps]
    if bad:
        raise PellucidError(f"snapshots must be steps in 1..{steps}, got {bad[0]!r}")


@checked_keywords
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
    gen = generator(seed, "cpu")
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
    n = len(p.image())
    bs = resolve_batch_size(batch_size, p.image(), model)
    one = n <= bs
    opt = _Adam(p.tensor, lr) if optimizer == "adam" else None
    std = _norm_stats(model, p.tensor.shape[1])[1] if isinstance(p, PixelParam) else None
    std = std.to(p.tensor.device, p.tensor.dtype) if std is not None else None
    std = float(std.flatten()[0]) if std is not None and bool((std == std.flatten()[0]).all()) else std
    history: dict[str, list] = {k: [] for k in ("objective", *scorer.trackers)}
    shots: dict[int, torch.Tensor] = {}
    for step in bar(iterable=range(1, steps + 1), desc="visualizing", progress=progress):
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


# ---------------------------------------------------------------------------------------------
# the course's visualizations, built on the loop

def _default_snapshots(steps: int) -> tuple[int, ...]:
    """Step 1 and the quarters, as the course reports show them: 1, 25, 50, 75, 100 for 100 steps."""
    return tuple(sorted({1, *(max(1, steps * q // 4) for q in (1, 2, 3, 4))}))


@checked_keywords
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
    l2 = check_number(l2, "l2", 0, hint=" (the weight of the image's squared L2 norm)")
    side = (size or getattr(model, "input_size", None) or (0, 224, 224))[-1]
    jitter = max(1, round(jitter * side / 224)) if jitter else 0  # the course's 16 px at 224; 2 px at 28
    if param != "pixel" and lr == 25:
        lr = None
    objective = class_logit(t) - l2 * _l2() if l2 else class_logit(t)
    track = {} if t.classes is None else {"probability": class_logit(Target(t.classes, None, "softmax"))}
    v = visualize(model, objective, n=n, size=size, param=param, transforms=roll(jitter) if jitter else None,
                  steps=steps, lr=lr, blur_every=blur_every if param == "pixel" else 0, blur_sigma=blur_sigma,
                  snapshots=_default_snapshots(steps) if snapshots is None else snapshots,
                  track=track, seed=seed, batch_size=batch_size, progress=progress, callback=callback)
    if t.classes is not None:
        v.labels = [getattr(model, "label", str)(int(c)) for c in t.classes.expand(n)]
    return v


@checked_keywords
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
    v.labels = [f"channel {int(c)}" for c in (chans if isinstance(chans, list) else [chans] * n)]
    return v
