"""The out folder: one job per folder (locked while it runs, ``job.json`` guards resumes), the map
and overlay files (renamed into place), and the manifest, a SQLite table with one row per image.

The job writes only into a folder it made: a new or empty folder, or one whose ``job.json`` carries its
mark (``"format": "pellucid batch job"``); its ``results.sqlite`` carries ``PRAGMA application_id``
:data:`APPLICATION_ID`. Any other folder, ``job.json`` or database is refused with a
:class:`~pellucid.PellucidError` before anything is written, so no file it did not write is overwritten
or deleted.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from .._checks import PellucidError
from ..drawing.overlay import as_uint8, enlarge, image_array, overlay_rgb
from .job import Job

TABLE = "results.sqlite"
JOB_FILE = "job.json"
MARK = "pellucid batch job"  # job.json's "format": the folder is the job's
APPLICATION_ID = 0x50454C42  # "PELB": results.sqlite's PRAGMA application_id
COLUMNS = ("key", "position", "label", "status", "reason", "prediction", "confidence", "correct", "min_eps",
           "seconds")  # every results table has these (tables written before the application id: recognized by them)
STATUSES = ("done", "failed")
TMP_PREFIX = ".pellucid-"  # the job's temporary files: .pellucid-NAME.PID.tmp beside NAME
OWN_FOLDERS = ("maps", "overlays")  # the job writes there and in the out folder itself, nowhere else
OWN_TEMPORARY = {".": re.compile(r"\.pellucid-(job\.json|report\.html)\.\d+\.tmp"),  # by folder: its names
                 "maps": re.compile(r"\.pellucid-.+\.npy\.\d+\.tmp"),
                 "overlays": re.compile(r"\.pellucid-.+\.png\.\d+\.tmp")}


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
        self.db = _connect(self.path)
        try:
            _identify(self.db, self.path, new_ok=True)
            metric_cols = "".join(f", {m}_deletion REAL, {m}_insertion REAL" for m in methods)
            self.db.execute(
                "CREATE TABLE IF NOT EXISTS results (key TEXT PRIMARY KEY, position INTEGER, label INTEGER, "
                "status TEXT NOT NULL, reason TEXT, prediction INTEGER, confidence REAL, correct INTEGER, "
                f"min_eps REAL, seconds REAL{metric_cols}, finished_at REAL)")
            self.db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            self.db.commit()
        except BaseException:
            self.db.close()
            raise
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


def _connect(path: Path, readonly: bool = False) -> sqlite3.Connection:
    try:
        if readonly:  # nothing is created or changed, also in a file that is not pellucid's
            return sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True)
        return sqlite3.connect(path)
    except sqlite3.Error as e:
        raise PellucidError(f"cannot open {str(path)!r} as a SQLite database ({e}); {_DB_ADVICE}") from e


_DB_ADVICE = "the batch job reads and writes only the results.sqlite it made: move the file away or use another --out"


def _identify(db: sqlite3.Connection, path: Path, new_ok: bool) -> None:
    """Return if ``db`` is pellucid's results table (or, with ``new_ok``, an empty new database); else a
    PellucidError that names the file and why. Only reads."""
    try:
        app = db.execute("PRAGMA application_id").fetchone()[0]
        tables = [n for (n,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        columns = [r[1] for r in db.execute("PRAGMA table_info(results)")]
    except sqlite3.Error as e:  # random bytes: "file is not a database"
        raise PellucidError(f"{str(path)!r} is not a SQLite database ({e}); {_DB_ADVICE}") from e
    if app == APPLICATION_ID or (app == 0 and set(COLUMNS) <= set(columns)) or (app == 0 and not tables and new_ok):
        return
    if app != 0:
        why = f"it is another application's database (application_id {app})"
    elif not columns:
        why = f"it has no results table (tables: {', '.join(tables[:5]) or 'none'})"
    else:
        why = f"its results table has other columns ({', '.join(columns[:8])})"
    raise PellucidError(f"{str(path)!r} is not a pellucid results table: {why}; {_DB_ADVICE}")


def read_results(out, status: str | None = None) -> list[dict]:
    """The rows of a batch job's table as dicts, in input order (``status``: only ``done``/``failed``)."""
    if status is not None and status not in STATUSES:
        raise PellucidError(f"unknown status {status!r}; choose one of: {', '.join(STATUSES)} (or None for every row)")
    if not isinstance(out, str | os.PathLike):
        raise PellucidError(f"out must be the folder of a batch job (a path), got {type(out).__name__} {out!r}")
    path = Path(out) / TABLE
    if not path.is_file():
        raise PellucidError(f"no results table at {str(path)!r}; run `pellucid batch` with --out {out} first")
    with _reading(path) as db:
        _identify(db, path, new_ok=False)
        db.row_factory = sqlite3.Row
        where, args = ("WHERE status = ?", (status,)) if status else ("", ())
        try:
            return [dict(r) for r in db.execute(f"SELECT * FROM results {where} ORDER BY position", args)]
        except sqlite3.Error as e:
            raise PellucidError(f"cannot read {str(path)!r}: {e}") from e


