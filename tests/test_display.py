"""Rich display in Jupyter: every result's ``_repr_png_`` / ``_repr_html_`` and ``pl.show``.

The pictures are checked as a viewer gets them: the PNG decodes (PIL) to a notebook-sized image, the
HTML parses with balanced tags and carries the numbers of the result, and the maps wear the report's colours
(:mod:`pellucid.drawing.overlay`), pixel for pixel.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from html.parser import HTMLParser

import numpy as np
import pytest
import torch
from PIL import Image

import pellucid as pl
from pellucid.drawing import display, overlay

VOID = {"img", "br", "meta", "input", "hr", "link", "col", "source", "wbr"}


def decode(png: bytes) -> np.ndarray:
    image = Image.open(io.BytesIO(png))
    image.load()
    assert image.format == "PNG"
    return np.asarray(image.convert("RGB"))


def check_png(png: bytes) -> np.ndarray:
    """A notebook-sized, non-blank picture whose header :class:`Figure` reads as PIL does."""
    arr = decode(png)
    h, w = arr.shape[:2]
    assert display.Figure(png).size == (w, h)
    assert 150 <= w <= display.MAX_WIDTH and 80 <= h <= 1200, (w, h)
    assert len(np.unique(arr.reshape(-1, 3), axis=0)) > 20  # drawn, not a flat canvas
    return arr


class Tags(HTMLParser):
    def __init__(self):
        super().__init__()
        self.stack, self.seen, self.text = [], [], []

    def handle_starttag(self, tag, attrs):
        self.seen.append(tag)
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes {self.stack[-1:]}"
        self.stack.pop()

    def handle_data(self, data):
        self.text.append(data)


def parse(markup: str) -> Tags:
    tags = Tags()
    tags.feed(markup)
    tags.close()
    assert not tags.stack, f"unclosed tags: {tags.stack}"
    return tags


def has_colour(arr: np.ndarray, rgb, tol: int = 1) -> bool:
    return bool((np.abs(arr.astype(int) - np.asarray(rgb, dtype=int)).max(-1) <= tol).any())


@pytest.fixture(scope="module")
def batch(digits_batch):
    x, y = digits_batch
    return x[:3], y[:3]


@pytest.fixture(scope="module")
def results(digits_model, batch):
    """One of each result type, with cheap settings."""
    model, (x, y) = digits_model, batch
    sal = pl.saliency(model, x, y)
    return {
        "fooling": pl.fooling_image(model, x, 3, max_steps=20, progress=False),
        "autoattack": pl.autoattack(model, x, y, 0.2, steps=3, targets=2, queries=20, progress=False),
        "deletion": pl.deletion(model, x, y, sal, steps=6),
        "insertion": pl.insertion(model, x, y, sal, steps=6),
        "road": pl.road(model, x, y, sal, fractions=(0.0, 0.5, 1.0)),
        "srg": pl.srg(model, x, y, sal, steps=6),
        "explanation_attack": pl.explanation_attack(model, x, None, "saliency", steps=2, checks=1),
        "compare": pl.compare(model, x, y, ["saliency", "gradcam"], steps=6, sanity=False, trust=False),
        "sanity": pl.sanity_check(model, x, y, "saliency"),
        "robustness": pl.robustness_curve(model, x, y, [0.0, 0.1, 0.3], steps=2, progress=False),
        "visualization": pl.class_visualization(model, [0, 1], steps=4, progress=False),
        "lrp": pl.lrp(model, x, y, layers=["conv1", "conv3", "fc"]),
    }


@pytest.fixture(scope="module")
def learned(digits_model):
    """The results about a data set and about concepts, on 60 held-out digits, with cheap settings."""
    import copy

    model = digits_model
    from pellucid.models.data import digits

    x, y = (t[:60] for t in digits("test"))
    other = copy.deepcopy(model)
    with torch.no_grad():
        fc = other.net.fc.weight
        fc.add_(0.3 * torch.randn(fc.shape, generator=torch.Generator().manual_seed(0)))
    fours = x[y == 4]
    return {
        "scan": pl.scan(model, x, y, method="saliency", clusters=2),
        "diff": pl.diff(model, other, x, y, method="saliency"),
        "tcav": pl.tcav(model, fours, 4, "conv2", x[y == 7], runs=3),
        "concepts": pl.concepts(model, fours, 4, n=3, designs=8, top=4),
        "reference_images": pl.reference_images(model, "conv3", 0, x[:20], k=4),
    }


RESULTS = ["fooling", "autoattack", "deletion", "insertion", "road", "srg", "explanation_attack", "compare",
           "sanity", "robustness", "visualization", "lrp"]
LEARNED = ["scan", "diff", "tcav", "concepts", "reference_images"]


@pytest.mark.parametrize("name", RESULTS + LEARNED)
def test_every_result_draws_itself_small(request, name):
    r = request.getfixturevalue("learned" if name in LEARNED else "results")[name]
    shown = pl.show(r)  # Figure(r._repr_png_(), r._repr_html_())
    check_png(shown._repr_png_())
    if hasattr(r, "_repr_html_"):
        parse(shown._repr_html_())
        # Jupyter asks once for both formats: the same picture, drawn once
        data = r._repr_mimebundle_()
        assert data["image/png"] == r._repr_png_() == shown.png and data["text/html"] == r._repr_html_() == shown.html
    else:
        assert shown._repr_html_() is None


def test_a_scan_draws_its_strategies_from_its_own_thumbnails(learned):
    """No data set needed: the scan keeps small copies of the images it shows; a flagged strategy is red."""
    from pellucid.drawing import display_learned

    r = learned["scan"]
    shown = {i for cs in r.classes.values() for s in cs.strategies for i in s.typical.tolist()}
    assert shown <= set(r.thumbnails) and len(r.thumbnails) < len(r.score)
    text = " ".join(parse(r._repr_html_()).text)
    shown_classes = display_learned._shown_classes(r)
    assert len(shown_classes) == min(len(r.classes), display_learned.CLASSES_SHOWN)
    for c in shown_classes:
        cs = r.classes[c]
        assert f"class {c}" in text
        for s in cs.strategies:
            assert f"{s.size} images ({s.size / len(cs.images):.0%})" in text
    red = tuple(int(display_learned.FLAGGED_RED[k:k + 2], 16) for k in (1, 3, 5))
    assert has_colour(decode(r._repr_png_()), red, tol=2) == bool(r.flagged.any())
    d = learned["diff"]
    text = " ".join(parse(d._repr_html_()).text)
    assert f"{int(d.moved.sum())} of {len(d.distance)} images moved" in text
    assert set(d.order[:8].tolist()) == set(d.thumbnails)


def test_show_of_a_result_is_its_own_picture(results):
    r = results["deletion"]
    assert pl.show(r).png == r._repr_png_()
    assert pl.show(pl.show(r)).png == r._repr_png_()


def test_the_results_know_what_they_were_run_on(results, batch):
    x, _ = batch
    for name in ("fooling", "autoattack", "explanation_attack"):
        assert torch.equal(results[name].x, x), name
    r = results["autoattack"]
    assert r.clean_probs.shape == r.probs.shape == (len(x), 10)
    assert torch.allclose(r.probs.sum(1), torch.ones(len(x)))
    assert r.names == [str(i) for i in range(10)] and results["fooling"].names == r.names
    # a broken image is misclassified in the stored probabilities; a standing one is not
    for i, b in enumerate(r.broken_by):
        assert (int(r.probs[i].argmax()) != int(r.label[i])) == (b is not None)
    kinds = {results[k].kind for k in ("deletion", "insertion", "road")}
    assert kinds == {"deletion", "insertion", "ROAD"}
    assert (results["srg"].most.kind, results["srg"].least.kind) == ("most relevant first", "least relevant first")


def test_the_comparison_table_parses_and_carries_its_numbers(results):
    c = results["compare"]
    tags = parse(c._repr_html_())
    text = " ".join(tags.text)
    assert tags.seen.count("tr") == 1 + len(c.rows) and "img" in tags.seen
    for row in c.rows:
        assert row["method"] in text
        assert f"{row['deletion AUC']:.3f}" in text and f"{row['insertion AUC']:.3f}" in text
    assert "deletion AUC ↓" in text and "insertion AUC ↑" in text


def test_the_autoattack_summary_parses_and_carries_its_numbers(results):
    r = results["autoattack"]
    tags = parse(r._repr_html_())
    text = " ".join(tags.text)
    assert f"{100 * r.robust_accuracy:.1f}%" in text and f"{100 * r.clean_accuracy:.1f}%" in text
    for attack, count in r.counts().items():
        assert f"broken by {attack} {count}" in text
    assert "img" in tags.seen


def _uint8(rgb) -> np.ndarray:
    return overlay.as_uint8(np.asarray(rgb))


def test_maps_wear_the_reports_colour_rule():
    """Halves of -1 and +1 are the two ends of the diverging map; 0 and 1 the ends of 'inferno'."""
    signed = torch.ones(1, 24, 24)
    signed[:, :, :12] = -1
    arr = decode(pl.show(signed)._repr_png_())
    for end in overlay.heat_colours(torch.tensor([[-1.0, 1.0]]))[0]:
        assert has_colour(arr, _uint8(end))
    unsigned = (signed + 1) / 2
    arr = decode(pl.show(unsigned)._repr_png_())
    ends = overlay.heat_colours(torch.tensor([[0.0, 1.0]]))[0]
    assert all(has_colour(arr, _uint8(end)) for end in ends)
    blue = overlay.heat_colours(torch.tensor([[-1.0, 1.0]]))[0, 0]
    assert not has_colour(arr, _uint8(blue), tol=20)  # an unsigned map is never drawn diverging


def test_maps_over_photos_are_the_reports_overlay():
    """An RGB image under a map: each pixel is the report's blend of gray and colour, exactly."""
    x = torch.zeros(1, 3, 24, 24)
    x[:, 0] = 0.6  # a red image: gray 0.2
    m = torch.ones(1, 24, 24)
    m[:, :, :12] = -1
    arr = decode(pl.show(m, x)._repr_png_())
    expected = overlay.overlay_rgb(x[0], m[0])
    assert has_colour(arr, _uint8(expected[0, 0])) and has_colour(arr, _uint8(expected[0, -1]))
    # a gradient-shaped (N, C, H, W) map is summed over channels; a CAM-sized one is stretched over the image
    summed = decode(pl.show(m[:, None].repeat(1, 3, 1, 1) / 3, x).png).astype(int)
    assert np.abs(summed - decode(pl.show(m, x).png)).max() <= 1
    check_png(pl.show({"small": torch.rand(1, 6, 6), "full": m}, x)._repr_png_())


