"""What Jupyter shows for the results about a whole data set and the concepts a model uses: a scan's strategies
(:func:`pellucid.scan`), a diff's moved images (:func:`pellucid.diff`), TCAV's scores against its null
(:func:`pellucid.tcav`), CRAFT's concepts (:func:`pellucid.concepts`) and a channel's reference images
(:func:`pellucid.reference_images`). Same resolution and colour rule as :mod:`.display`; the result classes
import this module inside their repr methods."""

from __future__ import annotations

from functools import partial

import numpy as np

from . import render, strategies
from .display import small
from .overlay import heat_colours, image_array, overlay_rgb, shared_scale

CLASSES_SHOWN = 8  # classes a scan's picture shows (those with the most flagged images first)
FLAGGED_RED = "#c0392b"


def _label(result, c: int) -> str:
    labels = getattr(result, "labels", None) or []
    return labels[c] if 0 <= c < len(labels) else str(c)


def _off(ax) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)


def _shown_classes(result) -> list[int]:
    return sorted(result.classes, key=lambda c: (-int(result.flagged[result.classes[c].images].sum()), c))[
        :CLASSES_SHOWN]


def scan_png(result) -> bytes:
    """Per class (a column, most flagged first): each strategy's mean map, largest first, with its size; a
    flagged strategy framed and labelled red."""
    plt = render._plt()
    shown = _shown_classes(result)
    rows = max(len(result.classes[c].strategies) for c in shown)
    fig, axes = plt.subplots(rows, len(shown), figsize=(1.25 * len(shown) + 0.3, 1.5 * rows + 0.6), squeeze=False)
    for col, c in enumerate(shown):
        cs = result.classes[c]
        limits, signed = shared_scale([s.mean_map for s in cs.strategies])
        axes[0][col].set_title(f"{_label(result, c)}\n{len(cs.images)} images", fontsize=8)
        for k in range(rows):
            ax = axes[k][col]
            _off(ax)
            if k >= len(cs.strategies):
                continue
            s = cs.strategies[k]
            ax.imshow(overlay_rgb(None, s.mean_map, limits, signed=signed), interpolation="nearest")
            share = s.size / max(len(cs.images), 1)
            flagged = k > 0 and share <= result.minority
            ax.set_xlabel(f"{s.size} ({share:.0%}){' flagged' if flagged else ''}", fontsize=7,
                          color=FLAGGED_RED if flagged else "black")
            if flagged:
                for spine in ax.spines.values():
                    spine.set(visible=True, color=FLAGGED_RED, linewidth=2)
    more = len(result.classes) - len(shown)
    fig.suptitle(f"strategies per class: the mean {result.method} map of each, largest first"
                 + (f"\n({more} more classes in the HTML view)" if more > 0 else ""), fontsize=8)
    fig.tight_layout()
    return small(render.fig_png, fig)


def scan_html(result, png: bytes | None = None) -> str:
    """The summary, the picture of :func:`scan_png` (``png``, drawn here if not given), and folded below it each
    class's strategies with their typical images and the most flagged images."""
    label = partial(_label, result)
    parts = strategies.scan_sections(result, label, classes=set(_shown_classes(result)))
    body = render.subsections(parts, 4)
    return (f"<div><p><b>SpRAy scan</b>: {len(result.score)} images, {result.method} maps, "
            f"{int(result.flagged.sum())} flagged</p>{render.img_tag(png or scan_png(result), 'strategies per class')}"
            f"<details><summary>each class's strategies with their most typical images, and the most flagged "
            f"images</summary>{body}</details></div>")


def diff_png(result) -> bytes:
    """The images that moved most: image | model A's map | model B's map, with distance and predictions."""
    plt = render._plt()
    rows = [i for i in result.order[:4].tolist() if i in result.thumbnails]
    fig, axes = plt.subplots(max(len(rows), 1), 3, figsize=(5.2, 1.75 * max(len(rows), 1) + 0.3), squeeze=False)
    for r, i in enumerate(rows):
        image = result.thumbnails[i]
        limits, signed = shared_scale([result.maps_a[i], result.maps_b[i]])
        axes[r][0].imshow(image_array(image), interpolation="nearest")
        for k, m in enumerate((result.maps_a[i], result.maps_b[i])):
            axes[r][k + 1].imshow(overlay_rgb(image, m, limits, signed=signed), interpolation="nearest")
        pred = f"{_label(result, int(result.pred_a[i]))} → {_label(result, int(result.pred_b[i]))}"
        axes[r][0].set_title(f"image {i}: {pred}", fontsize=7)
        axes[r][1].set_title("model A", fontsize=7)
        axes[r][2].set_title(f"model B (distance {float(result.distance[i]):.2f}"
                             f"{', moved' if result.moved[i] else ''})", fontsize=7)
        for ax in axes[r]:
            _off(ax)
    fig.suptitle(f"{int(result.moved.sum())} of {len(result.distance)} images moved beyond the null "
                 f"({result.threshold:.3f})", fontsize=8)
    fig.tight_layout()
    return small(render.fig_png, fig)


