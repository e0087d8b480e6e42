"""DeepLIFT with the Rescale rule (Shrikumar et al. 2017) and DeepLIFT-SHAP, exact where the maths is.

How it runs: the references go through the model first, forward only, and forward hooks record the input
and output of every non-linear module (activations and max-pools) in call order. Then the images go through
the one gradient primitive with hooks that swap each such module's output for an autograd node of the same
value whose backward multiplies by the DeepLIFT multiplier instead of the local derivative:

- an element-wise activation (ReLU, LeakyReLU, ELU, Sigmoid, Tanh, Softplus, GELU, SiLU, ...) by
  ``(out - out_ref) / (in - in_ref)``, its derivative where ``in ≈ in_ref``;
- a max-pool by convex weights on the two arg-maxes of each window: with ``p`` the image's and ``q`` the
  reference's, ``out - out_ref`` always lies between ``in[p] - ref[p]`` and ``in[q] - ref[q]``, so
  ``lambda * Δin[p] + (1 - lambda) * Δin[q] = Δout`` has a solution in ``[0, 1]`` (overlapping windows
  accumulate, nothing is lost).

Every other module (convolution, linear, BatchNorm in eval mode, average pooling, additions) is linear, so
its gradient is its multiplier and ``sum(attributions) = f(x) - f(baseline)`` up to float rounding. A constant
reference is run once, not once per image: DeepLIFT costs about one gradient pass.
"""

from __future__ import annotations

import inspect
import re

import torch
import torch.nn.functional as F
from torch import nn

from .._args import prepare
from .._checks import PellucidError, checked_keywords, forwards, generator
from .._grad import iter_gradients, layout, row_index
from .._state import model_state
from ..registry import Method, register_method
from .gradients import make_baseline
from .rulemap import apply_rules

ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.RReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU,
               nn.Mish, nn.Sigmoid, nn.Tanh, nn.Softplus, nn.Softsign, nn.Hardtanh, nn.Hardsigmoid, nn.Hardswish,
               nn.LogSigmoid, nn.Tanhshrink, nn.Softshrink, nn.Hardshrink, nn.Threshold)
"""Element-wise non-linearities DeepLIFT rescales (as modules; functional calls are invisible to hooks)."""

MAX_POOLS = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d,
             nn.AdaptiveMaxPool3d)

LINEAR = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d, nn.Linear,
          nn.modules.batchnorm._BatchNorm, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout,
          nn.Identity, nn.Flatten, nn.Unflatten, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d, nn.AdaptiveAvgPool1d,
          nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d, nn.ZeroPad2d, nn.ConstantPad1d, nn.ConstantPad2d,
          nn.ConstantPad3d, nn.ReflectionPad1d, nn.ReflectionPad2d, nn.ReplicationPad1d, nn.ReplicationPad2d,
          nn.Upsample, nn.PixelShuffle, nn.PixelUnshuffle, nn.ChannelShuffle)
"""Modules that are affine in eval mode: their gradient is their DeepLIFT multiplier."""

_TOLERANCE = 1e-2  # relative completeness error above which the model hides a non-linearity
_FUNCTIONAL = re.compile(
    r"\b(?:F|functional|torch)\.(relu6?|leaky_relu|elu|selu|celu|gelu|silu|mish|sigmoid|tanh|softplus|hardswish|"
    r"hardsigmoid|hardtanh|(?:adaptive_)?max_pool\w*|softmax|log_softmax|max|amax|clamp\w*|minimum|maximum|where|abs)\b"
    r"|(?<!self)\.(relu|sigmoid|tanh|clamp\w*|max|amax|softmax|abs)\(")


def _pool_backward(inp: torch.Tensor, p: torch.Tensor, q: torch.Tensor, lam: torch.Tensor):
    """A max-pool's DeepLIFT backward: ``lambda`` of each window's gradient to the image's arg-max ``p``, ``1 - lambda``
    to the reference's arg-max ``q`` (indices flat per plane), in the input's memory format."""
    shape = inp.shape
    memory_format = layout(inp)

    def backward(grad):
        g = grad.flatten(2)
        # channels-last models stay channels-last; planes are views either way
        out = torch.empty(shape, dtype=g.dtype, device=g.device, memory_format=memory_format).zero_()
        out.view(*shape[:2], -1).scatter_add_(2, p, g * lam).scatter_add_(2, q, g * (1 - lam))
        return out

    return backward


