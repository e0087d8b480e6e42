"""The app: its routes put together, the page and its static files, results by id, and ``serve``."""

from __future__ import annotations

import html
import os
import re
import socket
import sys
from collections.abc import Callable
from contextlib import asynccontextmanager
from importlib import resources

import torch
from fastapi import FastAPI, HTTPException
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response

from .._checks import PellucidError
from ..io import MAX_PIXELS
from .analysis import attack_routes, attacks_info, explain_routes, methods_info
from .catalog import builtin_models, text_models
from .datasets import dataset_routes
from .jobs import ModelSlot, Server
from .schema import validation_error
from .security import LOCAL_HOSTS, Guard, allowed_hosts
from .uploads import MAX_SIDE, MAX_UPLOAD_BYTES, image_routes
from .visualize import visualize_routes

STATIC = {"index.html": "text/html; charset=utf-8", "app.js": "text/javascript; charset=utf-8",
          "datasets.js": "text/javascript; charset=utf-8", "style.css": "text/css; charset=utf-8"}
RESULT_ID = re.compile(r"[A-Za-z0-9_-]{16,64}")


def create_app(models: dict[str, torch.nn.Module | Callable[[], torch.nn.Module]] | None = None,
               replicas: int = 2, workers: int = 4,
               allowed_hosts: tuple[str, ...] = (*LOCAL_HOSTS, "testserver"),
               unavailable: dict[str, str] | None = None) -> FastAPI:
    """The web app. ``models``: name -> model or loader (default: the built-in digits models); a loader
    runs when its model is first used. ``unavailable``: name -> why it cannot be built here (listed, not
    offered). Text models (``langid``) are refused with a 400 that says where they are served."""
    slots = {}
    if models is None:
        for name, (loader, description, missing) in builtin_models(("digits", "digits-nobn")).items():
            slots[name] = ModelSlot(name, loader, replicas, description, missing)
    else:
        for name, m in models.items():
            loader = (lambda m=m: m) if isinstance(m, torch.nn.Module) else m
            slots[name] = ModelSlot(name, loader, replicas)
    for name, why in (unavailable or {}).items():
        slots[name] = ModelSlot(name, lambda: None, replicas, unavailable=why)
    srv = Server(slots, workers, refused={n: why for n, why in text_models().items() if n not in slots})

    @asynccontextmanager
    async def lifespan(_app):
        yield
        srv.stop()

    app = FastAPI(title="pellucid", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.server = srv
    app.add_middleware(Guard, allowed_hosts=allowed_hosts)
    for add_routes in (page_routes, image_routes, explain_routes, attack_routes, visualize_routes,
                       dataset_routes):
        add_routes(app, srv)

    @app.exception_handler(HTTPException)
    async def http_error(_request, exc: HTTPException):
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def invalid_body(_request, exc: RequestValidationError):  # NaN in a body must not be a 500
        return JSONResponse(validation_error(exc.errors()), status_code=422)

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
        """Answers at once: no model is built to list it (each says its state)."""
        return {"models": [model_info(slot) for slot in srv.models.values()],
                "methods": methods_info(), "attacks": attacks_info(),
                "limits": {"bytes": MAX_UPLOAD_BYTES, "side": MAX_SIDE, "pixels": MAX_PIXELS}}

    @app.get("/api/models/{name}")
    async def model_details(name: str):
        """The model chosen on the page: built now if it is not yet (loaded, or trained on first use)."""
        slot = srv.slot(name)
        await srv.build(lambda: slot.model)
        return model_info(slot)

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


def model_info(slot: ModelSlot) -> dict:
    """What the page shows of a model; labels and layers once it is built (``state`` ``ready``)."""
    from torch import nn

    from ..models.layers import named_layers

    info = {"name": slot.name, "state": slot.state, "offered": not slot.unavailable,
            "description": html.escape(slot.description), "labels": [], "input_size": [], "layers": []}
    if slot.unavailable:
        return {**info, "needs": slot.unavailable}
    if slot.state != "ready":
        return info
    model = slot.model
    convs = {n: m for n, m in named_layers(model).items() if isinstance(m, nn.Conv2d)}
    return {**info, "labels": list(getattr(model, "labels", None) or []),
            "input_size": list(getattr(model, "input_size", None) or []),
            "layers": [{"name": n, "channels": m.out_channels} for n, m in convs.items()],
            "description": html.escape(getattr(model, "name", None) or slot.description)}


def serve(model: str = "digits", weights: str | None = None, host: str = "127.0.0.1", port: int = 8000,
          replicas: int = 2, workers: int = 4) -> None:
    """Run the web app until Ctrl-C or SIGTERM; prints its address. ``port=0`` picks a free port.

    The built-in image models are offered and built on first use (the address is printed at once);
    a model given by name with ``weights``, or one that is not built in, is loaded first (a clear error
    now if it cannot load). SIGTERM and Ctrl-C stop running jobs and a model in training within a step.
    """
    import uvicorn

    from ..models import load_model

    if model in text_models():
        raise PellucidError(text_models()[model])
    builtins = builtin_models()
    if model in builtins and builtins[model][2] and weights is None:
        raise PellucidError(f"model {model!r} {builtins[model][2]}")
    loaders = {n: b[0] for n, b in builtins.items() if not b[2]}
    missing = {n: b[2] for n, b in builtins.items() if b[2] and n != model}
    if model not in loaders or weights is not None:
        loaded = load_model(model, weights=weights)  # fail now, with a clear message, if it cannot load
        loaders[model] = lambda: loaded
    loaders = {model: loaders[model], **loaders}  # the page selects the first one
    app = create_app(loaders, replicas=replicas, workers=workers, allowed_hosts=allowed_hosts(host),
                     unavailable=missing)
    srv: Server = app.state.server
    for name, slot in srv.models.items():
        slot.description = builtins[name][1] if name in builtins else name
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)  # connections made as soon as the address is printed wait in the backlog
    shown = f"[{host}]" if ":" in host else host
    print(f"pellucid serve: http://{shown}:{sock.getsockname()[1]}/  (Ctrl-C to stop)", flush=True)
    config = uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=2)

    class StoppingServer(uvicorn.Server):
        """On SIGTERM or Ctrl-C, also cancel the jobs and stop a model in training at once: the worker
        threads would otherwise keep the process alive until they finish."""

        def handle_exit(self, sig, frame):
            srv.stop()
            super().handle_exit(sig, frame)

    code = 0
    try:
        StoppingServer(config).run(sockets=[sock])  # uvicorn re-raises Ctrl-C (KeyboardInterrupt) once stopped
    except KeyboardInterrupt:
        code = 130
        raise
    finally:
        srv.stop()
        if not srv.wait_idle(2.0):  # work that cannot be interrupted (reading data, a forward pass): no waiting
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
