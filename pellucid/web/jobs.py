"""What a running app holds: models (a pool of replicas each), images, results, and running jobs.

Model work runs in a thread pool on per-job model replicas (a model object is never used by two
requests at once), so explanations run in parallel give the same maps as run alone, the event loop
stays free, and a job can be cancelled: a forward pre-hook on every module of its replica raises once
the job is cancelled.
"""

from __future__ import annotations

import asyncio
import copy
import queue
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from fastapi import HTTPException, Request

from .._checks import PellucidError
from .._state import hook_count
from ..io import fit_image, quantize
from ..models.training import TrainingStopped, stop_training_when


class Cancelled(Exception):
    """Raised inside a job's forward passes once the job is cancelled."""


class ModelSlot:
    """One model: a pristine copy nobody computes with, and up to ``replicas`` copies handed to one
    job at a time. A replica that comes back with a hook left on it is thrown away.

    The model is built (loaded, or trained on a fresh machine) on first use, never before; ``unavailable``
    says why it cannot be built here (an extra that is not installed): it is listed, not offered.
    ``stopping`` (set when the server stops) stops a model being trained between two steps.
    """

    def __init__(self, name: str, loader: Callable[[], torch.nn.Module], replicas: int = 2,
                 description: str = "", unavailable: str | None = None):
        self.name, self._loader, self.replicas = name, loader, replicas
        self.description, self.unavailable = description or name, unavailable
        self.stopping = threading.Event()
        self._model: torch.nn.Module | None = None
        self._idle: queue.Queue = queue.Queue()
        self._made = 0
        self._lock = threading.Lock()

    @property
    def state(self) -> str:
        """``ready``, ``not built yet`` (built on first use) or ``needs an extra``."""
        if self.unavailable:
            return "needs an extra"
        return "ready" if self._model is not None else "not built yet"

    @property
    def model(self) -> torch.nn.Module:
        if self.unavailable:
            raise PellucidError(self.unavailable)
        with self._lock:
            if self._model is None:
                if self.stopping.is_set():
                    raise TrainingStopped("the server is stopping")
                with stop_training_when(self.stopping.is_set):
                    self._model = self._loader().eval()
            return self._model

    def _take(self, cancel: threading.Event) -> torch.nn.Module:
        while True:
            try:
                return self._idle.get_nowait()
            except queue.Empty:
                pass
            with self._lock:
                if self._made < self.replicas:
                    self._made += 1
                    return copy.deepcopy(self._model)
            if cancel.is_set():
                raise Cancelled()
            try:
                return self._idle.get(timeout=0.05)
            except queue.Empty:
                continue

    @contextmanager
    def lease(self, cancel: threading.Event) -> Iterator[torch.nn.Module]:
        self.model  # noqa: B018 (load on first use)
        replica = self._take(cancel)

        def check(*_):
            if cancel.is_set():
                raise Cancelled()

        handles = [m.register_forward_pre_hook(check) for m in replica.modules()]
        try:
            yield replica
        finally:
            for h in handles:
                h.remove()
            if hook_count(replica) == 0 and not replica.training:
                self._idle.put(replica)
            else:
                with self._lock:
                    self._made -= 1

    def idle_hooks(self) -> int:
        return sum(hook_count(m) for m in list(self._idle.queue))


class Store:
    """Results of this session by opaque id, oldest dropped past ``max_bytes``."""

    def __init__(self, max_bytes: int = 256 * 1024 * 1024):
        self._items: OrderedDict[str, tuple[bytes, str, str]] = OrderedDict()
        self._bytes, self.max_bytes = 0, max_bytes
        self._lock = threading.Lock()

    def put(self, data: bytes, media: str, filename: str) -> str:
        rid = secrets.token_urlsafe(18)
        with self._lock:
            self._items[rid] = (data, media, filename)
            self._bytes += len(data)
            while self._bytes > self.max_bytes and len(self._items) > 1:
                self._bytes -= len(self._items.popitem(last=False)[1][0])
        return rid

    def get(self, rid: str) -> tuple[bytes, str, str] | None:
        with self._lock:
            return self._items.get(rid)

    def __len__(self) -> int:
        return len(self._items)


@dataclass
class Picture:
    image: torch.Tensor  # (C, H, W) uint8 from pellucid.io.decode_image, at most 1024 px a side
    label: int = -1
    name: str = "image"


def sample_pictures(model) -> list[Picture]:
    """The model's sample images, held as 8-bit images like uploads."""
    from ..models.data import sample_images

    x, y = sample_images(model)
    return [Picture(quantize(x[i]), int(y[i]), f"sample {i}") for i in range(len(x))]


