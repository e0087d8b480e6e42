"""What Jupyter shows: a small PNG (and an HTML table where one reads better) for every result, and the
:class:`Figure` that :func:`pellucid.show` returns.

The result classes call these functions from their ``_repr_png_`` / ``_repr_html_``, importing this module
inside the method, so ``import pellucid`` loads no matplotlib. Maps are drawn with the report's one colour
rule (:mod:`.overlay`: signed maps red/blue around 0, unsigned ones in 'inferno' from 0) and the figures are
the report's (:mod:`.render`), drawn at :data:`DPI` and at most :data:`MAX_WIDTH` px wide.
"""

from __future__ import annotations

import html
import struct
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from .._checks import PellucidError
from . import render
from .overlay import heat_colours, heat_limits, image_array

DPI, MAX_WIDTH = 80, 820  # a few hundred px: a notebook column, not the report's 110 dpi
ROWS = 4  # images of a batch result that its picture shows


class Figure:
    """A picture Jupyter displays: ``png`` bytes (``_repr_png_``), and ``html`` where a table or a page reads
    better (``_repr_html_``). ``save(path)`` writes ``.png`` or ``.html``."""

    def __init__(self, png: bytes | None, html: str | None = None):
        self.png, self.html = png, html

    def _repr_png_(self) -> bytes | None:
        return self.png

    def _repr_html_(self) -> str | None:
        return self.html

    @property
    def size(self) -> tuple[int, int] | None:
        """``(width, height)`` of the PNG in pixels (``None`` for a page)."""
        return None if self.png is None else struct.unpack(">II", self.png[16:24])

    def save(self, path) -> Path:
        """Write the picture: ``.png`` the PNG, ``.html`` a page (the HTML, or the PNG inline)."""
        p = Path(path)
        suffix = p.suffix.lower()
        if suffix == ".png" and self.png is not None:
            return render.write_png(self.png, p)
        if suffix in (".html", ".htm"):
            body = self.html if self.html is not None else render.img_tag(self.png, p.stem)
            p.parent.mkdir(parents=True, exist_ok=True)
            page = body if body.lstrip().lower().startswith(("<!doctype", "<html")) else (
                f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(p.stem)}</title>'
                f"<style>{render.CSS}</style></head><body>{body}</body></html>")
            p.write_text(page, encoding="utf-8")
            return p
        kinds = ".png or .html" if self.png is not None else ".html (this figure is a page)"
        raise PellucidError(f"cannot save a figure as {p.name!r}; give a path ending in {kinds}")

    def __repr__(self) -> str:
        size = self.size
        return f"<pellucid Figure {size[0]}x{size[1]} px>" if size else "<pellucid Figure (HTML page)>"


def bundle(png: bytes, html: str) -> dict[str, bytes | str]:
    """What ``_repr_mimebundle_`` returns: the picture drawn once, for both Jupyter formats."""
    return {"image/png": png, "text/html": html}


def small(draw: Callable[..., bytes], *args, **kwargs) -> bytes:
    """``draw(*args, **kwargs)`` (a :mod:`.render` figure) at the notebook's resolution."""
    with render.resolution(DPI, MAX_WIDTH):
        return draw(*args, **kwargs)


def _namer(names: Sequence[str] | None) -> Callable[[int], str]:
    return lambda k: names[int(k)] if names is not None else str(int(k))


def _pct(p) -> str:
    return f"{100 * float(p):.1f}%"


# ---------------------------------------------------------------------------------------------
# images and maps

def images(x: torch.Tensor, titles: Sequence[str] | None = None, ncols: int | None = None) -> bytes:
    """An image batch ``(N, C, H, W)`` in [0, 1] as a grid, titled."""
    return small(render.image_grid, x, titles, ncols)


def maps(x: torch.Tensor, named: dict[str, torch.Tensor], titles: Sequence[str] | None = None) -> bytes:
    """``(N, H, W)`` maps per method over their images ``x``: the report's attribution grid."""
    return small(render.attribution_grid, x, named, titles)


def heat(m: torch.Tensor, titles: Sequence[str] | None = None, ncols: int | None = None) -> bytes:
    """``(N, H, W)`` maps alone, each in the colour rule on its own scale."""
    rgb = torch.stack([torch.from_numpy(heat_colours(one)).permute(2, 0, 1).float() for one in m])
    return images(rgb, titles, ncols)


def attack(original: torch.Tensor, adversarial: torch.Tensor, before: Sequence[str], after: Sequence[str],
           notes: Sequence[str] | None = None) -> bytes:
    """Original | adversarial | difference rows (the report's), titled ``before`` and ``after``."""
    return small(render.attack_figure, original, adversarial, before, after, notes)


# ---------------------------------------------------------------------------------------------
# results of the attacks

