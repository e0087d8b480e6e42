"""The main job: one self-contained HTML report on a model and some images.

A report is a list of section builders, each a function ``ReportContext -> Section``: a section about the
image model goes in :data:`IMAGE_SECTIONS` (every page), one about something else in :data:`SECTIONS` (the
main page only; it is built from ``IMAGE_SECTIONS`` when this module loads).
"""

from __future__ import annotations

import html
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from .._grad import predictions
from . import render
from .report_context import ReportContext
from .report_dataset import concepts_section, strategies_section


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


LANGID_WORDS = ("hyvää", "gezellig", "niezbędny", "bicicleta", "weather")


def langid_section(ctx: ReportContext) -> render.Section | None:
    """Sequences: the langid GRU explained per character, and one HotFlip attack.

    Omitted without wordfreq (``pellucid[text]``); uses the cached model only and never trains, so
    an image report stays fast: without a cache it says how to train one.
    """
    import importlib.util

    if importlib.util.find_spec("wordfreq") is None:
        return None
    from ..text import cached_langid, word_titles
    from ..text.render import text_html, text_png

    title = "Sequences: which letters made it say Finnish?"
    model = cached_langid()
    if model is None:
        return render.Section(title, "The built-in langid GRU is not trained yet.",
                              "<p>Run <code>pellucid train langid</code> (about a minute) and rebuild the report "
                              "to see which characters drive its language predictions.</p>")
    from ..text import explain_text, hotflip

    words = list(LANGID_WORDS)
    maps = explain_text(model, words, seed=ctx.seed)
    titles = word_titles(model, words)
    attack = hotflip(model, "weather", target="dutch", letters="ascii")
    acc = getattr(model, "accuracy", None)
    facts = f"held-out accuracy {100 * acc:.1f}% on words never seen in training. " if acc is not None else ""
    body = (f"<p>{facts}HotFlip: {html.escape(attack.describe(model.labels))}</p>"
            + text_html(words, maps, [t.replace(chr(10), " · ") for t in titles])
            + render.img_tag(text_png(words, maps, titles), "per-character attributions", width=1000))
    return render.Section(title, "The langid GRU reads a word letter by letter and names its language. Each "
                          "letter's background shows how much it raised (red) or lowered (blue) the score of "
                          "the predicted language, per method; hover a letter for its value.", body)


def learned_section(ctx: ReportContext) -> render.Section:
    from ..featureviz import learned_figures

    classes_png, filters_png, layer = learned_figures(ctx.model, ctx.x, ctx.predicted, seed=ctx.seed)
    return render.Section("What has it learned",
                          "Class visualizations (gradient ascent from noise with L2, jitter and blur, "
                          "Yosinski et al. 2015) with the probability the model gives each, then the "
                          f"filters of layer {layer}: each row is the image that most excites one channel, "
                          "beside where that channel fires on the report's images.",
                          render.img_tag(classes_png, "class visualizations", width=900)
                          + render.img_tag(filters_png, f"filters of {layer}", width=620))


def _report_trust(records, small: bool) -> dict:
    """The trust measures with the report's cheap settings: ROAD at 5 fractions, 16 infidelity draws,
    max-sensitivity (3 draws) for cheap methods only, and the explanation attack (few steps) on saliency
    and gradient x input only. Large images get ROAD and infidelity only (at 224² each of the others
    costs about as much as the whole table), so the section stays within a minute or two."""
    cheap = [name for name, m in records.items() if m.cost == "cheap"]
    trust = {"road": {"fractions": (0.0, 0.2, 0.4, 0.6, 0.8)}, "infidelity": {"samples": 16 if small else 8}}
    if small:
        trust.update({"sensitivity": {"samples": 3, "methods": cheap}, "stability": {},
                      "attack": {"steps": 10, "checks": 2, "methods": ["saliency", "input_x_gradient"]}})
    return trust


SRG_IMAGES = 8  # the ranking's images: the report's, then the model's own samples up to this many


