"""Running a job: :func:`explain_dataset` is a data-set stage (:mod:`pellucid.dataset`): each aligned
chunk of images is loaded, explained and written by a worker, here (a DataLoader prefetches) or on a Ray
Data actor pool, and the driver commits the rows as they arrive."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import torch
from torch import nn

from .._checks import PellucidError, check_choice, check_number, check_positive_int
from .._progress import bar
from ..adversarial import MINIMAL_ATTACKS
from ..dataset import DATASETS, ChunkLoader, Stage, chunks_of, list_items, run_stage
from .compute import Timer, process_loaded
from .job import Job, resolve_methods
from .store import ResultStore, check_out, job_folder
from .summary import write_report


@dataclass
class BatchResult:
    """What a run did: counts, throughput and the seconds spent per stage."""

    out: Path
    done: int = 0
    failed: int = 0
    skipped: int = 0
    seconds: float = 0.0
    stages: dict = field(default_factory=dict)
    report: Path | None = None

    @property
    def images_per_s(self) -> float:
        return (self.done + self.failed) / self.seconds if self.seconds > 0 else float("nan")

    def count(self, rows: Sequence[dict]) -> None:
        self.failed += sum(r["status"] == "failed" for r in rows)
        self.done += sum(r["status"] == "done" for r in rows)


def explain_dataset(source: str, out, model: str | nn.Module = "digits", methods: Sequence[str] | str = ("saliency",),
                    *, weights: str | None = None, attack: str | None = None, eps: float | None = None,
                    metric_steps: int = 20, seed: int = 0, limit: int | None = None, batch_size: int = 32,
                    num_workers: int = 0, engine: str = "local", ray_workers: int = 2, address: str | None = None,
                    device: str = "cpu", max_pixels: int = 40_000_000, progress: bool = True,
                    report: bool = True, fsync: bool = False) -> BatchResult:
    """Explain every image of a folder or built-in set (``"digits-test"``) into ``out``; resumable.

    Writes ``out/maps/METHOD/KEY.npy`` (``(H, W)`` float32), ``out/overlays/KEY.png``, one row per
    image in ``out/results.sqlite`` and ``out/report.html``. Rerunning with the same arguments skips
    finished images. ``out`` must be new, empty, or the folder of an earlier job: a folder of other
    files is refused, so no file the job did not write is ever overwritten or deleted.
    ``engine="ray"`` runs the batches on Ray Data actors (``address`` of a cluster).
    ``methods``: names of registered attribution methods; ``attack``: one of ``MINIMAL_ATTACKS``.
    """
    check_choice(engine, "engine", ("local", "ray"))
    for value, name in ((batch_size, "batch_size"), (ray_workers, "ray_workers"), (max_pixels, "max_pixels")):
        check_positive_int(value, name)
    check_positive_int(num_workers, "num_workers", 0)
    check_number(metric_steps, "metric_steps", 2, integer=True, allow_zero=True, hint=" (0 skips the curves)")
    if attack is not None:
        check_choice(attack, "attack", MINIMAL_ATTACKS)
    if limit is not None:
        check_positive_int(limit, "limit")
    if eps is not None and not (isinstance(eps, (int, float)) and math.isfinite(eps) and eps > 0):
        raise PellucidError(f"eps must be a number > 0 (the largest epsilon the search tries), got {eps!r}")
    check_device(device)
    if not isinstance(model, str | nn.Module):
        raise PellucidError(f"model must be a model's name such as 'digits' or a torch.nn.Module, "
                            f"got {type(model).__name__} {model!r:.60}")
    if not isinstance(out, str | os.PathLike) or not str(out).strip():
        raise PellucidError(f"out must be a folder path for the results, got {type(out).__name__} {out!r:.60}")
    name = model if isinstance(model, str) else getattr(model, "name", type(model).__name__)
    source = str(source) if str(source) in DATASETS else str(Path(source).resolve())
    out = Path(out)
    if source not in DATASETS and out.resolve() == Path(source):
        raise PellucidError(f"--out {str(out)!r} is the input folder: choose another folder for the results")
    check_out(out)  # a folder the job did not make is refused before the model loads
    job = Job(source, name, weights, resolve_methods(methods), attack, eps, metric_steps, seed, max_pixels,
              limit, device, None if isinstance(model, str) else model)
    # everything that can fail on the arguments fails here, before anything is written to ``out``
    loaded = job.load_model()
    items = list_items(job.input, getattr(loaded, "labels", None), limit, exclude=out)
    with job_folder(out, job):
        store = ResultStore(out, job.methods)
        try:
            finished = store.finished()
            pending = [it for it in items if it.key not in finished]
            result = BatchResult(out, skipped=len(items) - len(pending))
            start = time.perf_counter()
            run(job, loaded, pending, out, store, result, batch_size, engine=engine, num_workers=num_workers,
                ray_workers=ray_workers, address=address, progress=progress, fsync=fsync)
            result.seconds = time.perf_counter() - start
        finally:
            store.close()
        if report:
            result.report = write_report(out)
    return result


def check_device(device) -> None:
    """A device torch knows and this machine has (``cpu``, ``cuda``, ``cuda:1``, ``mps``), else a clear error."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise PellucidError(f"unknown device {device!r}: give cpu, cuda, cuda:N or mps") from e
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise PellucidError(f"device {device!r} is not available: this machine has no usable CUDA GPU "
                                "(torch.cuda.is_available() is False); use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise PellucidError(f"device {device!r} is not available: this machine has "
                                f"{torch.cuda.device_count()} CUDA device(s)")
    elif dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise PellucidError(f"device {device!r} is not available on this machine; use --device cpu")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise PellucidError(f"device {device!r} is not supported by the batch job: give cpu, cuda, cuda:N or mps")