def test_show_draws_tensors_by_their_shape(digits_model, batch):
    x, y = batch
    grid = pl.show(x, model=digits_model)
    check_png(grid.png)
    assert grid.html is None
    adv = pl.fgsm(digits_model, x, y, 0.2)
    check_png(pl.show(adv, original=x, model=digits_model).png)
    check_png(pl.show(adv, original=x).png)
    check_png(pl.show(pl.explain(digits_model, x, y, ["saliency", "gradcam"]), x, model=digits_model).png)
    relevance = pl.lrp(digits_model, x, y)  # (N, C, H, W) with negative values: a map, not images
    assert decode(pl.show(relevance).png).shape == decode(pl.show(relevance.sum(1)).png).shape
    result = pl.lrp(digits_model, x, y, layers=["fc"])
    assert np.array_equal(decode(pl.show(result, x).png), decode(pl.show(result.input, x).png))


def test_show_draws_text_attributions():
    words = ["hyvää", "weather"]
    maps = {"occlusion": [torch.tensor([1.0, -1, 0, 2, 0.5]), torch.linspace(-1, 1, 7)]}
    fig = pl.show(maps, words)
    check_png(fig.png)
    tags = parse(fig.html)
    assert tags.seen.count("span") == sum(len(w) for w in words)
    assert "".join(tags.text).count("ä") == 4  # the word in its title cell, then one span per letter


