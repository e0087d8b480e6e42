"""Training the built-in models: one loop, one checkpoint writer, one cache reader.

The loop is AdamW with a one-cycle learning rate on cross-entropy, the schedule the built-in models
(``digits``, ``langid``) were tuned with. A checkpoint is ``{"state_dict", "meta"}`` written with
``torch.save`` and read back with ``weights_only=True``: it never runs code.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from .._progress import bar

Batches = Callable[[], Iterable[tuple]]
_local = threading.local()


class TrainingStopped(Exception):
    """Raised by :func:`train_loop` between two steps once a check of :func:`stop_training_when` is true."""


@contextmanager
def stop_training_when(check: Callable[[], bool]) -> Iterator[None]:
    """While inside, a :func:`train_loop` run by this thread raises :class:`TrainingStopped` between two
    steps once ``check()`` is true: a server that is stopping stops the model it is training."""
    checks = _local.__dict__.setdefault("checks", [])
    checks.append(check)
    try:
        yield
    finally:
        checks.remove(check)


def train_loop(model: nn.Module, epoch: Batches, epochs: int, steps_per_epoch: int, lr: float, desc: str,
               progress: bool = True, forward: Callable | None = None, clip: float | None = None,
               weight_decay: float = 1e-4, loss: Callable[..., torch.Tensor] | None = None) -> nn.Module:
    """Train ``model`` for ``epochs`` passes over ``epoch()``'s ``(inputs, labels)`` batches.

    ``forward`` maps a batch's inputs to logits (default: ``model``); ``clip`` caps the gradient norm.
    ``loss(forward, *batch)`` is the loss of one batch (default: the cross-entropy of ``forward(inputs)``
    against ``labels``); a batch may then carry more than inputs and labels (input masks, weights).
    Randomness (shuffling, augmentation) belongs to ``epoch``, which draws from its own generator.
    Returns the model in eval mode, with no gradients left on its parameters. Stops early, raising
    :class:`TrainingStopped`, when a check of :func:`stop_training_when` in this thread becomes true.
    """
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * steps_per_epoch)
    forward = model if forward is None else forward
    loss = _cross_entropy if loss is None else loss
    stops = getattr(_local, "checks", ())
    model.train()
    with bar(total=epochs * steps_per_epoch, desc=desc, progress=progress) as pbar:
        for _ in range(epochs):
            for batch in epoch():
                opt.zero_grad(set_to_none=True)
                loss(forward, *batch).backward()
                if clip is not None:
                    nn.utils.clip_grad_norm_(model.parameters(), clip)
                opt.step()
                sched.step()
                pbar.update(1)
                if any(stop() for stop in stops):
                    raise TrainingStopped(f"{desc}: stopped before the end of training")
    model.eval()
    for p in model.parameters():
        p.grad = None
    return model


def _cross_entropy(forward: Callable, inputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return nn.functional.cross_entropy(forward(inputs), labels)


def save_checkpoint(module: nn.Module, path: Path, **meta) -> None:
    """Write ``module``'s state_dict and ``meta`` to ``path`` atomically (a temporary file, then a rename)."""
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save({"state_dict": module.state_dict(), "meta": meta}, tmp)
    tmp.replace(path)


def read_cached(path: Path, build: Callable[[], nn.Module], what: str) -> tuple[nn.Module, dict] | None:
    """``(module, meta)``: a module from ``build()`` with the cached weights at ``path``; ``None`` when the
    file is missing or unreadable (a corrupt or stale file is reported on stderr: the caller retrains)."""
    if not path.exists():
        return None
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        with torch.random.fork_rng(devices=[]):  # the init is overwritten: leave the global RNG alone
            module = build()
        module.load_state_dict(ckpt["state_dict"])
    except Exception as e:  # corrupt or stale file
        print(f"pellucid: cached {what} weights at {path} are unreadable ({type(e).__name__}); retraining",
              file=sys.stderr)
        return None
    meta = ckpt.get("meta")
    return module, meta if isinstance(meta, dict) else {}
