"""Text pictures: each character on a background coloured by its attribution, as a PNG grid or an
HTML table (matplotlib only inside the functions, through :mod:`pellucid.render`)."""

from __future__ import annotations

import html
from collections.abc import Sequence

import numpy as np
import torch

from ..drawing.render import _plt, fig_png


def char_colours(values: torch.Tensor) -> list[tuple[float, float, float, float]]:
    """RGBA per character: red supports the target, blue opposes it; scaled to the word's peak |value|."""
    plt = _plt()
    v = values.detach().float().cpu().numpy()
    peak = float(np.abs(v).max()) or 1.0
    cmap = plt.get_cmap("RdBu_r")
    return [tuple(float(c) for c in cmap(0.5 + 0.5 * x / peak)) for x in v]


def text_png(words: Sequence[str], maps: dict[str, Sequence[torch.Tensor]],
             row_titles: Sequence[str] | None = None) -> bytes:
    """A PNG grid: one row per word, one column per method, each character on its colour."""
    plt = _plt()
    from matplotlib.patches import Rectangle

    n, cols, width = len(words), max(1, len(maps)), max(len(w) for w in words)
    fig, axes = plt.subplots(n, cols, figsize=(cols * (0.36 * width + 0.5) + 1.2, 0.62 * n + 0.45),
                             squeeze=False)
    for j, (name, values) in enumerate(maps.items()):
        axes[0][j].set_title(name.replace("_", " "), fontsize=9)
        for i, word in enumerate(words):
            ax = axes[i][j]
            for k, (ch, rgba) in enumerate(zip(word, char_colours(values[i]))):
                ax.add_patch(Rectangle((k, 0), 0.94, 1, facecolor=rgba, edgecolor="#999", linewidth=0.4))
                dark = sum(rgba[:3]) < 1.3
                ax.text(k + 0.47, 0.5, ch, ha="center", va="center", fontsize=13, family="DejaVu Sans Mono",
                        color="white" if dark else "black")
            ax.set_xlim(-0.1, width + 0.1)
            ax.set_ylim(-0.1, 1.1)
            ax.set_aspect("equal")
            ax.set_xticks([])
            ax.set_yticks([])
            for side in ax.spines.values():
                side.set_visible(False)
    for i in range(n):
        axes[i][0].set_ylabel(row_titles[i] if row_titles else words[i], fontsize=8, rotation=0, ha="right",
                              va="center")
    fig.tight_layout()
    return fig_png(fig)


def text_html(words: Sequence[str], maps: dict[str, Sequence[torch.Tensor]],
              row_titles: Sequence[str] | None = None) -> str:
    """An HTML table: one row per word, one column per method, each character a coloured ``<span>``
    whose tooltip gives its value."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in ["word", *[m.replace("_", " ") for m in maps]])
    rows = []
    for i, word in enumerate(words):
        cells = [html.escape(row_titles[i] if row_titles else word)]
        for values in maps.values():
            spans = "".join(
                f'<span title="{float(v):+.4f}" style="background:rgba({r * 255:.0f},{g * 255:.0f},{b * 255:.0f},'
                f'{a:.2f});padding:.1em .15em;font-family:monospace;font-size:1.3em">{html.escape(ch)}</span>'
                for ch, v, (r, g, b, a) in zip(word, values[i].tolist(), char_colours(values[i])))
            cells.append(spans)
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return f'<table class="text-attr"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'
