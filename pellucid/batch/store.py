"""The out folder: one job per folder (locked while it runs, ``job.json`` guards resumes), the map
and overlay files (renamed into place), and the manifest, a SQLite table with one row per image."""

from __future__ import annotations

import contextlib
import io
import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from .._checks import PellucidError
from ..drawing.overlay import as_uint8, enlarge, image_array, overlay_rgb
from .job import Job

TABLE = "results.sqlite"
TMP_PREFIX = ".pellucid-"  # the job's temporary files: .pellucid-NAME.PID.tmp beside NAME
OWN_FOLDERS = ("maps", "overlays")  # the job writes there and in the out folder itself, nowhere else


def map_path(out: Path, method: str, key: str) -> Path:
    return out / "maps" / method / f"{key}.npy"


def overlay_path(out: Path, key: str) -> Path:
    return out / "overlays" / f"{key}.png"


def atomic_write(path: Path, write: Callable, fsync: bool = False) -> None:
    """Write to a temporary file beside ``path``, then rename it into place (atomic on POSIX)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{TMP_PREFIX}{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        write(f)
        if fsync:
            f.flush()
            os.fsync(f.fileno())
    os.replace(tmp, path)


def write_files(out: Path, items: Sequence, x: torch.Tensor, maps: dict[str, torch.Tensor],
                fsync: bool = False) -> None:
    for i, item in enumerate(items):
        for name, m in maps.items():
            arr = m[i].numpy()
            atomic_write(map_path(out, name, item.key), lambda f, a=arr: np.save(f, a), fsync)
        png = overlay_png(x[i], [m[i] for m in maps.values()])
        atomic_write(overlay_path(out, item.key), lambda f, p=png: f.write(p), fsync)


def overlay_png(image: torch.Tensor, maps: Sequence[torch.Tensor], min_side: int = 112) -> bytes:
    """A small PNG: the image in gray, then each map over it (:func:`pellucid.overlay.overlay_rgb`,
    the renderer of the report and the web page), side by side, enlarged to at least ``min_side``."""
    from PIL import Image

    gray = image_array(image).mean(2, keepdims=True).repeat(3, axis=2)
    arr = np.concatenate([gray, *(overlay_rgb(image, m) for m in maps)], axis=1)
    arr = enlarge(as_uint8(arr), max(1, -(-min_side // max(image.shape[-2:]))))
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


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
        for tmp in own_temporaries(out):
            tmp.unlink(missing_ok=True)
        yield meta


def own_temporaries(out: Path) -> list[Path]:
    """The temporary files a killed run of the job left: its prefix, in its own folders only (files
    of the same look that someone else put elsewhere under ``out`` are not the job's to delete)."""
    pattern = f"{TMP_PREFIX}*.tmp"
    found = [p for p in out.glob(pattern) if p.is_file()]
    for folder in OWN_FOLDERS:
        if (out / folder).is_dir():
            found += [p for p in (out / folder).rglob(pattern) if p.is_file() and not p.is_symlink()]
    return found


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