def ranking_images(ctx: ReportContext) -> tuple[torch.Tensor, torch.Tensor]:
    """At least :data:`SRG_IMAGES` images for the ranking: the report's, topped up with the model's sample
    images of the same size, and the predicted class of each."""
    from .._checks import PellucidError
    from ..models.data import sample_images

    x = ctx.x
    if len(x) >= SRG_IMAGES:
        return x, ctx.predicted
    try:
        more = sample_images(ctx.model)[0][: SRG_IMAGES - len(x)].to(x)
    except PellucidError:  # a model without sample images: rank on the report's
        return x, ctx.predicted
    if more.shape[1:] != x.shape[1:]:
        return x, ctx.predicted
    return torch.cat([x, more]), torch.cat([ctx.predicted, predictions(ctx.model, more).argmax(1)])


def srg_ranking(ctx: ReportContext, names, x: torch.Tensor, target: torch.Tensor) -> list[tuple[str, float]]:
    """``(method, mean Symmetric Relevance Gain)`` on ``x`` (:func:`ranking_images`), best first, with the
    seeded random map among them (it must not lead: see :func:`pellucid.srg`)."""
    from ..metrics import random_attribution, srg
    from ..registry import method
    small = x.shape[-1] * x.shape[-2] <= 64 * 64
    maps = {name: method(name)(ctx.model, x, target, **{**method(name).defaults(x, ctx.seed, quick=True),
                                                        **method(name).report}) for name in names}
    maps["random"] = random_attribution(x, ctx.seed)
    gains = {name: float(srg(ctx.model, x, target, m, steps=21 if small else 11).gain.mean())
             for name, m in maps.items()}
    return sorted(gains.items(), key=lambda kv: -kv[1])


def _trust_measures() -> tuple[tuple[str, str], ...]:
    """The trust columns of :func:`pellucid.compare` with their better direction (``metrics.table.BETTER``)."""
    from ..metrics.table import BETTER

    return tuple((c, BETTER[c]) for c in ("ROAD AUC", "infidelity", "sensitivity", "seed stability",
                                          "attack rank corr."))


def faithfulness_section(ctx: ReportContext) -> render.Section:
    from functools import partial

    from ..metrics import compare, top_layers
    from ..registry import methods as registered

    small = ctx.x.shape[-1] * ctx.x.shape[-2] <= 64 * 64
    n = min(len(ctx.x), 6 if small else 2)
    # bounded by cost class: small images every method but the expensive ones outside the explain grid
    # (Score-CAM, Ablation-CAM, KernelSHAP); large images the cheap ones of the explain grid
    from ..attribution.lrp.canonize import has_attention

    attention = has_attention(ctx.model)
    records = {name: m for name, m in registered().items()
               if ((m.cost == "cheap" and (small or m.grid)) or (small and (m.cost == "moderate" or m.grid)))
               and (m.attention or not attention)}
    # each method with the report's cheaper settings (its record's ``report``) and its seed
    methods = {name: partial(m.fn, **{**m.defaults(ctx.x, ctx.seed, quick=True), **m.report})
               for name, m in records.items()}
    sanity = [name for name, m in records.items() if m.sanity == "always" or (m.sanity == "small" and small)]
    result = compare(ctx.model, ctx.x[:n], ctx.predicted[:n], methods, steps=21 if small else 11,
                     sanity=sanity, sanity_layers=top_layers(ctx.model), trust=_report_trust(records, small),
                     seed=ctx.seed)
    x_rank, t_rank = ranking_images(ctx)
    ranked = srg_ranking(ctx, list(records), x_rank, t_rank)
    columns = result.columns()
    rows = [[r[c] if isinstance(r[c], str) else render.number(r[c]) for c in columns] for r in result.rows]
    trust_png = render.trust_plot(result.rows, _trust_measures())
    lead = ("<p><b>Which column to believe:</b> the Symmetric Relevance Gain (Blücher et al. 2024), first "
            "below. It removes pixels in the map's order and in the reverse order under the same blur and "
            "measures the area between the two curves, so what the removal itself does to the model cancels "
            "out and a random map scores about 0. Deletion AUC rewards any map that scatters holes over the "
            "image (on ImageNet photos the random map often has the lowest, i.e. best-looking, deletion AUC); "
            "read it only beside the random row.</p>")
    ranking = render.table(["rank", "method", f"SRG on {len(x_rank)} images (higher is better)"],
                           [[str(i + 1), name, render.number(g)] for i, (name, g) in enumerate(ranked)],
                           cls="ranking")
    body = (lead + ranking + render.table(columns, rows, cls="faithfulness")
            + render.img_tag(render.curves_plot(result.deletion, result.insertion), "deletion and insertion curves")
            + (render.img_tag(trust_png, "trust measures per method") if trust_png else "")
            + render.img_tag(render.sanity_plot(list(result.sanity.values())), "sanity check: similarity per "
                             "randomized layer"))
    return render.Section(
        "Faithfulness and sanity checks",
        f"Can the maps be trusted? On {n} images, pixels are removed (deletion) or restored onto a blurred "
        "copy (insertion) in each map's order (Petsiuk et al. 2018): a faithful map makes the probability "
        "drop faster (lower deletion AUC) and rise faster (higher insertion AUC) than the random map. "
        "ROAD (Rong et al. 2022) removes pixels too but fills them from their neighbours, so the model does "
        "not just react to holes (lower is better). Infidelity (Yeh et al. 2019) is how badly the map predicts "
        "the score change under random noise, sensitivity how much the map changes under noise of radius "
        "0.02 (both lower is better); seed stability is the rank correlation of a random method's maps for "
        "two seeds; the explanation attack (Ghorbani et al. 2019) looks for a change of at most 0.05 per pixel "
        "that keeps the prediction but moves the map: its rank correlation with the original map (higher "
        "is sturdier). Below, the model's layers are randomized from the output down (Adebayo et al. 2018): "
        "a map that explains the model should lose its similarity to the original; one that stays similar "
        f"shows the image, not the model (sanity check run for {', '.join(sanity)}).", body)


