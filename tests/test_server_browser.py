"""`pellucid serve` in a real browser: Playwright drives Debian's chromium, headless.

Skipped when chromium or playwright is missing here, but a failure under ``CI=true``. Screenshots go
to ``test-artifacts/`` (gitignored).
"""

from __future__ import annotations

import base64
import os
import shutil
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

import test_server  # noqa: E402

import pellucid as pl  # noqa: E402
from pellucid._grad import predictions  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
png_bytes = test_server.png_bytes
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = os.environ.get("PELLUCID_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="module")
def browser():
    in_ci = os.environ.get("CI", "").lower() == "true"
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        if in_ci:
            pytest.fail("playwright is not installed (pip install -e '.[dev]')")
        pytest.skip("playwright is not installed")
    if not Path(CHROMIUM).exists():
        if in_ci:
            pytest.fail(f"chromium not found at {CHROMIUM}: apt-get install chromium")
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def served():
    with test_server.serve_process() as (proc, port):
        yield proc, port


def correctly_predicted(model, x, y, avoid=()) -> int:
    pred = predictions(model, x).argmax(1)
    return next(i for i in range(len(x)) if pred[i] == y[i] and i not in avoid)


def drop_file(page, data: bytes, name: str) -> None:
    """Drag-and-drop a file onto the drop zone, as a browser would deliver it."""
    page.evaluate(
        """([b64, name]) => {
            const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
            const dt = new DataTransfer();
            dt.items.add(new File([bytes], name, { type: "image/png" }));
            const zone = document.getElementById("drop");
            for (const type of ["dragenter", "dragover", "drop"]) {
                zone.dispatchEvent(new DragEvent(type, { dataTransfer: dt, bubbles: true, cancelable: true }));
            }
        }""",
        [base64.b64encode(data).decode("ascii"), name],
    )


def test_the_page_in_chromium(browser, served, tmp_path, digits_model):
    x, y = pl.sample_images("digits", n=10)
    first = correctly_predicted(digits_model, x, y)
    second = correctly_predicted(digits_model, x, y, avoid=(first,))
    digit = tmp_path / "digit.png"
    digit.write_bytes(png_bytes(x[first]))
    good = png_bytes(x[second])
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(good[: len(good) // 2])
    ARTIFACTS.mkdir(exist_ok=True)

    _proc, port = served
    base = f"http://127.0.0.1:{port}"
    page = browser.new_page(viewport={"width": 1360, "height": 940})
    console, outside = [], []
    page.on("console", lambda m: console.append(m) if m.type == "error" else None)
    page.on("pageerror", lambda e: console.append(e))
    page.on("request", lambda r: None if r.url.startswith((base, "data:", "blob:")) else outside.append(r.url))
    page.goto(base + "/")
    page.wait_for_selector("#methods input")
    available = [m["name"] for m in page.evaluate("fetch('/api/models').then(r => r.json())")["methods"]]

    # a sample image: its true label and the prediction
    page.wait_for_selector("#samples .sample img")
    page.click(f"#samples .sample:nth-child({second + 1})")
    page.wait_for_function("(want) => document.querySelector('#image-caption').textContent.includes(want)",
                           arg=f"true {int(y[second])} · predicted {int(y[second])}", timeout=30_000)

    # upload by file picker: the predicted label, then every overlay loaded
    page.set_input_files("#file", str(digit))
    page.wait_for_function("(want) => document.querySelector('#image-caption').textContent === want",
                           arg=f"predicted {int(y[first])}", timeout=30_000)
    assert page.inner_text("#predictions li.top .name") == str(int(y[first]))
    page.wait_for_function("() => document.querySelectorAll('#cards .card').length > 0 && "
                           "!document.querySelector('#cards .card.pending')", timeout=60_000)
    assert page.eval_on_selector_all("#cards .card", "cs => cs.map(c => c.dataset.method)") == available
    assert page.query_selector("#cards .card.failed") is None
    widths = page.eval_on_selector_all("#cards .card img", "imgs => imgs.map(i => i.complete ? i.naturalWidth : 0)")
    assert widths and all(w > 0 for w in widths), widths
    assert page.eval_on_selector("#image", "i => i.naturalWidth") > 0
    assert "done" in page.inner_text("#explain-status")
    page.screenshot(path=str(ARTIFACTS / "serve-explained.png"), full_page=True)

    # the eps slider changes the prediction
    before = page.inner_text("#predictions li.top .name")
    page.locator("#eps").fill("0.5")
    page.wait_for_selector("#adv-predictions li.top", timeout=30_000)
    assert page.inner_text("#adv-predictions li.top .name") != before
    # the pictures load after the prediction is shown: wait for them, then check they decoded
    page.wait_for_function("() => ['#adv', '#diff'].every(s => document.querySelector(s).complete)",
                           timeout=30_000)
    assert page.eval_on_selector("#adv", "i => i.naturalWidth") > 0
    assert page.eval_on_selector("#diff", "i => i.naturalWidth") > 0
    page.screenshot(path=str(ARTIFACTS / "serve-attacked.png"), full_page=True)

    # drag and drop another digit
    drop_file(page, good, "dropped.png")
    page.wait_for_function("(want) => document.querySelector('#image-caption').textContent.includes(want)",
                           arg=f"predicted {int(y[second])}", timeout=30_000)

    # a corrupt upload: a clear message on the page, and the page keeps working
    page.set_input_files("#file", str(corrupt))
    page.wait_for_selector("#message.error", state="visible", timeout=30_000)
    message = page.inner_text("#message")
    assert "corrupt.png" in message and "corrupt or truncated" in message
    page.screenshot(path=str(ARTIFACTS / "serve-corrupt-upload.png"), full_page=False)
    page.set_input_files("#file", str(digit))
    page.wait_for_selector("#message", state="hidden", timeout=30_000)

    # no console errors, except the browser's own note on the refused upload's 400
    unexpected = [m for m in console if not (
        hasattr(m, "location") and "/api/image" in m.location.get("url", "") and "status of 400" in m.text)]
    assert not unexpected, [getattr(m, "text", str(m)) for m in unexpected]
    assert not outside, f"the page fetched from outside: {outside}"
    page.close()



def open_views(browser, port: int):
    """The page at the data-set views, its facts read; console errors and outside requests collected."""
    base = f"http://127.0.0.1:{port}"
    page = browser.new_page(viewport={"width": 1360, "height": 940})
    errors, outside = [], []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("request", lambda r: None if r.url.startswith((base, "data:", "blob:")) else outside.append(r.url))
    page.goto(base + "/")
    page.wait_for_function("() => document.querySelector('#set-info').textContent.startsWith('on ')", timeout=60_000)
    return page, errors, outside


def all_loaded(page, selector: str) -> list[int]:
    page.wait_for_function("(s) => [...document.querySelectorAll(s)].every(i => i.complete)", arg=selector,
                           timeout=30_000)
    return page.eval_on_selector_all(selector, "imgs => imgs.map(i => i.naturalWidth)")


def test_the_strategies_view_in_chromium(browser, served):
    x, y = pl.sample_images("digits", n=100)
    alone = pl.scan(pl.load_model("digits"), x, y, method="lrp", seed=0).classes[3]
    ARTIFACTS.mkdir(exist_ok=True)
    page, errors, outside = open_views(browser, served[1])
    page.select_option("#set-class", "3")
    page.fill("#scan-images", "100")
    page.click("#run-strategies")
    page.wait_for_selector("#strategies .strategy", timeout=60_000)
    heads = page.eval_on_selector_all("#strategies .strategy h4", "hs => hs.map(h => h.textContent)")
    assert [int(h.split(": ")[1].split(" ")[0]) for h in heads] == [s.size for s in alone.strategies]
    widths = all_loaded(page, "#strategies img")
    assert len(widths) >= len(alone.strategies) * 2 and all(w > 0 for w in widths), widths
    assert "class 3: 10 of 100 held-out digits" in page.inner_text("#strategies-status")
    page.locator("#dataset").screenshot(path=str(ARTIFACTS / "serve-strategies.png"))
    page.click("#strategies table.classes tbody tr:nth-child(8)")  # another class, from the kept scan
    page.wait_for_function("() => document.querySelector('#strategies-status').textContent.includes('class 7')")
    assert "kept from before" in page.inner_text("#strategies-status")
    assert not errors and not outside, (errors, outside)
    page.close()


def test_the_concepts_view_in_chromium(browser, served):
    x, y = pl.sample_images("digits", n=1000)
    alone = pl.concepts(pl.load_model("digits"), x[y == 3][:16], 3, layer="relu3", n=4, top=6, seed=0)
    ARTIFACTS.mkdir(exist_ok=True)
    page, errors, outside = open_views(browser, served[1])
    page.select_option("#set-class", "3")
    page.select_option("#concept-layer", "relu3")
    page.fill("#concept-n", "4")
    page.click("#run-concepts")
    page.wait_for_selector("#concepts li", timeout=60_000)
    names = page.eval_on_selector_all("#concepts li .name", "ns => ns.map(n => n.textContent)")
    assert names == [f"#{r} concept {k.index}" for r, k in enumerate(alone.concepts, 1)]
    widths = all_loaded(page, "#concepts img")
    assert len(widths) == 4 * 6 and all(w > 0 for w in widths), widths
    bars = page.eval_on_selector_all("#concepts .bar span", "bs => bs.map(b => parseFloat(b.style.width))")
    assert bars[0] == 100 and bars == sorted(bars, reverse=True)
    assert "at relu3 from 16 held-out digits" in page.inner_text("#concepts-status")
    page.locator("#dataset").screenshot(path=str(ARTIFACTS / "serve-concepts.png"))
    assert not errors and not outside, (errors, outside)
    page.close()