def _pool_indices(module: nn.Module, inp: torch.Tensor) -> torch.Tensor:
    """The flat arg-max of every window of a max-pool module, per channel plane (for a pool whose own
    forward cannot hand them back)."""
    dims = inp.dim() - 2
    if isinstance(module, nn.modules.pooling._AdaptiveMaxPoolNd):
        fn = (F.adaptive_max_pool1d, F.adaptive_max_pool2d, F.adaptive_max_pool3d)[dims - 1]
        return fn(inp, module.output_size, return_indices=True)[1]
    fn = (F.max_pool1d, F.max_pool2d, F.max_pool3d)[dims - 1]
    return fn(inp, module.kernel_size, module.stride, module.padding, module.dilation, ceil_mode=module.ceil_mode,
              return_indices=True)[1]


def _can_hand_back_indices(module: nn.Module) -> bool:
    """Whether a max-pool may return its indices for the run: one of PyTorch's own (a subclass may ignore the
    flag), not returning them already, and no other forward hook to be surprised by a tuple."""
    return type(module) in MAX_POOLS and not module.return_indices and not module._forward_hooks and \
        not nn.modules.module._global_forward_hooks


def _derivative(module: nn.Module, inp: torch.Tensor) -> torch.Tensor:
    """The element-wise derivative of an activation module at ``inp`` (closed form for the ReLU family)."""
    if isinstance(module, nn.ReLU):
        return inp > 0
    if isinstance(module, nn.LeakyReLU):
        return torch.where(inp > 0, 1.0, module.negative_slope).to(inp)
    if isinstance(module, nn.Hardtanh):  # ReLU6 too
        return ((inp > module.min_val) & (inp < module.max_val)).to(inp)
    with torch.enable_grad():
        leaf = inp.detach().requires_grad_(True)
        out = module.forward(leaf.clone())  # a clone: in-place modules may write to it; no hooks run
        (grad,) = torch.autograd.grad(out, leaf, torch.ones_like(out))
    return grad


class _Hooks:
    """One DeepLIFT run: a forward hook per non-linear module records the references' values (``record``) and
    hands each image call its input and arg-maxes; the module's rule (:mod:`.rulemap`, this object's ``bind``)
    then rescales the gradient by the DeepLIFT multiplier."""

    def __init__(self, model: nn.Module, state):
        self.model = model
        self.records: list = []
        self.position = 0
        self.recording = False
        self.expand: torch.Tensor | None = None  # reference row of each image row (None: one reference)
        self._saved: dict = {}
        self.modules = [m for m in model.modules() if isinstance(m, ACTIVATIONS + MAX_POOLS)]
        # max-pools hand out the arg-maxes they find anyway (flat per plane), instead of a second pool for them
        self.forced = {m for m in self.modules if _can_hand_back_indices(m)}
        for m in self.modules:
            if m in self.forced:
                state.set_attr(m, "return_indices", True)
            state.forward_hook(m, self._see)
        apply_rules(state, {m: self for m in self.modules})  # in-place modules run out of place meanwhile

    def _ref(self, t: torch.Tensor, rows: int) -> torch.Tensor:
        return t.expand(rows, *t.shape[1:]) if self.expand is None else t[self.expand]

    def _see(self, module, inputs, out):
        """Record the references' values; for an image call, keep the arg-maxes a forced pool returned."""
        inp = inputs[0]
        tensor_out = out[0] if isinstance(out, tuple) else out
        indices = None
        if isinstance(module, MAX_POOLS):  # flat per plane; computed again only where the pool cannot say
            indices = out[1] if isinstance(out, tuple) else _pool_indices(module, inp)
        if self.recording:
            if isinstance(module, MAX_POOLS):  # flat per plane: the image pass gathers from them
                self.records.append((module, inp.flatten(2), tensor_out.flatten(2), indices.flatten(2)))
            else:
                self.records.append((module, inp, tensor_out, None))
        else:
            self._saved[module] = indices
        return tensor_out if module in self.forced else None

    def bind(self, module, inp, out):
        """The DeepLIFT backward of this image call of ``module``: the gradient times its multiplier."""
        if self.recording:
            return None
        indices = self._saved.pop(module, None)
        if self.position >= len(self.records) or self.records[self.position][0] is not module:
            raise PellucidError("DeepLIFT: the model called its modules in another order for the images than for the "
                                "references (data-dependent control flow); DeepLIFT needs one path through the model")
        _, rin, rout, ridx = self.records[self.position]
        self.position += 1
        n = len(inp)
        rin, rout = self._ref(rin, n), self._ref(rout, n)
        x_in, x_out = inp.detach(), out.detach()
        if isinstance(module, MAX_POOLS):
            # the image's window maxima sit at p, the reference's at q: gathers only, no full-size difference
            p = indices.flatten(2)
            q = self._ref(ridx, n)
            out_f = x_out.flatten(2)
            dp = out_f - rin.gather(2, p)  # x[p] - ref[p]
            dq = x_in.flatten(2).gather(2, q) - rout  # x[q] - ref[q]
            # out - out_ref lies between dq and dp: lam in [0, 1]; 0/0 (dp = dq) splits evenly
            lam = (out_f - rout - dq).div_(dp - dq).nan_to_num_(0.5).clamp_(0, 1)
            return _pool_backward(inp, p, q, lam)
        if type(module) is nn.ReLU:
            # the secant slope lies in [0, 1] exactly, rounding included (both positive: out - out_ref is the
            # same subtraction as in - in_ref; mixed: |in - in_ref| >= |out - out_ref| survives monotone
            # rounding), so no clamp; where in = in_ref exactly (0 / 0) the unit's difference is 0 and so is its
            # share of the total, whatever the multiplier: 0, in the fewest element-wise passes
            multiplier = (x_out - rout).div_(x_in - rin).nan_to_num_(0.0)
        else:
            # (out - out_ref) / (in - in_ref); the derivative where the difference vanishes (< 1e-6)
            d_in = x_in - rin
            small = d_in.abs() < 1e-6
            multiplier = (x_out - rout).div_(d_in.masked_fill_(small, 1.0))
            multiplier = torch.where(small, _derivative(module, x_in), multiplier)
        return multiplier.__mul__

    reads_output = False  # the rule reads the output's values in bind, during the forward pass

    def record(self, refs: torch.Tensor, expand: torch.Tensor | None) -> torch.Tensor:
        """Run the references forward (no graph), keep their activations; returns their logits."""
        self.records, self.position, self.recording = [], 0, True
        try:
            with torch.no_grad():
                logits = self.model(refs)
        finally:
            self.recording = False
        self.expand = expand
        return logits

    def rewind(self) -> None:
        self.position = 0


