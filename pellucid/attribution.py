"""Where does the model look: attribution maps, every one a few lines over the gradient primitive.

Many-pass methods (IG steps, SmoothGrad samples, occlusion windows, LIME samples) describe their
rows with a row-maker and let ``_grad.iter_gradients`` / ``iter_logits`` run them ``batch_size`` rows
at a time, so memory depends on ``batch_size`` only. :data:`METHODS` maps the short names used by the
command line and the report to ``(model, x, target, **kw) -> (N, H, W)`` maps.
"""

from __future__ import annotations

import hashlib
import inspect
import math
from collections import OrderedDict
from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ._checks import PellucidError, check_choice, check_positive_int
from ._grad import input_gradient, iter_gradients, iter_logits, lime_kernel, prepare, quadrature, weighted_ridge
from ._state import model_state
from .targets import Target

LOSSES = {"logit": "logit", "cross_entropy": "log_softmax"}


def gradient(model: nn.Module, x: torch.Tensor, target, *, score: str = "logit",
             batch_size: int | None = None) -> torch.Tensor:
    """d score / d x for every image, ``(N, C, H, W)``.

    ``score`` is ``"logit"`` (default, as in the papers), ``"log_softmax"`` (minus the
    cross-entropy loss) or ``"softmax"``. Example: ``g = pl.gradient(model, x, target=3)``.
    """
    x, t, bs = prepare(model, x, target, batch_size, score)
    with model_state(model):
        return input_gradient(model, x, t, bs)[0]


def input_x_gradient(model: nn.Module, x: torch.Tensor, target, *, score: str = "logit",
                     batch_size: int | None = None) -> torch.Tensor:
    """Gradient times input (Shrikumar et al. 2016), ``(N, C, H, W)``."""
    return x.detach() * gradient(model, x, target, score=score, batch_size=batch_size)


def normalize_per_image(maps: torch.Tensor) -> torch.Tensor:
    """Min-max scale each map of a batch to [0, 1] (a constant map becomes 0)."""
    flat = maps.flatten(1)
    lo, hi = flat.min(1).values, flat.max(1).values
    span = (hi - lo).clamp_min(torch.finfo(maps.dtype).tiny)
    shape = (-1,) + (1,) * (maps.dim() - 1)
    return (maps - lo.reshape(shape)) / span.reshape(shape)


def saliency(model: nn.Module, x: torch.Tensor, target, *, loss: str = "logit", normalize: bool = False,
             batch_size: int | None = None) -> torch.Tensor:
    """Vanilla-gradient saliency (Simonyan et al. 2014): max over channels of |d score / d x|.

    Shape: ``(N, H, W)``. ``loss="cross_entropy", normalize=True`` gives the NTU homework variant:
    the gradient of the cross-entropy loss, min-max normalized per image.
    """
    check_choice(loss, "loss", LOSSES)
    maps = gradient(model, x, target, score=LOSSES[loss], batch_size=batch_size).abs().amax(1)
    return normalize_per_image(maps) if normalize else maps


# ---------------------------------------------------------------------------------------------
# modality-agnostic pieces: path integrals and perturbation fits (any input shape (N, ...))

