"""``pl.lrp``: Layer-wise Relevance Propagation (Bach et al. 2015; Montavon et al. 2019) on the gradient primitive.

The relevance at the output starts as the target's score (the logit: ``z * d score / d z``); every ruled
layer's backward maps the relevance at its output to its input with its rule (:mod:`.rules`, assigned by a
composite, :mod:`.composites`), every other module passes it on as its gradient (ReLU, max-pool to the
winner, dropout, flatten, padding, concatenation by slices). So the "input gradient" of one batched backward
pass (:func:`pellucid._grad.iter_gradients`, chunked by ``batch_size``) is the relevance.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial

import torch
from torch import nn

from ..._args import prepare
from ..._checks import PellucidError
from ..._grad import iter_gradients
from ..._state import model_state
from ...models.base import PixelModel
from ...models.layers import find_layer
from ...registry import Method, register_method
from ..rulemap import apply_rules, tap
from .canonize import canonical, has_attention, mirror_hooks
from .composites import ATTENTION_DEFAULT, DEFAULT, assign, plan
from .functional import Functional
from .replay import Recorder
from .rules import STABILIZER, Rule


@dataclass(frozen=True)
class LRPResult:
    """What ``pl.lrp(..., layers=[...])`` returns.

    ``input``: the relevance of each input value ``(N, C, H, W)``; ``score``: the target's score ``(N,)`` (the
    relevance at the output); per named layer: ``layers[name]`` the relevance at its output (what enters it
    from above), ``passed[name]`` the relevance it passes to its input, ``absorbed[name]`` ``(N,)`` what its
    bias and stabilizer keep, so that ``layers[name].sum() == passed[name].sum() + absorbed[name].sum()``.
    """

    input: torch.Tensor
    score: torch.Tensor
    layers: dict[str, torch.Tensor] = field(default_factory=dict)
    passed: dict[str, torch.Tensor] = field(default_factory=dict)
    absorbed: dict[str, torch.Tensor] = field(default_factory=dict)

    def _repr_png_(self) -> bytes:
        from ...drawing import display

        return display.lrp(self)


class _Seed(torch.autograd.Function):
    """The logits; backward multiplies ``d score / d logits`` by the logits: the relevance starts as the score."""

    @staticmethod
    def forward(ctx, logits):
        ctx.save_for_backward(logits)
        return logits.clone()

    @staticmethod
    def backward(ctx, grad):
        (logits,) = ctx.saved_tensors
        return grad * logits


class _Relevance:
    """A callable for :func:`iter_gradients`: the canonical network with residual sums split, seeded; the ruled
    layers' calls noted on ``recorder``."""

    def __init__(self, net: nn.Module, epsilon: float | None, owned: frozenset, recorder: Recorder):
        self.net, self.epsilon, self.owned, self.recorder = net, epsilon, owned, recorder

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.recorder.reset()
        try:
            with Functional(self.epsilon, self.owned, self.recorder):
                out = self.net(x)
        finally:  # the hooks took their calls: what is left would tie this pass's graph to the rules (a cycle)
            self.recorder.reset()
        if not isinstance(out, torch.Tensor):
            raise PellucidError(f"LRP needs a model that returns a tensor of logits, got {type(out).__name__}")
        return _Seed.apply(out)


class _Ruled:
    """A rule on one module, running the layer's recorded call (:mod:`.replay`) and noting the absorbed relevance
    of a named layer."""

    reads_output = False  # no copy of the output: its version tells whether something changed it in place

    def __init__(self, rule: Rule, recorder: Recorder, note=None, gated: bool = False):
        self.rule, self.recorder, self.note, self.gated = rule, recorder, note, gated

    def bind(self, module, inp, out):
        replay = self.recorder.take(module, inp, out)  # taken on every call: the next call records its own
        if not inp.requires_grad:
            return None
        return partial(self.backward, module, inp, out, replay, (inp._version, out._version))

    def backward(self, module, inp, out, replay, versions, grad):
        if inp._version != versions[0]:
            raise PellucidError(f"the input of {type(module).__name__} was changed in place after the layer ran; LRP "
                                "reads it: make that operation out of place")
        if out._version != versions[1] and self.rule.reads_output:  # changed in place further on: run the layer again
            with torch.enable_grad():
                out = module.forward(inp)
        r_in, absorbed = self.rule.relevance(module, inp, out, grad, absorbed=self.note is not None, replay=replay,
                                             gated=self.gated)
        if self.note is not None:
            self.note(absorbed)
        return r_in


