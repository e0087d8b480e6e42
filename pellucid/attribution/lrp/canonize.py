"""Canonization for any model, no per-architecture code: a cached copy with BatchNorm merged, and residual
sums split in proportion.

- **BatchNorm** is merged into the convolution or linear layer that feeds it (a BatchNorm that runs child
  modules after the norm, as timm's ``BatchNormAct2d``, stays and computes the identity before them). The
  pairs are found by tracing a probe forward pass of a private deep copy: forward hooks on every leaf module note
  which layer produced
  each tensor, and a ``TorchFunctionMode`` counts every other use of it, so a BatchNorm is merged only into a
  layer it alone reads (run once each). The merge happens on the copy, which is cached per model (weakly: it
  goes with the model) and rebuilt when any parameter or buffer changes (their ``_version`` counters and
  storage), so it costs nothing per call after the first. The caller's model is never modified.
- **Functional operations** (residual sums ``x + y``, products, softmax, LayerNorm, GELU, attention) are
  intercepted during the LRP forward pass (:mod:`.functional`): a residual sum splits its relevance in
  proportion to each summand (never copied to both).
"""

from __future__ import annotations

import copy
import threading
import weakref
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from ..._state import ModelState

HOOK_DICTS = ("_forward_pre_hooks", "_forward_pre_hooks_with_kwargs", "_forward_hooks", "_forward_hooks_with_kwargs",
              "_forward_hooks_always_called", "_backward_pre_hooks", "_backward_hooks")
_MERGEABLE = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


@dataclass
class Canonical:
    """A model's private copy: BatchNorm merged (the BatchNorm's name now holds an ``nn.Identity``), eval mode,
    frozen, no hooks, no in-place modules; ``order`` lists the leaf layers in the order they ran."""

    net: nn.Module
    modules: dict[str, nn.Module]
    order: tuple[str, ...]
    merged: dict[str, str]
    unmerged: tuple[str, ...]
    signature: tuple
    gated: frozenset = frozenset()  # layers whose output (merged BatchNorm included) only a ReLU-like gate reads
    lock: threading.Lock = field(default_factory=threading.Lock)


_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def signature(net: nn.Module) -> tuple:
    """What a cached copy depends on: the modules, every parameter's and buffer's storage and version, and the sum
    of each floating one (an edit through ``.data`` leaves the version as it was; one pass over the weights)."""
    tensors = [*net.parameters(), *net.buffers()]
    floats = [t.detach() for t in tensors if t.is_floating_point()]
    with torch.no_grad():
        sums = torch.stack([t.sum(dtype=torch.float32) for t in floats]).tolist() if floats else []
    return (tuple(map(id, net.modules())),
            tuple((id(t), t.data_ptr(), t._version, t.dtype, t.device) for t in tensors), tuple(sums))


def canonical(net: nn.Module, probe: torch.Tensor) -> Canonical:
    """The cached canonical copy of ``net`` (built on ``probe``, one input row, when missing or stale)."""
    sig = signature(net)
    found = _CACHE.get(net)
    if found is None or found.signature != sig:
        found = _CACHE[net] = _build(net, probe, sig)
    return found


def _build(net: nn.Module, probe: torch.Tensor, sig: tuple) -> Canonical:
    memo = {id(getattr(m, d)): type(getattr(m, d))() for m in net.modules() for d in HOOK_DICTS if hasattr(m, d)}
    net_copy = copy.deepcopy(net, memo)  # the caller's hooks are not copied
    for m in net_copy.modules():
        if isinstance(getattr(m, "inplace", None), bool):
            m.inplace = False
    net_copy.eval()
    for p in net_copy.parameters():
        p.requires_grad_(False)
        p.grad = None
    order, pairs, gated = _probe(net_copy, probe)
    modules = dict(net_copy.named_modules())
    merged = {}
    for layer, bn in pairs:
        _merge(modules[layer], modules[bn])
        if any(True for _ in modules[bn].children()):  # timm's BatchNormAct2d: keep what it runs after the norm
            _neutralize(modules[bn])
        else:
            parent, _, child = bn.rpartition(".")
            setattr(net_copy.get_submodule(parent), child, nn.Identity().eval())
        merged[bn] = layer
    modules = dict(net_copy.named_modules())
    unmerged = tuple(n for n in order if isinstance(modules[n], nn.modules.batchnorm._BatchNorm))
    return Canonical(net_copy, modules, tuple(order), merged, unmerged, sig, frozenset(gated))


