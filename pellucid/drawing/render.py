"""Pictures and pages: heat maps, labelled grids as PNG, and the self-contained HTML report.

matplotlib is imported inside the functions only, and never through pyplot (:class:`_Figures`), so nothing
opens a window or changes the caller's backend.
"""

from __future__ import annotations

import base64
import contextlib
import contextvars
import html
import io as _io
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .overlay import heat_limits, image_array, is_signed, overlay_rgb


class _Figures:
    """pyplot's ``subplots`` and ``get_cmap`` without pyplot: figures that belong to no backend, so drawing a PNG
    never switches the caller's matplotlib backend (Jupyter's inline plots keep working), opens no window and
    leaves no figure to close."""

    @staticmethod
    def subplots(nrows: int = 1, ncols: int = 1, *, figsize=None, **kwargs):
        from matplotlib.figure import Figure

        fig = Figure(figsize=figsize)
        return fig, fig.subplots(nrows, ncols, **kwargs)

    @staticmethod
    def get_cmap(name: str):
        from matplotlib import colormaps

        return colormaps[name]


def _plt() -> type[_Figures]:
    return _Figures


def shared_limits(maps: dict[str, torch.Tensor], shared: bool) -> dict:
    """Per method, one colour scale over all its maps (``shared``) or ``None`` (each map its own)."""
    out = {}
    for name, m in maps.items():
        arr = m.detach().float().cpu().numpy()
        out[name] = heat_limits(arr, is_signed(arr)) if shared else None
    return out


def interpolation(side: int) -> str:
    """How ``imshow`` draws a picture ``side`` pixels across: each pixel a sharp square below 64 (a 28x28 digit
    stays legible), smoothed above."""
    return "nearest" if side < 64 else "antialiased"


def show_map(ax, image: torch.Tensor, heat: torch.Tensor, overlay: bool, limits=None):
    """Draw one attribution map with the one colour rule of :func:`pellucid.overlay.overlay_rgb`
    (signed maps in red/blue around 0, non-negative ones in 'inferno'), over the gray image or alone."""
    rgb = overlay_rgb(image if overlay else None, heat, limits)
    out = ax.imshow(rgb, interpolation=interpolation(max(rgb.shape[:2])))
    ax.set_xticks([])
    ax.set_yticks([])
    return out


_DPI = contextvars.ContextVar("pellucid_dpi", default=(110, None))


@contextlib.contextmanager
def resolution(dpi: int, max_width: int | None = None) -> Iterator[None]:
    """PNGs drawn inside it have ``dpi`` dots per inch, fewer where the figure would be wider than
    ``max_width`` px (the report draws at 110; Jupyter's reprs smaller)."""
    token = _DPI.set((dpi, max_width))
    try:
        yield
    finally:
        _DPI.reset(token)


def fig_png(fig) -> bytes:
    dpi, max_width = _DPI.get()
    if max_width is not None:
        dpi = min(dpi, max_width / fig.get_figwidth())
    buf = _io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return buf.getvalue()


def attribution_grid(images: torch.Tensor, maps: dict[str, torch.Tensor], row_titles: Sequence[str] | None = None,
                     shared_scale: bool = False, overlay: bool | None = None) -> bytes:
    """A PNG grid: one row per image, the image then one column per method.

    ``shared_scale`` puts every map of a method on one colour scale; otherwise each map is scaled to
    its own peak. ``overlay`` blends maps over the image (default: for RGB images).
    """
    plt = _plt()
    n, cols = len(images), 1 + len(maps)
    if overlay is None:
        overlay = images.shape[1] == 3
    if n > 4 and cols <= 3:
        return _attribution_columns(images, maps, row_titles, shared_scale, overlay)
    limits = shared_limits(maps, shared_scale)
    fig, axes = plt.subplots(n, cols, figsize=(1.9 * cols, 2.0 * n), squeeze=False)
    for i in range(n):
        ax = axes[i][0]
        ax.imshow(image_array(images[i]), interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        if row_titles is not None:
            ax.set_ylabel(row_titles[i], fontsize=8)
        for j, (name, m) in enumerate(maps.items(), start=1):
            show_map(axes[i][j], images[i], m[i], overlay, limits[name])
            if i == 0:
                axes[i][j].set_title(name, fontsize=9)
    axes[0][0].set_title("image", fontsize=9)
    fig.tight_layout()
    return fig_png(fig)


def _attribution_columns(images, maps, titles, shared_scale, overlay) -> bytes:
    """The grid transposed, for many images and few methods: one column per image."""
    plt = _plt()
    n, rows = len(images), 1 + len(maps)
    limits = shared_limits(maps, shared_scale)
    fig, axes = plt.subplots(rows, n, figsize=(1.45 * n, 1.7 * rows), squeeze=False)
    for i in range(n):
        axes[0][i].imshow(image_array(images[i]), interpolation="nearest")
        axes[0][i].set_xticks([])
        axes[0][i].set_yticks([])
        if titles is not None:
            axes[0][i].set_title(titles[i], fontsize=7)
        for j, (name, m) in enumerate(maps.items(), start=1):
            show_map(axes[j][i], images[i], m[i], overlay, limits[name])
            if i == 0:
                axes[j][0].set_ylabel(name, fontsize=9)
    axes[0][0].set_ylabel("image", fontsize=9)
    fig.tight_layout()
    return fig_png(fig)


def image_row_titles(model, probs: torch.Tensor, labels: torch.Tensor | None) -> list[str]:
    """'true 7 | pred 7 (99.1%)' per image, from softmax probabilities ``(N, K)``."""
    label = getattr(model, "label", lambda k: str(k))
    titles = []
    for i in range(len(probs)):
        p, k = probs[i].max(0)
        pred = f"pred {label(int(k))} ({100 * float(p):.1f}%)"
        truth = "" if labels is None or int(labels[i]) < 0 else f"true {label(int(labels[i]))}\n"
        titles.append(f"{truth}{pred}")
    return titles


def write_png(data: bytes, path) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)
    return p