def _normalization(model: nn.Module, x: torch.Tensor):
    """The network that reads normalized input, the normalized images, and z^B's bounds (pixels 0 and 1)."""
    if isinstance(model, PixelModel):
        mean = model.mean if model.mean is not None else torch.zeros(())
        std = model.std if model.std is not None else torch.ones(())
        mean, std = mean.to(x), std.to(x)
        return model.net, (x - mean) / std, (0 - mean) / std, (1 - mean) / std
    return model, x, torch.zeros((), device=x.device), torch.ones((), device=x.device)


def lrp(model: nn.Module, x: torch.Tensor, target, composite=None, *, epsilon: float = 1e-6, gamma: float = 0.25,
        layers: Sequence[str] | None = None, condition: dict | None = None, batch_size: int | None = None):
    """Layer-wise Relevance Propagation: ``(N, C, H, W)`` relevance, or an :class:`LRPResult` with ``layers``.

    ``composite``: ``"epsilon_plus_flat"`` (default: flat on the first layer, z+ on convolutions, epsilon on
    dense layers), ``"epsilon_plus"``, ``"epsilon_gamma_box"`` (z^B first, with bounds the pixel range [0, 1]
    through the model's normalization), ``"epsilon_alpha2_beta1"``, ``"epsilon_alpha2_beta1_flat"``, ``"zero"``
    (LRP-0 everywhere: gradient x input of the normalized input on ReLU networks), or a mapping
    ``{layer name or module type: rule name or Rule}`` (names first) that must cover every convolution and
    dense layer; rules: zero, epsilon, gamma, alpha2beta1, alpha1beta0, zplus, flat, wsquare, zbox. As in
    Zennit 0.5.1: ``epsilon`` is the epsilon rule's, ``gamma`` the gamma rule's; the other rules use 1e-6.

    The model is canonized on a private cached copy (:mod:`.canonize`): BatchNorm merged into the layer that
    feeds it (a BatchNorm that follows no convolution or linear layer gets the per-channel epsilon rule),
    residual sums split in proportion, average pools by the z rule. Relevance is computed for the normalized
    input of a ``PixelModel``'s ``net`` and returned as the pixel-space map (the same values). It sums to the
    score minus what biases and stabilizers absorb. ``layers=["layer4", ...]``: an :class:`LRPResult` (the
    relevance there is before any condition). ``condition={"layer4": [7, 12]}``: concept-conditional
    relevance (CRP, Achtibat et al. 2023): only those channels of the layer's output pass relevance on
    (channels are dim 1, or the last dim of a token sequence); the maps of all channels sum to the full map.
    Example: ``r = pl.lrp(model, x, 3, "epsilon_gamma_box")``.
    """
    x, t, bs = prepare(model, x, target, batch_size)
    net, xn, low, high = _normalization(model, x)
    settings = dict(epsilon=epsilon, gamma=gamma, low=low, high=high)
    chosen = None if composite is None else plan(composite, **settings)  # bad names fail before any work
    names = list(layers or ())
    for name in names:
        find_layer(net, name)  # a clear error for an unknown name
    kept = _conditions(net, condition)
    canon = canonical(net, xn[:1])
    if chosen is None:
        chosen = plan(default_composite(canon.net), **settings)
    with canon.lock, model_state(canon.net, private=True) as state:
        rules = assign(chosen, {n: canon.modules[n] for n in canon.order}, canon.order, canon.unmerged)
        notes = {n: {"out": [], "in": [], "absorbed": []} for n in names}
        gated = frozenset() if mirror_hooks(state, net, canon) else canon.gated  # a hook may let relevance past a gate
        ruled = [canon.modules[n] for n in rules]
        recorder = Recorder({id(m._parameters["weight"]): m._parameters.get("bias") for m in ruled
                             if isinstance(m._parameters.get("weight"), torch.Tensor)})
        apply_rules(state, {canon.modules[n]: _Ruled(r, recorder, notes[n]["absorbed"].append if n in notes else None,
                                                     n in gated) for n, r in rules.items()})
        for name, channels in kept.items():
            state.forward_hook(canon.modules[name], _keep_hook(name, channels))
        for name in names:
            _note(state, canon.modules[name], notes[name])
        owned = frozenset(id(t) for m in ruled for t in (*m._parameters.values(), *m._buffers.values())
                          if t is not None)
        relevance_of = _Relevance(canon.net, None if chosen.exact else STABILIZER, owned, recorder)
        grads, scores = [], []
        for _, g, s in iter_gradients(relevance_of, xn, len(xn), t, bs):
            grads.append(g)
            scores.append(s)
    relevance = grads[0] if len(grads) == 1 else torch.cat(grads)
    if not names:
        return relevance
    return _result(relevance, torch.cat(scores), notes, len(grads))


