"""Samples, uploads (checked by their content, with limits on bytes and pixels) and predictions.

Uploads are decoded by :func:`pellucid.io.decode_image`, the one image-loading path; its
:class:`~pellucid.io.ImageError` becomes a 4xx with its message.
"""

from __future__ import annotations

import asyncio

import numpy as np
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import Response

from ..io import FORMATS, ImageError, decode_image
from .jobs import Picture, Server
from .schema import Ask
from .views import image_png, png, top5

MAX_UPLOAD_BYTES = 10 * 1024 * 1024
MAX_SIDE = 4096  # refused above this many pixels a side, before decoding
KEEP_SIDE = 1024  # larger uploads are kept scaled down to this side
STATUS = {"empty": 400, "corrupt": 400, "unknown": 415, "format": 415, "too large": 413}  # ImageError.kind


def decode_upload(data: bytes) -> Picture:
    """Check an upload by its content: PNG, JPEG or WebP, at most 4096x4096, fully decodable."""
    try:
        return Picture(decode_image(data, formats=FORMATS, max_side=MAX_SIDE, shrink_to=KEEP_SIDE))
    except ImageError as e:
        raise HTTPException(STATUS.get(e.kind, 400), str(e)) from e


async def read_body(request: Request) -> bytes:
    """The request body, refused with a 413 past ``MAX_UPLOAD_BYTES`` (by header, else while reading)."""
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > MAX_UPLOAD_BYTES:
        raise HTTPException(413, f"the upload is {int(length) / 2**20:.1f} MB; at most 10 MB is accepted")
    data = bytearray()
    async for chunk in request.stream():
        data += chunk
        if len(data) > MAX_UPLOAD_BYTES:
            raise HTTPException(413, "the upload is larger than 10 MB; at most 10 MB is accepted")
    return bytes(data)


def thumbnail_png(pic: Picture, side: int = 64) -> bytes:
    from PIL import Image

    arr = pic.image.permute(1, 2, 0).numpy()
    small = Image.fromarray(arr[..., 0] if arr.shape[2] == 1 else arr)
    small.thumbnail((side, side))
    return png(np.asarray(small))


def image_routes(app: FastAPI, srv: Server) -> None:
    """Samples, uploads and predictions."""

    @app.get("/api/samples")
    async def samples(model: str = "digits"):
        srv.slot(model)
        if model not in srv.samples:
            await srv.build(srv.load_samples, model)  # the model's first use: built now
        out = []
        for iid in srv.samples[model]:
            pic = srv.images.get(iid)
            if pic is not None:
                out.append({"image": iid, "label": pic.label, "url": f"/api/thumb/{iid}"})
        return {"samples": out}

    @app.get("/api/thumb/{iid}")
    async def thumb(iid: str):
        pic = srv.picture(iid)
        return Response(await asyncio.to_thread(thumbnail_png, pic), media_type="image/png")

    @app.post("/api/image")
    async def upload(request: Request, model: str = "digits"):
        slot = srv.slot(model)
        pic = await asyncio.to_thread(decode_upload, await read_body(request))
        return await _show(request, slot, srv.add_image(pic))

    async def _show(request, slot, iid):
        def fn(model):
            x = srv.tensor(iid, model)
            return {"image": iid, "url": srv.url(image_png(x[0]), "image.png"), "predictions": top5(model, x),
                    "label": srv.picture(iid).label}

        return await srv.run(request, slot, fn)

    @app.post("/api/predict")
    async def predict(request: Request, ask: Ask):
        srv.picture(ask.image)
        return await _show(request, srv.slot(ask.model), ask.image)
