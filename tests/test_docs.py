"""The documentation site: every public name has a reference entry, every figure is in the gallery, and the
site builds in strict mode (when mkdocs and its plugins are installed: the `docs` extra; `make docs` and CI
build it in their own venv)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from importlib.util import find_spec
from pathlib import Path

import pytest

import pellucid

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
ENTRY = re.compile(r"^::: pellucid\.(\w+)\s*$", re.M)


def reference_entries() -> dict[str, str]:
    """``name -> page`` of every ``::: pellucid.NAME`` in docs/reference/."""
    return {name: page.name for page in sorted((DOCS / "reference").glob("*.md"))
            for name in ENTRY.findall(page.read_text(encoding="utf-8"))}


def test_every_public_name_has_a_reference_entry():
    entries = reference_entries()
    missing = sorted(set(pellucid.__all__) - set(entries))
    assert not missing, f"add `::: pellucid.NAME` for these names to a page of docs/reference/: {missing}"
    stale = sorted(set(entries) - set(pellucid.__all__))
    assert not stale, f"docs/reference/ documents names that pellucid.__all__ no longer has: {stale}"


def test_every_figure_is_in_the_gallery_and_every_readme_figure_exists():
    gallery = (DOCS / "gallery.md").read_text(encoding="utf-8")
    figures = sorted(p.name for p in (DOCS / "img").glob("*.png"))
    assert figures and not [f for f in figures if f"](img/{f})" not in gallery]
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert not [f for f in re.findall(r"\]\(docs/img/([^)]+)\)", readme) if f not in figures]


PLUGINS = ("mkdocs", "material", "mkdocstrings", "mkdocstrings_handlers.python", "mkdocs_jupyter")


def _installed(module: str) -> bool:
    try:
        return find_spec(module) is not None
    except (ImportError, ValueError):
        return False


@pytest.mark.skipif(not all(map(_installed, PLUGINS)),
                    reason="the docs extra is not installed here (`make docs` builds the site in .venv-docs)")
def test_the_site_builds_in_strict_mode_without_warnings(tmp_path):
    out = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                         cwd=ROOT, capture_output=True, text=True, timeout=600,
                         env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert out.returncode == 0, out.stderr[-3000:]
    assert "WARNING" not in out.stderr, out.stderr[-3000:]
    site = tmp_path / "site"
    for page in ("index.html", "where.html", "gallery.html", "reference/where.html", "tutorials/index.html"):
        assert (site / page).is_file(), page
    html = (site / "reference" / "where.html").read_text(encoding="utf-8")
    assert 'id="pellucid.integrated_gradients"' in html and ":class:" not in html
    for notebook in sorted((ROOT / "examples").glob("*.ipynb")):
        assert (site / "examples" / f"{notebook.stem}.html").is_file(), notebook.name