def fooling(r) -> bytes:
    """A :class:`pellucid.adversarial.FoolingResult`: the first :data:`ROWS` images, fooled or not."""
    name, n = _namer(r.names), min(len(r.image), ROWS)
    after = [f"fooled: {name(t)} ({_pct(p)})" if s else f"not fooled: {name(o)} ({_pct(q)})"
             for t, p, s, o, q in zip(r.target[:n], r.prob_target, r.success, r.original, r.prob_original)]
    notes = [f"target {name(t)}, {int(k)} steps" for t, k in zip(r.target[:n], r.steps)]
    if r.x is None:
        return images(r.image[:n], after)
    return attack(r.x[:n], r.image[:n], [f"original: {name(o)}" for o in r.original[:n]], after, notes)


def _shown_rows(broken_by: Sequence) -> list[int]:
    """Up to :data:`ROWS` images: those an attack broke first, then the others in order."""
    attacked = [i for i, b in enumerate(broken_by) if b not in (None, "clean")]
    return (attacked + [i for i in range(len(broken_by)) if i not in attacked])[:ROWS]


def autoattack(r) -> bytes:
    """An :class:`pellucid.AutoAttackResult`: images an attack broke first, with the prediction before and
    after and the attack that broke each."""
    name, rows = _namer(r.names), _shown_rows(r.broken_by)

    def said(probs, i: int) -> str:
        return "" if probs is None else f": {name(probs[i].argmax())} ({_pct(probs[i].max())})"

    after = [f"{r.broken_by[i] or 'withstood every attack'}{said(r.probs, i)}" for i in rows]
    if r.x is None:
        return images(r.adversarial[rows], after)
    notes = None if r.label is None else [f"label {name(r.label[i])}" for i in rows]
    return attack(r.x[rows], r.adversarial[rows], [f"clean{said(r.clean_probs, i)}" for i in rows], after, notes)


def autoattack_html(r, png: bytes | None = None) -> str:
    """The accuracies and what broke how many images, then the picture of :func:`autoattack` (``png``, drawn
    here if not given)."""
    eps = r.eps.unique()
    eps_text = f"{float(eps[0]):.4g}" if len(eps) == 1 else f"{float(eps.min()):.4g} to {float(eps.max()):.4g}"
    rows = [["robust accuracy", _pct(r.robust_accuracy)], ["clean accuracy", _pct(r.clean_accuracy)],
            ["eps", f"{eps_text} ({r.norm})"], ["images", str(len(r.broken_by))]]
    rows += [[f"broken by {k}", str(v)] for k, v in r.counts().items()]
    return (f"<div><b>AutoAttack</b> ({', '.join(map(html.escape, r.attacks))})"
            + render.table(["", "value"], rows) + render.img_tag(png or autoattack(r), "adversarial images", 640)
            + "</div>")


# ---------------------------------------------------------------------------------------------
# results of the trust measures

def _axes(width: float, height: float, ncols: int = 1):
    plt = render._plt()
    fig, axes = plt.subplots(1, ncols, figsize=(width, height), squeeze=False)
    return fig, axes[0]


def curve(c) -> bytes:
    """A :class:`pellucid.metrics.Curve`: each image's curve thin, their mean bold, the mean AUC."""
    fig, (ax,) = _axes(4.4, 2.9)
    fr, scores = c.fractions.cpu().numpy(), c.scores.detach().float().cpu().numpy()
    for row in scores[:32]:
        ax.plot(fr, row, color="C0", alpha=0.25, lw=0.8)
    ax.plot(fr, scores.mean(0), color="C0", lw=2, label=f"mean of {len(scores)} (AUC {float(c.auc.mean()):.3f})")
    better = {"deletion": " (lower AUC is better)", "insertion": " (higher AUC is better)",
              "ROAD": " (lower AUC is better)"}.get(c.kind, "")
    ax.set_title(f"{c.kind or 'curve'}{better}", fontsize=9)
    return _finish(fig, ax, "fraction of pixels " + ("inserted" if c.kind == "insertion" else "removed"), "score")


def _finish(fig, ax, xlabel: str, ylabel: str) -> bytes:
    """A curve plot's labels, legend and grid, at notebook size."""
    ax.set_xlabel(xlabel, fontsize=8)
    ax.set_ylabel(ylabel, fontsize=8)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return small(render.fig_png, fig)


def relevance_gain(g) -> bytes:
    """A :class:`pellucid.metrics.RelevanceGain`: the two mean removal curves, the gain the area between."""
    fig, (ax,) = _axes(4.4, 2.9)
    fr = g.most.fractions.cpu().numpy()
    most, least = (c.scores.detach().float().mean(0).cpu().numpy() for c in (g.most, g.least))
    ax.plot(fr, least, color="C2", label="least relevant removed first")
    ax.plot(fr, most, color="C3", label="most relevant removed first")
    ax.fill_between(fr, most, least, color="C0", alpha=0.15)
    ax.set_title(f"Symmetric Relevance Gain {float(g.gain.mean()):.3f} (mean of {len(g.gain)}; higher is better)",
                 fontsize=9)
    return _finish(fig, ax, "fraction of pixels removed", "score (mean)")


def comparison(c) -> bytes:
    """A :class:`pellucid.metrics.Comparison`: the report's deletion and insertion curves per method."""
    return small(render.curves_plot, c.deletion, c.insertion)