def default_composite(model: nn.Module) -> str:
    """The composite ``pl.lrp`` runs on ``model`` when none is given: AttnLRP on a model with attention, else
    epsilon-plus-flat."""
    return ATTENTION_DEFAULT if has_attention(getattr(model, "net", model)) else DEFAULT


def _conditions(net: nn.Module, condition) -> dict[str, list[int]]:
    """``{layer name: channels}`` checked: layers that exist, channels as a list of ints >= 0."""
    if condition is None:
        return {}
    if not isinstance(condition, dict):
        raise PellucidError(f"condition must be a dict {{layer name: channel or channels}}, got {condition!r}")
    kept = {}
    for name, channels in condition.items():
        find_layer(net, name)
        try:
            t = torch.as_tensor([channels] if isinstance(channels, int) else channels)
        except (TypeError, ValueError, RuntimeError):
            t = None
        if t is None or isinstance(channels, bool) or t.dim() != 1 or not len(t) or t.is_floating_point() \
                or t.dtype == torch.bool or int(t.min()) < 0:
            raise PellucidError(f"condition[{name!r}] must be a channel index or a non-empty list of them (>= 0), "
                                f"got {channels!r}")
        chans = t.tolist()
        kept[name] = chans
    return kept


class _Keep(torch.autograd.Function):
    """The value of ``x``; backward keeps the gradient (relevance) of the chosen channels only."""

    @staticmethod
    def forward(ctx, x, mask):
        ctx.save_for_backward(mask)
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        (mask,) = ctx.saved_tensors
        return grad * mask, None


def _keep_hook(name: str, channels: list[int]):
    def hook(_m, _inputs, out):
        if not isinstance(out, torch.Tensor):
            return None
        dim = out.dim() - 1 if out.dim() == 3 else 1
        if max(channels) >= out.shape[dim]:
            raise PellucidError(f"condition[{name!r}]: channel {max(channels)} is out of range; the layer has "
                                f"{out.shape[dim]} channels (0..{out.shape[dim] - 1})")
        shape = [1] * out.dim()
        shape[dim] = out.shape[dim]
        mask = torch.zeros(shape, dtype=out.dtype, device=out.device)
        mask.view(-1)[channels] = 1
        return _Keep.apply(out, mask)

    return hook


def _note(state, module: nn.Module, note: dict) -> None:
    """Hooks that record the relevance entering ``module`` (at its output) and leaving it (at its input)."""
    def before(_m, inputs):
        if inputs and isinstance(inputs[0], torch.Tensor):
            return (tap(inputs[0], note["in"].append), *inputs[1:])
        return None

    def after(_m, _inputs, output):  # a node, not a tensor hook: the rules' own grad calls must not fire it
        return tap(output, note["out"].append) if isinstance(output, torch.Tensor) else None

    state.forward_pre_hook(module, before)
    state.forward_hook(module, after)


def _result(relevance, score, notes: dict, chunks: int) -> LRPResult:
    layers, passed, absorbed = {}, {}, {}
    for name, note in notes.items():
        if len(note["out"]) != chunks or len(note["in"]) != chunks:
            raise PellucidError(f"layer {name!r} ran {len(note['out']) // max(chunks, 1)} times per forward pass or "
                                "is not on the way from the input to the output; name a layer that runs once")
        layers[name], passed[name] = torch.cat(note["out"]), torch.cat(note["in"])
        if note["absorbed"]:
            absorbed[name] = torch.cat(note["absorbed"])
        else:  # no rule of its own: what did not pass
            absorbed[name] = layers[name].flatten(1).sum(1) - passed[name].flatten(1).sum(1)
    return LRPResult(relevance, score, layers, passed, absorbed)


def _lrp_map(model, x, target, **kw):
    """LRP (epsilon-plus-flat by default), summed over channels (signed)."""
    return lrp(model, x, target, **kw).sum(1)


register_method(Method("lrp", "LRP (epsilon-plus-flat)", _lrp_map, signed=True, cost="cheap",
                       summary="layer-wise relevance propagation: flat first layer, z+ convolutions, epsilon dense "
                               "layers; summed over channels"))
