"""The `pellucid` command end to end, in a temporary directory."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import pellucid as pl
from pellucid.cli import main


def run(*args):
    return subprocess.run([sys.executable, "-m", "pellucid.cli", *args], capture_output=True, text=True,
                          timeout=1800)  # a guard against hangs, not a speed test: loaded machines are slow


def test_models_lists_builtins(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "digits" in out and "resnet18" in out


def _pixels(path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as img:
        assert img.format == "PNG"
        return np.asarray(img.convert("RGB"), dtype=np.int16)


def test_saliency_writes_the_grid_of_the_api(tmp_path, digits_model):
    """The CLI's PNG is the API's saliency drawn by the one renderer: same size, same pixels; another
    target gives another picture."""
    from pellucid._grad import predictions
    from pellucid.drawing import render

    out, other = tmp_path / "sal.png", tmp_path / "sal5.png"
    assert main(["saliency", "--model", "digits", "-n", "4", "--out", str(out)]) == 0
    assert main(["saliency", "--model", "digits", "-n", "4", "--target", "5", "--out", str(other)]) == 0
    x, y = pl.sample_images("digits", n=4)
    probs = predictions(digits_model, x)
    expected = tmp_path / "expected.png"
    render.write_png(render.attribution_grid(x, {"saliency": pl.saliency(digits_model, x, probs.argmax(1))},
                                             render.image_row_titles(digits_model, probs, y)), expected)
    got, want, moved = _pixels(out), _pixels(expected), _pixels(other)
    assert got.shape == want.shape and got.shape[1] > 200
    assert np.abs(got - want).max() <= 1
    assert got.shape == moved.shape and np.abs(got - moved).mean() > 1


def test_saliency_on_image_files(tmp_path, digits_model, digits_batch):
    from PIL import Image

    x, _ = digits_batch
    paths = []
    for i in range(2):
        p = tmp_path / f"d{i}.png"
        Image.fromarray((x[i, 0].numpy() * 255).astype(np.uint8)).save(p)
        paths.append(str(p))
    out = tmp_path / "grid.png"
    assert main(["saliency", *paths, "--target", "3", "--out", str(out)]) == 0
    other = tmp_path / "grid7.png"
    assert main(["saliency", *paths, "--target", "7", "--out", str(other)]) == 0
    got, moved = _pixels(out), _pixels(other)
    assert got.shape == moved.shape and np.abs(got - moved).mean() > 1  # the map follows the target
    assert out.stat().st_size > 1000


@pytest.mark.parametrize("args, message", [
    (["saliency", "missing.png"], "does not exist"),
    (["saliency", "--model", "resnet19"], "unknown model 'resnet19'"),
    (["saliency", "--target", "12"], "out of range"),
])
def test_errors_are_one_clear_line(tmp_path, args, message, digits_model):
    r = run(*args, "--out", str(tmp_path / "x.png"))
    assert r.returncode == 2
    assert message in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_report_end_to_end(tmp_path, digits_model):
    out = tmp_path / "rep"
    r = run("report", "--out", str(out))
    assert r.returncode == 0, r.stderr
    page = (out / "index.html").read_text()
    assert "Model and predictions" in page and "data:image/png;base64," in page
    assert "http://" not in page and "https://" not in page
