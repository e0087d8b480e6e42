"""The data-set views: a class's strategies (SpRAy, :func:`pellucid.dataset.scan`) and the concepts it is made
of (CRAFT, :func:`pellucid.concept.concepts`), drawn with the tiles of :mod:`pellucid.drawing.strategies`.

Both run on the model's held-out images: the digits models' held-out digits (as the report's strategies
section), any other model's sample images; each image counts as its class (the predicted one where none is
known). A scan covers every class at once, and the last few are kept per (model, method, images): another
class of the same scan answers at once.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict

import torch
from fastapi import FastAPI, HTTPException, Request

from .. import registry
from .._args import num_classes
from .._checks import PellucidError
from ..targets import as_indices
from .jobs import Server
from .schema import ConceptsAsk, StrategiesAsk

HELD_OUT = 1000  # the held-out digits
SCANS_KEPT = 8
FLAGGED = 8  # the most flagged images shown for a class
CROPS = 6  # crops shown per concept


def scan_methods() -> dict[str, str]:
    """The methods a scan may use here, name -> title: the registry's cheap image methods (hundreds of maps in
    seconds)."""
    return {n: m.title for n, m in registry.methods().items() if m.cost == "cheap" and m.modality == "image"}


def held_out(model, n: int = HELD_OUT) -> tuple[torch.Tensor, torch.Tensor, str]:
    """Up to ``n`` of the model's held-out images, their classes (predicted where unknown) and their name."""
    from .._grad import predictions
    from ..models.data import sample_images

    if getattr(model, "samples", None) == "digits":
        x, y = sample_images(model, n=min(n, HELD_OUT))  # balanced: the classes in turn
        name = "held-out digits"
    else:
        x, y = sample_images(model)
        x, y, name = x[:n], y[:n], "sample images"
    if (y < 0).any():
        y = predictions(model, x).argmax(1).cpu()
        name += " (as the class the model predicts)"
    return x, y, name


def _label(model):
    return getattr(model, "label", str)


def _check_class(model, target: int, y: torch.Tensor | None = None, where: str = "") -> int:
    """``target`` as a class of the model (that some of the images ``y`` hold); else a clear error."""
    as_indices(target, 1, "target", num_classes(model))
    if y is not None and not (y == target).any():
        name, present = _label(model)(target), ", ".join(_label(model)(int(c)) for c in y.unique())
        raise PellucidError(f"no image of class {name if name == str(target) else f'{name} ({target})'} among the "
                            f"{len(y)} {where}; classes present: {present}")
    return target


class Views:
    """What the data-set views keep: each model's facts (its images, scan methods, concept layers) and the
    last :data:`SCANS_KEPT` scans."""

    def __init__(self):
        self.facts: dict[str, dict] = {}
        self.scans: OrderedDict[tuple, tuple] = OrderedDict()
        self.lock = threading.Lock()

    def model_facts(self, name: str, model) -> dict:
        from ..concept.discovery import concept_layers

        if name not in self.facts:
            x, y, where = held_out(model)
            layers = concept_layers(model, x[:1])
            classes = [{"class": int(c), "label": _label(model)(int(c)), "images": int(k)}
                       for c, k in zip(*y.unique(return_counts=True))]
            self.facts[name] = {"model": name, "images": len(x), "set": where, "classes": classes, "layers": layers,
                                "layer": layers[-1] if layers else None,
                                "methods": [{"name": n, "title": t} for n, t in scan_methods().items()]}
        return self.facts[name]

    def scan(self, name: str, model, method: str, images: int):
        """``(x, y, where, result, cached)``: the scan of ``images`` held-out images, kept for the next class."""
        from ..dataset import scan

        key = (name, method, images)
        with self.lock:
            if key in self.scans:
                self.scans.move_to_end(key)
                return (*self.scans[key], True)
        x, y, where = held_out(model, images)
        result = scan(model, x, y, method=method, seed=0)
        with self.lock:
            self.scans[key] = (x, y, where, result)
            while len(self.scans) > SCANS_KEPT:
                self.scans.popitem(last=False)
        return x, y, where, result, False


