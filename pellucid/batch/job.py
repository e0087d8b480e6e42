"""What a batch job computes: its configuration (the hash that guards resumes) and its methods."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field

from torch import nn

from .. import registry
from .._checks import PellucidError


def resolve_methods(names: Sequence[str] | str) -> tuple[str, ...]:
    """Validate method names (a list or ``"a,b"``) against the registry; unknown names raise, listing
    the registered ones."""
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    names = tuple(dict.fromkeys(names))
    valid = registry.methods()
    if not names:
        raise PellucidError(f"no methods given; choose from: {', '.join(valid)}")
    for name in names:
        if name not in valid:
            raise PellucidError(f"unknown method {name!r}; choose from: {', '.join(valid)}")
    return names


@dataclass(frozen=True)
class Job:
    """What to compute. Only :meth:`config` fields decide the results; the hash guards resumes."""

    input: str
    model: str = "digits"
    weights: str | None = None
    methods: tuple[str, ...] = ("saliency",)
    attack: str | None = None
    eps: float | None = None
    metric_steps: int = 20
    seed: int = 0
    max_pixels: int = 40_000_000
    limit: int | None = None
    device: str = "cpu"
    module: nn.Module | None = field(default=None, compare=False, repr=False)

    def config(self) -> dict:
        model = self.model if self.module is None else f"module:{self.model}:{state_hash(self.module)}"
        return {"input": self.input, "model": model, "weights": self.weights, "methods": list(self.methods),
                "attack": self.attack, "eps": self.eps, "metric_steps": self.metric_steps, "seed": self.seed}

    def config_hash(self) -> str:
        return hashlib.sha256(json.dumps(self.config(), sort_keys=True).encode()).hexdigest()[:16]

    def load_model(self) -> nn.Module:
        from ..models import load_model

        if self.module is not None:
            return self.module  # the caller's module stays where it is; images follow it
        return load_model(self.model, weights=self.weights).to(self.device)


def state_hash(module: nn.Module) -> str:
    h = hashlib.sha256()
    for name, t in module.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]
