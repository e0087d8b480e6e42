"""Explain a whole data set: a streaming, resumable batch job, on one machine or on Ray Data.

Every image gets one ``.npy`` map per method, a small PNG overlay and one row in a SQLite table
(prediction, confidence, deletion/insertion AUC per method, minimal epsilon, time). The table is
the manifest: a batch's files are renamed into place first, then its rows are committed in one
transaction, so a job killed at any moment (``kill -9`` included) resumes where it stopped and
never redoes a committed image. Example::

    res = pl.explain_dataset("digits-test", "out", methods=("saliency", "ig"))
    rows = pl.read_results("out")          # one dict per image
"""

from __future__ import annotations

import contextlib
import hashlib
import html
import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ._checks import PellucidError, check_choice, check_positive_int

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
DATASETS = {"digits-test": "test", "digits-train": "train", "digits": "all"}
ATTACKS = ("fgsm", "pgd")
RANDOM_METHODS = ("smoothgrad", "lime")  # seeded per image, so results do not depend on batching
TABLE = "results.sqlite"


# ---------------------------------------------------------------------------------------------
# methods and the thin adapters to features that may live in other modules


def available_methods() -> dict[str, Callable]:
    """Method name -> ``(model, x, target, **kw) -> (N, H, W)``: ``attribution.METHODS`` if present."""
    from . import attribution

    registry = getattr(attribution, "METHODS", None)
    if registry is not None:
        return dict(registry)
    methods = {
        "saliency": attribution.saliency,
        "input_x_gradient": lambda m, x, t, **kw: attribution.input_x_gradient(m, x, t, **kw).sum(1),
    }
    if hasattr(attribution, "integrated_gradients"):
        methods["ig"] = lambda m, x, t, **kw: attribution.integrated_gradients(m, x, t, **kw).sum(1)
    return methods


def resolve_methods(names: Sequence[str] | str) -> tuple[str, ...]:
    """Validate method names (a list or ``"a,b"``); unknown names raise, listing the valid ones."""
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    names = tuple(dict.fromkeys(names))
    valid = available_methods()
    if not names:
        raise PellucidError(f"no methods given; choose from: {', '.join(valid)}")
    for name in names:
        if name not in valid:
            raise PellucidError(f"unknown method {name!r}; choose from: {', '.join(valid)}")
    return names


def faithfulness(model: nn.Module, x: torch.Tensor, target: torch.Tensor, maps: torch.Tensor,
                 steps: int) -> tuple[list, list]:
    """Deletion and insertion AUC per image (Petsiuk et al. 2018)."""
    from .metrics import deletion, insertion

    return (_finite(deletion(model, x, target, maps, steps=steps).auc),
            _finite(insertion(model, x, target, maps, steps=steps).auc))


def minimal_eps(model: nn.Module, x: torch.Tensor, label: torch.Tensor, attack: str,
                max_eps: float | None) -> list:
    """The smallest epsilon that flips each label (``None`` where even ``max_eps`` does not)."""
    from .adversarial import minimal_epsilon

    return _finite(minimal_epsilon(model, x, label, attack=attack, eps_max=max_eps, progress=False))


def _finite(values: torch.Tensor) -> list:
    """Floats per image for the table, ``None`` (NULL) for inf or NaN."""
    return [v if np.isfinite(v) else None for v in values.detach().double().cpu().tolist()]


# ---------------------------------------------------------------------------------------------
# the job: its configuration, its items and how one item is loaded


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
        from .models import load_model

        if self.module is not None:
            return self.module  # the caller's module stays where it is; images follow it
        return load_model(self.model, weights=self.weights).to(self.device)


def state_hash(module: nn.Module) -> str:
    h = hashlib.sha256()
    for name, t in module.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


@dataclass(frozen=True)
class Item:
    """One image of the job: its position, its key (file names derive from it), its source, its label."""

    position: int
    key: str
    source: str | int
    label: int = -1


def list_items(source: str, labels: Sequence[str] | None = None, limit: int | None = None) -> list[Item]:
    """The job's images: a built-in set (``digits-test``) or every file under a folder, sorted.

    Files under a first-level folder named like a class of the model get that class as label.
    """
    if source in DATASETS:
        from .data import digits

        y = digits(DATASETS[source])[1].tolist()
        items = [Item(i, f"{source}/{i:05d}", i, int(y[i])) for i in range(len(y))]
    else:
        root = Path(source)
        if not root.is_dir():
            raise PellucidError(f"input {source!r} is neither a folder nor a data set; "
                                f"give a folder of PNG/JPEG/WebP images or one of: {', '.join(DATASETS)}")
        names = {str(lb).lower(): k for k, lb in enumerate(labels or [])}
        files = sorted(p for p in root.rglob("*") if p.is_file() and not _hidden(p.relative_to(root)))
        items = []
        for i, p in enumerate(files):
            rel = p.relative_to(root)
            label = names.get(rel.parts[0].lower(), -1) if len(rel.parts) > 1 else -1
            items.append(Item(i, rel.as_posix(), str(p), label))
    return items[:limit] if limit is not None else items


