"""MkDocs hooks of the documentation site (``mkdocs.yml`` names this file).

- ``<!-- readme: ## Heading -->`` in a page is replaced by that section of README.md (up to the next heading
  of the same level), its ``docs/img/`` pictures pointed at the site's copy: one text, no copy to drift.
- Every ``examples/*.ipynb`` becomes a page ``examples/NAME.html`` in the Tutorials section, rendered by
  mkdocs-jupyter. ``make docs`` first runs them (``examples/run_notebooks.py``) and names the folder of the run
  copies in ``PELLUCID_NOTEBOOKS``: the pages then show their figures, and a notebook without a run copy fails
  the build. Without that variable the pages show the committed notebooks, which hold no outputs.
- Sphinx roles in docstrings (``:func:`x```, ``:class:`~pellucid.X```) render as plain code.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from mkdocs.exceptions import PluginError
from mkdocs.plugins import event_priority
from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
README_MARK = re.compile(r"^<!-- readme: (#+) (.+?) -->$", re.M)
ROLE = re.compile(r":(?:class|func|data|mod|meth|attr|exc|obj):(<code>)~?")


def readme_section(level: str, title: str) -> str:
    """The body of README.md's heading ``level title``, without the heading; a missing one fails the build."""
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    fence, start = False, None
    for i, line in enumerate(lines):
        if line.startswith("```"):
            fence = not fence
        heading = re.match(r"(#+) ", line) if not fence else None
        if heading and start is not None and len(heading.group(1)) <= len(level):
            return "\n".join(lines[start:i]).strip("\n")
        if heading and start is None and line == f"{level} {title}":
            start = i + 1
    if start is None:
        raise PluginError(f"README.md has no heading {level} {title!r} (a docs page includes it)")
    return "\n".join(lines[start:]).strip("\n")


def on_page_markdown(markdown: str, page, **_) -> str:
    depth = page.file.src_uri.count("/")

    def section(match: re.Match) -> str:
        text = readme_section(match.group(1), match.group(2))
        return text.replace("](docs/img/", "](" + "../" * depth + "img/")

    return README_MARK.sub(section, markdown)


def on_page_content(html: str, **_) -> str:
    return ROLE.sub(r"\1", html)


def notebooks() -> list[Path]:
    return sorted(EXAMPLES.glob("*.ipynb"))


def _title(path: Path) -> str:
    """The notebook's first ``# `` heading, else its file name."""
    try:
        cells = json.loads(path.read_text(encoding="utf-8")).get("cells", [])
    except (OSError, ValueError):
        cells = []
    for cell in cells:
        if cell.get("cell_type") == "markdown":
            source = "".join(cell.get("source", []))
            found = re.search(r"^# (.+)$", source, re.M)
            if found:
                return found.group(1).strip()
    return path.stem.replace("_", " ")


def on_config(config, **_):
    for entry in config["nav"] or []:
        if isinstance(entry, dict) and "Tutorials" in entry:
            entry["Tutorials"] = [e for e in entry["Tutorials"] if not str(e).endswith(".ipynb")] + \
                [{_title(p): f"examples/{p.name}"} for p in notebooks()]
    return config


def notebook_root() -> Path:
    """The folder whose ``examples/`` holds the notebooks the pages show: the run copies of ``make docs``
    (``PELLUCID_NOTEBOOKS``), else the repository."""
    run = os.environ.get("PELLUCID_NOTEBOOKS")
    if not run:
        return ROOT
    root = Path(run).resolve()
    missing = [p.name for p in notebooks() if not (root / "examples" / p.name).is_file()]
    if missing:
        raise PluginError(f"PELLUCID_NOTEBOOKS={run}: no run copy of {', '.join(missing)} in {root / 'examples'}; "
                          "run `python examples/run_notebooks.py` into it (make docs does)")
    return root


@event_priority(100)  # before mkdocs-jupyter's, which turns .ipynb files into pages
def on_files(files, config, **_):
    root = notebook_root()
    for path in notebooks():  # a file of the repository, not of docs/ (mkdocs-jupyter needs a src_dir)
        files.append(File(f"examples/{path.name}", src_dir=str(root), dest_dir=config["site_dir"],
                          use_directory_urls=config["use_directory_urls"]))
    return files