def _merge(layer: nn.Module, bn: nn.modules.batchnorm._BatchNorm) -> None:
    """Fold ``bn`` (eval mode) into ``layer``: ``W' = s W``, ``b' = s (b - mean) + beta``, ``s = gamma / std``."""
    with torch.no_grad():
        scale = torch.rsqrt(bn.running_var + bn.eps)
        if bn.weight is not None:
            scale = scale * bn.weight
        shift = -bn.running_mean * scale + (bn.bias if bn.bias is not None else 0)
        w = layer.weight
        layer.weight.copy_(w * scale.reshape(-1, *([1] * (w.dim() - 1))).to(w))
        bias = shift.to(w) if layer.bias is None else layer.bias * scale.to(w) + shift.to(w)
        if layer.bias is None:
            layer.bias = nn.Parameter(bias, requires_grad=False)
        else:
            layer.bias.copy_(bias)


def _neutralize(bn: nn.modules.batchnorm._BatchNorm) -> None:
    """Make a merged BatchNorm that also runs child modules (an activation) compute the identity before them."""
    with torch.no_grad():
        bn.running_mean.zero_()
        bn.running_var.fill_(1.0).sub_(bn.eps)
        if bn.weight is not None:
            bn.weight.fill_(1.0)
        if bn.bias is not None:
            bn.bias.zero_()


def _tensors(value) -> Iterator[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, list | tuple):
        for v in value:
            yield from _tensors(v)
    elif isinstance(value, dict):
        for v in value.values():
            yield from _tensors(v)


_GATE_FUNCTIONS = {torch.relu, torch.relu_, F.relu, F.relu_, F.relu6, torch.Tensor.relu, torch.Tensor.relu_}
_BOUNDED_FUNCTIONS = {F.hardtanh: ("min_val", -1.0), F.hardtanh_: ("min_val", -1.0), torch.clamp: ("min", None),
                      torch.clamp_min: ("min", None), torch.clip: ("min", None), torch.Tensor.clamp: ("min", None),
                      torch.Tensor.clamp_min: ("min", None), torch.Tensor.clip: ("min", None),
                      torch.Tensor.clamp_: ("min", None), torch.Tensor.clamp_min_: ("min", None),
                      torch.Tensor.clip_: ("min", None)}
_IN_PLACE = {torch.relu_, F.relu_, torch.Tensor.relu_, F.hardtanh_, torch.Tensor.clamp_, torch.Tensor.clamp_min_,
             torch.Tensor.clip_}  # gate methods that work in place in LRP's forward pass too (not inplace=True)


def _gate_module(module: nn.Module) -> bool:
    """Whether ``module`` zeroes its input wherever it is <= 0 (and so its gradient there): torch's own ReLU,
    ReLU6 or Hardtanh from 0 (a subclass may override ``forward``)."""
    return type(module) in (nn.ReLU, nn.ReLU6) or type(module) is nn.Hardtanh and module.min_val >= 0


def _in_place(func, kwargs: dict) -> bool:
    """Whether the call changes its first argument in place (``relu_``, ``add_``, ``+=``, ``y[i] = v``,
    ``inplace=True``; LRP's forward pass drops the last, so an ``inplace=True`` gate is not taken for one)."""
    name = getattr(func, "__name__", "")
    return (name.endswith("_") and not name.endswith("__")) or (name.startswith("__i") and name.endswith("__")) \
        or name == "__setitem__" or kwargs.get("inplace") is True


def _gate_call(func, args: tuple, kwargs: dict) -> bool:
    """Whether the call is such a gate on its first argument: ``relu``, ``relu6``, ``hardtanh`` or a clamp whose
    lower bound is >= 0."""
    if func in _GATE_FUNCTIONS:
        return True
    if func not in _BOUNDED_FUNCTIONS:
        return False
    name, default = _BOUNDED_FUNCTIONS[func]
    low = kwargs.get(name, args[1] if len(args) > 1 else default)
    return isinstance(low, int | float) and not isinstance(low, bool) and low >= 0


class _Uses(TorchFunctionMode):
    """Counts the uses of watched tensors by torch functions outside the leaf module that received them; among
    them the uses as the input of a ReLU-like gate; the tensors a gate method changed in place as their first use
    (``gated_in_place``: what reads them later reads the gate's output), and those changed in place again after
    that (``spoiled``)."""

    def __init__(self, watched: dict, uses: Counter, gates: Counter, stack: list):
        super().__init__()
        self.watched, self.uses, self.gates, self.stack = watched, uses, gates, stack
        self.gated_in_place: set[int] = set()
        self.spoiled: set[int] = set()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        # .shape, .dim(): reading a size is no use of the values; y[i] = v returns nothing but changes y
        if any(True for _ in _tensors(out)) or _in_place(func, kwargs):
            inside = self.stack[-1] if self.stack else ()
            for t in _tensors((args, kwargs)):
                if id(t) in self.watched and id(t) not in inside:
                    self.uses[id(t)] += 1
                    first = args and t is args[0]
                    if first and _gate_call(func, args, kwargs):
                        self.gates[id(t)] += 1
                        if func in _IN_PLACE and self.uses[id(t)] == 1:
                            self.gated_in_place.add(id(t))
                    elif id(t) in self.gated_in_place and (first and _in_place(func, kwargs)
                                                          or kwargs.get("out") is t):
                        self.spoiled.add(id(t))
        return out


