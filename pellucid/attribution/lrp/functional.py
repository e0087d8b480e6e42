"""LRP on functional operations: the rules of AttnLRP (Achtibat et al. 2024) for what runs inside ``forward``
rather than as a ruled layer.

During LRP's forward pass a ``TorchFunctionMode`` (:class:`Functional`) turns these torch functions into nodes
whose backward maps relevance to relevance (the relevance form of lxt's gradient x input rules):

- **sums** of two tensors that carry relevance, and a tensor plus a constant (a position embedding, a
  relative position bias, an attention mask): split in proportion to each summand (the constant keeps its
  share, as a bias does);
- **products** of two tensors that carry relevance (``q @ k^T``, ``attention @ v``, ``einsum``, a gate
  ``a * b``): the uniform rule, each factor gets half of the epsilon rule's relevance (Eq. 7);
- **softmax**: ``R_in = x * (R - s * sum(R))``, its Taylor decomposition with the bias (Prop. 3.1);
- **LayerNorm** (``F.layer_norm``): the epsilon rule on the layer with its standard deviation held constant
  (the identity rule on the division);
- **element-wise non-linearities** (GELU, SiLU, sigmoid, tanh, ...): the identity rule, ``R_in = R`` (Eq. 9);
  ReLU-like ones pass relevance as their gradient does, which is the same thing;
- **scaling** by a constant (``q * d ** -0.5``, ``x / 2``): relevance passes unchanged;
- **reductions** (``mean``, ``sum``) and **linear maps** called as functions (``F.linear`` on weights that no
  ruled layer owns, as inside ``nn.MultiheadAttention`` and Swin's window attention; ``F.batch_norm`` of a
  BatchNorm nothing merged, as timm's ``BatchNormAct2d``): the epsilon rule;
- **attention** called as one function (``F.scaled_dot_product_attention``,
  ``F.multi_head_attention_forward``) is taken apart into the operations above.

Everything else (reshapes, permutations, indexing, concatenation, padding, rolls) moves relevance as its
gradient moves values, which conserves it.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from ..._checks import PellucidError
from .replay import CONVS, Recorder, zero_pad
from .rules import divide


def _variable(t) -> bool:
    return isinstance(t, torch.Tensor) and t.requires_grad and t.is_floating_point()


class _Proportional(torch.autograd.Function):
    """``fn(*inputs)``; backward gives each input that carries relevance ``share * x * d z / d x^T (R / z)``
    (the epsilon rule; ``share`` 1 / number of such inputs: the uniform rule)."""

    @staticmethod
    def forward(ctx, fn, epsilon, *inputs):
        ctx.fn, ctx.epsilon = fn, epsilon
        ctx.carries = tuple(_variable(t) for t in inputs)
        ctx.save_for_backward(*(t if isinstance(t, torch.Tensor) else None for t in inputs))
        ctx.others = tuple(None if isinstance(t, torch.Tensor) else t for t in inputs)
        return fn(*inputs)

    @staticmethod
    def backward(ctx, r):
        saved = ctx.saved_tensors
        inputs = [t.detach().requires_grad_(c) if t is not None else o
                  for t, o, c in zip(saved, ctx.others, ctx.carries)]
        variables = [t for t, c in zip(inputs, ctx.carries) if c]
        with torch.enable_grad():
            z = ctx.fn(*inputs)
            grads = torch.autograd.grad(z, variables, divide(r, z.detach(), ctx.epsilon))
        share = 1.0 / len(variables)
        out, it = [], iter(zip(variables, grads))
        for c in ctx.carries:
            if c:
                x, g = next(it)
                out.append(x.detach() * g * share if share != 1 else x.detach() * g)
            else:
                out.append(None)
        return (None, None, *out)


def proportional(fn: Callable, epsilon: float | None, *inputs):
    return _Proportional.apply(fn, epsilon, *inputs)


class _Softmax(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, dim):
        s = torch.softmax(x, dim)
        ctx.dim = dim
        ctx.save_for_backward(x, s)
        return s

    @staticmethod
    def backward(ctx, r):
        x, s = ctx.saved_tensors
        x = x.masked_fill(torch.isinf(x), 0)  # a masked (-inf) logit has no share
        return x * (r - s * r.sum(ctx.dim, keepdim=True)), None


class _Identity(torch.autograd.Function):
    """``fn(x)``, element-wise; relevance passes unchanged (the identity rule), summed where ``fn`` broadcast."""

    @staticmethod
    def forward(ctx, fn, x):
        ctx.shape = x.shape
        return fn(x)

    @staticmethod
    def backward(ctx, r):
        return None, r.sum_to_size(ctx.shape)


def _identity(fn: Callable, x: torch.Tensor) -> torch.Tensor:
    return _Identity.apply(fn, x)


class _Sum(torch.autograd.Function):
    """``a + sign * b``; backward splits relevance ``R`` as ``a * R / z`` and ``sign * b * R / z`` (``z`` stabilized
    by ``epsilon``, exact if ``None``); a summand that carries no relevance keeps its share."""

    @staticmethod
    def forward(ctx, a, b, sign, epsilon):
        z = a + sign * b if sign != 1 else a + b
        ctx.save_for_backward(a, b, z)
        ctx.sign, ctx.epsilon = sign, epsilon
        return z

    @staticmethod
    def backward(ctx, r):
        a, b, z = ctx.saved_tensors
        s = divide(r, z, ctx.epsilon)
        ra = (a * s).sum_to_size(a.shape) if ctx.needs_input_grad[0] else None
        rb = ((b * s if ctx.sign == 1 else ctx.sign * b * s).sum_to_size(b.shape)
              if ctx.needs_input_grad[1] else None)
        return ra, rb, None, None


ADDS = {torch.add, torch.Tensor.add, torch.Tensor.__add__, torch.Tensor.__radd__, torch.Tensor.__iadd__,
        torch.Tensor.add_}
SUBS = {torch.sub, torch.subtract, torch.Tensor.sub, torch.Tensor.__sub__, torch.Tensor.__isub__, torch.Tensor.sub_}
MULS = {torch.mul, torch.multiply, torch.Tensor.mul, torch.Tensor.__mul__, torch.Tensor.__rmul__,
        torch.Tensor.__imul__, torch.Tensor.mul_}
DIVS = {torch.div, torch.divide, torch.true_divide, torch.Tensor.div, torch.Tensor.__truediv__,
        torch.Tensor.__itruediv__, torch.Tensor.div_}
MATMULS = {torch.matmul, torch.Tensor.matmul, torch.Tensor.__matmul__, torch.bmm, torch.Tensor.bmm}
SOFTMAXES = {torch.softmax, torch.Tensor.softmax, F.softmax}
NONLINEAR = {F.gelu, F.silu, F.mish, F.hardswish, F.elu, F.selu, F.softplus, torch.sigmoid, torch.Tensor.sigmoid,
             F.sigmoid, torch.tanh, torch.Tensor.tanh, F.tanh}
REDUCTIONS = {torch.mean, torch.Tensor.mean, torch.sum, torch.Tensor.sum}


def _sum(a, b, sign: float, epsilon):
    return _Sum.apply(a, b, sign, epsilon)


class Functional(TorchFunctionMode):
    """During LRP's forward pass: the operations of the module docstring become relevance nodes, and
    ``inplace=True`` arguments are dropped. ``owned``: ids of the weights of ruled layers (their own rule
    applies, so ``F.linear`` on them runs as it is); ``recorder`` notes those layers' calls (:mod:`.replay`)."""

    def __init__(self, epsilon: float | None, owned: frozenset = frozenset(), recorder: Recorder | None = None):
        super().__init__()
        self.epsilon, self.owned, self.recorder = epsilon, owned, recorder

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if kwargs.get("inplace") is True:
            kwargs = {**kwargs, "inplace": False}
        handler = _HANDLERS.get(func)
        if handler is not None:
            done = handler(self, func, args, kwargs)
            if done is not NotImplemented:
                return done
        return func(*args, **kwargs)