def _suspects(model: nn.Module) -> list[str]:
    """Modules that likely hide a non-linearity from DeepLIFT: non-linear modules it does not rescale,
    and modules whose ``forward`` calls a functional non-linearity."""
    found, seen = [], {}
    for name, m in model.named_modules():
        kind = type(m)
        if isinstance(m, ACTIVATIONS + MAX_POOLS + LINEAR) or kind in (nn.Sequential, nn.ModuleList, nn.ModuleDict):
            continue
        if not list(m.children()):
            found.append(f"{name or 'the model'} ({kind.__name__}: a non-linear module DeepLIFT does not rescale)")
            continue
        if kind not in seen:
            try:
                hits = sorted({a or b for a, b in _FUNCTIONAL.findall(inspect.getsource(kind.forward))})
            except (OSError, TypeError):
                hits = []
            seen[kind] = hits
        if seen[kind]:
            found.append(f"{name or 'the model'} ({kind.__name__}.forward calls {', '.join(seen[kind])})")
    return found


class _Runner:
    """Images and references through the hooks, chunk by chunk; yields ``(rows, attribution, f(x), f(ref))``."""

    def __init__(self, model, state, make_x, refs: torch.Tensor, ref_of, total: int, target, batch_size: int):
        self.hooks = _Hooks(model, state)
        self.make_x, self.refs, self.ref_of = make_x, refs, ref_of
        self.total, self.target, self.batch_size = total, target, batch_size
        self._key = None
        self._ref_logits = None

    def _make(self, rows: slice) -> torch.Tensor:
        which = self.ref_of(rows)
        if len(self.refs) == 1:
            key, uniq, expand = (0,), self.refs, None
        else:
            ids, inverse = torch.unique(which, return_inverse=True)
            key, uniq, expand = tuple(ids.tolist()), self.refs[ids], inverse
        if key != self._key:  # the same references as the last chunk (a constant baseline): recorded already
            self._key = None
            self._ref_logits = self.hooks.record(uniq, expand)
            self._key = key
        self.hooks.expand = expand
        self.hooks.rewind()
        return self.make_x(rows)

    def __iter__(self):
        for rows, grad, score in iter_gradients(self.hooks.model, self._make, self.total, self.target,
                                                self.batch_size):
            n = rows.stop - rows.start
            logits = self._ref_logits
            logits = logits.expand(n, *logits.shape[1:]) if self.hooks.expand is None else logits[self.hooks.expand]
            ref_score = self.target(logits, rows)
            x_rows = self.make_x(rows)
            ref_rows = self.refs[self.ref_of(rows)]
            yield rows, (x_rows - ref_rows) * grad, score, ref_score