def test_show_shows_a_report_page_and_figures_save(tmp_path, batch):
    page = tmp_path / "report" / "index.html"
    page.parent.mkdir()
    page.write_text("<!DOCTYPE html><html><body><h1>a report &amp; more</h1></body></html>", encoding="utf-8")
    for target in (page, page.parent, str(page)):
        fig = pl.show(target)
        assert fig.png is None and fig.size is None
        tags = parse(fig.html)
        assert tags.seen == ["iframe"]
    fig = pl.show(batch[0])
    assert fig.save(tmp_path / "out" / "grid.png").read_bytes() == fig.png
    parse(fig.save(tmp_path / "grid.html").read_text(encoding="utf-8"))
    with pytest.raises(pl.PellucidError, match=r"grid\.jpg.*\.png or \.html"):
        fig.save(tmp_path / "grid.jpg")


def test_show_refuses_what_it_cannot_draw(batch):
    x, _ = batch
    with pytest.raises(pl.PellucidError, match="got int"):
        pl.show(3)
    with pytest.raises(pl.PellucidError, match="titles has 2 entries for 3 images"):
        pl.show(x, titles=["a", "b"])
    with pytest.raises(pl.PellucidError, match=r"shape \(2, 28, 28\) but the images are \(3, 1, 28, 28\)"):
        pl.show(torch.rand(2, 28, 28), x)
    with pytest.raises(pl.PellucidError, match="needs the images"):
        pl.show({"saliency": torch.rand(3, 28, 28)})
    with pytest.raises(pl.PellucidError, match=r"differ in shape"):
        pl.show(x[:2], original=x)
    with pytest.raises(pl.PellucidError, match="not one"):
        pl.show("no-such-report.html")


def test_import_pellucid_loads_no_drawing_library_and_drawing_leaves_the_backend_alone():
    """``import pellucid`` loads neither matplotlib nor PIL; a picture later never goes through pyplot, so the
    user's backend (Jupyter's inline one, here svg) still draws their own plots."""
    code = ("import os, sys, torch, pellucid\n"
            "assert not {'matplotlib', 'PIL'} & set(sys.modules), sorted(sys.modules)\n"
            "assert pellucid.show(torch.rand(1, 3, 8, 8)).size\n"
            "import matplotlib\n"
            "assert matplotlib.get_backend() == 'svg' and 'matplotlib.pyplot' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "MPLBACKEND": "svg"})