_OUT_OF_PLACE = {torch.Tensor.__iadd__: torch.add, torch.Tensor.add_: torch.add, torch.Tensor.__isub__: torch.sub,
                 torch.Tensor.sub_: torch.sub, torch.Tensor.__imul__: torch.mul, torch.Tensor.mul_: torch.mul,
                 torch.Tensor.__itruediv__: torch.div, torch.Tensor.div_: torch.div}


def _add(mode, func, args, kwargs):
    if len(args) != 2 or kwargs.get("alpha", 1) != 1 or kwargs.get("out") is not None:
        return NotImplemented
    a, b = args
    sign = -1.0 if func in SUBS else 1.0
    if _variable(a) and (_variable(b) or isinstance(b, torch.Tensor) and b.is_floating_point() and b.dim() > 0):
        return _sum(a, b.detach() if not _variable(b) else b, sign, mode.epsilon)
    if _variable(b) and sign == 1.0 and isinstance(a, torch.Tensor) and a.is_floating_point() and a.dim() > 0:
        return _sum(b, a.detach(), 1.0, mode.epsilon)
    return NotImplemented  # a constant less a tensor, a number added: relevance moves as the gradient does


def _scale(mode, func, args, kwargs):
    if len(args) != 2 or kwargs.get("out") is not None:
        return NotImplemented
    a, b = args
    op = _OUT_OF_PLACE.get(func, func)
    if op is torch.Tensor.__rmul__:
        op = torch.mul
    if _variable(a) and _variable(b):
        if func in DIVS:
            return NotImplemented
        return proportional(op, mode.epsilon, a, b)
    if _variable(a) and not _variable(b):
        return _identity(lambda x: op(x, b), a)
    if _variable(b) and not _variable(a) and func in MULS:
        return _identity(lambda x: op(a, x), b)
    return NotImplemented


