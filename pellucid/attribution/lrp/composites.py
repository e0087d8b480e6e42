"""Composites: which rule each layer gets. Built-in ones by name (Zennit 0.5.1's ``composites.py``), or a
user mapping ``{layer name or module type: rule name or Rule}``.

A composite maps module types to rules, first match wins, with a special map for the first layer the image
reaches (in the order the layers run). Average pools, unmerged BatchNorms and residual sums are not the
composite's business: they always divide relevance in proportion to each input's contribution (Zennit's
``Norm``: the epsilon-stabilized z rule; exact under ``zero``).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from torch import nn

from ..._checks import PellucidError
from .rules import RULES, STABILIZER, Group, Part, Rule, make_rule

CONV = (nn.modules.conv._ConvNd,)
DENSE = (nn.Linear,)
RULED = CONV + DENSE
"""Layers a composite must give a rule (any other module passes relevance as its gradient)."""

POOLS = (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d)
BATCHNORM = (nn.modules.batchnorm._BatchNorm,)


@dataclass(frozen=True)
class Composite:
    """``layers``: ``(types, rule name)`` pairs, first match wins; ``first``: the same for the first layer the
    image reaches; ``exact``: pools, sums and unmerged BatchNorms use LRP-0 rather than a stabilized z rule."""

    name: str
    layers: tuple
    first: tuple = ()
    exact: bool = False


COMPOSITES = {c.name: c for c in (
    Composite("zero", ((RULED, "zero"),), exact=True),
    Composite("epsilon_plus", ((CONV, "zplus"), (DENSE, "epsilon"))),
    Composite("epsilon_plus_flat", ((CONV, "zplus"), (DENSE, "epsilon")), first=((RULED, "flat"),)),
    Composite("epsilon_gamma_box", ((CONV, "gamma"), (DENSE, "epsilon")), first=((CONV, "zbox"),)),
    Composite("epsilon_alpha2_beta1", ((CONV, "alpha2beta1"), (DENSE, "epsilon"))),
    Composite("epsilon_alpha2_beta1_flat", ((CONV, "alpha2beta1"), (DENSE, "epsilon")), first=((RULED, "flat"),)),
    Composite("attnlrp", ((RULED, "epsilon"),)),
)}
DEFAULT = "epsilon_plus_flat"
ATTENTION_DEFAULT = "attnlrp"
"""The default for a model with attention: AttnLRP, the epsilon rule on every layer and the rules of
:mod:`.functional` on attention, LayerNorm and GELU (they apply under every composite)."""


@dataclass(frozen=True)
class Plan:
    """A composite turned into rules, before it meets a model (every argument checked): ``layers`` and
    ``first`` are ``(types, Rule)`` pairs, ``named`` maps layer names to rules (a user mapping; ``strict``:
    every convolution and dense layer must then be covered), ``exact``: LRP-0 for pools, sums and unmerged
    BatchNorms, and ``fallback`` makes the per-channel epsilon rule of an unmerged BatchNorm."""

    layers: tuple
    first: tuple
    named: dict
    strict: bool
    exact: bool
    fallback: Callable[[], Rule]


def plan(composite, *, epsilon: float, gamma: float, low, high) -> Plan:
    """Check ``composite`` (a name, a mapping or ``None`` for the default) and make its rules."""
    made: dict[str, Rule] = {}

    def make(name: str) -> Rule:
        if name not in made:
            made[name] = make_rule(name, epsilon, gamma, low, high)
        return made[name]

    if composite is None:
        composite = DEFAULT
    if isinstance(composite, str):
        if composite not in COMPOSITES:
            raise PellucidError(f"unknown LRP composite {composite!r}; choose one of: {', '.join(COMPOSITES)}, or "
                                "pass a mapping {layer name or module type: rule name}")
        c = COMPOSITES[composite]
        layers = tuple((types, make(rule)) for types, rule in c.layers)
        first = tuple((types, make(rule)) for types, rule in c.first)
        return Plan(layers, first, {}, False, c.exact, lambda: make("zero" if c.exact else "epsilon"))
    if not isinstance(composite, Mapping):
        raise PellucidError(f"composite must be a name ({', '.join(COMPOSITES)}) or a mapping "
                            f"{{layer name or module type: rule}}, got {type(composite).__name__}")
    named, typed = {}, []
    for key, value in composite.items():
        rule = value if isinstance(value, Rule) else make(value) if isinstance(value, str) else None
        if rule is None:
            raise PellucidError(f"the rule for {key!r} must be a rule name ({', '.join(RULES)}) or a Rule, "
                                f"got {value!r}")
        if isinstance(key, str):
            named[key] = rule
        elif isinstance(key, type) and issubclass(key, nn.Module):
            typed.append((key, rule))
        else:
            raise PellucidError(f"LRP mapping keys are layer names or module types (nn.Conv2d), got {key!r}")
    return Plan(tuple(typed), (), named, True, False, lambda: make("epsilon"))


def assign(plan: Plan, modules: Mapping[str, nn.Module], order, unmerged=()) -> dict[str, Rule]:
    """``{layer name: Rule}`` for the ruled layers, pools and unmerged BatchNorms of ``modules`` (the layers
    that ran, by name); ``order`` lists them in the order they ran (the first is "the first layer")."""
    for key in plan.named:
        if key not in modules:
            close = difflib.get_close_matches(key, list(modules), n=4, cutoff=0.5)
            raise PellucidError(f"no layer {key!r} runs in this model (a rule goes on a layer without sub-layers)"
                                + (f"; close matches: {', '.join(close)}" if close else "")
                                + " (`pellucid layers --model M` lists the names)")
    first = next((n for n in order if isinstance(modules[n], tuple(t for t, _ in plan.first))), None)
    rules = {}
    for name, m in modules.items():
        pairs = plan.first if name == first else plan.layers
        rule = plan.named.get(name) or next((r for types, r in pairs if isinstance(m, types)), None)
        if rule is not None:
            rules[name] = rule
        elif plan.strict and isinstance(m, RULED):
            raise PellucidError(f"layer {name!r} ({type(m).__name__}) has no LRP rule in the mapping; add it by "
                                f"name ({{{name!r}: 'epsilon'}}) or by type ({{nn.{type(m).__name__}: 'zplus'}}), "
                                f"with a rule from: {', '.join(RULES)}")
    proportional = Rule("zero" if plan.exact else "norm", (Group((Part(),)),), None if plan.exact else STABILIZER)
    for name, m in modules.items():
        if name not in rules and isinstance(m, POOLS):
            rules[name] = proportional
    for name in unmerged:  # a per-channel affine layer: the epsilon rule (LRP-0 under "zero")
        if name not in rules:
            rules[name] = plan.fallback()
    return rules
