"""One batch of loaded images: predictions, maps of the registered methods, faithfulness, minimal
epsilon, the files, and the table rows."""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .. import registry
from ..dataset import Item, failed_row
from .job import Job
from .store import write_files


class Timer:
    """Seconds spent per stage, summed over the job (the per-image cost breakdown)."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, stage: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.add(stage, time.perf_counter() - start)

    def add(self, stage: str, seconds: float) -> None:
        self.seconds[stage] = self.seconds.get(stage, 0.0) + seconds


def seed_for(seed: int, key: str) -> int:
    """A per-image seed from the job seed and the image key (stable across processes and machines)."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{key}".encode()).digest()[:4], "little")


def attribute(job: Job, name: str, model: nn.Module, x: torch.Tensor, target: torch.Tensor,
              items: Sequence[Item]) -> torch.Tensor:
    """``(N, H, W)`` maps of one method with its record's defaults; seeded methods run per image
    with a per-image seed, so results do not depend on batching."""
    record = registry.method(name)
    if not record.seeded:
        return record(model, x, target, **record.defaults(x, job.seed))
    return torch.cat([record(model, x[i : i + 1], target[i : i + 1],
                             **record.defaults(x[i : i + 1], seed_for(job.seed, it.key)))
                      for i, it in enumerate(items)])


def faithfulness(model: nn.Module, x: torch.Tensor, target: torch.Tensor, maps: torch.Tensor,
                 steps: int) -> tuple[list, list]:
    """Deletion and insertion AUC per image (Petsiuk et al. 2018)."""
    from ..metrics import deletion, insertion

    return (_finite(deletion(model, x, target, maps, steps=steps).auc),
            _finite(insertion(model, x, target, maps, steps=steps).auc))


def minimal_eps(model: nn.Module, x: torch.Tensor, label: torch.Tensor, attack: str,
                max_eps: float | None) -> list:
    """The smallest epsilon that flips each label (``None`` where even ``max_eps`` does not)."""
    from ..adversarial import minimal_epsilon

    return _finite(minimal_epsilon(model, x, label, attack=attack, eps_max=max_eps, progress=False))


def _finite(values: torch.Tensor) -> list:
    """Floats per image for the table, ``None`` (NULL) for inf or NaN."""
    return [v if np.isfinite(v) else None for v in values.detach().double().cpu().tolist()]


def explain_chunk(model: nn.Module, job: Job, items: Sequence[Item], x: torch.Tensor, out: Path,
                  timer: Timer, fsync: bool = False) -> list[dict]:
    """Explain one batch of loaded images, write their files atomically, return their table rows."""
    from .._grad import predictions

    start = time.perf_counter()
    x = x.to(next(model.parameters(), x).device)
    with timer("forward"):
        probs = predictions(model, x)
    conf, pred = probs.max(1)
    rows = [{"key": it.key, "position": it.position, "label": it.label, "status": "done", "reason": None,
             "prediction": int(pred[i]), "confidence": float(conf[i]),
             "correct": None if it.label < 0 else int(int(pred[i]) == it.label)} for i, it in enumerate(items)]
    maps = {}
    for name in job.methods:
        with timer(f"method {name}"):
            maps[name] = attribute(job, name, model, x, pred, items).detach().float()
        if job.metric_steps > 0:
            with timer("deletion/insertion"):
                dels, ins = faithfulness(model, x, pred, maps[name], job.metric_steps)
            for i, row in enumerate(rows):
                row[f"{name}_deletion"] = None if dels is None else dels[i]
                row[f"{name}_insertion"] = None if ins is None else ins[i]
    eps = None
    if job.attack:
        with timer("minimal eps"):
            eps = minimal_eps(model, x, pred, job.attack, job.eps)
    seconds = (time.perf_counter() - start) / len(items)
    for i, row in enumerate(rows):
        row["min_eps"], row["seconds"] = (None if eps is None else eps[i]), seconds
    with timer("write files"):
        write_files(out, items, x.cpu(), {k: v.cpu() for k, v in maps.items()}, fsync)
    return rows


def process_loaded(model: nn.Module, job: Job, batch: Sequence[tuple], out: Path, timer: Timer,
                   fsync: bool = False) -> list[dict]:
    """Rows for a loaded batch ``[(item, image or None, reason or None)]``: failures, then the rest."""
    rows = [failed_row(item, reason) for item, img, reason in batch if img is None]
    ok = [(item, img) for item, img, _ in batch if img is not None]
    if ok:
        x = torch.stack([img for _, img in ok])
        rows += explain_chunk(model, job, [item for item, _ in ok], x, out, timer, fsync)
    return rows