def _probe(net: nn.Module, x: torch.Tensor) -> tuple[list[str], list[tuple[str, str]], set[str]]:
    """Run ``net`` once; return its leaf layers in call order, the (layer, BatchNorm) pairs to merge, and the
    layers whose output (after the BatchNorm merged into them) only a ReLU-like gate reads."""
    produced: dict[int, str] = {}  # id(output) -> mergeable layer that produced it
    watched: dict[int, str] = {}  # the mergeable layers' and the BatchNorms' outputs
    bn_output: dict[str, int] = {}
    uses: Counter = Counter()
    gates: Counter = Counter()
    calls: Counter = Counter()
    bn_input: dict[str, int] = {}
    stack: list[set] = []
    alive: list[torch.Tensor] = []  # keeps the watched tensors alive, so their ids stay theirs
    order: list[str] = []
    handles = []

    def before(name, leaf=True):
        def hook(module, inputs):
            calls[name] += 1
            if calls[name] == 1 and leaf:
                order.append(name)
            ids = {id(t) for t in _tensors(inputs)}
            for i in ids & watched.keys():
                uses[i] += 1
                if _gate_module(module) and inputs and id(inputs[0]) == i:
                    gates[i] += 1
            if isinstance(module, nn.modules.batchnorm._BatchNorm) and inputs and isinstance(inputs[0], torch.Tensor):
                bn_input[name] = id(inputs[0])
            stack.append(ids)
        return hook

    def after(name):
        def hook(module, inputs, output):
            stack.pop()
            if isinstance(module, _MERGEABLE) and isinstance(output, torch.Tensor):
                produced[id(output)] = watched[id(output)] = name
                alive.append(output)
            elif isinstance(module, nn.modules.batchnorm._BatchNorm) and isinstance(output, torch.Tensor):
                bn_output[name] = id(output)
                watched[id(output)] = name
                alive.append(output)
        return hook

    try:
        for name, m in net.named_modules():
            leaf = not any(True for _ in m.children())
            if leaf or isinstance(m, nn.modules.batchnorm._BatchNorm):  # timm's BatchNormAct2d has children
                handles += [m.register_forward_pre_hook(before(name, leaf)), m.register_forward_hook(after(name))]
        with torch.no_grad(), _Uses(watched, uses, gates, stack) as seen:
            net(x)
    finally:
        for h in handles:
            h.remove()
    modules = dict(net.named_modules())
    pairs = []
    for bn, i in bn_input.items():
        layer = produced.get(i)
        if layer is None or calls[bn] != 1 or calls[layer] != 1 or uses[i] != 1:
            continue
        b, m = modules[bn], modules[layer]
        if b.running_mean is not None and b.running_var is not None and m.weight.shape[0] == b.num_features:
            pairs.append((layer, bn))
    last = {layer: bn_output.get(bn) for layer, bn in pairs}  # what the network reads of a merged layer

    def gate_only(i) -> bool:  # read by one gate and nothing else, or first by a gate method in place
        return uses[i] == 1 and gates[i] == 1 or i in seen.gated_in_place and i not in seen.spoiled

    gated = {layer for i, layer in produced.items() if calls[layer] == 1 and gate_only(last.get(layer, i))}
    return order, pairs, gated


def mirror_hooks(state: ModelState, original: nn.Module, canon: Canonical) -> bool:
    """Give the copy's modules the hooks the caller's modules have now (until ``state`` exits): a hook on the
    model runs in LRP's forward pass as in any other method's (one on a merged BatchNorm runs on its output).
    Returns whether there was any (a hook may change what the probe pass saw, such as which layers are gated)."""
    mirrored = False
    for name, m in original.named_modules():
        twin = canon.modules.get(name)
        if twin is None:
            continue
        for d in HOOK_DICTS:
            hooks = getattr(m, d, None)
            if hooks:
                state.set_attr(twin, d, type(hooks)(hooks))
                mirrored = True
    return mirrored


def has_attention(net: nn.Module) -> bool:
    """Whether ``net`` holds an attention layer (``nn.MultiheadAttention``, or a module class named ...Attention)."""
    return any(isinstance(m, nn.MultiheadAttention) or type(m).__name__.endswith("Attention") for m in net.modules())