def _hidden(rel: Path) -> bool:
    return any(part.startswith(".") for part in rel.parts)


def load_item(item: Item, input_size: tuple[int, int, int], max_pixels: int,
              dataset: torch.Tensor | None = None) -> torch.Tensor:
    """One image as ``(C, H, W)`` in [0, 1]; a bad file raises PellucidError with the reason."""
    if isinstance(item.source, int):
        return dataset[item.source]
    from PIL import Image

    path = Path(item.source)
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        raise PellucidError(f"not an image file: extension {path.suffix or '(none)'!r}; "
                            f"accepted: {', '.join(IMAGE_SUFFIXES)}")
    try:
        with Image.open(path) as img:
            w, h = img.size
    except Image.DecompressionBombError as e:
        raise PellucidError(f"image too large to open safely: {e}") from e
    except (OSError, SyntaxError, ValueError) as e:
        raise PellucidError(f"cannot read image: not a valid PNG, JPEG or WebP file ({e})") from e
    if w * h > max_pixels:
        raise PellucidError(f"image too large: {w}x{h} = {w * h:,} pixels, above max_pixels={max_pixels:,}")
    from types import SimpleNamespace

    from .io import load_image

    return load_image(path, SimpleNamespace(input_size=tuple(input_size)))[0]


class ItemDataset(torch.utils.data.Dataset):
    """Items -> ``(item, image or None, failure reason or None)``; a DataLoader streams it."""

    def __init__(self, items: Sequence[Item], input_size, max_pixels: int, source: str):
        self.items, self.input_size, self.max_pixels, self.source = list(items), input_size, max_pixels, source
        self._data = None

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        item = self.items[i]
        if self._data is None and self.source in DATASETS:
            from .data import digits

            self._data = digits(DATASETS[self.source])[0]
        try:
            return item, load_item(item, self.input_size, self.max_pixels, self._data), None
        except PellucidError as e:
            return item, None, str(e)