def _matmul(mode, func, args, kwargs):
    if len(args) != 2 or kwargs:
        return NotImplemented
    a, b = args
    if not (_variable(a) or _variable(b)):
        return NotImplemented
    return proportional(torch.matmul, mode.epsilon, a, b)


def _einsum(mode, func, args, kwargs):
    if not args or not isinstance(args[0], str):
        return NotImplemented
    eq, ops = args[0], args[1:]
    if len(ops) == 1 and isinstance(ops[0], list | tuple):
        ops = tuple(ops[0])
    if not any(_variable(t) for t in ops):
        return NotImplemented
    return proportional(lambda *t: torch.einsum(eq, *t), mode.epsilon, *ops)


def _softmax(mode, func, args, kwargs):
    x = args[0] if args else kwargs.get("input")
    dim = args[1] if len(args) > 1 else kwargs.get("dim")
    if not _variable(x) or dim is None or kwargs.get("dtype") is not None or len(args) > 2:
        return NotImplemented
    return _Softmax.apply(x, dim)


def _nonlinear(mode, func, args, kwargs):
    x = args[0] if args else kwargs.get("input")
    if not _variable(x):
        return NotImplemented
    rest = dict(kwargs)
    rest.pop("input", None)
    return _identity(lambda v: func(v, *args[1:], **rest), x)


def _reduce(mode, func, args, kwargs):
    x = args[0] if args else None
    if not _variable(x) or kwargs.get("out") is not None or kwargs.get("dtype") is not None:
        return NotImplemented
    return proportional(lambda v: func(v, *args[1:], **kwargs), mode.epsilon, x)


def _linear(mode, func, args, kwargs):
    given = dict(zip(("input", "weight", "bias"), args))
    given.update(kwargs)
    x, weight, bias = given.get("input"), given.get("weight"), given.get("bias")
    if mode.recorder is not None and id(weight) in mode.recorder.weights:  # a ruled layer's: its rule applies
        return mode.recorder.call(func, args, kwargs)
    if not _variable(x) or id(weight) in mode.owned:
        return NotImplemented
    return proportional(lambda v: F.linear(v, weight, bias), mode.epsilon, x)


