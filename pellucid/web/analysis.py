"""Explanations and attacks: attribution overlays (one method per request), the HTML report, attacks
with a chosen eps and fooling images. Methods and attacks come from :mod:`pellucid.registry`."""

from __future__ import annotations

import tempfile
import threading
import time
from pathlib import Path

import torch
from fastapi import FastAPI, HTTPException, Request

from .. import registry
from .._checks import PellucidError
from .jobs import Server
from .schema import Ask, AttackAsk, ExplainAsk
from .views import difference_png, image_png, logits, overlay_png, top5

_PLOT_LOCK = threading.Lock()  # pyplot (used by the report) is not thread-safe


def _record(find, name: str, status: int):
    """The registry's record called ``name``; an unknown name is a ``status`` with the registry's message."""
    try:
        return find(name)
    except PellucidError as e:
        raise HTTPException(status, str(e)) from e


def methods_info() -> list[dict]:
    return [{"name": name, "title": m.title} for name, m in registry.methods().items()]


def attacks_info() -> list[dict]:
    return [{"name": name, "title": a.title} for name, a in registry.attacks().items()]


def explain_routes(app: FastAPI, srv: Server) -> None:
    """Attribution overlays, one method per request, and the HTML report."""

    @app.post("/api/explain")
    async def explain(request: Request, ask: ExplainAsk):
        slot, pic = srv.slot(ask.model), srv.picture(ask.image)
        method = _record(registry.method, ask.method, 404)

        def fn(model):
            x = srv.tensor(ask.image, model)
            target = ask.target if ask.target is not None else int(logits(model, x).argmax(1)[0])
            start = time.perf_counter()
            heat = method(model, x, target, **method.defaults(x, seed=0, quick=True))[0]
            seconds = time.perf_counter() - start
            name = f"{ask.method}-{pic.name.replace(' ', '-')}-class{target}.png"
            return {"method": ask.method, "target": target, "seconds": round(seconds, 3),
                    "url": srv.url(overlay_png(x[0], heat), name)}

        return await srv.run(request, slot, fn, ask.job)

    @app.post("/api/report")
    async def report(request: Request, ask: Ask):
        from ..drawing.report import build_report

        slot, pic = srv.slot(ask.model), srv.picture(ask.image)

        def fn(model):
            x = srv.tensor(ask.image, model)
            with tempfile.TemporaryDirectory() as out, _PLOT_LOCK:
                path = build_report(model, x, torch.tensor([pic.label]), out, progress=False)
                page = Path(path).read_bytes()
            return {"url": srv.url(page, "pellucid-report.html", "text/html; charset=utf-8")}

        return await srv.run(request, slot, fn, ask.job)


def attack_routes(app: FastAPI, srv: Server) -> None:
    """The registered attacks with a chosen eps, and fooling images."""

    @app.post("/api/attack")
    async def attack(request: Request, ask: AttackAsk):
        record = _record(registry.attack, ask.kind, 400)
        slot = srv.slot(ask.model)
        srv.picture(ask.image)

        def fn(model):
            x = srv.tensor(ask.image, model)
            label = torch.tensor([int(logits(model, x).argmax(1)[0])])
            adv = record.run(model, x, label, ask.eps, steps=ask.steps, seed=0)
            return _adversarial(model, x, adv, f"{ask.kind}-eps{ask.eps:g}")

        return await srv.run(request, slot, fn, ask.job)

    @app.post("/api/fool")
    async def fool(request: Request, ask: Ask):
        from ..adversarial import fooling_image

        slot = srv.slot(ask.model)
        srv.picture(ask.image)
        if ask.target is None:
            raise HTTPException(400, "choose the class to fool the model into (target)")

        def fn(model):
            x = srv.tensor(ask.image, model)
            r = fooling_image(model, x, ask.target, progress=False)
            out = _adversarial(model, x, r.image, f"fooled-into-{ask.target}")
            return {**out, "steps": int(r.steps[0]), "success": bool(r.success[0]), "target": ask.target}

        return await srv.run(request, slot, fn, ask.job)

    def _adversarial(model, x, adv, name):
        diff, k = difference_png(x, adv)
        return {"url": srv.url(image_png(adv[0]), f"{name}.png"), "diff_url": srv.url(diff, f"{name}-difference.png"),
                "magnified": round(k, 2), "linf": round(float((adv - x).abs().max()), 5),
                "predictions": top5(model, adv)}