def _row_index(rows: slice, per: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows ``r`` of a stacked batch where sample ``i = r // per`` is repeated ``per`` times."""
    idx = torch.arange(rows.start, rows.stop, device=device)
    return idx // per, idx % per


def path_integral(model: nn.Module, x: torch.Tensor, baseline: torch.Tensor, target: Target,
                  alphas: torch.Tensor, weights: torch.Tensor, batch_size: int) -> torch.Tensor:
    """``sum_k w_k * d score / d input`` at ``baseline + a_k (x - baseline)``, shaped like ``x``.

    The path points are built chunk by chunk (memory ~ ``batch_size`` rows, not ``steps``). Works for
    any input ``(N, ...)`` (pixels, embeddings). Run inside ``model_state``; ``target`` is for ``x``.
    """
    steps, shape = len(alphas), (-1,) + (1,) * (x.dim() - 1)
    alphas, weights = alphas.to(x), weights.to(x)
    delta = x - baseline

    def make(rows):
        i, k = _row_index(rows, steps, x.device)
        return baseline[i] + alphas[k].reshape(shape) * delta[i]

    total = torch.zeros_like(x)
    for rows, grad, _ in iter_gradients(model, make, len(x) * steps, target.repeat_interleave(steps), batch_size):
        i, k = _row_index(rows, steps, x.device)
        total.index_add_(0, i, grad * weights[k].reshape(shape))
    return total


def perturbation_scores(model: nn.Module, make_rows, total: int, target: Target, batch_size: int) -> torch.Tensor:
    """Scores ``(total,)`` of perturbed inputs built chunk by chunk by ``make_rows(slice)``.

    ``target`` must already be laid out per row (e.g. ``target.repeat_interleave(samples)``).
    """
    out = [target(logits, rows) for rows, logits in iter_logits(model, make_rows, total, batch_size)]
    return torch.cat(out)


def random_masks(samples: int, features: int, generator: torch.Generator, device=None) -> torch.Tensor:
    """LIME's perturbations: ``(samples, features)`` random 0/1 (keep/remove); row 0 keeps everything."""
    z = torch.randint(0, 2, (samples, features), generator=generator, device=device).float()
    z[0] = 1
    return z


def fit_surrogate(z: torch.Tensor, scores: torch.Tensor, kernel_width: float = 0.25,
                  alpha: float = 1.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """LIME's local linear model: ridge of ``scores`` on masks ``z`` weighted by the cosine kernel.

    Returns ``(weights (F,), intercept, R^2)`` as lime_base does (Ridge ``alpha=1``, kernel width 0.25).
    """
    return weighted_ridge(z, scores, lime_kernel(z, kernel_width), alpha)


# ---------------------------------------------------------------------------------------------
# SmoothGrad and Integrated Gradients

def _accepts(fn: Callable, name: str) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def smoothgrad(model: nn.Module, x: torch.Tensor, target, samples: int = 50, sigma: float = 0.15,
               method: Callable = gradient, seed: int = 0, *, batch_size: int | None = None,
               **kwargs) -> torch.Tensor:
    """SmoothGrad (Smilkov et al. 2017): the mean of ``method`` over noisy copies of ``x``.

    Noise is Gaussian with std ``sigma`` times the input range (1 for pixel space [0, 1]); noisy
    images are clipped to [0, 1]. ``method(model, x_noisy, target, **kwargs)`` is any attribution,
    e.g. ``pl.integrated_gradients``. Noise samples are stacked on the batch axis and the noise comes
    from ``seed`` only. Shape: that of ``method``'s output. Example::

        sg = pl.smoothgrad(model, x, 3, samples=50, sigma=0.15, method=pl.integrated_gradients, steps=20)
    """
    x, t, bs = prepare(model, x, target, batch_size)
    check_positive_int(samples, "samples")
    if isinstance(sigma, bool) or not isinstance(sigma, int | float) or not sigma >= 0:
        raise PellucidError(f"sigma must be a number >= 0 (relative to the input range), got {sigma!r}")
    if not callable(method):
        raise PellucidError(f"method must be a function (model, x, target, **kw), got {type(method).__name__}")
    if _accepts(method, "batch_size"):
        kwargs["batch_size"] = bs
    gen = torch.Generator(device=x.device).manual_seed(seed)
    group = max(1, min(samples, bs // len(x)))  # noise samples per call of method
    total, done = None, 0
    while done < samples:
        k = min(group, samples - done)
        xs = x.repeat(k, *([1] * (x.dim() - 1)))
        noise = torch.randn(xs.shape, generator=gen, device=x.device, dtype=x.dtype)
        out = method(model, (xs + sigma * noise).clamp(0, 1), t.repeat(k), **kwargs)
        out = out.reshape(k, len(x), *out.shape[1:]).sum(0)
        total = out if total is None else total + out
        done += k
    return total / samples


def blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur of an image batch (separable, edge-replicated): the "blur" IG baseline."""
    from .data import gaussian_filter

    return gaussian_filter(x, sigma, max(1, int(3 * sigma)), mode="replicate")


def make_baseline(baseline, x: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """The IG reference image for each row of ``x``: a number, a tensor, ``"blur"`` or ``"noise"``.

    A tensor broadcasts to ``x``; one whose batch divides ``x``'s is repeated (as under SmoothGrad).
    ``"blur"`` is ``x`` blurred with sigma = max(H, W) / 8; ``"noise"`` is uniform noise from ``seed``.
    """
    if isinstance(baseline, str):
        check_choice(baseline, "baseline", ("blur", "noise"))
        if baseline == "blur":
            return blur(x, max(x.shape[-2:]) / 8)
        gen = torch.Generator(device=x.device).manual_seed(seed)
        return torch.rand(x.shape, generator=gen, device=x.device, dtype=x.dtype)
    if isinstance(baseline, torch.Tensor) and baseline.dim() == x.dim():
        n = len(baseline)
        if n not in (1, len(x)) and len(x) % n == 0:
            baseline = baseline.repeat(len(x) // n, *([1] * (x.dim() - 1)))
    return _fill_like(baseline, x, "baseline")


def integrated_gradients(model: nn.Module, x: torch.Tensor, target, baseline=0.0, steps: int = 50, *,
                         rule: str = "gausslegendre", return_error: bool = False, score: str = "logit",
                         batch_size: int | None = None, seed: int = 0):
    """Integrated Gradients (Sundararajan et al. 2017): ``(x - b) * mean gradient on the path b -> x``.

    The path integral uses ``rule`` (Gauss-Legendre by default, as Captum: completeness error well
    under 1% at 50-128 steps). Shape: ``(N, C, H, W)``. With ``return_error=True`` also returns the
    per-sample relative completeness error ``|sum(attr) - (f(x) - f(b))| / |f(x) - f(b)|``.
    Example: ``attr, err = pl.integrated_gradients(model, x, 3, baseline="blur", return_error=True)``.
    """
    x, t, bs = prepare(model, x, target, batch_size, score)
    b = make_baseline(baseline, x, seed)
    alphas, weights = quadrature(steps, rule, device=x.device)
    with model_state(model):
        attr = (x - b) * path_integral(model, x, b, t, alphas, weights, bs)
        if not return_error:
            return attr
        ends = torch.cat([x, b])
        f = perturbation_scores(model, ends, 2 * len(x), t.repeat(2), bs)
    delta = f[: len(x)] - f[len(x):]
    err = (attr.flatten(1).sum(1) - delta).abs() / delta.abs().clamp_min(1e-6)
    return attr, err


# ---------------------------------------------------------------------------------------------
# Grad-CAM and guided backpropagation

def grad_cam(model: nn.Module, x: torch.Tensor, target, layer: str | nn.Module | None = None, *,
             relu: bool = True, score: str = "logit", batch_size: int | None = None) -> torch.Tensor:
    """Grad-CAM (Selvaraju et al. 2017): channel-weighted activations of a conv layer.

    Channel weights are the spatial mean of d score / d activation; the map is ReLU'd and upsampled
    bilinearly to the input size. ``layer=None`` picks the last ``Conv2d``; names are those of
    ``pellucid layers`` (``"layer4"``, ``"features.12"``). Shape: ``(N, H, W)``.
    Example: ``cam = pl.grad_cam(model, x, target=281, layer="layer4")``.
    """
    from .models import find_layer, last_conv_layer

    x, t, bs = prepare(model, x, target, batch_size, score)
    module = find_layer(model, last_conv_layer(model) if layer is None else layer)
    cams = []
    with model_state(model) as state:
        store = state.capture(module)
        for _, grad, _ in iter_gradients(model, x, len(x), t, bs, wrt=store):
            act = store["output"]
            cams.append((grad.mean((2, 3), keepdim=True) * act.detach()).sum(1, keepdim=True))
    cam = torch.cat(cams)
    if relu:
        cam = cam.clamp_min(0)
    return F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]


class _GuidedReLU(torch.autograd.Function):
    """Identity forward on a ReLU's output; backward lets only positive gradients through."""

    @staticmethod
    def forward(ctx, out):
        ctx.save_for_backward(out)
        return out.clone()

    @staticmethod
    def backward(ctx, grad):
        (out,) = ctx.saved_tensors
        return grad.clamp_min(0) * (out > 0)


def guided_backprop(model: nn.Module, x: torch.Tensor, target, *, score: str = "logit",
                    batch_size: int | None = None) -> torch.Tensor:
    """Guided backpropagation (Springenberg et al. 2015): only positive gradients pass ReLU modules.

    Shape: ``(N, C, H, W)``. ReLUs are found as ``nn.ReLU`` modules (functional relus are not guided).
    """
    x, t, bs = prepare(model, x, target, batch_size, score)
    with model_state(model) as state:
        for m in model.modules():
            if isinstance(m, nn.ReLU):
                state.forward_hook(m, lambda _m, _i, out: _GuidedReLU.apply(out))
        return input_gradient(model, x, t, bs)[0]


def guided_grad_cam(model: nn.Module, x: torch.Tensor, target, layer: str | nn.Module | None = None, *,
                    score: str = "logit", batch_size: int | None = None) -> torch.Tensor:
    """Guided Grad-CAM (Selvaraju et al. 2017): guided backprop times the upsampled Grad-CAM map.

    Shape: ``(N, C, H, W)``. Example: ``ggc = pl.guided_grad_cam(model, x, 3)``.
    """
    cam = grad_cam(model, x, target, layer, score=score, batch_size=batch_size)
    return guided_backprop(model, x, target, score=score, batch_size=batch_size) * cam[:, None]


# ---------------------------------------------------------------------------------------------
# occlusion and LIME: perturb, run the batch, compare scores

def _pair(value, name: str) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, int) else tuple(value) if isinstance(value, tuple | list) else ()
    if len(pair) != 2 or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in pair):
        raise PellucidError(f"{name} must be a positive int or a pair of them, got {value!r}")
    return pair


def _window_starts(size: int, window: int, stride: int) -> torch.Tensor:
    """Captum's window positions: ``k * stride`` for ``ceil((size - window) / stride) + 1`` windows."""
    return torch.arange(math.ceil((size - window) / stride) + 1) * stride


def _fill_like(fill, x: torch.Tensor, name: str = "fill") -> torch.Tensor:
    if isinstance(fill, int | float) and not isinstance(fill, bool):
        return torch.full_like(x, float(fill))
    if isinstance(fill, torch.Tensor):
        try:
            return fill.detach().to(x).expand_as(x)
        except RuntimeError:
            shape = tuple(fill.shape)
            raise PellucidError(f"{name} of shape {shape} does not broadcast to x {tuple(x.shape)}") from None
    extra = ", 'blur' or 'noise'" if name == "baseline" else ""
    raise PellucidError(f"{name} must be a number, a tensor broadcastable to x{extra}; got {fill!r}")


def occlusion(model: nn.Module, x: torch.Tensor, target, window=8, stride=4, fill=0.0, *,
              score: str = "logit", batch_size: int | None = None) -> torch.Tensor:
    """Occlusion (Zeiler & Fergus 2014): the drop of the score when a window is set to ``fill``.

    Each pixel gets the drop averaged over the windows covering it (Captum's ``Occlusion``). All
    windows of all images go through the model in chunks of ``batch_size``. Shape: ``(N, H, W)``.
    Example: ``occ = pl.occlusion(model, x, 3, window=4, stride=2)``.
    """
    x, t, bs = prepare(model, x, target, batch_size, score)
    (wh, ww), (sh, sw) = _pair(window, "window"), _pair(stride, "stride")
    h, w = x.shape[-2:]
    if wh > h or ww > w:
        raise PellucidError(f"window {(wh, ww)} is larger than the image {(h, w)}")
    fills = _fill_like(fill, x)
    # window k = (ky, kx) covers rows_in[ky] x cols_in[kx]: masks are separable
    rows_in = (torch.arange(h)[None] - _window_starts(h, wh, sh)[:, None]).clamp_min(-1)
    cols_in = (torch.arange(w)[None] - _window_starts(w, ww, sw)[:, None]).clamp_min(-1)
    rows_in = ((rows_in >= 0) & (rows_in < wh)).to(x)
    cols_in = ((cols_in >= 0) & (cols_in < ww)).to(x)
    ny, nx = len(rows_in), len(cols_in)

    def make(rows):
        i, k = _row_index(rows, ny * nx, x.device)
        inside = (rows_in[k // nx][:, :, None] * cols_in[k % nx][:, None, :]).bool()[:, None]
        return torch.where(inside, fills[i], x[i])

    with model_state(model):
        base = perturbation_scores(model, x, len(x), t, bs)
        scores = perturbation_scores(model, make, len(x) * ny * nx, t.repeat_interleave(ny * nx), bs)
    drop = (base[:, None] - scores.reshape(len(x), ny * nx)).reshape(len(x), ny, nx)
    total = torch.einsum("nab,ay,bx->nyx", drop, rows_in, cols_in)
    return total / (rows_in.sum(0)[:, None] * cols_in.sum(0)[None, :]).clamp_min(1)


_SEGMENT_CACHE: OrderedDict = OrderedDict()
_SEGMENT_CACHE_SIZE = 256


def slic_segments(x: torch.Tensor, segments: int = 100, compactness: float = 1.0, sigma: float = 1.0) -> torch.Tensor:
    """SLIC superpixels (Achanta et al. 2012) of each image, ``(N, H, W)`` labels from 0.

    Defaults are the course report's ``slic(img, n_segments=100, compactness=1, sigma=1)``. Results
    are cached per image content and parameters, so explaining the same image again skips SLIC.
    """
    from skimage.segmentation import slic

    check_positive_int(segments, "segments", 2)
    out = []
    for img in x.detach().float().cpu().numpy():
        key = (hashlib.blake2b(img.tobytes(), digest_size=16).hexdigest(), img.shape, segments, compactness, sigma)
        if key not in _SEGMENT_CACHE:
            arr = img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0)
            seg = slic(arr.astype("float64"), n_segments=segments, compactness=compactness, sigma=sigma,
                       start_label=0, channel_axis=None if img.shape[0] == 1 else -1)
            _SEGMENT_CACHE[key] = torch.from_numpy(seg.astype("int64"))
            if len(_SEGMENT_CACHE) > _SEGMENT_CACHE_SIZE:
                _SEGMENT_CACHE.popitem(last=False)
        _SEGMENT_CACHE.move_to_end(key)
        out.append(_SEGMENT_CACHE[key])
    return torch.stack(out).to(x.device)


def _check_segmentation(segmentation, x: torch.Tensor) -> torch.Tensor:
    seg = torch.as_tensor(segmentation)
    if seg.dim() == 2:
        seg = seg.expand(len(x), -1, -1)
    if seg.shape != (len(x), *x.shape[-2:]) or seg.is_floating_point():
        raise PellucidError(f"segmentation must be integer labels of shape (N, H, W) = {(len(x), *x.shape[-2:])} "
                            f"or (H, W), got {seg.dtype} {tuple(seg.shape)}")
    return seg.to(x.device)


class LimeResult(NamedTuple):
    """``map (N, H, W)``, ``segments (N, H, W)`` (labels 0..F-1), ``weights`` (list of ``(F,)`` per
    image), ``intercept (N,)`` and the weighted ``r2 (N,)`` of each surrogate fit."""

    map: torch.Tensor
    segments: torch.Tensor
    weights: list
    intercept: torch.Tensor
    r2: torch.Tensor


def _segment_fill(img: torch.Tensor, seg: torch.Tensor, nseg: int, fill) -> torch.Tensor:
    """The image a fully removed sample shows: ``fill`` (number / tensor) or each segment's mean colour."""
    if not (isinstance(fill, str) and fill == "mean"):
        return _fill_like(fill, img[None])[0]
    flat = seg.flatten()
    sums = torch.zeros(img.shape[0], nseg, dtype=img.dtype, device=img.device).index_add_(1, flat, img.flatten(1))
    counts = torch.bincount(flat, minlength=nseg).clamp_min(1).to(img)
    return (sums / counts)[:, seg]


def lime(model: nn.Module, x: torch.Tensor, target, samples: int = 1000, segments: int = 100, seed: int = 0, *,
         segmentation: torch.Tensor | None = None, fill=0.0, kernel_width: float = 0.25, alpha: float = 1.0,
         score: str = "logit", batch_size: int | None = None, return_details: bool = False):
    """LIME (Ribeiro et al. 2016) over superpixels: a weighted linear fit of the score on kept segments.

    Each sample keeps a random half of the SLIC segments (the rest set to ``fill``: a number, a tensor
    or ``"mean"``, lime's per-segment mean colour). Masks are built on the device, samples run in
    chunks of ``batch_size``, and the ridge fit (lime's cosine kernel, ``alpha=1``) is closed-form.
    Returns the ``(N, H, W)`` map of superpixel weights, or a :class:`LimeResult` with
    ``return_details=True``. Example: ``m = pl.lime(model, x, 3, samples=1000, seed=0)``.
    """
    x, t, bs = prepare(model, x, target, batch_size, score)
    check_positive_int(samples, "samples", 2)
    segs = slic_segments(x, segments) if segmentation is None else _check_segmentation(segmentation, x)
    gen = torch.Generator(device=x.device).manual_seed(seed)
    maps, weights, intercepts, r2s, labels = [], [], [], [], []
    with model_state(model):
        for i in range(len(x)):
            seg = torch.unique(segs[i], return_inverse=True)[1]
            nseg = int(seg.max()) + 1
            z = random_masks(samples, nseg, gen, x.device)
            img, removed = x[i], _segment_fill(x[i], seg, nseg, fill)
            make = lambda rows, z=z, seg=seg, img=img, removed=removed: torch.where(  # noqa: E731
                z[rows][:, seg][:, None].bool(), img, removed)
            y = perturbation_scores(model, make, samples, t.select([i]).repeat(samples), bs)
            coef, intercept, r2 = fit_surrogate(z, y, kernel_width, alpha)
            maps.append(coef[seg])
            weights.append(coef)
            intercepts.append(intercept)
            r2s.append(r2)
            labels.append(seg)
    result = LimeResult(torch.stack(maps), torch.stack(labels), weights, torch.stack(intercepts), torch.stack(r2s))
    return result if return_details else result.map


# ---------------------------------------------------------------------------------------------
# the registry: short name -> (model, x, target, **kw) -> (N, H, W)

def _channel_sum(method: Callable, doc: str) -> Callable:
    def reduced(model, x, target, **kw):
        return method(model, x, target, **kw).sum(1)

    reduced.__doc__ = doc
    return reduced


def _smoothgrad_map(model, x, target, **kw):
    """SmoothGrad of the gradient, reduced like saliency: max over channels of |mean gradient|."""
    return smoothgrad(model, x, target, **kw).abs().amax(1)


def _guided_grad_cam_map(model, x, target, **kw):
    """Guided Grad-CAM, max over channels of its absolute value."""
    return guided_grad_cam(model, x, target, **kw).abs().amax(1)


METHODS: dict[str, Callable[..., torch.Tensor]] = {
    "saliency": saliency,
    "input_x_gradient": _channel_sum(input_x_gradient, "Gradient x input, summed over channels (signed)."),
    "smoothgrad": _smoothgrad_map,
    "ig": _channel_sum(integrated_gradients, "Integrated Gradients summed over channels (signed; sums to "
                       "f(x) - f(baseline))."),
    "gradcam": grad_cam,
    "guided_gradcam": _guided_grad_cam_map,
    "occlusion": occlusion,
    "lime": lime,
}
"""Short name -> ``(model, x, target, **kw) -> (N, H, W)``. Channel reduction: saliency and
SmoothGrad take the max over channels of the absolute value; gradient x input and IG sum over
channels (signed, so IG keeps completeness); Grad-CAM, occlusion and LIME are single-channel already."""


def attribution_map(name: str, model: nn.Module, x: torch.Tensor, target, **kwargs) -> torch.Tensor:
    """The ``(N, H, W)`` map of the method called ``name`` in :data:`METHODS`.

    Example: ``pl.attribution_map("ig", model, x, 3, steps=32)``.
    """
    if name not in METHODS:
        raise PellucidError(f"unknown attribution method {name!r}; choose one of: {', '.join(METHODS)}")
    return METHODS[name](model, x, target, **kwargs)


GRID_METHODS = ("saliency", "smoothgrad", "ig", "gradcam", "occlusion", "lime")


def default_options(name: str, x: torch.Tensor, seed: int = 0, quick: bool = False) -> dict:
    """Keyword arguments that suit the image size: occlusion windows of ~1/7 of the side (4/2 on
    28x28, 32/16 on 224x224), seeds for random methods; ``quick`` cuts samples on large images."""
    side = max(x.shape[-2:])
    large = quick and side > 64
    if name == "occlusion":
        window = max(2, round(side / 7))
        return {"window": window, "stride": max(1, window // 2)}
    if name == "smoothgrad":
        return {"seed": seed, "samples": 16 if large else 50}
    if name == "ig":
        return {"steps": 32 if large else 50}
    if name == "lime":
        return {"seed": seed, "samples": 250 if large else 1000}
    return {}


def explain(model: nn.Module, x: torch.Tensor, target, methods=GRID_METHODS, *, seed: int = 0,
            batch_size: int | None = None, quick: bool = False, progress: bool = False) -> dict[str, torch.Tensor]:
    """``{name: (N, H, W) map}`` for each method name of :data:`METHODS` (the grid of ``pellucid explain``)."""
    import sys

    from tqdm import tqdm

    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise PellucidError(f"unknown attribution method {', '.join(map(repr, unknown)) or '(none)'}; "
                            f"choose from: {', '.join(METHODS)}")
    maps = {}
    bar = tqdm(methods, desc="explaining", disable=not progress, file=sys.stderr, leave=False)
    for name in bar:
        bar.set_postfix_str(name)
        maps[name] = attribution_map(name, model, x, target, batch_size=batch_size,
                                     **default_options(name, x, seed, quick))
    return maps