def chunk_positions(items: Sequence[Item], batch_size: int) -> list[list[int]]:
    """Indices into ``items`` grouped by ``position // batch_size``: a resumed job rebuilds the
    same batches as an uninterrupted one (batches commit whole)."""
    groups: dict[int, list[int]] = {}
    for i, item in enumerate(items):
        groups.setdefault(item.position // batch_size, []).append(i)
    return list(groups.values())


# ---------------------------------------------------------------------------------------------
# one batch: model passes, metrics, files


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
            self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - start


def seed_for(seed: int, key: str) -> int:
    """A per-image seed from the job seed and the image key (stable across processes and machines)."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{key}".encode()).digest()[:4], "little")


def attribute(job: Job, name: str, model: nn.Module, x: torch.Tensor, target: torch.Tensor,
              items: Sequence[Item]) -> torch.Tensor:
    """``(N, H, W)`` maps of one method; random methods run per image with a per-image seed."""
    fn = available_methods()[name]
    if name not in RANDOM_METHODS:
        return fn(model, x, target)
    return torch.cat([fn(model, x[i : i + 1], target[i : i + 1], seed=seed_for(job.seed, it.key))
                      for i, it in enumerate(items)])


def explain_chunk(model: nn.Module, job: Job, items: Sequence[Item], x: torch.Tensor, out: Path,
                  timer: Timer, fsync: bool = False) -> list[dict]:
    """Explain one batch of loaded images, write their files atomically, return their table rows."""
    from .report import predictions

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
            if maps[name].dim() == 4:  # a per-channel method: sum the channels, as Captum's plots do
                maps[name] = maps[name].sum(1)
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


def map_path(out: Path, method: str, key: str) -> Path:
    return out / "maps" / method / f"{key}.npy"


def overlay_path(out: Path, key: str) -> Path:
    return out / "overlays" / f"{key}.png"


def atomic_write(path: Path, write: Callable, fsync: bool = False) -> None:
    """Write to a temporary file beside ``path``, then rename it into place (atomic on POSIX)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        write(f)
        if fsync:
            f.flush()
            os.fsync(f.fileno())
    os.replace(tmp, path)


def write_files(out: Path, items: Sequence[Item], x: torch.Tensor, maps: dict[str, torch.Tensor],
                fsync: bool = False) -> None:
    for i, item in enumerate(items):
        for name, m in maps.items():
            arr = m[i].numpy()
            atomic_write(map_path(out, name, item.key), lambda f, a=arr: np.save(f, a), fsync)
        png = overlay_png(x[i], [m[i] for m in maps.values()])
        atomic_write(overlay_path(out, item.key), lambda f, p=png: f.write(p), fsync)


def overlay_png(image: torch.Tensor, maps: Sequence[torch.Tensor], min_side: int = 112) -> bytes:
    """A small PNG: the image in gray, then each map in 'inferno' blended over it, side by side."""
    import io as _io

    from matplotlib import colormaps
    from PIL import Image

    gray = image.float().mean(0).clamp(0, 1).numpy()
    scale = max(1, -(-min_side // max(gray.shape)))
    tiles = [np.repeat(gray[..., None], 3, axis=2)]
    lut = colormaps["inferno"]
    for m in maps:
        a = m.float().abs().numpy()
        peak = float(np.percentile(a, 99.5)) or float(a.max()) or 1.0
        level = np.clip(a / peak, 0, 1)[..., None]
        alpha = 0.3 + 0.7 * level  # the image shows through where the map is low
        tiles.append((1 - alpha) * tiles[0] + alpha * lut(level[..., 0])[..., :3])
    arr = np.concatenate(tiles, axis=1)
    arr = np.kron(arr, np.ones((scale, scale, 1))) if scale > 1 else arr
    buf = _io.BytesIO()
    Image.fromarray((arr * 255).round().astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------
# the manifest: a SQLite table, one row per image


class ResultStore:
    """The results table and the source of truth of what is finished (status ``done`` or ``failed``)."""

    def __init__(self, out: Path, methods: Sequence[str]):
        self.path = out / TABLE
        self.db = sqlite3.connect(self.path)
        metric_cols = "".join(f", {m}_deletion REAL, {m}_insertion REAL" for m in methods)
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS results (key TEXT PRIMARY KEY, position INTEGER, label INTEGER, "
            "status TEXT NOT NULL, reason TEXT, prediction INTEGER, confidence REAL, correct INTEGER, "
            f"min_eps REAL, seconds REAL{metric_cols}, finished_at REAL)")
        self.db.commit()
        self.columns = [r[1] for r in self.db.execute("PRAGMA table_info(results)")]

    def finished(self) -> set[str]:
        return {k for (k,) in self.db.execute("SELECT key FROM results")}

    def commit(self, rows: Sequence[dict]) -> None:
        """Insert rows in one transaction: all of a batch is recorded, or none of it."""
        now = time.time()
        cols = [c for c in self.columns if c != "finished_at"] + ["finished_at"]
        values = [[row.get(c) for c in cols[:-1]] + [now] for row in rows]
        with self.db:
            self.db.executemany(f"INSERT OR REPLACE INTO results ({', '.join(cols)}) "
                                f"VALUES ({', '.join('?' * len(cols))})", values)

    def close(self) -> None:
        self.db.close()


def read_results(out, status: str | None = None) -> list[dict]:
    """The rows of a batch job's table as dicts, in input order (``status``: only ``done``/``failed``)."""
    path = Path(out) / TABLE
    if not path.exists():
        raise PellucidError(f"no results table at {str(path)!r}; run `pellucid batch` with --out {out} first")
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.row_factory = sqlite3.Row
        where, args = ("WHERE status = ?", (status,)) if status else ("", ())
        return [dict(r) for r in db.execute(f"SELECT * FROM results {where} ORDER BY position", args)]


def failed_row(item: Item, reason: str) -> dict:
    return {"key": item.key, "position": item.position, "label": item.label, "status": "failed", "reason": reason}


# ---------------------------------------------------------------------------------------------
# the out folder: one job per folder, locked while it runs


@contextlib.contextmanager
def job_folder(out: Path, job: Job) -> Iterator[dict]:
    """Lock ``out``, check or write ``job.json`` (the config hash), clear temporaries of a killed run."""
    import fcntl

    out.mkdir(parents=True, exist_ok=True)
    with open(out / ".lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as e:
            raise PellucidError(f"another batch job is running in {str(out)!r}; wait for it or use another --out"
                                ) from e
        meta = _check_config(out, job)
        for tmp in out.rglob(".*.tmp"):
            tmp.unlink()
        yield meta


def _check_config(out: Path, job: Job) -> dict:
    path = out / "job.json"
    meta = {"hash": job.config_hash(), "config": job.config()}
    if path.exists():
        old = json.loads(path.read_text())
        if old.get("hash") != meta["hash"]:
            diff = [f"{k}: {old['config'].get(k)!r} -> {v!r}" for k, v in meta["config"].items()
                    if old.get("config", {}).get(k) != v]
            raise PellucidError(f"{str(out)!r} holds a job with other arguments ({'; '.join(diff)}); "
                                "rerun with the same arguments to resume, or choose another --out")
    atomic_write(path, lambda f: f.write(json.dumps(meta, indent=1).encode()))
    return meta


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
    """
    check_choice(engine, "engine", ("local", "ray"))
    for value, name in ((batch_size, "batch_size"), (ray_workers, "ray_workers"), (max_pixels, "max_pixels")):
        check_positive_int(value, name)
    check_positive_int(num_workers, "num_workers", 0)
    check_positive_int(metric_steps, "metric_steps", 0)
    if attack is not None:
        check_choice(attack, "attack", ATTACKS)
    if limit is not None:
        check_positive_int(limit, "limit")
    name = model if isinstance(model, str) else getattr(model, "name", type(model).__name__)
    source = str(source) if str(source) in DATASETS else str(Path(source).resolve())
    job = Job(source, name, weights, resolve_methods(methods), attack, eps, metric_steps, seed, max_pixels,
              limit, device, None if isinstance(model, str) else model)
    out = Path(out)
    with job_folder(out, job):
        loaded = job.load_model()
        items = list_items(job.input, getattr(loaded, "labels", None), limit)
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


def _bar(total: int, progress: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="img", desc="pellucid batch", disable=not progress or total == 0)


def _count(result: BatchResult, rows: Sequence[dict]) -> None:
    result.failed += sum(r["status"] == "failed" for r in rows)
    result.done += sum(r["status"] == "done" for r in rows)


def run_local(job: Job, model: nn.Module, pending: Sequence[Item], out: Path, store: ResultStore,
              result: BatchResult, batch_size: int, num_workers: int = 0, progress: bool = True,
              fsync: bool = False, **_ignored) -> None:
    """Stream the pending images through a DataLoader, one aligned batch at a time."""
    input_size = tuple(getattr(model, "input_size", None) or (3, 224, 224))
    dataset = ItemDataset(pending, input_size, job.max_pixels, job.input)
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=chunk_positions(pending, batch_size),
                                         num_workers=num_workers, collate_fn=list)
    timer = Timer()
    with _bar(len(pending), progress) as bar:
        batches = iter(loader)
        while True:
            with timer("load"):
                batch = next(batches, None)
            if batch is None:
                break
            rows = process_loaded(model, job, batch, out, timer, fsync)
            with timer("commit"):
                store.commit(rows)
            _count(result, rows)
            bar.update(len(rows))
    result.stages = timer.seconds


def process_loaded(model: nn.Module, job: Job, batch: Sequence[tuple], out: Path, timer: Timer,
                   fsync: bool = False) -> list[dict]:
    """Rows for a loaded batch ``[(item, image or None, reason or None)]``: failures, then the rest."""
    rows = [failed_row(item, reason) for item, img, reason in batch if img is None]
    ok = [(item, img) for item, img, _ in batch if img is not None]
    if ok:
        x = torch.stack([img for _, img in ok])
        rows += explain_chunk(model, job, [item for item, _ in ok], x, out, timer, fsync)
    return rows


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
        size = tuple(getattr(self.model, "input_size", None) or (3, 224, 224))
        self.dataset = ItemDataset([], size, job.max_pixels, job.input)

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
        with _bar(len(pending), progress) as bar:
            for row in ds.iter_rows():
                res = json.loads(row["result"])
                store.commit(res["rows"])
                _count(result, res["rows"])
                bar.update(len(res["rows"]))
                for k, v in res["stages"].items():
                    stages[k] = stages.get(k, 0.0) + v
        result.stages = stages
    finally:
        if started:
            ray.shutdown()


# ---------------------------------------------------------------------------------------------
# the summary in the HTML report


def write_report(out) -> Path:
    """Write ``out/report.html``: the batch summary section, from the table and the map files."""
    from . import render

    out = Path(out)
    meta = json.loads((out / "job.json").read_text())
    rows = read_results(out)
    subtitle = f"{len(rows)} images · model {meta['config']['model']} · input {meta['config']['input']}"
    page = render.html_report("pellucid batch report", subtitle, [summary_section(out, rows, meta)])
    path = out / "report.html"
    atomic_write(path, lambda f: f.write(page.encode("utf-8")))
    return path


def summary_section(out: Path, rows: list[dict], meta: dict):
    """Accuracy, the most and least fragile images, faithfulness per method, mean maps per class."""
    from . import render

    done = [r for r in rows if r["status"] == "done"]
    failed = [r for r in rows if r["status"] == "failed"]
    methods = meta["config"]["methods"]
    labelled = [r for r in done if r["correct"] is not None]
    facts = [f"{len(done)} images explained", f"{len(failed)} failed"]
    if labelled:
        facts.append(f"accuracy {100 * sum(r['correct'] for r in labelled) / len(labelled):.2f}% "
                     f"({sum(r['correct'] for r in labelled)}/{len(labelled)} labelled images)")
    if done:
        facts.append(f"{sum(r['seconds'] for r in done) / len(done) * 1000:.1f} ms per image")
    body = f"<p>{' · '.join(facts)}</p>"
    body += _fragility_html(out, done) + _faithfulness_html(done, methods)
    body += _class_means_html(out, done, "saliency" if "saliency" in methods else methods[0])
    if failed:
        body += "<h3>Failed images</h3>" + render.table(["image", "reason"],
                                                        [[r["key"], r["reason"]] for r in failed[:100]])
    return render.Section("Batch summary",
                          "Every image of the data set explained by the batch job: accuracy, the images easiest "
                          "and hardest to fool, how faithful each method is, and the mean map per class.", body)


def _fragility_html(out: Path, done: list[dict], k: int = 5) -> str:
    from . import render

    with_eps = [r for r in done if r["min_eps"] is not None]
    if with_eps:
        ranked, what = sorted(with_eps, key=lambda r: r["min_eps"]), "minimal epsilon that flips the prediction"
    else:
        ranked, what = sorted(done, key=lambda r: r["confidence"]), ("confidence (minimal epsilon not computed: "
                                                                     "run with --attack fgsm|pgd)")
    text = f"<h3>Most and least fragile images</h3><p class='meta'>ranked by {html.escape(what)}</p>"
    for title, part in (("most fragile", ranked[:k]), ("least fragile", ranked[::-1][:k])):
        cells = []
        for r in part:
            value = f"eps {r['min_eps']:.4f}" if with_eps else f"conf {100 * r['confidence']:.1f}%"
            png = overlay_path(out, r["key"]).read_bytes()
            cells.append(f"<figure style='display:inline-block;margin:4px'>{render.img_tag(png, r['key'], 240)}"
                         f"<figcaption class='meta'>{html.escape(r['key'])}: pred {r['prediction']}, "
                         f"{value}</figcaption></figure>")
        text += f"<h4>{title}</h4>" + "".join(cells)
    return text


def _faithfulness_html(done: list[dict], methods: Sequence[str]) -> str:
    from . import render

    table = []
    for m in methods:
        dels = [r[f"{m}_deletion"] for r in done if r.get(f"{m}_deletion") is not None]
        ins = [r[f"{m}_insertion"] for r in done if r.get(f"{m}_insertion") is not None]
        mean = lambda v: f"{float(np.mean(v)):.4f}" if v else "not computed"  # noqa: E731
        table.append([m, len(done), mean(dels), mean(ins)])
    return ("<h3>Faithfulness per method</h3><p class='meta'>deletion AUC: lower is better; "
            "insertion AUC: higher is better</p>"
            + render.table(["method", "images", "mean deletion AUC", "mean insertion AUC"], table))


def _class_means_html(out: Path, done: list[dict], method: str) -> str:
    """Mean map per predicted class, streamed from the map files (one map in memory at a time)."""
    from . import render

    sums: dict[int, np.ndarray] = {}
    counts: dict[int, int] = {}
    for r in done:
        m = np.load(map_path(out, method, r["key"]))
        k = r["prediction"]
        sums[k] = sums.get(k, 0) + m
        counts[k] = counts.get(k, 0) + 1
    if not sums:
        return ""
    plt = render._plt()
    classes = sorted(sums)
    fig, axes = plt.subplots(1, len(classes), figsize=(1.3 * len(classes), 1.6), squeeze=False)
    for ax, k in zip(axes[0], classes):
        mean = torch.from_numpy(sums[k] / counts[k])
        render.show_map(ax, mean[None], mean, overlay=False)
        ax.set_title(f"class {k}\n(n={counts[k]})", fontsize=7)
    png = render.fig_png(fig)
    return f"<h3>Mean {method} per predicted class</h3>" + render.img_tag(png, f"mean {method} per class")
