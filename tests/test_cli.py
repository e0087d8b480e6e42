"""The `pellucid` command end to end, in a temporary directory."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from pellucid.cli import main


def run(*args):
    return subprocess.run([sys.executable, "-m", "pellucid.cli", *args], capture_output=True, text=True,
                          timeout=1800)  # a guard against hangs, not a speed test: loaded machines are slow


def test_models_lists_builtins(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "digits" in out and "resnet18" in out


def test_saliency_writes_a_png(tmp_path, digits_model):
    from PIL import Image

    out = tmp_path / "sal.png"
    assert main(["saliency", "--model", "digits", "-n", "4", "--out", str(out)]) == 0
    img = Image.open(out)
    assert img.format == "PNG" and img.width > 200


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