def _layer_norm(mode, func, args, kwargs):
    names = ("input", "normalized_shape", "weight", "bias", "eps")
    given = dict(zip(names, args))
    given.update(kwargs)
    x = given.get("input")
    if not _variable(x):
        return NotImplemented
    shape = given["normalized_shape"]
    weight, bias, eps = given.get("weight"), given.get("bias"), given.get("eps", 1e-5)
    dims = tuple(range(-len(shape), 0)) if isinstance(shape, list | tuple | torch.Size) else (-1,)

    def held(v):  # LayerNorm with its standard deviation held constant: a linear map of v
        centred = v - v.mean(dims, keepdim=True)
        std = (centred.detach().pow(2).mean(dims, keepdim=True) + eps).sqrt()
        y = centred / std
        if weight is not None:
            y = y * weight
        return y + bias if bias is not None else y

    return proportional(held, mode.epsilon, x)


def _batch_norm(mode, func, args, kwargs):
    """A BatchNorm that no layer merged and no rule covers (one inside a module with children, as timm's
    ``BatchNormAct2d``): per channel affine in eval mode, the epsilon rule."""
    names = ("input", "running_mean", "running_var", "weight", "bias", "training", "momentum", "eps")
    given = dict(zip(names, args))
    given.update(kwargs)
    x = given.get("input")
    if not _variable(x) or given.get("training") or given.get("running_mean") is None \
            or any(id(given.get(k)) in mode.owned for k in ("weight", "running_mean")):
        return NotImplemented
    rest = {k: given.get(k) for k in ("running_mean", "running_var", "weight", "bias")}
    eps = given.get("eps", 1e-5)
    return proportional(lambda v: F.batch_norm(v, training=False, eps=eps, **rest), mode.epsilon, x)


def _conv(mode, func, args, kwargs):
    """A convolution runs as it is; a ruled layer's is noted for its rule (:mod:`.replay`)."""
    if mode.recorder is None:
        return NotImplemented
    return mode.recorder.call(func, args, kwargs)


def _pad(mode, func, args, kwargs):
    """Zero padding runs as it is, noted: a ruled layer may pad its input before its convolution."""
    x = args[0] if args else kwargs.get("input")
    widths = zero_pad(args, kwargs) if mode.recorder is not None and _variable(x) else None
    if widths is None:
        return NotImplemented
    padded = func(*args, **kwargs)
    mode.recorder.pad(x, padded, widths)
    return padded


def _attention(q, k, v, mask=None, scale=None, epsilon=None, causal=False):
    """``softmax(q k^T * scale + mask) v`` from relevance nodes (a boolean mask keeps where true)."""
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    scores = proportional(lambda a, b: torch.matmul(a, b.transpose(-2, -1)) * scale, epsilon, q, k)
    if causal:
        n, m = scores.shape[-2:]
        mask = torch.ones(n, m, dtype=torch.bool, device=scores.device).tril()
    if mask is not None:
        if mask.dtype == torch.bool:
            scores = scores.masked_fill(~mask, float("-inf"))
        else:
            scores = _sum(scores, mask.detach().to(scores.dtype), 1.0, epsilon)
    weights = _Softmax.apply(scores, -1)
    return proportional(torch.matmul, epsilon, weights, v), weights


def _sdpa(mode, func, args, kwargs):
    names = ("query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale")
    given = dict(zip(names, args))
    given.update(kwargs)
    if given.get("enable_gqa"):
        return NotImplemented
    out, _ = _attention(given["query"], given["key"], given["value"], given.get("attn_mask"), given.get("scale"),
                        mode.epsilon, bool(given.get("is_causal")))
    return out


_MHA = ("query", "key", "value", "embed_dim_to_check", "num_heads", "in_proj_weight", "in_proj_bias", "bias_k",
        "bias_v", "add_zero_attn", "dropout_p", "out_proj_weight", "out_proj_bias", "training", "key_padding_mask",
        "need_weights", "attn_mask", "use_separate_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight",
        "static_k", "static_v", "average_attn_weights", "is_causal")


