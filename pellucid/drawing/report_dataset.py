"""The report's sections about more than the sample images: the model's strategies across a held-out set
(SpRAy) and the concepts it uses per class (CRAFT, each concept tested by TCAV)."""

from __future__ import annotations

import torch

from . import render
from .report_context import ReportContext

STRATEGY_IMAGES = 400  # held-out digits the strategies section scans (LRP: a few seconds on two cores)
CONCEPT_CLASSES = 3  # classes the concepts section explains: those of the first sample images
CONCEPT_IMAGES = 60  # held-out digits per class that CRAFT factorizes
CONCEPTS_TESTED = 3  # the most important concepts of a class, drawn and tested by TCAV
TCAV_RUNS = 10  # TCAV runs per concept (each on its own 4 of the concept's crops)
TCAV_MIN_IMAGES = 10  # fewer images of a class than this: no TCAV (its score is a fraction of them)


def strategies_section(ctx: ReportContext) -> render.Section | None:
    """SpRAy on the model's held-out set (the digits models): per class the strategies, for the three classes
    with the most flagged images, and the most flagged images. ``None`` for a model without such a set."""
    if getattr(ctx.model, "samples", None) != "digits":
        return None
    from ..dataset import scan
    from ..models.data import digits
    from .strategies import scan_sections

    x, y = digits("test")
    x, y = x[:STRATEGY_IMAGES], y[:STRATEGY_IMAGES]
    result = scan(ctx.model, x, y, seed=ctx.seed)
    ranked = sorted(result.classes, key=lambda c: -int(result.flagged[result.classes[c].images].sum()))[:3]
    body = render.subsections(scan_sections(result, ctx.label, classes=set(ranked), flagged=8), 3, "meta")
    intro = (f"SpRAy (Lapuschkin et al. 2019) on {len(x)} held-out digits: per class, the LRP maps cluster into the "
             f"model's strategies; a small separate strategy is where shortcuts hide. {int(result.flagged.sum())} "
             "images follow a minority strategy; shown: the three classes with the most. The pellucid scan "
             "command runs it on any data set.")
    return render.Section("Strategies across a data set", intro, body)


def concept_sets(ctx: ReportContext) -> list[tuple[int, torch.Tensor]]:
    """``(class, images)`` for the classes of the first sample images: for the digits models that class's first
    :data:`CONCEPT_IMAGES` held-out digits, else the sample images the model predicts as it."""
    classes = list(dict.fromkeys(int(c) for c in ctx.predicted))[:CONCEPT_CLASSES]
    if getattr(ctx.model, "samples", None) == "digits":
        from ..models.data import digits

        x, y = digits("test")
        return [(c, x[y == c][:CONCEPT_IMAGES]) for c in classes]
    return [(c, ctx.x[ctx.predicted.cpu() == c]) for c in classes]


def concept_tests(ctx: ReportContext, x: torch.Tensor, c: int, found) -> tuple[str, str]:
    """TCAV of each of the most important concepts (its crops against random crops of ``x``) as a table, and the
    layer tested: the concepts' own, or the nearest earlier one where the class's gradient differs per image."""
    from ..concept import tcav
    from ..concept.significance import sensitive_layer

    layer = sensitive_layer(ctx.model, x, c, found.layer)
    rows = []
    for k in found.concepts[:CONCEPTS_TESTED]:
        r = tcav(ctx.model, x, c, layer, k.crops, runs=TCAV_RUNS, bonferroni=CONCEPTS_TESTED, seed=ctx.seed)
        rows.append([f"concept {k.index}", f"{k.importance:.2f}", f"{r.score:.2f}",
                     f"{float(r.random_scores.mean()):.2f}", f"{r.p_value:.2g}", "yes" if r.significant else "no"])
    return render.table(["concept", "importance", "TCAV score", "random CAVs", "p-value", "significant"], rows), layer


def concepts_section(ctx: ReportContext) -> render.Section | None:
    """Per class (those of the first sample images): CRAFT's most important concepts with their crops and
    importance, and a TCAV test of each where the class has enough images. ``None`` for a model with no layer
    CRAFT can factorize (a spatial map with no negative value: an MLP, a ViT whose patches have no ReLU)."""
    from ..concept import concepts
    from ..concept.discovery import concept_layers
    from .display_learned import concepts_png

    if not concept_layers(ctx.model, ctx.x[:1]):
        return None
    parts = []
    for c, x in concept_sets(ctx):
        found = concepts(ctx.model, x, c, n=5, designs=16, top=4 * TCAV_RUNS, seed=ctx.seed)
        body = render.img_tag(concepts_png(found, top=CONCEPTS_TESTED), f"concepts of {ctx.label(c)}", width=640)
        if len(x) >= TCAV_MIN_IMAGES:
            table, layer = concept_tests(ctx, x, c, found)
            body += table
            tested = (f"; TCAV at {layer} of each concept's crops against random crops, α 0.05 / {CONCEPTS_TESTED}"
                      + ("" if layer == found.layer else f" ({found.layer}'s gradient is the same for every image)"))
        else:
            tested = f"; too few images for TCAV (at least {TCAV_MIN_IMAGES})"
        intro = f"{len(x)} image{'s' * (len(x) != 1)} of the class, concepts at {found.layer}{tested}."
        parts.append(render.Section(f"class {ctx.label(c)}", intro, body))
    intro = ("CRAFT (Fel et al. 2023) factorizes the activations of image crops into concepts and ranks them by "
             "their importance for the class (total Sobol index: how much the score changes when a concept is "
             "masked); each row shows the crops that hold most of a concept. Each concept is then tested as in "
             "ACE (Ghorbani et al. 2019): TCAV (Kim et al. 2018) with its crops as the concept images, against "
             "random crops of the same images, Bonferroni-corrected. The pellucid concepts and pellucid tcav "
             "commands run them on folders of images.")
    return render.Section("What concepts it uses", intro, render.subsections(parts, 3, "meta"))