def sanity_plot(checks: Sequence) -> bytes:
    """PNG: mean Spearman and SSIM per cascading-randomization stage, one line per method.

    ``checks`` are :class:`pellucid.metrics.SanityCheck` results over the same layers.
    """
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(9.5, 3.6), sharey=True)
    stages = checks[0].stages
    for check in checks:
        dashed = check.method == "random"
        for ax, values in zip(axes, (check.spearman, check.ssim)):
            ax.plot(range(len(stages)), values.mean(1).cpu().numpy(), marker="o", ms=3,
                    ls="--" if dashed else "-", color="gray" if dashed else None, label=check.method)
    for ax, title in zip(axes, ("Spearman rank correlation", "SSIM")):
        ax.set_title(title, fontsize=10)
        ax.set_xticks(range(len(stages)), stages, rotation=60, ha="right", fontsize=7)
        ax.axhline(0, color="black", lw=0.5)
        ax.set_xlabel("randomized down to layer", fontsize=8)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("similarity to the original map", fontsize=8)
    axes[1].legend(fontsize=7, loc="center right")
    fig.tight_layout()
    return fig_png(fig)


def curves_plot(deletion: dict, insertion: dict) -> bytes:
    """PNG: mean deletion and insertion curves (:class:`pellucid.metrics.Curve`) per method."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(9.5, 3.2), sharey=True)
    for ax, curves, title in zip(axes, (deletion, insertion), ("deletion (lower is better)",
                                                                "insertion (higher is better)")):
        for name, c in curves.items():
            dashed = name == "random"
            ax.plot(c.fractions.cpu().numpy(), c.scores.mean(0).cpu().numpy(), ls="--" if dashed else "-",
                    color="gray" if dashed else None, label=f"{name} (AUC {float(c.auc.mean()):.3f})")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("fraction of pixels " + ("removed" if curves is deletion else "inserted"), fontsize=8)
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("class probability (mean)", fontsize=8)
    fig.tight_layout()
    return fig_png(fig)


def trust_plot(rows: Sequence[dict], measures: Sequence[tuple[str, str]]) -> bytes | None:
    """PNG: one panel per trust measure (a :func:`pellucid.metrics.compare` column), a bar per method, the
    random baseline in gray, '–' where not computed. ``measures``: ``(column, "lower" or "higher")``, the
    better direction, shown in the panel's title. ``None`` when no measure has a value."""
    shown = [(c, b) for c, b in measures if any(r.get(c) is not None for r in rows)]
    if not shown:
        return None
    plt = _plt()
    fig, axes = plt.subplots(1, len(shown), figsize=(2.3 * len(shown) + 1.3, 0.3 * len(rows) + 1.3),
                             sharey=True, squeeze=False)
    ys = list(range(len(rows)))
    for ax, (col, better) in zip(axes[0], shown):
        for y, r in zip(ys, rows):
            if r.get(col) is None:
                ax.text(0, y, " –", va="center", fontsize=7, color="gray")
            else:
                ax.barh(y, r[col], color="gray" if r["method"] == "random" else "C0", height=0.7)
        ax.axvline(0, color="black", lw=0.5)
        ax.set_title(f"{col}\n({better} is better)", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(axis="x", alpha=0.3)
    axes[0][0].set_yticks(ys, [r["method"] for r in rows])
    axes[0][0].invert_yaxis()
    fig.tight_layout()
    return fig_png(fig)


# ---------------------------------------------------------------------------------------------
# HTML report

@dataclass
class Section:
    """One part of the report: a title, one or two sentences on how to read it, and HTML."""

    title: str
    intro: str
    body: str = ""
    anchor: str = field(default="")

    def __post_init__(self):
        if not self.anchor:
            self.anchor = "".join(c if c.isalnum() else "-" for c in self.title.lower()).strip("-")


def img_tag(png: bytes, alt: str, width: int | None = None) -> str:
    data = base64.b64encode(png).decode("ascii")
    w = f' style="max-width:{width}px"' if width else ""
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}"{w}>'


