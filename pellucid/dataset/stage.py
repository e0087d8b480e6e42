"""The data-set stage: one function over a data set in aligned chunks, and the results streamed back to
the caller, who then takes a step over all of them.

A pass is a :class:`Stage`: ``load(chunk)`` reads one chunk's inputs (image files, a built-in set's rows:
CPU work that runs in DataLoader processes or in the worker), ``setup()`` builds a worker once per process
(it loads the model), and the worker turns a loaded chunk into a result (table rows, small maps,
activations). :func:`run_stage` runs it in this process (a DataLoader prefetches chunks with
``num_workers`` processes) or on a Ray Data actor pool, and yields each chunk's result as it arrives, so
the step over all of them (commit the rows, cluster the maps, factorize the activations) runs in the caller
while chunks stream in and memory holds one chunk of full-size inputs at a time. The batch job is a stage;
the data-set scan, model diffs and concept discovery are built the same way.
"""

from __future__ import annotations

import pickle
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch

from .._checks import PellucidError, check_choice, check_positive_int


@dataclass(frozen=True)
class Stage:
    """``load(chunk) -> loaded`` and ``setup() -> worker`` with ``worker(loaded) -> result``. For
    ``engine="ray"`` both must pickle (module-level functions, ``functools.partial``, dataclasses)."""

    load: Callable[[Any], Any]
    setup: Callable[[], Callable[[Any], Any]]


class Done(NamedTuple):
    """One chunk's result: its index in the chunk list, the worker's value, the seconds spent loading it."""

    index: int
    value: Any
    load_seconds: float


def run_stage(stage: Stage, chunks: Sequence[Any], *, engine: str = "local", worker: Callable | None = None,
              num_workers: int = 0, ray_workers: int = 2, address: str | None = None,
              gpu: bool = False) -> Iterator[Done]:
    """Run ``stage`` over ``chunks``; yields :class:`Done` per chunk (in order locally, as finished on Ray).

    ``worker``: a worker already built in this process (``engine="local"`` only; e.g. around a model the
    caller has loaded), instead of ``stage.setup()``.
    """
    check_choice(engine, "engine", ("local", "ray"))
    check_positive_int(num_workers, "num_workers", 0)
    check_positive_int(ray_workers, "ray_workers")
    if not chunks:
        return
    if engine == "local":
        yield from _run_local(stage, chunks, worker or stage.setup(), num_workers)
    else:
        yield from _run_ray(stage, chunks, ray_workers, address, gpu)


def _identity(x):
    return x


class _Chunks(torch.utils.data.Dataset):
    def __init__(self, chunks: Sequence[Any], load: Callable[[Any], Any]):
        self.chunks, self.load = list(chunks), load

    def __len__(self) -> int:
        return len(self.chunks)

    def __getitem__(self, i: int):
        return self.load(self.chunks[i])


def _run_local(stage: Stage, chunks: Sequence[Any], worker: Callable, num_workers: int) -> Iterator[Done]:
    loader = torch.utils.data.DataLoader(_Chunks(chunks, stage.load), batch_size=None, num_workers=num_workers,
                                         collate_fn=_identity)
    loaded_chunks = iter(loader)
    for index in range(len(chunks)):
        start = time.perf_counter()
        loaded = next(loaded_chunks)
        waited = time.perf_counter() - start
        yield Done(index, worker(loaded), waited)


def _ray():
    try:
        import ray
        import ray.data
    except ImportError as e:
        raise PellucidError("engine='ray' needs Ray Data: pip install 'pellucid[ray]' (ray[data]>=2.9), "
                            "or use engine='local'") from e
    return ray


class RayWorker:
    """A Ray Data actor: builds the stage's worker once, then loads and runs one chunk per row."""

    def __init__(self, stage: Stage):
        self.stage, self.worker = stage, stage.setup()

    def __call__(self, batch: dict) -> dict:
        out = []
        for index, chunk in zip(batch["index"], batch["chunk"]):
            start = time.perf_counter()
            loaded = self.stage.load(pickle.loads(chunk))
            waited = time.perf_counter() - start
            out.append(pickle.dumps(Done(int(index), self.worker(loaded), waited)))
        return {"done": np.array(out, dtype=object)}


def _run_ray(stage: Stage, chunks: Sequence[Any], ray_workers: int, address: str | None, gpu: bool) -> Iterator[Done]:
    """Ray Data: the chunk list becomes a dataset, ``map_batches`` runs it on ``ray_workers`` actors that
    each build the worker once (one GPU each with ``gpu``, else one CPU); results stream back as they finish."""
    ray = _ray()
    started = not ray.is_initialized()
    if started:
        ray.init(address=address, num_cpus=None if address else ray_workers, include_dashboard=False,
                 log_to_driver=False)
    try:
        ray.data.DataContext.get_current().enable_progress_bars = False
        rows = [{"index": i, "chunk": pickle.dumps(c)} for i, c in enumerate(chunks)]
        ds = ray.data.from_items(rows).map_batches(
            RayWorker, fn_constructor_kwargs={"stage": stage}, batch_size=1,
            compute=ray.data.ActorPoolStrategy(size=ray_workers), batch_format="numpy",
            num_cpus=0 if gpu else 1, num_gpus=1 if gpu else 0)
        for row in ds.iter_rows():
            yield pickle.loads(row["done"])
    finally:
        if started:
            ray.shutdown()
