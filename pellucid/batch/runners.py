"""Running a job: :func:`explain_dataset`, the local runner (a DataLoader) and the Ray Data runner
(an actor pool); both explain the same aligned batches and the driver commits their rows."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .._checks import PellucidError, check_choice, check_number, check_positive_int
from .._progress import bar
from ..adversarial import MINIMAL_ATTACKS
from .compute import Timer, process_loaded
from .items import Item, ItemDataset, chunk_positions, list_items
from .job import DATASETS, Job, resolve_methods
from .store import ResultStore, job_folder
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
    finished images. ``engine="ray"`` runs the batches on Ray Data actors (``address`` of a cluster).
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
    name = model if isinstance(model, str) else getattr(model, "name", type(model).__name__)
    source = str(source) if str(source) in DATASETS else str(Path(source).resolve())
    out = Path(out)
    if source not in DATASETS and out.resolve() == Path(source):
        raise PellucidError(f"--out {str(out)!r} is the input folder: choose another folder for the results")
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
            run = run_local if engine == "local" else run_ray
            run(job, loaded, pending, out, store, result, batch_size, num_workers=num_workers,
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


def run_local(job: Job, model: nn.Module, pending: Sequence[Item], out: Path, store: ResultStore,
              result: BatchResult, batch_size: int, num_workers: int = 0, progress: bool = True,
              fsync: bool = False, **_ignored) -> None:
    """Stream the pending images through a DataLoader, one aligned batch at a time."""
    dataset = ItemDataset(pending, _input_size(model), job.max_pixels, job.input)
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=chunk_positions(pending, batch_size),
                                         num_workers=num_workers, collate_fn=list)
    timer = Timer()
    with bar(len(pending), "pellucid batch", progress, unit="img") as shown:
        batches = iter(loader)
        while True:
            with timer("load"):
                batch = next(batches, None)
            if batch is None:
                break
            rows = process_loaded(model, job, batch, out, timer, fsync)
            with timer("commit"):
                store.commit(rows)
            result.count(rows)
            shown.update(len(rows))
    result.stages = timer.seconds


# ---------------------------------------------------------------------------------------------
# Ray Data: the same batches on an actor pool, the driver commits the rows


def _ray():
    try:
        import ray
        import ray.data
    except ImportError as e:
        raise PellucidError("engine='ray' needs Ray Data: pip install 'pellucid[ray]' (ray[data]>=2.9), "
                            "or use engine='local'") from e
    return ray


class RayExplainer:
    """A Ray Data actor: loads the model once, then explains one chunk of items per call."""

    def __init__(self, job: Job, out: str, fsync: bool = False):
        self.job, self.out, self.fsync = job, Path(out), fsync
        self.model = job.load_model()
        self.dataset = ItemDataset([], _input_size(self.model), job.max_pixels, job.input)

    def __call__(self, batch: dict) -> dict:
        results = []
        for chunk in batch["chunk"]:
            self.dataset.items = [Item(**d) for d in json.loads(chunk)]
            timer = Timer()
            with timer("load"):
                loaded = [self.dataset[i] for i in range(len(self.dataset))]
            rows = process_loaded(self.model, self.job, loaded, self.out, timer, self.fsync)
            results.append(json.dumps({"rows": rows, "stages": timer.seconds}))
        return {"result": np.array(results, dtype=object)}


def run_ray(job: Job, model: nn.Module, pending: Sequence[Item], out: Path, store: ResultStore,
            result: BatchResult, batch_size: int, ray_workers: int = 2, address: str | None = None,
            progress: bool = True, fsync: bool = False, **_ignored) -> None:
    """Ray Data: read the item paths, ``map_batches`` on a pool of ``ray_workers`` actors that each
    load the model once, write the same files; the driver commits each batch's rows as it arrives."""
    ray = _ray()
    started = not ray.is_initialized()
    if started:
        ray.init(address=address, num_cpus=None if address else ray_workers, include_dashboard=False,
                 log_to_driver=False)
    try:
        ray.data.DataContext.get_current().enable_progress_bars = False
        chunks = [json.dumps([asdict(pending[i]) for i in idx]) for idx in chunk_positions(pending, batch_size)]
        if not chunks:
            return
        gpu = job.device.startswith("cuda")
        ds = ray.data.from_items([{"chunk": c} for c in chunks]).map_batches(
            RayExplainer, fn_constructor_kwargs={"job": job, "out": str(out.resolve()), "fsync": fsync},
            batch_size=1, compute=ray.data.ActorPoolStrategy(size=ray_workers), batch_format="numpy",
            num_cpus=0 if gpu else 1, num_gpus=1 if gpu else 0)
        stages: dict[str, float] = {}
        with bar(len(pending), "pellucid batch", progress, unit="img") as shown:
            for row in ds.iter_rows():
                res = json.loads(row["result"])
                store.commit(res["rows"])
                result.count(res["rows"])
                shown.update(len(res["rows"]))
                for k, v in res["stages"].items():
                    stages[k] = stages.get(k, 0.0) + v
        result.stages = stages
    finally:
        if started:
            ray.shutdown()