def number(v) -> str:
    """A table cell: '-' for None, 3 decimals for floats."""
    if v is None:
        return "-"
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def table(header: Sequence[str], rows: Sequence[Sequence], cls: str = "") -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.45}
h1{margin-bottom:.2em} nav a{margin-right:1em} section{margin:2.5em 0;border-top:1px solid #ddd;padding-top:1em}
p.intro{color:#444;max-width:75ch} img{max-width:100%;height:auto}
table{border-collapse:collapse;margin:1em 0;font-size:.92em}
th,td{border:1px solid #ccc;padding:.3em .6em;text-align:right}
th{background:#f4f4f4} td:first-child,th:first-child{text-align:left} .meta{color:#666;font-size:.9em}
"""


def subsections(sections: Sequence[Section], level: int = 3, intro_class: str = "") -> str:
    """Sections nested in another (a report section, a notebook cell): each its ``<h{level}>`` title, its
    intro paragraph (of ``intro_class``) and its body."""
    cls = f" class='{intro_class}'" if intro_class else ""
    return "".join(f"<h{level}>{html.escape(s.title)}</h{level}><p{cls}>{html.escape(s.intro)}</p>{s.body}"
                   for s in sections)


def html_report(title: str, subtitle: str, sections: Sequence[Section]) -> str:
    """One self-contained page: inline CSS, images as data URIs, no script and no network."""
    nav = "".join(f'<a href="#{s.anchor}">{html.escape(s.title)}</a>' for s in sections)
    parts = [
        f'<section id="{s.anchor}"><h2>{html.escape(s.title)}</h2><p class="intro">{html.escape(s.intro)}</p>'
        f"{s.body}</section>"
        for s in sections
    ]
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{CSS}</style></head>'
        f'<body><h1>{html.escape(title)}</h1><p class="meta">{html.escape(subtitle)}</p><nav>{nav}</nav>'
        + "".join(parts)
        + "</body></html>"
    )


# ---------------------------------------------------------------------------------------------
# feature visualizations

def _blank(ax) -> None:
    ax.set_xticks([])
    ax.set_yticks([])


def image_grid(images: torch.Tensor, titles: Sequence[str] | None = None, ncols: int | None = None,
               scale: float = 1.5) -> bytes:
    """A PNG of images ``(N, C, H, W)`` in [0, 1], in rows of ``ncols`` (default: up to 5), titled.

    Five to a row keeps the titles readable where the page shows the PNG at about 900 px (ten to a
    row shrank them to ~5 px in the report).
    """
    plt = _plt()
    n = len(images)
    ncols = ncols or min(n, 5)
    nrows = (n + ncols - 1) // ncols
    fig, axes = plt.subplots(nrows, ncols, figsize=(scale * ncols, (scale + 0.25) * nrows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        _blank(ax)
        if i >= n:
            ax.axis("off")
            continue
        ax.imshow(image_array(images[i]), interpolation=interpolation(images.shape[-1]))
        if titles is not None:
            ax.set_title(titles[i], fontsize=8)
    fig.tight_layout()
    return fig_png(fig)


def snapshot_strip(snapshots: dict[int, torch.Tensor], row_titles: Sequence[str] | None = None,
                   scale: float = 1.5) -> bytes:
    """The iteration strip: one row per image, one column per snapshot step ("step 1", "step 25", ...)."""
    plt = _plt()
    steps = sorted(snapshots)
    n = len(snapshots[steps[0]])
    fig, axes = plt.subplots(n, len(steps), figsize=(scale * len(steps), scale * n + 0.3), squeeze=False)
    for j, step in enumerate(steps):
        for i in range(n):
            ax = axes[i][j]
            _blank(ax)
            ax.imshow(image_array(snapshots[step][i]), interpolation="nearest")
            if i == 0:
                ax.set_title(f"step {step}", fontsize=9)
            if j == 0 and row_titles is not None:
                ax.set_ylabel(row_titles[i], fontsize=9)
    fig.tight_layout()
    return fig_png(fig)


def filter_grid(visualizations: torch.Tensor, maps: torch.Tensor, images: torch.Tensor,
                channels: Sequence[int], scale: float = 1.4) -> bytes:
    """One row per channel: its visualization, then its activation map on each image ``(K, N, h, w)``.

    Every map of a row shares one colour scale, so rows show where and how strongly the filter fires.
    """
    plt = _plt()
    k, n = len(channels), len(images)
    fig, axes = plt.subplots(k + 1, n + 1, figsize=(scale * (n + 1), scale * (k + 1)), squeeze=False)
    axes[0][0].axis("off")
    for j in range(n):
        _blank(axes[0][j + 1])
        axes[0][j + 1].imshow(image_array(images[j]), interpolation="nearest")
        axes[0][j + 1].set_title(f"image {j}", fontsize=8)
    for i, c in enumerate(channels):
        ax = axes[i + 1][0]
        _blank(ax)
        ax.imshow(image_array(visualizations[i]), interpolation="nearest")
        ax.set_ylabel(f"channel {c}", fontsize=8)
        if i == 0:
            ax.set_title("visualization", fontsize=8)
        peak = float(maps[i].max()) or 1.0
        for j in range(n):
            _blank(axes[i + 1][j + 1])
            axes[i + 1][j + 1].imshow(maps[i, j].detach().float().cpu().numpy(), cmap="inferno", vmin=0,
                                      vmax=peak, interpolation="nearest")
    fig.tight_layout()
    return fig_png(fig)


# ---------------------------------------------------------------------------------------------
# adversarial examples

def _prediction(label, probs: torch.Tensor) -> str:
    p, k = probs.max(0)
    return f"{label(int(k))} ({100 * float(p):.1f}%)"


def _show(ax, arr, **kw) -> None:
    ax.imshow(arr, interpolation="nearest", **kw)
    ax.set_xticks([])
    ax.set_yticks([])


def attack_rows(original: torch.Tensor, adversarial: torch.Tensor, probs_before: torch.Tensor,
                probs_after: torch.Tensor, label=str, notes: Sequence[str] | None = None,
                magnify: float = 10.0) -> bytes:
    """A PNG with one row per image: original | adversarial | difference x ``magnify``.

    Each panel is titled with the predicted class and softmax confidence (``probs_*`` are ``(N, K)``);
    the difference with the L2 and L-infinity size of the perturbation. ``notes`` adds a line per row
    (e.g. the target and steps of a fooling image). :func:`attack_figure` draws it.
    """
    return attack_figure(original, adversarial, [f"original: {_prediction(label, p)}" for p in probs_before],
                         [f"adversarial: {_prediction(label, p)}" for p in probs_after], notes, magnify)


def attack_figure(original: torch.Tensor, adversarial: torch.Tensor, before: Sequence[str], after: Sequence[str],
                  notes: Sequence[str] | None = None, magnify: float = 10.0) -> bytes:
    """One row per image: original | adversarial | difference x ``magnify``, the first two titled ``before``
    and ``after``, the difference with the L2 and L-infinity size of the perturbation. Gray images show the
    difference in red (brighter) and blue (darker); RGB images as ``0.5 + magnify * diff``."""
    plt = _plt()
    n = len(original)
    fig, axes = plt.subplots(n, 3, figsize=(6.6, 2.35 * n), squeeze=False)
    for i in range(n):
        diff = (adversarial[i] - original[i]).detach().float().cpu()
        l2, linf = float(diff.norm()), float(diff.abs().max())
        _show(axes[i][0], image_array(original[i]))
        axes[i][0].set_title(before[i], fontsize=8)
        _show(axes[i][1], image_array(adversarial[i]))
        axes[i][1].set_title(after[i], fontsize=8)
        if diff.shape[0] == 1:
            _show(axes[i][2], (magnify * diff[0]).numpy(), cmap="RdBu_r", vmin=-1, vmax=1)
        else:
            _show(axes[i][2], image_array(0.5 + magnify * diff))
        axes[i][2].set_title(f"difference x{magnify:g}\nL2 {l2:.3f} · L∞ {linf:.3f}", fontsize=8)
        if notes is not None:
            axes[i][0].set_ylabel(notes[i], fontsize=8)
    fig.tight_layout()
    return fig_png(fig)


def robustness_plot(curves, title: str = "accuracy under attack") -> bytes:
    """A line plot of accuracy against eps for one or more :class:`pellucid.adversarial.RobustnessCurve`."""
    plt = _plt()
    curves = curves if isinstance(curves, Sequence) else [curves]
    fig, ax = plt.subplots(figsize=(5.2, 3.4))
    for c in curves:
        eps, acc = c.eps.cpu().numpy(), 100 * c.accuracy.cpu().numpy()
        ax.plot(eps, acc, marker="o", label=f"{c.attack} ({c.norm})")
    ax.set_xlabel("eps (pixel scale [0, 1])")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(-3, 103)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig_png(fig)
