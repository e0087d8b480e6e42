"""The main job: one self-contained HTML report on a model and some images.

A report is a list of section builders, each a function ``ReportContext -> Section``; later
features add theirs to :data:`SECTIONS`.
"""

from __future__ import annotations

import html
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from . import render
from ._grad import logits_of, resolve_batch_size
from ._state import model_state


def predictions(model: nn.Module, x: torch.Tensor, batch_size: int | None = None) -> torch.Tensor:
    """Softmax probabilities ``(N, K)`` of a batch, in batches, with the model's state untouched."""
    with model_state(model):
        return logits_of(model, x, len(x), resolve_batch_size(batch_size, x)).softmax(1)


@dataclass
class ReportContext:
    model: nn.Module
    x: torch.Tensor
    labels: torch.Tensor | None
    out: Path
    seed: int = 0
    progress: bool = True
    cache: dict = field(default_factory=dict)

    @property
    def probs(self) -> torch.Tensor:
        if "probs" not in self.cache:
            self.cache["probs"] = predictions(self.model, self.x)
        return self.cache["probs"]

    @property
    def predicted(self) -> torch.Tensor:
        return self.probs.argmax(1)

    @property
    def row_titles(self) -> list[str]:
        return render.image_row_titles(self.model, self.probs, self.labels)

    def label(self, k: int) -> str:
        return self.model.label(k) if hasattr(self.model, "label") else str(k)


def predictions_section(ctx: ReportContext) -> render.Section:
    model = ctx.model
    rows = []
    top = ctx.probs.topk(min(3, ctx.probs.shape[1]), dim=1)
    for i in range(len(ctx.x)):
        truth = "" if ctx.labels is None or int(ctx.labels[i]) < 0 else ctx.label(int(ctx.labels[i]))
        preds = ", ".join(f"{ctx.label(int(k))} {100 * float(p):.1f}%" for p, k in zip(top.values[i], top.indices[i]))
        rows.append([i, truth or "-", preds])
    params = sum(p.numel() for p in model.parameters())
    facts = [f"model <b>{html.escape(getattr(model, 'name', type(model).__name__))}</b>",
             f"input {tuple(getattr(model, 'input_size', ()) or ctx.x.shape[1:])}",
             f"{params:,} parameters"]
    acc = getattr(model, "accuracy", None)
    if acc is not None:
        facts.append(f"held-out accuracy {100 * acc:.2f}%")
    if ctx.labels is not None and (ctx.labels >= 0).all():
        facts.append(f"{int((ctx.predicted == ctx.labels).sum())}/{len(ctx.x)} of these images correct")
    strip = render.attribution_grid(ctx.x, {}, ctx.row_titles) if len(ctx.x) <= 16 else b""
    body = f"<p>{' · '.join(facts)}</p>" + render.table(["#", "true", "top predictions"], rows)
    if strip:
        body += render.img_tag(strip, "the images", width=260)
    return render.Section("Model and predictions",
                          "The model and what it predicts for each image, with the top classes and their "
                          "softmax confidence. The sections below explain these predictions.", body)


def saliency_section(ctx: ReportContext) -> render.Section:
    from .attribution import saliency

    maps = saliency(ctx.model, ctx.x, ctx.predicted)
    png = render.attribution_grid(ctx.x, {"saliency": maps}, ctx.row_titles)
    return render.Section("Saliency",
                          "Vanilla-gradient saliency (Simonyan et al. 2014) of the predicted class: bright "
                          "pixels are those whose change would move the class score most.",
                          render.img_tag(png, "saliency maps", width=420))


def attribution_section(ctx: ReportContext) -> render.Section:
    from .attribution import GRID_METHODS, explain

    maps = explain(ctx.model, ctx.x, ctx.predicted, GRID_METHODS, seed=ctx.seed, quick=True, progress=ctx.progress)
    png = render.attribution_grid(ctx.x, maps, ctx.row_titles)
    return render.Section("Where does it look",
                          "Six attribution methods for the predicted class, one column each: saliency, "
                          "SmoothGrad, Integrated Gradients (sums to the score change from a black image), "
                          "Grad-CAM on the last conv layer, occlusion (score drop when a patch is blacked out) "
                          "and LIME over SLIC superpixels. Red/blue maps are signed; agreement between "
                          "methods is a hint the explanation is real.",
                          render.img_tag(png, "attribution grid", width=1000))


SECTIONS: list[Callable[[ReportContext], render.Section]] = [predictions_section, saliency_section,
                                                              attribution_section]


def build_report(model: nn.Module, x: torch.Tensor, labels: torch.Tensor | None, out, seed: int = 0,
                 progress: bool = True, sections=None) -> Path:
    """Write ``out/index.html`` and return its path."""
    from ._checks import check_images

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    x = check_images(x, model)
    ctx = ReportContext(model, x, labels, out, seed, progress)
    built, start = [], time.perf_counter()
    for make in sections or SECTIONS:
        t = time.perf_counter()
        section = make(ctx)
        if progress:
            print(f"  {section.title}: {time.perf_counter() - t:.1f}s", file=sys.stderr)
        built.append(section)
    name = getattr(model, "name", type(model).__name__)
    subtitle = f"{len(x)} images · generated by pellucid in {time.perf_counter() - start:.1f}s"
    path = out / "index.html"
    path.write_text(render.html_report(f"pellucid report: {name}", subtitle, built), encoding="utf-8")
    return path
