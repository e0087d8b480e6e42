"""The notebooks in examples/ run top to bottom, offline, and show figures: each runs here with the small
settings below, injected after its ``parameters`` cell, so a notebook the library breaks fails the suite.

One kernel (this interpreter, through a kernelspec written to a temporary folder) runs them all, its namespace
reset before each notebook: a notebook that leans on another's variables fails, and torch is imported once.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "examples").glob("*.ipynb"))

SMALL = {  # per notebook: settings that keep its run to seconds
    "attacks_and_trust": 'n_digits = 4\nsteps = 3\nqueries = 20\ncurve_steps = 5\nmethods = ["saliency", "gradcam"]\n'
                         'trust = ["road"]',
    "cs188_deep_learning": 'models = ["digits"]  # the BatchNorm-free CNN is not trained here\nn_digits = 4\n'
                           "sin_steps = 20",
    "cs231n_network_visualization": "n_photos = 2\nfool_steps = 2\nvis_steps = 2",
    "ntu_explainable_ai": "n_photos = 2\nfilters = [0, 1]\nfilter_steps = 2\nlime_samples = 16\nlime_segments = 8",
    "transformers_and_lrp": 'n_photos = 1\ncams = ["gradcam", "eigencam"]\ncomposites = ["epsilon_plus_flat"]',
}
FIGURES = ("image/png", "text/html")


def _parameters(nb) -> int:
    """The index of the ``parameters`` cell: the first code cell, tagged."""
    code = [i for i, c in enumerate(nb.cells) if c.cell_type == "code"]
    assert code and "parameters" in nb.cells[code[0]].metadata.get("tags", []), \
        "the first code cell must hold the settings and carry the tag 'parameters'"
    return code[0]


def test_there_are_notebooks_and_each_has_small_settings():
    assert len(NOTEBOOKS) >= 4
    assert {p.stem for p in NOTEBOOKS} == set(SMALL), "give every notebook its small settings in SMALL"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_notebooks_are_clean(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    _parameters(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"strip the outputs of {path.name}"


@pytest.fixture(scope="module")
def kernel(tmp_path_factory):
    """A kernel of this interpreter, importing pellucid from this checkout, working in a temporary folder."""
    kernels = tmp_path_factory.mktemp("kernels")
    (kernels / "pellucid-test").mkdir()
    (kernels / "pellucid-test" / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "pellucid test", "language": "python"}))
    km = KernelManager(kernel_name="pellucid-test", kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(kernels)]))
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    # one thread: on a busy 2-core machine (load 8) two spinning OpenMP threads took the five notebooks from 30 s
    # to 93 s; the test process itself waits meanwhile
    env = {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1"}
    km.start_kernel(cwd=str(tmp_path_factory.mktemp("work")), env=env)
    try:
        yield km
    finally:
        km.shutdown_kernel(now=True)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_and_shows_figures(kernel, path):
    nb = nbformat.read(path, as_version=4)
    i = _parameters(nb)
    reset = nbformat.v4.new_code_cell("%reset -f")
    nb.cells = [reset, *nb.cells[: i + 1], nbformat.v4.new_code_cell(SMALL[path.stem]), *nb.cells[i + 1:]]
    client = NotebookClient(nb, km=kernel, timeout=300, allow_errors=False)
    try:
        client.execute()
    finally:
        if client.kc is not None:
            client.kc.stop_channels()
    figures = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
               if o.output_type in ("display_data", "execute_result") and set(FIGURES) & set(o.get("data", {}))]
    assert len(figures) >= 4, f"{path.name} showed {len(figures)} figures"