def strategies_view(srv: Server, model, x: torch.Tensor, result, c: int) -> dict:
    """Class ``c`` of a scan as the page shows it: its strategies (size, share, mean map and typical images on
    one colour scale, as the report draws them), its most flagged images, and a line per class."""
    from ..dataset.maps import thumbnails
    from ..drawing.strategies import map_tile, strategy_tiles, tile_png

    label = _label(model)
    cs = result.classes[c]

    def image(i: int, tile) -> dict:
        return {"image": i, "score": round(float(result.score[i]), 3), "flagged": bool(result.flagged[i]),
                "url": srv.url(tile_png(tile), f"{result.method}-image{i}.png")}

    strategies = []
    for k, s in enumerate(cs.strategies):
        mean, *typical = strategy_tiles(result, c, k)
        strategies.append({"size": s.size, "share": round(s.size / len(cs.images), 4),
                           "flagged": bool(result.flagged[s.images].any()),
                           "mean": srv.url(tile_png(mean), f"{result.method}-class{c}-strategy{k + 1}.png"),
                           "examples": [image(i, t) for i, t in zip(s.typical.tolist(), typical)]})
    ranked = cs.images[result.score[cs.images].argsort(descending=True, stable=True)][:FLAGGED].tolist()
    ranked = [i for i in ranked if result.score[i] > 0]
    thumbs = thumbnails(x, ranked)
    classes = [{"class": k, "label": label(k), "images": len(v.images), "strategies": len(v.strategies),
                "flagged": int(result.flagged[v.images].sum())} for k, v in result.classes.items()]
    return {"class": c, "label": label(c), "method": result.method, "class_images": len(cs.images),
            "strategies": strategies, "flagged": [image(i, map_tile(thumbs[i], result.maps[i])) for i in ranked],
            "minority": result.minority, "classes": classes}


def concepts_view(srv: Server, model, found, where: str, images: int) -> dict:
    """CRAFT's concepts as the page shows them: importance and the crops that hold most of each."""
    from ..drawing.strategies import image_tile, tile_png

    return {"class": found.target, "label": _label(model)(found.target), "layer": found.layer, "images": images,
            "set": where, "error": round(found.error, 4),
            "concepts": [{"index": k.index, "importance": round(k.importance, 4),
                          "crops": [srv.url(tile_png(image_tile(crop)), f"concept{k.index}-crop{j}.png")
                                    for j, crop in enumerate(k.crops)]} for k in found.concepts]}


def _check_layer(model, layer: str, layers: list[str]) -> None:
    from ..models.layers import named_layers

    if layer not in layers:
        why = ("cannot hold concepts (CRAFT factorizes a spatial output with no negative value)"
               if layer in named_layers(model) else "is not a layer of this model")
        raise PellucidError(f"layer {layer!r} {why}; choose one of: {', '.join(layers) or '(none)'}, or none for "
                            f"the last ({layers[-1] if layers else '-'})")


def dataset_routes(app: FastAPI, srv: Server) -> None:
    """``/api/dataset`` (a model's images, scan methods and concept layers), ``/api/strategies``, ``/api/concepts``."""
    views = Views()

    @app.get("/api/dataset")
    async def dataset(request: Request, model: str = "digits"):
        return await srv.run(request, srv.slot(model), lambda m: views.model_facts(model, m))

    @app.post("/api/strategies")
    async def strategies(request: Request, ask: StrategiesAsk):
        slot = srv.slot(ask.model)
        methods = scan_methods()
        if ask.method not in methods:
            why = "is too slow to scan hundreds of images here" if ask.method in registry.methods() else \
                "is not an attribution method"
            raise HTTPException(400, f"method {ask.method!r} {why}; choose one of: {', '.join(methods)}")

        def fn(model):
            start = time.perf_counter()
            _check_class(model, ask.target)  # before any work
            x, y, where, result, cached = views.scan(ask.model, model, ask.method, ask.images)
            c = _check_class(model, ask.target, y, where)
            return {**strategies_view(srv, model, x, result, c), "images": len(x), "set": where, "cached": cached,
                    "seconds": round(time.perf_counter() - start, 3)}

        return await srv.run(request, slot, fn, ask.job)

    @app.post("/api/concepts")
    async def concepts(request: Request, ask: ConceptsAsk):
        from ..concept import concepts as craft

        slot = srv.slot(ask.model)

        def fn(model):
            start = time.perf_counter()
            _check_class(model, ask.target)
            layers = views.model_facts(ask.model, model)["layers"]
            if ask.layer:
                _check_layer(model, ask.layer, layers)
            x, y, where = held_out(model)
            c = _check_class(model, ask.target, y, where)
            xc = x[y == c][: ask.images]
            found = craft(model, xc, c, layer=ask.layer or None, n=ask.n, top=CROPS, seed=0)
            seconds = round(time.perf_counter() - start, 3)
            return {**concepts_view(srv, model, found, where, len(xc)), "seconds": seconds}

        return await srv.run(request, slot, fn, ask.job)
