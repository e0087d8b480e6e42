"""The data-set pages: a scan's strategies per class (``pellucid scan``, the report's "strategies" section,
the web page, Jupyter) and a diff's most moved images (``pellucid diff``). PNGs are drawn with PIL from the
overlay colours (no pyplot): small tiles, enlarged without blur for digits; the images are the thumbnails
the results keep. The maps side by side in one row share one colour scale."""

from __future__ import annotations

import html
import io

import numpy as np
import torch

from .overlay import as_uint8, enlarge, image_array, overlay_rgb, shared_scale
from .render import Section, html_report, img_tag, table

TILE = 84


def tile_png(arr: np.ndarray) -> bytes:
    """A float ``(H, W, 3)`` tile (or a strip of tiles) as a PNG."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(as_uint8(arr)).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def _tile(arr: np.ndarray) -> np.ndarray:
    """An ``(H, W, 3)`` array enlarged (nearest) to about :data:`TILE` pixels."""
    factor = max(1, TILE // max(arr.shape[:2]))
    return enlarge(arr, factor)


def _strip(tiles: list[np.ndarray], gap: int = 4) -> np.ndarray:
    h = max(t.shape[0] for t in tiles)
    padded = [np.pad(t, ((0, h - t.shape[0]), (0, gap), (0, 0)), constant_values=1.0) for t in tiles]
    return np.concatenate(padded, axis=1)


def _gray(image: torch.Tensor) -> np.ndarray:
    arr = image_array(image.detach().float().cpu())
    return np.repeat(arr.mean(2, keepdims=True), 3, axis=2) if arr.shape[2] == 1 else arr


def image_tile(image: torch.Tensor) -> np.ndarray:
    """One ``(C, H, W)`` image as an RGB tile (gray images in three channels)."""
    return _tile(_gray(image))


def map_tile(image: torch.Tensor, heat) -> np.ndarray:
    """A map over its image, on the map's own colour scale."""
    return _tile(overlay_rgb(image, heat))


def eigengap_svg(values: torch.Tensor, chosen: int, width: int = 220, height: int = 90) -> str:
    """The Laplacian's smallest eigenvalues as an inline SVG plot, the chosen number of strategies marked."""
    v = [float(a) for a in values]
    if len(v) < 2:
        return ""
    top = max(max(v), 1e-9)
    xs = [12 + i * (width - 24) / (len(v) - 1) for i in range(len(v))]
    ys = [height - 14 - (height - 28) * a / top for a in v]
    dots = "".join(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{4 if i == chosen - 1 else 2.5}" '
                   f'fill="{"#c0392b" if i == chosen - 1 else "#34495e"}"/>' for i, (x, y) in enumerate(zip(xs, ys)))
    line = " ".join(f"{x:.1f},{y:.1f}" for x, y in zip(xs, ys))
    return (f'<svg width="{width}" height="{height}" role="img" aria-label="eigenvalues">'
            f'<polyline points="{line}" fill="none" stroke="#7f8c8d"/>{dots}'
            f'<text x="12" y="{height - 2}" font-size="10">eigenvalue 1..{len(v)}; red: {chosen} strategies</text>'
            "</svg>")


def _row_tiles(images: list, maps: list) -> list[np.ndarray]:
    """Tiles of ``maps`` over ``images`` (``None``: the map alone) on one shared colour scale."""
    limits, signed = shared_scale(maps)
    return [_tile(overlay_rgb(img, m, limits, signed=signed)) for img, m in zip(images, maps)]


def _row(images: list, maps: list) -> np.ndarray:
    return _strip(_row_tiles(images, maps))


def strategy_tiles(result, c: int, k: int) -> list[np.ndarray]:
    """Strategy ``k`` of class ``c``: its mean map, then its most typical images with their maps, on one scale."""
    s = result.classes[c].strategies[k]
    typical = s.typical.tolist()
    images = [None, *(result.thumbnails[i] for i in typical)]
    return _row_tiles(images, [s.mean_map, *(result.maps[i] for i in typical)])