def _input_size(model: nn.Module) -> tuple[int, ...]:
    return tuple(getattr(model, "input_size", None) or (3, 224, 224))


class Explainer:
    """The stage's worker: explains a loaded chunk, writes its files, returns its rows and stage seconds."""

    def __init__(self, job: Job, out: str, fsync: bool = False, model: nn.Module | None = None):
        self.job, self.out, self.fsync = job, Path(out), fsync
        self.model = job.load_model() if model is None else model

    def __call__(self, loaded: Sequence[tuple]) -> tuple[list[dict], dict]:
        timer = Timer()
        rows = process_loaded(self.model, self.job, loaded, self.out, timer, self.fsync)
        return rows, timer.seconds


def run(job: Job, model: nn.Module, pending, out: Path, store: ResultStore, result: BatchResult,
        batch_size: int, engine: str = "local", num_workers: int = 0, ray_workers: int = 2,
        address: str | None = None, progress: bool = True, fsync: bool = False) -> None:
    """Explain the pending images chunk by chunk; commit each chunk's rows as it arrives. Locally the
    worker uses the model loaded here; Ray actors (one GPU each with a cuda device) load their own."""
    stage = Stage(ChunkLoader(_input_size(model), job.max_pixels, job.input),
                  partial(Explainer, job, str(out.resolve()), fsync))
    local = Explainer(job, str(out), fsync, model) if engine == "local" else None
    timer = Timer()
    with bar(len(pending), "pellucid batch", progress, unit="img") as shown:
        for done in run_stage(stage, chunks_of(pending, batch_size), engine=engine, worker=local,
                              num_workers=num_workers, ray_workers=ray_workers, address=address,
                              gpu=job.device.startswith("cuda")):
            rows, stages = done.value
            timer.add("load", done.load_seconds)
            for name, seconds in stages.items():
                timer.add(name, seconds)
            with timer("commit"):
                store.commit(rows)
            result.count(rows)
            shown.update(len(rows))
    result.stages = timer.seconds
