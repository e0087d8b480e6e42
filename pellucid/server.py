"""``pellucid serve``: a local web page to explore a model, fully offline.

FastAPI + uvicorn serve one static page (``pellucid/static``: HTML, JS, CSS, no build step, nothing
fetched from elsewhere, enforced by a Content-Security-Policy). Model work runs in a thread pool on
per-job model replicas (a model object is never used by two requests at once), so explanations run in
parallel give the same maps as run alone, the event loop stays free, and a job can be cancelled: a
forward pre-hook on every module of its replica raises once the job is cancelled.

The web framework is imported here only; ``import pellucid`` never loads it.
"""

from __future__ import annotations

import asyncio
import copy
import html
import io
import json
import queue
import re
import secrets
import socket
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, Field
from starlette.datastructures import MutableHeaders

import pellucid

from . import attribution, render
from ._checks import PellucidError
from ._state import hook_count

MAX_UPLOAD_BYTES = 10 * 1024 * 1024
MAX_SIDE = 4096
FORMATS = ("PNG", "JPEG", "MPO", "WEBP")  # MPO: the JPEG variant many phone cameras write
STATIC = {"index.html": "text/html; charset=utf-8", "app.js": "text/javascript; charset=utf-8",
          "style.css": "text/css; charset=utf-8"}
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
       "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
METHOD_TITLES = {"saliency": "Saliency", "input_x_gradient": "Gradient × input", "smoothgrad": "SmoothGrad",
                 "ig": "Integrated Gradients", "gradcam": "Grad-CAM", "guided_gradcam": "Guided Grad-CAM",
                 "occlusion": "Occlusion", "lime": "LIME"}
RESULT_ID = re.compile(r"[A-Za-z0-9_-]{16,64}")
_PLOT_LOCK = threading.Lock()  # pyplot (used by the report) is not thread-safe


class Cancelled(Exception):
    """Raised inside a job's forward passes once the job is cancelled."""


# ---------------------------------------------------------------------------------------------
# visualization frames

def _as_image(t: torch.Tensor) -> torch.Tensor:
    t = t.detach().float().cpu()
    return t[0] if t.dim() == 4 else t