def strategy_rows(result, c: int) -> str:
    """Class ``c``'s strategies: per row the mean map, then the most typical images with their maps."""
    cs, rows = result.classes[c], []
    for k, s in enumerate(cs.strategies):
        strip = _strip(strategy_tiles(result, c, k))
        share = s.size / max(len(cs.images), 1)
        rows.append(f"<div class=\"strategy\"><p><b>strategy {k + 1}</b>: {s.size} images ({share:.0%})"
                    f"{' &mdash; flagged' if k and share <= result.minority else ''}</p>"
                    f"{img_tag(tile_png(strip), f'strategy {k + 1}')}</div>")
    return "".join(rows)


def flagged_part(result, label=str, flagged: int = 8) -> str:
    """The most flagged images with their maps, and a table of their scores ('' when none scores above 0)."""
    top = [i for i in result.most_flagged(flagged).tolist() if result.score[i] > 0 and i in result.thumbnails]
    if not top:
        return ""
    rows = [[i, label(int(result.targets[i])), f"{float(result.score[i]):.2f}", "yes" if result.flagged[i] else ""]
            for i in top]
    strip = _strip([map_tile(result.thumbnails[i], result.maps[i]) for i in top])
    return img_tag(tile_png(strip), "most flagged images") + table(["image", "class", "score", "flagged"], rows)


def scan_sections(result, label=str, classes=None, flagged: int = 8) -> list[Section]:
    """One section per class (strategies side by side: mean map, typical images, size; the eigengap plot)
    and one of the most flagged images."""
    sections = []
    for c, cs in result.classes.items():
        if classes is not None and c not in classes:
            continue
        intro = (f"{len(cs.images)} images, {cs.clusters} strateg{'y' if cs.clusters == 1 else 'ies'} (where the "
                 "eigenvalues jump). Each row: the strategy's mean map, then its most typical images with their maps.")
        sections.append(Section(f"class {label(c)}", intro,
                                strategy_rows(result, c) + eigengap_svg(cs.eigenvalues, cs.clusters)))
    most = flagged_part(result, label, flagged)
    if most:
        sections.append(Section("most flagged", "The images whose evidence lies farthest from their class's main "
                                "strategy, highest score first.", most))
    return sections


def diff_sections(result, label=str, top: int = 8) -> list[Section]:
    """The images whose evidence moved most: image, map of model A, map of model B, distance, predictions."""
    order = [i for i in result.order[:top].tolist() if i in result.thumbnails]
    rows, tiles = [], []
    for i in order:
        image = result.thumbnails[i]
        tiles.append(_strip([image_tile(image), _row([image, image], [result.maps_a[i], result.maps_b[i]])]))
        rows.append([i, label(int(result.targets[i])), f"{float(result.distance[i]):.3f}",
                     f"{label(int(result.pred_a[i]))} -> {label(int(result.pred_b[i]))}" if result.changed[i] else
                     label(int(result.pred_a[i])), "yes" if result.moved[i] else ""])
    grid = np.concatenate([np.pad(t, ((0, 4), (0, 0), (0, 0)), constant_values=1.0) for t in tiles], 0) if tiles \
        else np.ones((4, 4, 3))
    summary = table(["class", "images", "mean distance", "moved", "prediction changed"],
                    [[label(c), d.images, f"{d.mean_distance:.3f}", d.moved, d.changed]
                     for c, d in result.classes.items()])
    intro = (f"Distance: 1 - cosine of the two models' {result.method} maps. Moved: beyond the null "
             f"({result.threshold:.3f}: the bulk of the images, which do not move, and the method's own noise). "
             f"{int(result.moved.sum())} of {len(result.distance)} images moved; "
             f"{int(result.changed.sum())} changed prediction.")
    return [Section("what moved", intro, img_tag(tile_png(grid), "image | model A | model B")
                    + table(["image", "class", "distance", "prediction", "moved"], rows)),
            Section("per class", "", summary)]


def page(title: str, subtitle: str, sections: list[Section]) -> str:
    return html_report(html.unescape(title), subtitle, sections)
