"""Run the notebooks of examples/ top to bottom, offline, in one kernel of this interpreter.

The test suite runs each with the small settings of :data:`SMALL` (injected after its ``parameters`` cell);
``make docs`` runs each with its own settings and saves the executed copy that the documentation renders, figures
included::

    python examples/run_notebooks.py build/notebooks    # -> build/notebooks/examples/NAME.ipynb

A saved copy is kept while neither its notebook, this runner nor pellucid's source changed (a hash in its
metadata), so a second ``make docs`` runs nothing; ``make docs`` runs each notebook in a kernel of its own. The
test suite shares one kernel and resets its namespace before each notebook (``%reset -f``): one that leans on
another's variables fails.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import nbformat
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "examples").glob("*.ipynb"))
FIGURES = ("image/png", "text/html")

SMALL = {  # per notebook: settings that keep its run to seconds
    "attacks_and_trust": 'n_digits = 4\nsteps = 3\nqueries = 20\ncurve_steps = 5\nmethods = ["saliency", "gradcam"]\n'
                         'trust = ["road"]',
    "cs188_deep_learning": 'models = ["digits"]  # the BatchNorm-free CNN is not trained here\nn_digits = 4\n'
                           "sin_steps = 20",
    "cs231n_network_visualization": "n_photos = 2\nfool_steps = 2\nvis_steps = 2",
    "datasets_and_concepts": "n_train = 600\nepochs = 1\nn_scan = 150\ntcav_runs = 3\nn_concepts = 3\ndesigns = 8",
    "ntu_explainable_ai": "n_photos = 2\nfilters = [0, 1]\nfilter_steps = 2\nlime_samples = 16\nlime_segments = 8",
    "transformers_and_lrp": 'n_photos = 1\ncams = ["gradcam", "eigencam"]\ncomposites = ["epsilon_plus_flat"]',
}


def parameters_cell(nb) -> int:
    """The index of the ``parameters`` cell: the first code cell, tagged."""
    code = [i for i, c in enumerate(nb.cells) if c.cell_type == "code"]
    if not code or "parameters" not in nb.cells[code[0]].metadata.get("tags", []):
        raise ValueError("the first code cell must hold the settings and carry the tag 'parameters'")
    return code[0]


@contextlib.contextmanager
def kernel(cwd: str | Path) -> Iterator[KernelManager]:
    """A kernel of this interpreter, importing pellucid from this checkout, working in ``cwd``, one thread (on a
    busy 2-core machine two spinning OpenMP threads took the notebooks from 30 s to 93 s)."""
    with tempfile.TemporaryDirectory() as kernels:
        spec = Path(kernels) / "pellucid-notebooks"
        spec.mkdir()
        (spec / "kernel.json").write_text(json.dumps({
            "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "pellucid", "language": "python"}))
        km = KernelManager(kernel_name=spec.name, kernel_spec_manager=KernelSpecManager(kernel_dirs=[kernels]))
        path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
        km.start_kernel(cwd=str(cwd), env={**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1"})
        try:
            yield km
        finally:
            km.shutdown_kernel(now=True)


def execute(path: Path, km: KernelManager, settings: str | None = None, timeout: int = 900):
    """The notebook at ``path`` run in ``km`` (``settings``: code run right after its parameters cell); the
    injected cells are removed again from what is returned. An error in a cell raises."""
    nb = nbformat.read(path, as_version=4)
    i = parameters_cell(nb)
    injected = [nbformat.v4.new_code_cell("%reset -f")]
    cells = [injected[0], *nb.cells[: i + 1]]
    if settings:
        injected.append(nbformat.v4.new_code_cell(settings))
        cells.append(injected[-1])
    nb.cells = [*cells, *nb.cells[i + 1:]]
    client = NotebookClient(nb, km=km, timeout=timeout, allow_errors=False)
    try:
        client.execute()
    finally:
        if client.kc is not None:
            client.kc.stop_channels()
    nb.cells = [c for c in nb.cells if not any(c is k for k in injected)]
    return nb


def figures(nb) -> list:
    """The pictures a run notebook shows (PNG or HTML outputs)."""
    return [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
            if o.output_type in ("display_data", "execute_result") and set(FIGURES) & set(o.get("data", {}))]


def source_hash(path: Path) -> str:
    """What an executed copy depends on: the notebook, this runner and every source file of pellucid."""
    digest = hashlib.sha256(path.read_bytes() + Path(__file__).read_bytes())
    for source in sorted((ROOT / "pellucid").rglob("*")):
        if source.is_file() and source.suffix in (".py", ".js", ".css", ".html"):
            digest.update(source.relative_to(ROOT).as_posix().encode() + source.read_bytes())
    return digest.hexdigest()


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python examples/run_notebooks.py OUT_DIR", file=sys.stderr)
        return 2
    out = Path(argv[0]) / "examples"
    out.mkdir(parents=True, exist_ok=True)
    todo = []
    for path in NOTEBOOKS:
        saved, key = out / path.name, source_hash(path)
        try:
            fresh = nbformat.read(saved, as_version=4).metadata.get("pellucid_source") == key
        except (OSError, ValueError):  # missing or unreadable (a run cut short): run it again
            fresh = False
        if fresh:
            print(f"{path.name}: up to date", file=sys.stderr)
        else:
            todo.append((path, saved, key))
    for path, saved, key in todo:
        start = time.perf_counter()
        with tempfile.TemporaryDirectory() as work, kernel(work) as km:  # a kernel each: no state carried over
            nb = execute(path, km)
        nb.metadata["pellucid_source"] = key
        partial = saved.with_suffix(".partial")
        nbformat.write(nb, partial)
        partial.replace(saved)  # whole or not at all
        print(f"{path.name}: ran in {time.perf_counter() - start:.0f}s, {len(figures(nb))} figures", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