def _checked(model, attr: torch.Tensor, fx: torch.Tensor, fr: torch.Tensor, check: bool, return_error: bool):
    """The attributions (and their completeness errors), refused where they do not add up (``check``)."""
    total, delta = attr.flatten(1).sum(1), fx - fr
    err = _completeness_error(total, delta, fx, fr)
    if check:
        _check_complete(model, err, total, delta)
    return (attr, err) if return_error else attr


def _completeness_error(total: torch.Tensor, delta: torch.Tensor, fx: torch.Tensor, fr: torch.Tensor) -> torch.Tensor:
    scale = torch.maximum(delta.abs(), 1e-3 * torch.maximum(fx.abs(), fr.abs()).clamp_min(1e-3))
    return (total - delta).abs() / scale


def _check_complete(model, err: torch.Tensor, total: torch.Tensor, delta: torch.Tensor) -> None:
    worst = int(err.argmax())
    if float(err[worst]) <= _TOLERANCE:
        return
    suspects = _suspects(model)
    where = ("; likely: " + "; ".join(suspects[:5])) if suspects else \
        "; no module could be named (a non-linear function called inside a module's forward)"
    raise PellucidError(
        f"DeepLIFT's attributions of image {worst} sum to {float(total[worst]):.6g} but f(x) - f(baseline) = "
        f"{float(delta[worst]):.6g} (relative error {float(err[worst]):.2%}): the model has non-linearities DeepLIFT "
        f"cannot see{where}. DeepLIFT rescales activation and max-pool modules (ReLU, LeakyReLU, ELU, Sigmoid, "
        "Tanh, MaxPool2d, ...); use modules instead of functional calls, pass check=False to get the maps anyway, "
        "or use pl.integrated_gradients")


@checked_keywords
def deeplift(model: nn.Module, x: torch.Tensor, target, baseline=0.0, *, check: bool = True,
             return_error: bool = False, score: str = "logit", batch_size: int | None = None, seed: int = 0):
    """DeepLIFT with the Rescale rule (Shrikumar et al. 2017), ``(N, C, H, W)``.

    Activation modules (ReLU, ReLU6, LeakyReLU, ELU, Sigmoid, Tanh, Softplus, GELU, SiLU, ...) pass
    ``(out - out_ref) / (in - in_ref)`` back instead of their derivative, max-pools split each window between
    the image's and the reference's arg-max, so the attributions sum to ``f(x) - f(baseline)`` (float rounding
    only). ``baseline`` is a number, a tensor broadcastable to ``x``, ``"blur"`` or ``"noise"`` (as
    :func:`pl.integrated_gradients`). With ``check=True`` a model whose non-linearities DeepLIFT cannot see
    (``F.relu`` called in ``forward``, softmax, attention) raises a :class:`PellucidError` naming the likely
    module; ``return_error=True`` also returns each image's relative completeness error. A model without
    non-linear modules gets ``gradient * (x - baseline)``.
    Example: ``attr = pl.deeplift(model, x, 3)``.
    """
    x, t, bs = prepare(model, x, target, batch_size, score)
    b = make_baseline(baseline, x, seed)
    one = bool((b == b[:1]).all())
    refs = b[:1] if one else b
    ref_of = (lambda rows: torch.zeros(rows.stop - rows.start, dtype=torch.long, device=x.device)) if one else \
        (lambda rows: torch.arange(rows.start, rows.stop, device=x.device))
    parts, fx, fr = [], [], []
    with model_state(model) as state:
        for _, attr, s, r in _Runner(model, state, lambda rows: x[rows], refs, ref_of, len(x), t, bs):
            parts.append(attr)
            fx.append(s)
            fr.append(r)
    attr, fx, fr = torch.cat(parts), torch.cat(fx), torch.cat(fr)
    return _checked(model, attr, fx, fr, check, return_error)


