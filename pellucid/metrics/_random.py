"""Noise drawn per row from the seed alone, so a metric's value does not depend on ``batch_size``."""

from __future__ import annotations

import torch

from .._checks import PellucidError

_MIX = 0x9E3779B97F4A7C15  # odd 64-bit constant: distinct (seed, row) pairs get distinct generator seeds


def base_seed(seed: int | torch.Generator) -> int:
    """An int seed, or one drawn from a caller's ``torch.Generator`` (which advances it)."""
    if isinstance(seed, torch.Generator):
        return int(torch.randint(2**62, (1,), generator=seed, device=seed.device))
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise PellucidError(f"seed must be an int or a torch.Generator, got {seed!r}")
    return seed


def row_noise(seed: int, rows: slice, shape: tuple[int, ...], like: torch.Tensor, kind: str = "normal") -> torch.Tensor:
    """Noise ``(rows, *shape)`` where row ``r`` depends on ``(seed, r)`` only: standard normal or uniform [0, 1).

    One small generator per row; the draws of a chunk of rows equal those of the same rows in any other
    chunking. No global random state is touched."""
    out = torch.empty((rows.stop - rows.start, *shape), device=like.device, dtype=like.dtype)
    gen = torch.Generator(device=like.device)
    for j, r in enumerate(range(rows.start, rows.stop)):
        gen.manual_seed((seed * _MIX + r) % 2**63)
        (out[j].normal_ if kind == "normal" else out[j].uniform_)(generator=gen)
    return out