def fooled_section(ctx: ReportContext, n_fool: int = 6) -> render.Section:
    """How easily is it fooled: fooling images towards random (seeded) targets, and a robustness curve."""
    from ..adversarial import default_eps, fooling_image, random_targets, robustness_curve

    x, probs = ctx.x[:n_fool], ctx.probs[:n_fool]
    goal = random_targets(probs.argmax(1), probs.shape[1], ctx.seed)
    r = fooling_image(ctx.model, x, goal, progress=ctx.progress)
    notes = [f"target {ctx.label(int(t))}: {'fooled' if s else 'not fooled'} in {int(k)} steps"
             for t, s, k in zip(r.target, r.success, r.steps)]
    rows = render.attack_rows(x, r.image, probs, predictions(ctx.model, r.image), ctx.label, notes)
    labels = ctx.predicted if ctx.labels is None else ctx.labels.where(ctx.labels >= 0, ctx.predicted)
    curve = robustness_curve(ctx.model, ctx.x, labels, default_eps(ctx.x), "pgd", seed=ctx.seed,
                             progress=ctx.progress)
    table = render.table(["eps", "accuracy under PGD"],
                         [[f"{float(e):.4g}", f"{100 * float(a):.1f}%"] for e, a in zip(curve.eps, curve.accuracy)])
    body = (f"<p>{int(r.success.sum())}/{len(x)} images reach their random target "
            f"(median {int(r.steps.float().median())} steps of lr·g/‖g‖).</p>"
            + render.img_tag(rows, "fooling images", width=560)
            + "<p>Accuracy under PGD (L∞, 10 steps, random start, true labels where known) as eps grows:</p>"
            + render.img_tag(render.robustness_plot(curve), "robustness curve", width=520) + table
            + autoattack_line(ctx, labels))
    return render.Section("How easily is it fooled",
                          "Fooling images (Szegedy et al. 2014): gradient ascent on a random target class, each "
                          "image stopping as soon as the model predicts it; the difference is magnified ten "
                          "times (red brighter, blue darker). Then the accuracy left under a PGD attack "
                          "(Madry et al. 2018) of growing size eps.", body)


def autoattack_line(ctx: ReportContext, labels: torch.Tensor) -> str:
    """Accuracy under a cheap AutoAttack (a few images, 10 APGD and FAB steps, 3 targets, 100 Square queries)."""
    from ..adversarial import autoattack, default_eps

    n = 8 if ctx.x.shape[-1] * ctx.x.shape[-2] <= 64 * 64 else 4
    eps = default_eps(ctx.x)[3]
    r = autoattack(ctx.model, ctx.x[:n], labels[:n], eps, seed=ctx.seed, steps=10, targets=3, queries=100,
                   progress=ctx.progress)
    broke = ", ".join(f"{k} {v}" for k, v in r.counts().items() if v) or "none"
    return (f"<p>Accuracy under AutoAttack at eps {eps:.4g} (L∞): <b>{100 * r.robust_accuracy:.0f}%</b> of "
            f"{len(r.broken_by)} images (clean {100 * r.clean_accuracy:.0f}%; broken by: {html.escape(broke)}). "
            "A cheap run: APGD-CE, APGD-T and FAB-T with 10 steps, 3 target classes, 100 Square queries; "
            "the standard settings (<code>pl.autoattack</code>) usually break more.</p>")