def comparison_html(c, better: dict[str, str], png: bytes | None = None) -> str:
    """The table of :func:`pellucid.compare` (arrows: the better direction), then its curves (``png``, drawn
    here if not given)."""
    columns = c.columns()
    arrow = {"lower": " ↓", "higher": " ↑"}
    header = [col + arrow.get(better.get(col, ""), "") for col in columns]
    rows = [[r[col] if isinstance(r[col], str) else render.number(r[col]) for col in columns] for r in c.rows]
    return ("<div>" + render.table(header, rows) + "<p>↓ lower is better, ↑ higher is better; the random map is "
            "the baseline every method must beat.</p>" + render.img_tag(png or comparison(c), "curves", 700) + "</div>")


def sanity(s) -> bytes:
    """A :class:`pellucid.metrics.SanityCheck`: similarity per randomized layer (the report's plot)."""
    return small(render.sanity_plot, [s])


def robustness(c) -> bytes:
    """A :class:`pellucid.adversarial.RobustnessCurve`: accuracy against eps (the report's plot)."""
    return small(render.robustness_plot, c)


def explanation_attack(r) -> bytes:
    """A :class:`pellucid.metrics.ExplanationAttack`: per image the map before and after the attack, on one
    colour scale, with how much of it survived (rank correlation, top-k overlap; noise of the same size)."""
    plt = render._plt()
    n = min(len(r.image), ROWS)
    cols = 3 if r.x is None else 4
    fig, axes = plt.subplots(n, cols, figsize=(1.75 * cols, 1.9 * n + 0.2), squeeze=False)
    for i in range(n):
        limits = heat_limits(torch.stack([r.original[i], r.map[i]]).float().cpu().numpy(), False)
        before = r.image[i] if r.x is None else r.x[i]
        moved = (f"after: ρ {float(r.similarity.spearman[i]):.2f}, top-k {float(r.similarity.topk[i]):.2f}\n"
                 f"(noise: ρ {float(r.noise.spearman[i]):.2f})")
        panels = [(before, "image", None)] if r.x is not None else []
        panels += [(before, f"{r.method} map", r.original[i]), (r.image[i], f"attacked (eps {r.eps:g})", None),
                   (r.image[i], moved, r.map[i])]
        for ax, (img, title, m) in zip(axes[i], panels):
            if m is None:
                ax.imshow(image_array(img), interpolation="nearest")
                ax.set_xticks([])
                ax.set_yticks([])
            else:
                render.show_map(ax, img, m, True, limits)
            if i == 0 or title is moved:
                ax.set_title(title, fontsize=8)
        if not bool(r.kept[i]):
            axes[i][0].set_ylabel("class changed", fontsize=8)
    fig.tight_layout()
    return small(render.fig_png, fig)


# ---------------------------------------------------------------------------------------------
# what the model learned; LRP

def visualization(v) -> bytes:
    """A :class:`pellucid.Visualization`: its snapshots per step (or the images), with the last tracked
    probability or activation."""
    n = min(len(v.image), ROWS if len(v.snapshots) > 1 else 10)
    labels = list(getattr(v, "labels", None) or [])[:n]
    values = [""] * n
    if "probability" in v.history:
        values = [f"p {float(p):.2f}" for p in v.history["probability"][-1, :n]]
    elif "activation" in v.history:
        values = [f"activation {float(a):.3g}" for a in v.history["activation"][-1, :n]]
    titles = ["\n".join(filter(None, parts)) for parts in zip(labels or [""] * n, values)]
    titles = titles if any(titles) else None
    if len(v.snapshots) > 1:
        return small(render.snapshot_strip, {k: s[:n] for k, s in v.snapshots.items()}, titles)
    return images(v.image[:n], titles)


def lrp(r) -> bytes:
    """An :class:`pellucid.LRPResult`: the input relevance (summed over channels) of the first images, and
    with ``layers=`` the relevance entering each named layer beside the score (conservation)."""
    plt = render._plt()
    n = min(len(r.input), 6)
    rel = r.input[:n].detach().float().sum(1).cpu()
    extra = 1 if r.layers else 0
    fig, axes = plt.subplots(1, n + extra, figsize=(1.6 * n + 2.8 * extra, 2.0), squeeze=False,
                             gridspec_kw={"width_ratios": [1] * n + [1.8] * extra})
    for i in range(n):
        ax = axes[0][i]
        ax.imshow(heat_colours(rel[i]), interpolation=render.interpolation(rel.shape[-1]))
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(f"score {float(r.score[i]):.3g}\nsum {float(rel[i].sum()):.3g}", fontsize=7)
    if extra:
        ax = axes[0][-1]
        names = list(r.layers)
        ax.plot(range(len(names)), [float(r.layers[k][:n].sum()) / n for k in names], marker="o", ms=3,
                label="entering")
        ax.axhline(float(r.score[:n].mean()), color="gray", ls="--", lw=0.8, label="score")
        ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=6)
        ax.tick_params(labelsize=6)
        ax.set_title("relevance per layer (mean)", fontsize=7)
        ax.legend(fontsize=6)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return small(render.fig_png, fig)