@contextlib.contextmanager
def _reading(path: Path) -> Iterator[sqlite3.Connection]:
    """A read-only connection to ``path``. A job killed inside a commit leaves a hot journal
    (``results.sqlite-journal``) that must be rolled back before anyone reads, and a read-only
    connection may not do that ("attempt to write a readonly database"); then the table and its journal
    are copied to a temporary folder and the copy is rolled back and read: the committed rows, exactly
    what the resumed job will see, and nothing in the job's folder changes."""
    journal = path.with_name(path.name + "-journal")
    with contextlib.closing(_connect(path, readonly=True)) as db:
        try:
            db.execute("PRAGMA schema_version").fetchone()
            hot = False
        except sqlite3.Error as e:  # anything but a hot journal: _identify names it
            hot = "readonly" in str(e) and journal.is_file()
        if not hot:
            yield db
            return
    with tempfile.TemporaryDirectory(prefix="pellucid-read-") as tmp:
        copy = Path(tmp) / path.name
        shutil.copyfile(path, copy)
        shutil.copyfile(journal, copy.with_name(journal.name))
        with contextlib.closing(_connect(copy)) as db:
            yield db


def check_out(out: Path) -> dict | None:
    """Whether the job may write into ``out``: ``None`` for a new or empty folder, ``job.json`` for a
    folder of a pellucid job; anything else (a file, a folder of other files, a foreign ``job.json``)
    is a PellucidError. Writes nothing."""
    if not (out.exists() or out.is_symlink()):
        for parent in out.parents:
            if parent.exists():
                if not parent.is_dir():
                    raise PellucidError(f"cannot make --out {str(out)!r}: {str(parent)!r} is a file, not a folder")
                break
        return None
    if not out.is_dir():
        raise PellucidError(f"--out {str(out)!r} is a file, not a folder; choose a new or empty folder")
    meta = read_job(out)
    if meta is not None:
        return meta
    try:
        others = sorted(p.name for p in out.iterdir() if not (p.name == ".lock" and p.is_file()
                                                              and p.stat().st_size == 0))
    except OSError as e:
        raise PellucidError(f"cannot read --out {str(out)!r}: {e.strerror or e}") from e
    if others:
        shown = ", ".join(repr(n) for n in others[:3]) + (f" and {len(others) - 3} more" if len(others) > 3 else "")
        raise PellucidError(f"--out {str(out)!r} is not a pellucid batch folder: it holds files the job did not "
                            f"write ({shown}) and no job.json; choose a new or empty folder (the job never "
                            "overwrites or deletes files it did not write)")
    return None


def read_job(out: Path) -> dict | None:
    """``out``'s ``job.json`` (``None`` if there is none); a file that is not the job's is a PellucidError."""
    path = out / JOB_FILE
    if not (path.exists() or path.is_symlink()):
        return None
    advice = "it was not written by `pellucid batch`: choose a new or empty --out, or move the file away"
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        why = f"cannot be read: {e.strerror or e}" if isinstance(e, OSError) else "not JSON"
        raise PellucidError(f"{str(path)!r} is not a pellucid job file ({why}); {advice}") from e
    if not isinstance(meta, dict):
        raise PellucidError(f"{str(path)!r} is not a pellucid job file (JSON {type(meta).__name__}, not an object); "
                            f"{advice}")
    config = meta.get("config")
    legacy = set(meta) == {"hash", "config"}  # written before the mark
    if (meta.get("format") != MARK and not legacy) or not isinstance(meta.get("hash"), str) \
            or not isinstance(config, dict) or not {"input", "model", "methods"} <= set(config):
        raise PellucidError(f"{str(path)!r} is not a pellucid job file (no \"format\": \"{MARK}\" with a hash "
                            f"and a config); {advice}")
    return meta


@contextlib.contextmanager
def job_folder(out: Path, job: Job) -> Iterator[dict]:
    """Lock ``out``, check or write ``job.json`` (the config hash), clear temporaries of a killed run.
    A folder that is not the job's (:func:`check_out`) is refused before anything is written."""
    import fcntl

    check_out(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise PellucidError(f"cannot make --out {str(out)!r}: {e.strerror or e}") from e
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
    """The temporary files a killed run of the job left: ``.pellucid-NAME.PID.tmp`` beside a file the
    job writes (``job.json``, ``report.html``, a map or an overlay), in its own folders only (files of
    another look, or elsewhere under ``out``, are not the job's to delete)."""
    found = [p for p in out.glob(f"{TMP_PREFIX}*.tmp") if p.is_file() and OWN_TEMPORARY["."].fullmatch(p.name)]
    for folder in OWN_FOLDERS:
        if (out / folder).is_dir():
            found += [p for p in (out / folder).rglob(f"{TMP_PREFIX}*.tmp")
                      if p.is_file() and not p.is_symlink() and OWN_TEMPORARY[folder].fullmatch(p.name)]
    return found


def _check_config(out: Path, job: Job) -> dict:
    path = out / JOB_FILE
    meta = {"format": MARK, "hash": job.config_hash(), "config": job.config()}
    old = check_out(out)
    if old is not None and old.get("hash") != meta["hash"]:
        diff = [f"{k}: {old['config'].get(k)!r} -> {v!r}" for k, v in meta["config"].items()
                if old["config"].get(k) != v]
        raise PellucidError(f"{str(out)!r} holds a job with other arguments ({'; '.join(diff)}); "
                            "rerun with the same arguments to resume, or choose another --out")
    atomic_write(path, lambda f: f.write(json.dumps(meta, indent=1).encode()))
    return meta