class Server:
    """Everything one running app holds."""

    def __init__(self, models: dict[str, ModelSlot], workers: int = 4, refused: dict[str, str] | None = None):
        self.models = models
        self.refused = dict(refused or {})  # names the page does not serve (text models), with the reason
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="pellucid-job")
        self.results = Store()
        self.images: OrderedDict[str, Picture] = OrderedDict()
        self.samples: dict[str, list[str]] = {}
        self.pinned: set[str] = set()
        self.max_image_bytes = 256 * 1024 * 1024
        self.jobs: dict[str, threading.Event] = {}
        self.lock = threading.Lock()

    def offered(self) -> list[str]:
        return [n for n, s in self.models.items() if not s.unavailable]

    def slot(self, name: str) -> ModelSlot:
        """The model called ``name``; a 400 for one this page does not serve, a 404 for an unknown name."""
        offered = ", ".join(self.offered())
        if name in self.refused:
            raise HTTPException(400, f"{self.refused[name]}; this page offers: {offered}")
        if name not in self.models:
            raise HTTPException(404, f"unknown model {name!r}; this server offers: {offered}")
        slot = self.models[name]
        if slot.unavailable:
            raise HTTPException(400, f"model {name!r} is not available here: {slot.unavailable}")
        return slot

    async def build(self, fn: Callable, *args):
        """``fn(*args)`` in the pool for work that may build a model: its errors as 4xx/503, not 500s.
        (The pool, not asyncio's default executor, which the event loop joins without a timeout on exit.)"""
        try:
            return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)
        except TrainingStopped as e:
            raise HTTPException(503, "the server is stopping") from e
        except PellucidError as e:
            raise HTTPException(400, str(e)) from e

    def stop(self) -> None:
        """Stop everything: cancel the jobs, stop models being trained (the server is shutting down)."""
        for slot in self.models.values():
            slot.stopping.set()
        for event in list(self.jobs.values()):
            event.set()
        self.pool.shutdown(wait=False, cancel_futures=True)

    def wait_idle(self, seconds: float) -> bool:
        """Wait up to ``seconds`` for the pool's threads to finish; whether they all did."""
        deadline = time.monotonic() + seconds
        for thread in list(getattr(self.pool, "_threads", ())):
            thread.join(max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in getattr(self.pool, "_threads", ()))

    def load_samples(self, name: str) -> None:
        if name not in self.samples:
            self.samples[name] = [self.add_image(p, pinned=True) for p in sample_pictures(self.slot(name).model)]

    def add_image(self, pic: Picture, pinned: bool = False) -> str:
        """Keep an image by id; past ``max_image_bytes`` the oldest uploads (never samples) are dropped."""
        iid = secrets.token_urlsafe(18)
        with self.lock:
            self.images[iid] = pic
            if pinned:
                self.pinned.add(iid)
            uploads = [k for k in self.images if k not in self.pinned]
            while uploads and sum(self.images[k].image.numel() for k in uploads) > self.max_image_bytes:
                del self.images[uploads.pop(0)]
        return iid

    def picture(self, iid: str) -> Picture:
        pic = self.images.get(iid)
        if pic is None:
            raise HTTPException(404, "unknown image id: upload the image again")
        return pic

    def tensor(self, iid: str, model) -> torch.Tensor:
        """The image as ``(1, C, H, W)`` for ``model`` (pellucid.io.fit_image, like every image)."""
        return fit_image(self.picture(iid).image, model)

    def url(self, data: bytes, name: str, media: str = "image/png") -> str:
        return f"/r/{self.results.put(data, media, name)}"

    def job(self, name: str | None) -> tuple[str, threading.Event]:
        """A cancellable job, listed until :meth:`done` (``/api/cancel/{job}`` sets its event)."""
        job = name or secrets.token_urlsafe(9)
        self.jobs[job] = threading.Event()
        return job, self.jobs[job]

    async def run(self, request: Request, slot: ModelSlot, fn: Callable, job: str | None = None):
        """``fn(model)`` on a replica in the pool; cancelled by ``/api/cancel/{job}`` or a disconnect."""
        job, cancel = self.job(job)

        def work():
            if cancel.is_set():
                raise Cancelled()
            with slot.lease(cancel) as model:
                return fn(model)

        fut = asyncio.get_running_loop().run_in_executor(self.pool, work)
        try:
            while True:
                done, _ = await asyncio.wait({fut}, timeout=0.2)
                if done:
                    return fut.result()
                if await request.is_disconnected():
                    cancel.set()
        except Cancelled as e:
            raise HTTPException(409, "cancelled") from e
        except TrainingStopped as e:
            raise HTTPException(503, "the server is stopping") from e
        except PellucidError as e:
            raise HTTPException(400, str(e)) from e
        except HTTPException:
            raise
        except Exception as e:  # a bug or a model that fails: say what happened, keep serving
            raise HTTPException(500, f"{type(e).__name__}: {e}") from e
        finally:
            if not fut.done():
                cancel.set()
            self.jobs.pop(job, None)