def diff_html(result) -> str:
    label = partial(_label, result)
    parts = strategies.diff_sections(result, label)
    body = render.subsections(parts, 4)
    return f"<div><b>diff</b> of two models{body}</div>"


def tcav_png(r) -> bytes:
    """TCAV's scores per run beside those of the random CAVs (its null), the means marked, the test's verdict."""
    plt = render._plt()
    fig, ax = plt.subplots(figsize=(3.6, 2.6))
    gen = np.random.default_rng(0)  # horizontal jitter of the dots only
    for k, (values, colour) in enumerate(((r.scores, "C0"), (r.random_scores, "C7"))):
        v = values.detach().float().cpu().numpy()
        ax.scatter(k + gen.uniform(-0.12, 0.12, len(v)), v, s=12, color=colour, alpha=0.7)
        if len(v):
            ax.hlines(float(np.mean(v)), k - 0.25, k + 0.25, color=colour, lw=2)
    ax.set_xticks([0, 1], ["concept CAVs", "random CAVs"], fontsize=8)
    ax.set_xlim(-0.6, 1.6)
    ax.set_ylim(-0.03, 1.03)
    ax.set_ylabel("TCAV score", fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    verdict = "significant" if r.significant else "not significant"
    test = f"α {r.alpha:g}" + (f"/{r.bonferroni}" if r.bonferroni > 1 else "")
    ax.set_title(f"TCAV {r.score:.2f} at {r.layer}\np = {r.p_value:.2g}: {verdict} ({test})", fontsize=8)
    fig.tight_layout()
    return small(render.fig_png, fig)


def concepts_png(c, top: int = 5, crops: int = 6) -> bytes:
    """CRAFT's most important concepts: per row an importance bar, then the crops that hold most of it."""
    plt = render._plt()
    shown = c.concepts[:top]
    width = min(crops, max((len(k.crops) for k in shown), default=1))
    fig, axes = plt.subplots(max(len(shown), 1), width + 1, figsize=(1.2 * width + 2.2, 1.25 * max(len(shown), 1)
                                                                          + 0.35),
                             squeeze=False, gridspec_kw={"width_ratios": [1.8] + [1] * width})
    peak = max((k.importance for k in shown), default=1.0) or 1.0
    for r, k in enumerate(shown):
        bar = axes[r][0]
        bar.barh([0], [k.importance], color="C1")
        bar.set_xlim(0, peak * 1.05)
        bar.set_yticks([])
        bar.tick_params(labelsize=6)
        bar.set_title(f"concept {k.index}: {k.importance:.2f}", fontsize=7)
        for j in range(width):
            ax = axes[r][j + 1]
            _off(ax)
            if j < len(k.crops):
                ax.imshow(image_array(k.crops[j]), interpolation=render.interpolation(k.crops.shape[-1]))
    fig.suptitle(f"concepts of class {c.target} at {c.layer} (importance: total Sobol index; "
                 f"NMF error {c.error:.2f})", fontsize=8)
    fig.tight_layout()
    return small(render.fig_png, fig)


def reference_png(r) -> bytes:
    """A channel's reference images: the crops where it matters most, and its map on each image."""
    plt = render._plt()
    k = len(r.images)
    fig, axes = plt.subplots(2, max(k, 1), figsize=(1.3 * max(k, 1) + 0.3, 3.0), squeeze=False)
    for j in range(k):
        axes[0][j].imshow(image_array(r.crops[j]), interpolation=render.interpolation(r.crops.shape[-1]))
        axes[0][j].set_title(f"image {int(r.images[j])}\n{float(r.scores[j]):.3g}", fontsize=7)
        axes[1][j].imshow(heat_colours(r.maps[j]), interpolation=render.interpolation(r.maps.shape[-1]))
        for ax in (axes[0][j], axes[1][j]):
            _off(ax)
    axes[0][0].set_ylabel("crop", fontsize=7)
    axes[1][0].set_ylabel("relevance" if r.by == "relevance" else "activation", fontsize=7)
    fig.suptitle(f"channel {r.channel} of {r.layer}: reference images by {r.by}", fontsize=8)
    fig.tight_layout()
    return small(render.fig_png, fig)

