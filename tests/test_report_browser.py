"""The HTML report in a real browser: Debian's chromium, headless, driven by Playwright.

Skipped when chromium is missing, except under CI (``CI=true``), where it must be installed
(``.ci/run`` does). A screenshot is kept in ``test-artifacts/``.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("PELLUCID_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


def _browser_or_skip():
    in_ci = os.environ.get("CI", "").lower() == "true"
    if not Path(CHROMIUM).is_file():
        if in_ci:
            pytest.fail(f"chromium not found at {CHROMIUM}; CI must install it (apt-get install chromium)")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        if in_ci:
            pytest.fail("the playwright package is missing; it is a dev dependency")
        pytest.skip("playwright is not installed")
    return sync_playwright


@pytest.fixture(scope="module")
def report_page(tmp_path_factory, digits_model, digits_batch):
    from pellucid.drawing.report import SECTIONS, build_report

    x, y = digits_batch
    out = tmp_path_factory.mktemp("report")
    path = build_report(digits_model, x, y, out, progress=False)
    return path, [make.__name__ for make in SECTIONS]


def test_report_opens_in_chromium(report_page):
    sync_playwright = _browser_or_skip()
    path, _ = report_page
    errors, requests = [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("requestfailed", lambda r: errors.append(f"failed request {r.url}"))
            page.on("request", lambda r: requests.append(r.url))
            page.goto(path.as_uri(), wait_until="load")
            sections = page.eval_on_selector_all("section", "els => els.map(e => [e.id, e.querySelector('h2')"
                                                 ".textContent, e.querySelector('p.intro').textContent])")
            images = page.eval_on_selector_all("img", "els => els.map(e => [e.alt, e.complete, e.naturalWidth])")
            nav = page.eval_on_selector_all("nav a", "els => els.map(e => e.getAttribute('href'))")
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "report.png"), full_page=True)
        finally:
            browser.close()
    titles = [title for _, title, _ in sections]
    for expected in ("Model and predictions", "Faithfulness and sanity checks"):
        assert expected in titles, titles
    assert len(sections) == len(report_page[1]), (titles, report_page[1])
    assert all(len(intro) > 40 for _, _, intro in sections), "every section says how to read it"
    assert nav == [f"#{anchor}" for anchor, _, _ in sections]
    assert len(images) >= len(sections)
    broken = [alt for alt, complete, width in images if not complete or width == 0]
    assert not broken, f"images that did not load: {broken}"
    assert not errors, errors
    remote = [u for u in requests if not u.startswith(("file:", "data:"))]
    assert not remote, f"the report must not need the network: {remote}"
    assert (ARTIFACTS / "report.png").stat().st_size > 10_000
