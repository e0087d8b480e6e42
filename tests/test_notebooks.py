"""The notebooks in examples/ run top to bottom, offline, and show figures: each runs here with its small
settings (``SMALL`` in examples/run_notebooks.py, injected after its ``parameters`` cell), so a notebook the
library breaks fails the suite. One kernel (this interpreter) runs them all, its namespace reset before each
notebook; ``make docs`` runs them the same way with their own settings.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("run_notebooks", ROOT / "examples" / "run_notebooks.py")
runner = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(runner)
NOTEBOOKS = runner.NOTEBOOKS


def test_there_are_notebooks_and_each_has_small_settings():
    assert len(NOTEBOOKS) >= 6
    assert {p.stem for p in NOTEBOOKS} == set(runner.SMALL), "give every notebook its small settings in SMALL"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_notebooks_are_clean(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    runner.parameters_cell(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"strip the outputs of {path.name}"


@pytest.fixture(scope="module")
def kernel(tmp_path_factory):
    with runner.kernel(tmp_path_factory.mktemp("work")) as km:
        yield km


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_and_shows_figures(kernel, path):
    nb = runner.execute(path, kernel, runner.SMALL[path.stem], timeout=300)
    assert len(nb.cells) == len(nbformat.read(path, as_version=4).cells)  # the injected cells are gone again
    shown = runner.figures(nb)
    assert len(shown) >= 4, f"{path.name} showed {len(shown)} figures"
