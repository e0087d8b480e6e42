"""The app: its routes put together, the page and its static files, results by id, and ``serve``."""

from __future__ import annotations

import asyncio
import html
import re
import socket
from collections.abc import Callable
from contextlib import asynccontextmanager
from importlib import resources

import torch
from fastapi import FastAPI, HTTPException
from fastapi.responses import JSONResponse, Response

from .analysis import attack_routes, attacks_info, explain_routes, methods_info
from .jobs import ModelSlot, Server
from .security import LOCAL_HOSTS, Guard, allowed_hosts
from .uploads import MAX_SIDE, MAX_UPLOAD_BYTES, image_routes
from .visualize import visualize_routes

STATIC = {"index.html": "text/html; charset=utf-8", "app.js": "text/javascript; charset=utf-8",
          "style.css": "text/css; charset=utf-8"}
RESULT_ID = re.compile(r"[A-Za-z0-9_-]{16,64}")


def create_app(models: dict[str, torch.nn.Module | Callable[[], torch.nn.Module]] | None = None,
               replicas: int = 2, workers: int = 4,
               allowed_hosts: tuple[str, ...] = (*LOCAL_HOSTS, "testserver")) -> FastAPI:
    """The web app. ``models``: name -> model or loader (default: the built-in digits models)."""
    from ..models import load_model

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
        return {"models": [await asyncio.to_thread(model_info, slot) for slot in srv.models.values()],
                "methods": methods_info(), "attacks": attacks_info(),
                "limits": {"bytes": MAX_UPLOAD_BYTES, "side": MAX_SIDE}}

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
    from torch import nn

    from ..layers import named_layers

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

    from ..models import BUILTIN, load_model

    loaders = {name: (lambda n=name: load_model(n)) for name in BUILTIN}
    if model not in loaders or weights is not None:
        loaded = load_model(model, weights=weights)  # fail now, with a clear message, if it cannot load
        loaders = {model: lambda: loaded, **loaders}
    app = create_app(loaders, replicas=replicas, workers=workers, allowed_hosts=allowed_hosts(host))
    app.state.server.load_samples(model)  # load the first model and its samples before printing the address
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)  # connections made as soon as the address is printed wait in the backlog
    shown = f"[{host}]" if ":" in host else host
    print(f"pellucid serve: http://{shown}:{sock.getsockname()[1]}/  (Ctrl-C to stop)", flush=True)
    config = uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=2)
    uvicorn.Server(config).run(sockets=[sock])