def _mha(mode, func, args, kwargs):
    """``F.multi_head_attention_forward`` (what ``nn.MultiheadAttention`` calls) from relevance nodes."""
    a = dict(zip(_MHA, args))
    a.update(kwargs)
    for unsupported in ("bias_k", "bias_v", "static_k", "static_v"):
        if a.get(unsupported) is not None:
            raise PellucidError(f"LRP does not support nn.MultiheadAttention with {unsupported}; remove it or explain "
                                "the model with a gradient method")
    if a.get("add_zero_attn"):
        raise PellucidError("LRP does not support nn.MultiheadAttention with add_zero_attn=True")
    q_in, k_in, v_in = a["query"], a["key"], a["value"]
    heads, eps = a["num_heads"], mode.epsilon
    e = q_in.shape[-1]
    if a.get("use_separate_proj_weight"):
        weights = (a["q_proj_weight"], a["k_proj_weight"], a["v_proj_weight"])
    else:
        weights = a["in_proj_weight"].split(e)
    b = a.get("in_proj_bias")
    biases = b.split(e) if b is not None else (None, None, None)
    q, k, v = (proportional(lambda t, w=w, bb=bb: F.linear(t, w, bb), eps, t) if _variable(t) else F.linear(t, w, bb)
               for t, w, bb in zip((q_in, k_in, v_in), weights, biases))
    batched = q_in.dim() == 3
    if not batched:
        q, k, v = (t.unsqueeze(1) for t in (q, k, v))
    n_q, batch = q.shape[0], q.shape[1]

    def split(t):  # (L, N, E) -> (N, heads, L, E / heads)
        return t.reshape(t.shape[0], batch * heads, e // heads).transpose(0, 1).reshape(batch, heads, -1, e // heads)

    mask = _mask(a.get("attn_mask"), a.get("key_padding_mask"), batch, heads, q.dtype)
    out, weights = _attention(split(q), split(k), split(v), mask, None, eps, bool(a.get("is_causal")) and mask is None)
    out = out.permute(2, 0, 1, 3).reshape(n_q, batch, e)
    out = proportional(lambda t: F.linear(t, a["out_proj_weight"], a["out_proj_bias"]), eps, out)
    if not batched:
        out = out.squeeze(1)
    if not a.get("need_weights", True):
        return out, None
    w = weights.detach()
    w = w.mean(1) if a.get("average_attn_weights", True) else w
    return out, (w if batched else w.squeeze(0))


def _mask(attn_mask, padding, batch: int, heads: int, dtype) -> torch.Tensor | None:
    """One additive float mask ``(N, heads, L, S)`` (or ``None``) from MultiheadAttention's two masks."""
    total = None
    for m, pad in ((attn_mask, False), (padding, True)):
        if m is None:
            continue
        m = torch.zeros(m.shape, dtype=dtype, device=m.device).masked_fill(m, float("-inf")) \
            if m.dtype == torch.bool else m.to(dtype)  # MultiheadAttention's boolean masks mark what to drop
        if pad:  # (N, S) -> (N, 1, 1, S)
            m = m.reshape(batch, 1, 1, -1)
        elif m.dim() == 3:  # (N * heads, L, S)
            m = m.reshape(batch, heads, *m.shape[-2:])
        total = m if total is None else total + m
    return total


_HANDLERS: dict = {}
for _funcs, _handler in ((ADDS | SUBS, _add), (MULS | DIVS, _scale), (MATMULS, _matmul),
                         ({torch.einsum}, _einsum), ({F.batch_norm}, _batch_norm), (SOFTMAXES, _softmax),
                         (NONLINEAR, _nonlinear),
                         (REDUCTIONS, _reduce), ({F.linear}, _linear), ({F.layer_norm}, _layer_norm),
                         ({F.scaled_dot_product_attention}, _sdpa), ({F.multi_head_attention_forward}, _mha),
                         (set(CONVS), _conv), ({F.pad}, _pad)):
    for _f in _funcs:
        _HANDLERS[_f] = _handler
