"""Class and channel visualizations, streamed as NDJSON snapshots while they run."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import StreamingResponse

import pellucid

from .._checks import PellucidError
from ..targets import as_indices
from .jobs import Cancelled, ModelSlot, Server
from .schema import VisualAsk
from .views import as_image, image_png


def run_visualization(fn: Callable, args: tuple, kwargs: dict, on_frame: Callable, frames: int = 10) -> None:
    """Run a class/channel visualization, streaming about ``frames`` snapshots while it runs."""
    steps = kwargs["steps"]
    every = max(1, steps // frames)
    fn(*args, **kwargs, snapshots=sorted({*range(every, steps + 1, every), steps}),
       callback=lambda step, images: on_frame(step, as_image(images)))


def visualize_routes(app: FastAPI, srv: Server) -> None:
    """``/api/visualize``: the snapshots of a class or channel visualization, one JSON line each."""

    @app.post("/api/visualize")
    async def visualize(request: Request, ask: VisualAsk):
        if ask.kind not in ("class", "channel"):
            raise HTTPException(400, f"unknown visualization {ask.kind!r}; choose class or channel")
        vis_fn = pellucid.class_visualization if ask.kind == "class" else pellucid.channel_visualization
        slot = srv.slot(ask.model)
        if ask.kind == "channel" and not ask.layer:
            raise HTTPException(400, "choose a layer for the channel visualization")
        value, name = (ask.target, "target") if ask.kind == "class" else (ask.channel, "channel")
        try:  # an index past int64 is a 400 here; one past the model's classes or channels an error in the stream
            as_indices(value, 1, name, kind=ask.kind)
        except PellucidError as e:
            raise HTTPException(400, str(e)) from e
        args = (ask.target,) if ask.kind == "class" else (ask.layer, ask.channel)
        return StreamingResponse(stream_visualization(srv, slot, vis_fn, args, ask), media_type="application/x-ndjson")


async def stream_visualization(srv: Server, slot: ModelSlot, vis_fn: Callable, args: tuple, ask: VisualAsk):
    """Run a visualization in the pool and yield its snapshots as NDJSON lines while it runs."""
    loop, frames = asyncio.get_running_loop(), asyncio.Queue()
    job, cancel = srv.job(ask.job)
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