_COLUMNS = {
    "saliency": "saliency", "smoothgrad": "SmoothGrad",
    "ig": "Integrated Gradients (sums to the score change from a black image)",
    "gradcam": "Grad-CAM on the last layer that keeps a spatial grid",
    "occlusion": "occlusion (score drop when a patch is blacked out)", "lime": "LIME over SLIC superpixels",
}
_COUNTS = dict(enumerate(("no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")))


_COMPOSITES = {"attnlrp": " (AttnLRP's rules for attention, LayerNorm and GELU, epsilon on every layer)",
               "epsilon_plus_flat": " (flat on the first layer, z+ on convolutions, epsilon on dense layers)"}


def attribution_caption(names: list[str], composite: str) -> str:
    """What the attribution grid's columns are, in their order; LRP names the composite it ran."""
    from ..registry import methods

    lrp = f"LRP with the {composite} composite{_COMPOSITES.get(composite, '')}"
    parts = [lrp if n == "lrp" else _COLUMNS.get(n, methods()[n].title if n in methods() else n) for n in names]
    listed = ", ".join(parts[:-1]) + " and " + parts[-1] if len(parts) > 1 else "".join(parts)
    count = _COUNTS.get(len(names), str(len(names)))
    return (f"{count[0].upper() + count[1:]} attribution methods for the predicted class, one column each: "
            f"{listed}. Red/blue maps are signed; agreement between methods is a hint the explanation is real.")


def attribution_section(ctx: ReportContext) -> render.Section:
    from ..attribution import explain
    from ..attribution.lrp.core import default_composite

    maps = explain(ctx.model, ctx.x, ctx.predicted, seed=ctx.seed, quick=True, progress=ctx.progress)
    png = render.attribution_grid(ctx.x, maps, ctx.row_titles)
    return render.Section("Where does it look", attribution_caption(list(maps), default_composite(ctx.model)),
                          render.img_tag(png, "attribution grid", width=1000))



# the report's sections, in reading order: those on the image model, then the langid GRU (shown once, in the
# main report: the pages of other image models linked from it leave it out)
IMAGE_SECTIONS: list[Callable[[ReportContext], render.Section | None]] = [
    predictions_section, attribution_section, faithfulness_section, fooled_section, learned_section,
    strategies_section, concepts_section,
]
SECTIONS = [*IMAGE_SECTIONS, langid_section]


def link_section(links: list[tuple[str, str]], title: str) -> Callable[[ReportContext], render.Section]:
    """A section builder that links other reports: ``links`` are ``(relative href, model name)``."""
    items = "".join(f'<li><a href="{html.escape(href)}">the report on <b>{html.escape(name)}</b></a></li>'
                    for href, name in links)
    return lambda ctx: render.Section(title, "The same report on other models and their own sample images.",
                                      f"<ul>{items}</ul>")


def build_report(model: nn.Module, x: torch.Tensor, labels: torch.Tensor | None, out, seed: int = 0,
                 progress: bool = True, sections=None) -> Path:
    """Write ``out/index.html`` and return its path. ``sections``: the builders (default :data:`SECTIONS`)."""
    from .._checks import check_images

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    x = check_images(x, model)
    ctx = ReportContext(model, x, labels, out, seed, progress)
    built, start = [], time.perf_counter()
    for make in sections or SECTIONS:
        t = time.perf_counter()
        section = make(ctx)
        if section is None:  # a builder with nothing to show (e.g. an optional extra not installed)
            continue
        if progress:
            print(f"  {section.title}: {time.perf_counter() - t:.1f}s", file=sys.stderr)
        built.append(section)
    name = getattr(model, "name", type(model).__name__)
    subtitle = f"{len(x)} images · generated by pellucid in {time.perf_counter() - start:.1f}s"
    path = out / "index.html"
    path.write_text(render.html_report(f"pellucid report: {name}", subtitle, built), encoding="utf-8")
    return path
