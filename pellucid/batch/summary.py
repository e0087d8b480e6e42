"""The batch summary section of the HTML report: accuracy, the most and least fragile images,
faithfulness per method, and the mean map per predicted class (streamed from the map files)."""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ..adversarial import MINIMAL_ATTACKS
from ..drawing import render
from .store import atomic_write, map_path, overlay_path, read_job, read_results


def write_report(out) -> Path:
    """Write ``out/report.html``: the batch summary section, from the table and the map files."""
    out = Path(out)
    meta = read_job(out)
    rows = read_results(out)
    subtitle = f"{len(rows)} images · model {meta['config']['model']} · input {meta['config']['input']}"
    page = render.html_report("pellucid batch report", subtitle, [summary_section(out, rows, meta)])
    path = out / "report.html"
    atomic_write(path, lambda f: f.write(page.encode("utf-8")))
    return path


def summary_section(out: Path, rows: list[dict], meta: dict):
    """Accuracy, the most and least fragile images, faithfulness per method, mean maps per class."""
    done = [r for r in rows if r["status"] == "done"]
    failed = [r for r in rows if r["status"] == "failed"]
    methods = meta["config"]["methods"]
    labelled = [r for r in done if r["correct"] is not None]
    facts = [f"{len(done)} images explained", f"{len(failed)} failed"]
    if labelled:
        facts.append(f"accuracy {100 * sum(r['correct'] for r in labelled) / len(labelled):.2f}% "
                     f"({sum(r['correct'] for r in labelled)}/{len(labelled)} labelled images)")
    if done:
        facts.append(f"{sum(r['seconds'] for r in done) / len(done) * 1000:.1f} ms per image")
    body = f"<p>{' · '.join(facts)}</p>"
    body += _fragility_html(out, done) + _faithfulness_html(done, methods)
    body += _class_means_html(out, done, "saliency" if "saliency" in methods else methods[0])
    if failed:
        body += "<h3>Failed images</h3>" + render.table(["image", "reason"],
                                                        [[r["key"], r["reason"]] for r in failed[:100]])
    return render.Section("Batch summary",
                          "Every image of the data set explained by the batch job: accuracy, the images easiest "
                          "and hardest to fool, how faithful each method is, and the mean map per class.", body)


def _fragility_html(out: Path, done: list[dict], k: int = 5) -> str:
    with_eps = [r for r in done if r["min_eps"] is not None]
    if with_eps:
        ranked, what = sorted(with_eps, key=lambda r: r["min_eps"]), "minimal epsilon that flips the prediction"
    else:
        ranked, what = sorted(done, key=lambda r: r["confidence"]), ("confidence (minimal epsilon not computed: "
                                                                     f"run with --attack {'|'.join(MINIMAL_ATTACKS)})")
    text = f"<h3>Most and least fragile images</h3><p class='meta'>ranked by {html.escape(what)}</p>"
    for title, part in (("most fragile", ranked[:k]), ("least fragile", ranked[::-1][:k])):
        cells = []
        for r in part:
            value = f"eps {r['min_eps']:.4f}" if with_eps else f"conf {100 * r['confidence']:.1f}%"
            png = overlay_path(out, r["key"]).read_bytes()
            cells.append(f"<figure style='display:inline-block;margin:4px'>{render.img_tag(png, r['key'], 240)}"
                         f"<figcaption class='meta'>{html.escape(r['key'])}: pred {r['prediction']}, "
                         f"{value}</figcaption></figure>")
        text += f"<h4>{title}</h4>" + "".join(cells)
    return text


def _faithfulness_html(done: list[dict], methods: Sequence[str]) -> str:
    table = []
    for m in methods:
        dels = [r[f"{m}_deletion"] for r in done if r.get(f"{m}_deletion") is not None]
        ins = [r[f"{m}_insertion"] for r in done if r.get(f"{m}_insertion") is not None]
        mean = lambda v: f"{float(np.mean(v)):.4f}" if v else "not computed"  # noqa: E731
        table.append([m, len(done), mean(dels), mean(ins)])
    return ("<h3>Faithfulness per method</h3><p class='meta'>deletion AUC: lower is better; "
            "insertion AUC: higher is better</p>"
            + render.table(["method", "images", "mean deletion AUC", "mean insertion AUC"], table))


def _class_means_html(out: Path, done: list[dict], method: str) -> str:
    """Mean map per predicted class, streamed from the map files (one map in memory at a time)."""
    sums: dict[int, np.ndarray] = {}
    counts: dict[int, int] = {}
    for r in done:
        m = np.load(map_path(out, method, r["key"]))
        k = r["prediction"]
        sums[k] = sums.get(k, 0) + m
        counts[k] = counts.get(k, 0) + 1
    if not sums:
        return ""
    plt = render._plt()
    classes = sorted(sums)
    fig, axes = plt.subplots(1, len(classes), figsize=(1.3 * len(classes), 1.6), squeeze=False)
    for ax, k in zip(axes[0], classes):
        mean = torch.from_numpy(sums[k] / counts[k])
        render.show_map(ax, mean[None], mean, overlay=False)
        ax.set_title(f"class {k}\n(n={counts[k]})", fontsize=7)
    png = render.fig_png(fig)
    return f"<h3>Mean {method} per predicted class</h3>" + render.img_tag(png, f"mean {method} per class")