def as_baselines(baselines, x: torch.Tensor, seed: int = 0, count: int = 16) -> torch.Tensor:
    """A baseline distribution ``(B, C, H, W)`` for the SHAP methods: a tensor ``(B, C, H, W)`` or ``(C, H, W)``,
    a number (one constant image), or ``"noise"`` (``count`` uniform-noise images from ``seed``)."""
    shape = tuple(x.shape[1:])
    if isinstance(baselines, str):
        if baselines != "noise":
            raise PellucidError(f"baselines must be a tensor (B, C, H, W), a number or 'noise', got {baselines!r}")
        gen = generator(seed, x.device)
        return torch.rand((count, *shape), generator=gen, device=x.device, dtype=x.dtype)
    if isinstance(baselines, bool) or not isinstance(baselines, int | float | torch.Tensor):
        raise PellucidError(f"baselines must be a tensor (B, C, H, W), a number or 'noise', got {baselines!r}")
    b = torch.as_tensor(baselines.detach() if isinstance(baselines, torch.Tensor) else baselines,
                        dtype=x.dtype, device=x.device)
    if b.dim() == 0:
        b = b.expand(1, *shape)
    elif b.dim() == len(shape):
        b = b[None]
    if b.dim() != x.dim() or len(b) == 0:
        raise PellucidError(f"baselines must be (B, C, H, W) with C, H, W = {shape}, got shape {tuple(b.shape)}")
    try:
        b = b.expand(len(b), *shape)
    except RuntimeError:
        raise PellucidError(f"baselines of shape {tuple(b.shape)} do not match the images' (C, H, W) = {shape}") \
            from None
    if not torch.isfinite(b).all():
        raise PellucidError("baselines contain NaN or infinite values; pass finite numbers (pixel space [0, 1])")
    return b


@checked_keywords
def deeplift_shap(model: nn.Module, x: torch.Tensor, target, baselines, *, check: bool = True,
                  return_error: bool = False, score: str = "logit", batch_size: int | None = None, seed: int = 0):
    """DeepLIFT-SHAP (Lundberg & Lee 2017): DeepLIFT averaged over a baseline distribution, ``(N, C, H, W)``.

    ``baselines`` is ``(B, C, H, W)`` (or ``"noise"``: 16 uniform-noise images from ``seed``). The ``N * B``
    image-baseline pairs run in chunks of ``batch_size``; the attributions sum to ``f(x) - mean_b f(b)``.
    Example: ``attr = pl.deeplift_shap(model, x, 3, background)``.
    """
    x, t, bs = prepare(model, x, target, batch_size, score)
    refs = as_baselines(baselines, x, seed)
    k = len(refs)
    attr = torch.zeros_like(x)
    fx, fr = torch.zeros(len(x), device=x.device), torch.zeros(len(x), device=x.device)

    def make_x(rows):
        return x[row_index(rows, k, x.device)[0]]

    ref_of = lambda rows: row_index(rows, k, x.device)[1]  # noqa: E731
    with model_state(model) as state:
        for rows, a, s, r in _Runner(model, state, make_x, refs, ref_of, len(x) * k, t.repeat_interleave(k), bs):
            i = row_index(rows, k, x.device)[0]
            attr.index_add_(0, i, a)
            fx.index_add_(0, i, s.to(fx))
            fr.index_add_(0, i, r.to(fr))
    attr, fx, fr = attr / k, fx / k, fr / k
    return _checked(model, attr, fx, fr, check, return_error)


# ---------------------------------------------------------------------------------------------
# records

@forwards(deeplift)
def _deeplift_map(model, x, target, **kw):
    """DeepLIFT from a black image, summed over channels (signed; sums to f(x) - f(black))."""
    return deeplift(model, x, target, **kw).sum(1)


@forwards(deeplift_shap)
def _deeplift_shap_map(model, x, target, baselines="noise", **kw):
    """DeepLIFT-SHAP over 16 uniform-noise baselines, summed over channels."""
    return deeplift_shap(model, x, target, baselines, **kw).sum(1)


register_method(Method("deeplift", "DeepLIFT", _deeplift_map, signed=True, grid=False, attention=False,
                       summary="Rescale-rule multipliers from a black image; sums to f(x) - f(black)"))
register_method(Method("deeplift_shap", "DeepLIFT-SHAP", _deeplift_shap_map, seeded=True, cost="moderate",
                       sanity="small", signed=True, grid=False, attention=False,
                       summary="DeepLIFT averaged over 16 noise baselines"))