def run_visualization(fn: Callable, args: tuple, kwargs: dict, on_frame: Callable, frames: int = 10) -> None:
    """Run a class/channel visualization, streaming about ``frames`` snapshots while it runs."""
    steps = kwargs["steps"]
    every = max(1, steps // frames)
    fn(*args, **kwargs, snapshots=sorted({*range(every, steps + 1, every), steps}),
       callback=lambda step, images: on_frame(step, _as_image(images)))


# ---------------------------------------------------------------------------------------------
# pictures

def png(arr: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def _upscale(arr: np.ndarray, side: int = 224) -> np.ndarray:
    """Small images (28x28 digits) scaled up by an integer factor, pixels kept sharp."""
    k = max(1, side // max(arr.shape[:2]))
    return arr.repeat(k, 0).repeat(k, 1) if k > 1 else arr


def image_png(img: torch.Tensor) -> bytes:
    """``(C, H, W)`` in [0, 1] as a PNG, small images enlarged."""
    return png(_upscale(np.ascontiguousarray(render.image_array(_as_image(img)) * 255).round().astype(np.uint8)))


def overlay_png(img: torch.Tensor, heat: torch.Tensor, alpha: float = 0.6) -> bytes:
    """An attribution map over the gray image: signed maps in red/blue, others in 'inferno'."""
    import matplotlib

    img = _as_image(img)
    heat = heat.detach().float().cpu()
    if heat.shape[-2:] != img.shape[-2:]:
        heat = torch.nn.functional.interpolate(heat[None, None], size=img.shape[-2:], mode="bilinear")[0, 0]
    m = heat.numpy()
    signed = render.is_signed(m)
    lo, hi = render.heat_limits(m, signed)
    colours = matplotlib.colormaps["RdBu_r" if signed else "inferno"]((m - lo) / max(hi - lo, 1e-12))[..., :3]
    gray = render.image_array(img).mean(2, keepdims=True)
    out = (1 - alpha) * gray + alpha * colours
    return png(_upscale((out.clip(0, 1) * 255).round().astype(np.uint8)))


def difference_png(x: torch.Tensor, adv: torch.Tensor) -> tuple[bytes, float]:
    """``adv - x`` magnified to fill the range around mid-gray; returns the PNG and the factor."""
    d = _as_image(adv) - _as_image(x)
    peak = float(d.abs().max())
    k = 0.5 / peak if peak > 0 else 1.0
    return image_png((0.5 + k * d).clamp(0, 1)), k


def top5(model, probs: torch.Tensor) -> list[dict]:
    top = probs[0].topk(min(5, probs.shape[1]))
    label = getattr(model, "label", str)
    return [{"class": int(k), "label": label(int(k)), "p": round(float(p), 6)} for p, k in zip(top.values, top.indices)]


# ---------------------------------------------------------------------------------------------
# state: models (a pool of replicas each), uploaded images, results, running jobs

class ModelSlot:
    """One model: a pristine copy nobody computes with, and up to ``replicas`` copies handed to one
    job at a time. A replica that comes back with a hook left on it is thrown away."""

    def __init__(self, name: str, loader: Callable[[], torch.nn.Module], replicas: int = 2):
        self.name, self._loader, self.replicas = name, loader, replicas
        self._model: torch.nn.Module | None = None
        self._idle: queue.Queue = queue.Queue()
        self._made = 0
        self._lock = threading.Lock()

    @property
    def model(self) -> torch.nn.Module:
        with self._lock:
            if self._model is None:
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
    image: object  # a PIL image, at most 1024 px a side
    label: int = -1
    name: str = "image"


def sniff(data: bytes) -> str | None:
    """The format its first bytes claim: PNG, JPEG, WEBP or None."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    return "WEBP" if data[:4] == b"RIFF" and data[8:12] == b"WEBP" else None


def decode_upload(data: bytes) -> Picture:
    """Check an upload by its content: PNG, JPEG or WebP, at most 4096x4096, fully decodable."""
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise HTTPException(400, "the upload is empty: choose a PNG, JPEG or WebP image")
    try:
        img = Image.open(io.BytesIO(data))
    except (UnidentifiedImageError, OSError, ValueError) as e:
        if sniff(data):
            raise HTTPException(400, f"the {sniff(data)} image is corrupt or truncated and cannot be decoded") from e
        raise HTTPException(415, "this file is not a PNG, JPEG or WebP image (its content was checked, "
                                 "not its name)") from e
    if img.format not in FORMATS:
        raise HTTPException(415, f"{img.format} images are not accepted: upload a PNG, JPEG or WebP image")
    w, h = img.size
    if w > MAX_SIDE or h > MAX_SIDE:
        raise HTTPException(413, f"the image is {w}x{h} pixels; at most {MAX_SIDE}x{MAX_SIDE} is accepted")
    try:
        img.load()
        img = img.convert("L" if img.mode in ("1", "L", "LA", "I", "I;16", "F") else "RGB")
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise HTTPException(400, f"the {img.format} image is corrupt or truncated and cannot be decoded ({e})") from e
    img.thumbnail((1024, 1024))
    return Picture(img)


def _pixels(pic: Picture) -> int:
    return pic.image.size[0] * pic.image.size[1] * len(pic.image.getbands())


def sample_pictures(model) -> list[Picture]:
    from PIL import Image

    from .data import sample_images
    from .io import to_uint8

    x, y = sample_images(model)
    return [Picture(Image.fromarray(to_uint8(x[i])), int(y[i]), f"sample {i}") for i in range(len(x))]


# ---------------------------------------------------------------------------------------------
# requests

class Ask(BaseModel):
    model: str = "digits"
    image: str
    target: int | None = Field(None, ge=0)
    job: str | None = Field(None, max_length=64)


class ExplainAsk(Ask):
    method: str


class AttackAsk(Ask):
    kind: str = "fgsm"
    eps: float = Field(0.1, ge=0.0, le=1.0)
    steps: int = Field(10, ge=1, le=200)


class VisualAsk(BaseModel):
    model: str = "digits"
    kind: str = "class"
    target: int = Field(0, ge=0)
    layer: str | None = None
    channel: int = Field(0, ge=0)
    steps: int = Field(100, ge=1, le=1000)
    job: str | None = Field(None, max_length=64)


class Server:
    """Everything one running app holds."""

    def __init__(self, models: dict[str, ModelSlot], workers: int = 4):
        self.models = models
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="pellucid-job")
        self.results = Store()
        self.images: OrderedDict[str, Picture] = OrderedDict()
        self.samples: dict[str, list[str]] = {}
        self.pinned: set[str] = set()
        self.max_image_bytes = 256 * 1024 * 1024
        self.jobs: dict[str, threading.Event] = {}
        self.lock = threading.Lock()

    def slot(self, name: str) -> ModelSlot:
        if name not in self.models:
            raise HTTPException(404, f"unknown model {name!r}; this server offers: {', '.join(self.models)}")
        return self.models[name]

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
            while uploads and sum(_pixels(self.images[k]) for k in uploads) > self.max_image_bytes:
                del self.images[uploads.pop(0)]
        return iid

    def picture(self, iid: str) -> Picture:
        pic = self.images.get(iid)
        if pic is None:
            raise HTTPException(404, "unknown image id: upload the image again")
        return pic

    def tensor(self, iid: str, model) -> torch.Tensor:
        from .io import pil_to_tensor

        return pil_to_tensor(self.picture(iid).image, model)

    def url(self, data: bytes, name: str, media: str = "image/png") -> str:
        return f"/r/{self.results.put(data, media, name)}"

    async def run(self, request: Request, slot: ModelSlot, fn: Callable, job: str | None = None):
        """``fn(model)`` on a replica in the pool; cancelled by ``/api/cancel/{job}`` or a disconnect."""
        cancel = threading.Event()
        job = job or secrets.token_urlsafe(9)
        self.jobs[job] = cancel

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


def _predictions(model, x):
    from .report import predictions

    return top5(model, predictions(model, x))


def create_app(models: dict[str, torch.nn.Module | Callable[[], torch.nn.Module]] | None = None,
               replicas: int = 2, workers: int = 4,
               allowed_hosts: tuple[str, ...] = ("127.0.0.1", "localhost", "[::1]", "testserver")) -> FastAPI:
    """The web app. ``models``: name -> model or loader (default: the built-in digits models)."""
    from .models import load_model

    if models is None:
        models = {name: (lambda n=name: load_model(n)) for name in ("digits", "digits-nobn")}
    models = {n: (lambda m=m: m) if isinstance(m, torch.nn.Module) else m for n, m in models.items()}
    srv = Server({n: ModelSlot(n, f, replicas) for n, f in models.items()}, workers)

    @asynccontextmanager
    async def lifespan(_app):
        yield
        for event in list(srv.jobs.values()):
            event.set()
        srv.pool.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title="pellucid", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.server = srv
    app.add_middleware(Guard, allowed_hosts=allowed_hosts)
    for add_routes in (page_routes, image_routes, explain_routes, attack_routes, visualize_routes):
        add_routes(app, srv)

    @app.exception_handler(HTTPException)
    async def http_error(_request, exc: HTTPException):
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code)

    return app


def page_routes(app: FastAPI, srv: Server) -> None:
    """The page, its static files, results by opaque id, and the app's state."""
    static = {name: resources.files("pellucid").joinpath("static", name).read_bytes() for name in STATIC}

    @app.get("/")
    async def index():
        return Response(static["index.html"], media_type=STATIC["index.html"])

    @app.get("/static/{name}")
    async def static_file(name: str):
        if name not in static:
            raise HTTPException(404, "not found")
        return Response(static[name], media_type=STATIC[name])

    @app.get("/r/{rid}")
    async def result(rid: str, download: bool = False):
        item = srv.results.get(rid) if RESULT_ID.fullmatch(rid) else None
        if item is None:
            raise HTTPException(404, "no such result in this session")
        data, media, filename = item
        headers = {"Content-Disposition": f'attachment; filename="{filename}"'} if download else {}
        return Response(data, media_type=media, headers=headers)

    @app.get("/api/models")
    async def models_info():
        return {"models": [await asyncio.to_thread(_model_info, slot) for slot in srv.models.values()],
                "methods": _methods_info(), "limits": {"bytes": MAX_UPLOAD_BYTES, "side": MAX_SIDE}}

    @app.get("/api/status")
    async def status():
        return {"jobs": len(srv.jobs), "results": len(srv.results), "images": len(srv.images),
                "idle_replica_hooks": sum(s.idle_hooks() for s in srv.models.values())}

    @app.post("/api/cancel/{job}")
    async def cancel(job: str):
        event = srv.jobs.get(job)
        if event is not None:
            event.set()
        return {"cancelled": event is not None}


def image_routes(app: FastAPI, srv: Server) -> None:
    """Samples, uploads (checked by content) and predictions."""

    @app.get("/api/samples")
    async def samples(model: str = "digits"):
        srv.slot(model)
        if model not in srv.samples:
            await asyncio.to_thread(srv.load_samples, model)
        out = []
        for iid in srv.samples[model]:
            pic = srv.images.get(iid)
            if pic is not None:
                out.append({"image": iid, "label": pic.label, "url": f"/api/thumb/{iid}"})
        return {"samples": out}

    @app.get("/api/thumb/{iid}")
    async def thumb(iid: str):
        pic = srv.picture(iid)

        def make():
            small = pic.image.copy()
            small.thumbnail((64, 64))
            return png(np.asarray(small))

        return Response(await asyncio.to_thread(make), media_type="image/png")

    @app.post("/api/image")
    async def upload(request: Request, model: str = "digits"):
        slot = srv.slot(model)
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > MAX_UPLOAD_BYTES:
            raise HTTPException(413, f"the upload is {int(length) / 2**20:.1f} MB; at most 10 MB is accepted")
        data = bytearray()
        async for chunk in request.stream():
            data += chunk
            if len(data) > MAX_UPLOAD_BYTES:
                raise HTTPException(413, "the upload is larger than 10 MB; at most 10 MB is accepted")
        pic = await asyncio.to_thread(decode_upload, bytes(data))
        return await _show(request, slot, srv.add_image(pic))

    async def _show(request, slot, iid):
        def fn(model):
            x = srv.tensor(iid, model)
            return {"image": iid, "url": srv.url(image_png(x[0]), "image.png"), "predictions": _predictions(model, x),
                    "label": srv.picture(iid).label}

        return await srv.run(request, slot, fn)

    @app.post("/api/predict")
    async def predict(request: Request, ask: Ask):
        srv.picture(ask.image)
        return await _show(request, srv.slot(ask.model), ask.image)


def explain_routes(app: FastAPI, srv: Server) -> None:
    """Attribution overlays, one method per request, and the HTML report."""

    @app.post("/api/explain")
    async def explain(request: Request, ask: ExplainAsk):
        slot, pic = srv.slot(ask.model), srv.picture(ask.image)
        methods = attribution.METHODS
        if ask.method not in methods:
            raise HTTPException(404, f"unknown method {ask.method!r}; available: {', '.join(methods)}")

        def fn(model):
            x = srv.tensor(ask.image, model)
            target = ask.target if ask.target is not None else int(_logits(model, x).argmax(1)[0])
            start = time.perf_counter()
            heat = methods[ask.method](model, x, target)[0]
            seconds = time.perf_counter() - start
            name = f"{ask.method}-{pic.name.replace(' ', '-')}-class{target}.png"
            return {"method": ask.method, "target": target, "seconds": round(seconds, 3),
                    "url": srv.url(overlay_png(x[0], heat), name)}

        return await srv.run(request, slot, fn, ask.job)

    @app.post("/api/report")
    async def report(request: Request, ask: Ask):
        from .report import build_report

        slot, pic = srv.slot(ask.model), srv.picture(ask.image)

        def fn(model):
            x = srv.tensor(ask.image, model)
            with tempfile.TemporaryDirectory() as out, _PLOT_LOCK:
                path = build_report(model, x, torch.tensor([pic.label]), out, progress=False)
                page = Path(path).read_bytes()
            return {"url": srv.url(page, "pellucid-report.html", "text/html; charset=utf-8")}

        return await srv.run(request, slot, fn, ask.job)


def attack_routes(app: FastAPI, srv: Server) -> None:
    """FGSM / PGD with a chosen eps, and fooling images."""

    @app.post("/api/attack")
    async def attack(request: Request, ask: AttackAsk):
        if ask.kind not in ("fgsm", "pgd"):
            raise HTTPException(400, f"unknown attack {ask.kind!r}; choose fgsm or pgd")
        attack_fn = pellucid.fgsm if ask.kind == "fgsm" else pellucid.pgd
        slot = srv.slot(ask.model)
        srv.picture(ask.image)

        def fn(model):
            x = srv.tensor(ask.image, model)
            label = torch.tensor([int(_logits(model, x).argmax(1)[0])])
            if ask.kind == "fgsm":
                adv = attack_fn(model, x, label, ask.eps)
            else:
                adv = attack_fn(model, x, label, ask.eps, 2.5 * ask.eps / ask.steps, ask.steps, seed=0)
            return _adversarial(model, x, adv, f"{ask.kind}-eps{ask.eps:g}")

        return await srv.run(request, slot, fn, ask.job)

    @app.post("/api/fool")
    async def fool(request: Request, ask: Ask):
        slot = srv.slot(ask.model)
        srv.picture(ask.image)
        if ask.target is None:
            raise HTTPException(400, "choose the class to fool the model into (target)")

        def fn(model):
            x = srv.tensor(ask.image, model)
            r = pellucid.fooling_image(model, x, ask.target, progress=False)
            out = _adversarial(model, x, r.image, f"fooled-into-{ask.target}")
            return {**out, "steps": int(r.steps[0]), "success": bool(r.success[0]), "target": ask.target}

        return await srv.run(request, slot, fn, ask.job)

    def _adversarial(model, x, adv, name):
        diff, k = difference_png(x, adv)
        return {"url": srv.url(image_png(adv[0]), f"{name}.png"), "diff_url": srv.url(diff, f"{name}-difference.png"),
                "magnified": round(k, 2), "linf": round(float((adv - x).abs().max()), 5),
                "predictions": _predictions(model, adv)}


def visualize_routes(app: FastAPI, srv: Server) -> None:
    """Class and channel visualizations, streamed as NDJSON snapshots."""

    @app.post("/api/visualize")
    async def visualize(request: Request, ask: VisualAsk):
        if ask.kind not in ("class", "channel"):
            raise HTTPException(400, f"unknown visualization {ask.kind!r}; choose class or channel")
        vis_fn = pellucid.class_visualization if ask.kind == "class" else pellucid.channel_visualization
        slot = srv.slot(ask.model)
        if ask.kind == "channel" and not ask.layer:
            raise HTTPException(400, "choose a layer for the channel visualization")
        args = (ask.target,) if ask.kind == "class" else (ask.layer, ask.channel)
        return StreamingResponse(stream_visualization(srv, slot, vis_fn, args, ask), media_type="application/x-ndjson")


async def stream_visualization(srv: Server, slot: ModelSlot, vis_fn: Callable, args: tuple, ask: VisualAsk):
    """Run a visualization in the pool and yield its snapshots as NDJSON lines while it runs."""
    loop, frames = asyncio.get_running_loop(), asyncio.Queue()
    cancel = threading.Event()
    job = ask.job or secrets.token_urlsafe(9)
    srv.jobs[job] = cancel
    name = f"{ask.kind}-{args[0] if ask.kind == 'class' else f'{args[0]}-{args[1]}'}"

    def on_frame(step, image):
        url = srv.url(image_png(image), f"{name}-step{step}.png" if step is not None else f"{name}.png")
        loop.call_soon_threadsafe(frames.put_nowait, {"step": step, "total": ask.steps, "url": url})

    def work():
        with slot.lease(cancel) as model:
            run_visualization(vis_fn, (model, *args), {"steps": ask.steps, "seed": 0}, on_frame)

    fut = loop.run_in_executor(srv.pool, work)
    fut.add_done_callback(lambda _f: loop.call_soon_threadsafe(frames.put_nowait, None))
    try:
        while (frame := await frames.get()) is not None:
            yield json.dumps(frame) + "\n"
        try:
            fut.result()
            yield json.dumps({"done": True}) + "\n"
        except Cancelled:
            yield json.dumps({"error": "cancelled"}) + "\n"
        except Exception as e:  # the stream has started: report the error in it
            yield json.dumps({"error": f"{type(e).__name__}: {e}"}) + "\n"
    finally:
        cancel.set()
        srv.jobs.pop(job, None)


class Guard:
    """ASGI middleware: refuse unexpected Host headers (DNS rebinding), add the security headers."""

    def __init__(self, app, allowed_hosts: tuple[str, ...]):
        self.app, self.allowed_hosts = app, allowed_hosts

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        host = _host_name(headers.get(b"host", b"").decode("latin-1"))
        if "*" not in self.allowed_hosts and host not in self.allowed_hosts:
            response = JSONResponse({"detail": f"unexpected Host header {host!r}"}, status_code=400)
            return await response(scope, receive, send)

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                extra = MutableHeaders(scope=message)
                extra["Content-Security-Policy"] = CSP
                extra["X-Content-Type-Options"] = "nosniff"
                extra["Referrer-Policy"] = "no-referrer"
                if "cache-control" not in extra:
                    extra["Cache-Control"] = "no-store"
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _host_name(header: str) -> str:
    """The host of a Host header, without the port (``[::1]:8000`` -> ``[::1]``)."""
    return header.split("]")[0] + "]" if header.startswith("[") else header.rsplit(":", 1)[0]


def _logits(model, x):
    with torch.no_grad():
        return model(x)


def _methods_info() -> list[dict]:
    return [{"name": m, "title": METHOD_TITLES.get(m, m)} for m in attribution.METHODS]


def _model_info(slot: ModelSlot) -> dict:
    from torch import nn

    from .models import named_layers

    model = slot.model
    convs = {n: m for n, m in named_layers(model).items() if isinstance(m, nn.Conv2d)}
    layers = [{"name": n, "channels": m.out_channels} for n, m in convs.items()]
    return {"name": slot.name, "labels": list(getattr(model, "labels", None) or []),
            "input_size": list(getattr(model, "input_size", None) or []), "layers": layers,
            "description": html.escape(getattr(model, "name", slot.name))}


def serve(model: str = "digits", weights: str | None = None, host: str = "127.0.0.1", port: int = 8000,
          replicas: int = 2, workers: int = 4) -> None:
    """Run the web app until Ctrl-C; prints its address. ``port=0`` picks a free port."""
    import uvicorn

    from .models import BUILTIN, load_model

    loaders = {name: (lambda n=name: load_model(n)) for name in BUILTIN}
    if model not in loaders or weights is not None:
        loaded = load_model(model, weights=weights)  # fail now, with a clear message, if it cannot load
        loaders = {model: lambda: loaded, **loaders}
    hosts = ("*",) if host in ("0.0.0.0", "::") else ("127.0.0.1", "localhost", "[::1]", host, f"[{host}]")
    app = create_app(loaders, replicas=replicas, workers=workers, allowed_hosts=hosts)
    app.state.server.load_samples(model)  # load the first model and its samples before printing the address
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)  # connections made as soon as the address is printed wait in the backlog
    shown = f"[{host}]" if ":" in host else host
    print(f"pellucid serve: http://{shown}:{sock.getsockname()[1]}/  (Ctrl-C to stop)", flush=True)
    config = uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=2)
    uvicorn.Server(config).run(sockets=[sock])
