"""Batch jobs over a whole data set: oracles, resume after kill -9, bad files, Ray equals local."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import pellucid as pl
from pellucid import registry
from pellucid.cli import main
from pellucid.models.data import digits


def maps_of(out: Path, method: str) -> dict[str, np.ndarray]:
    root = Path(out) / "maps" / method
    return {p.relative_to(root).as_posix()[:-4]: np.load(p) for p in sorted(root.rglob("*.npy"))}


def leftovers(out: Path) -> list[Path]:
    return [p for p in Path(out).rglob("*") if p.name.endswith(".tmp")]


def test_maps_and_rows_match_the_single_image_api(tmp_path, digits_model):
    res = pl.explain_dataset("digits-test", tmp_path, methods="saliency,input_x_gradient", limit=20,
                             batch_size=8, progress=False)
    assert (res.done, res.failed, res.skipped) == (20, 0, 0)
    x, y = digits("test")
    x, y = x[:20], y[:20]
    probs = digits_model(x).softmax(1).detach()
    pred = probs.argmax(1)
    rows = pl.read_results(tmp_path)
    assert [r["key"] for r in rows] == [f"digits-test/{i:05d}" for i in range(20)]
    assert [r["prediction"] for r in rows] == pred.tolist()
    assert [r["label"] for r in rows] == y.tolist()
    assert np.allclose([r["confidence"] for r in rows], probs.max(1).values.numpy(), atol=1e-6)
    # oracle: the gradient of the predicted logit, by plain autograd, image by image
    for i in (0, 7, 19):
        xi = x[i : i + 1].clone().requires_grad_(True)
        (g,) = torch.autograd.grad(digits_model(xi)[0, pred[i]], xi)
        key = f"digits-test/{i:05d}"
        assert np.allclose(maps_of(tmp_path, "saliency")[key], g.abs().amax(1)[0].numpy(), atol=1e-6)
        assert np.allclose(maps_of(tmp_path, "input_x_gradient")[key], (g * x[i]).sum(1)[0].numpy(), atol=1e-6)
    from PIL import Image

    with Image.open(tmp_path / "overlays" / "digits-test" / "00003.png") as img:
        assert img.width == 3 * img.height >= 3 * 112
    page = (tmp_path / "report.html").read_text()
    assert "Batch summary" in page and "accuracy" in page and "Mean saliency per predicted class" in page


def test_unknown_method_and_bad_arguments(tmp_path):
    with pytest.raises(pl.PellucidError, match="unknown method 'nope'.*saliency.*input_x_gradient"):
        pl.explain_dataset("digits-test", tmp_path, methods="saliency,nope")
    with pytest.raises(pl.PellucidError, match="neither a folder nor a data set"):
        pl.explain_dataset(str(tmp_path / "missing"), tmp_path / "o")
    with pytest.raises(pl.PellucidError, match="engine"):
        pl.explain_dataset("digits-test", tmp_path, engine="spark")
    with pytest.raises(pl.PellucidError, match="batch_size"):
        pl.explain_dataset("digits-test", tmp_path, batch_size=0)


def test_resume_skips_finished_images_and_refuses_other_arguments(tmp_path):
    first = pl.explain_dataset("digits-test", tmp_path, limit=12, batch_size=4, progress=False, report=False)
    again = pl.explain_dataset("digits-test", tmp_path, limit=20, batch_size=4, progress=False, report=False)
    assert (first.done, again.done, again.skipped) == (12, 8, 12)
    assert len(pl.read_results(tmp_path)) == 20
    with pytest.raises(pl.PellucidError, match="other arguments.*methods"):
        pl.explain_dataset("digits-test", tmp_path, methods="input_x_gradient", limit=20)


def test_faithfulness_and_minimal_eps_columns_equal_the_api(tmp_path, digits_model):
    pl.explain_dataset("digits-test", tmp_path, limit=4, attack="fgsm", eps=0.5, metric_steps=11,
                       progress=False, report=False)
    rows = sorted(pl.read_results(tmp_path), key=lambda r: r["position"])
    x, y = digits("test")
    x, y = x[:4], y[:4]
    pred = pl.load_model("digits")(x).argmax(1)
    maps = pl.saliency(digits_model, x, pred)
    deletion = pl.deletion(digits_model, x, pred, maps, steps=11).auc
    insertion = pl.insertion(digits_model, x, pred, maps, steps=11).auc
    eps = pl.minimal_epsilon(digits_model, x, y, attack="fgsm", eps_max=0.5, progress=False)
    for i, r in enumerate(rows):
        assert r["prediction"] == int(pred[i]) and r["label"] == int(y[i])
        assert abs(r["saliency_deletion"] - float(deletion[i])) < 1e-5
        assert abs(r["saliency_insertion"] - float(insertion[i])) < 1e-5
        assert (r["min_eps"] is None) == (not torch.isfinite(eps[i]))
        assert r["min_eps"] is None or abs(r["min_eps"] - float(eps[i])) < 1e-6


def test_bad_files_are_recorded_and_the_job_goes_on(tmp_path):
    from PIL import Image

    x, y = digits("test")
    src = tmp_path / "in"
    for i in range(3):
        pl.save_image(x[i], src / str(int(y[i])) / f"ok{i}.png")
    (src / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    (src / "notes.txt").write_text("not an image")
    Image.new("L", (3000, 2000), 128).save(src / "huge.png")
    res = pl.explain_dataset(str(src), tmp_path / "out", max_pixels=1_000_000, num_workers=1, batch_size=4,
                             progress=False)
    assert (res.done, res.failed) == (3, 3)
    rows = {r["key"]: r for r in pl.read_results(tmp_path / "out")}
    assert "not a valid PNG" in rows["broken.png"]["reason"]
    assert "not an image file" in rows["notes.txt"]["reason"] and ".txt" in rows["notes.txt"]["reason"]
    assert "too large: 3000x2000" in rows["huge.png"]["reason"]
    oks = [r for r in rows.values() if r["status"] == "done"]
    assert all(r["label"] == int(y[i]) for i, r in enumerate(sorted(oks, key=lambda r: r["key"][2:])))
    assert "broken.png" in (tmp_path / "out" / "report.html").read_text()


def test_a_module_is_used_as_is_and_left_unchanged(tmp_path):
    model = pl.load_model("digits")
    model.train()
    params = [p.detach().clone() for p in model.parameters()]
    res = pl.explain_dataset("digits-test", tmp_path, model=model, limit=4, progress=False, report=False)
    assert res.done == 4 and model.training and all(p.grad is None for p in model.parameters())
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), params))
    with torch.no_grad():
        model.net[-1].bias.add_(1.0)
    with pytest.raises(pl.PellucidError, match="other arguments.*model"):
        pl.explain_dataset("digits-test", tmp_path, model=model, limit=4, progress=False)


@pytest.fixture
def noisy_method():
    """A seeded method registered for one test: saliency of a noisy copy, the noise drawn from ``seed``."""
    seeds = []

    def noisy(model, x, target, seed=0):
        seeds.append(seed)
        gen = torch.Generator().manual_seed(seed)
        noise = 0.1 * torch.randn(x.shape, generator=gen)
        return pl.saliency(model, (x + noise).clamp(0, 1), target)

    registry.register_method(registry.Method("test_noisy", "Noisy", noisy, seeded=True))
    yield seeds
    registry._METHODS.pop("test_noisy", None)


def test_seeded_methods_are_reproducible_per_image(tmp_path, noisy_method):
    """A seeded method gets a seed per image, so its map does not depend on the batch it ran in."""
    a = pl.explain_dataset("digits-test", tmp_path / "a", methods="test_noisy", limit=9, batch_size=3,
                           progress=False, report=False)
    b = pl.explain_dataset("digits-test", tmp_path / "b", methods="test_noisy", limit=9, batch_size=4,
                           progress=False, report=False)
    ma, mb = maps_of(tmp_path / "a", "test_noisy"), maps_of(tmp_path / "b", "test_noisy")
    assert a.done == b.done == 9 and ma.keys() == mb.keys()
    assert all(np.array_equal(ma[k], mb[k]) for k in ma)
    assert not np.array_equal(ma["digits-test/00000"], ma["digits-test/00001"])
    assert len(noisy_method) == 18 and len(set(noisy_method)) == 9  # one call per image, a seed per image
    c = pl.explain_dataset("digits-test", tmp_path / "c", methods="test_noisy", limit=9, seed=1, progress=False,
                           report=False)
    assert c.done == 9 and not np.array_equal(ma["digits-test/00000"], maps_of(tmp_path / "c", "test_noisy")[
        "digits-test/00000"])


def _count_rows(table: Path) -> int:
    try:
        with sqlite3.connect(f"file:{table}?mode=ro", uri=True, timeout=1) as db:
            return db.execute("SELECT count(*) FROM results").fetchone()[0]
    except sqlite3.Error:
        return 0


def test_kill_9_at_random_points_then_resume(tmp_path):
    n, out = 100, tmp_path / "killed"
    cmd = [sys.executable, "-m", "pellucid.cli", "batch", "digits-test", "--limit", str(n), "--batch-size", "4",
           "--metric-steps", "0", "--out", str(out), "--no-progress"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    rng, kills = random.Random(0), 0
    for _ in range(3):
        stop_at = _count_rows(out / "results.sqlite") + rng.randint(4, 24)
        log = open(tmp_path / f"run{kills}.log", "w")  # noqa: SIM115
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.time() + 120
        while proc.poll() is None and _count_rows(out / "results.sqlite") < stop_at and time.time() < deadline:
            time.sleep(0.005)
        time.sleep(rng.uniform(0, 0.02))  # a random moment of a batch: model passes, file writes or commit
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            kills += 1
        proc.wait()
        log.close()
        if proc.returncode not in (0, -signal.SIGKILL):
            raise AssertionError(f"the batch job failed: {(tmp_path / f'run{kills}.log').read_text()[-2000:]}")
    before = {r["key"]: r["finished_at"] for r in pl.read_results(out)}
    assert kills >= 2 and 0 < len(before) < n
    assert subprocess.run(cmd, env=env, capture_output=True, timeout=300).returncode == 0
    rows = pl.read_results(out)
    assert sorted(r["position"] for r in rows) == list(range(n)) and all(r["status"] == "done" for r in rows)
    assert all(r["finished_at"] == before[r["key"]] for r in rows if r["key"] in before), "a finished image was redone"
    assert leftovers(out) == []
    ref = tmp_path / "ref"
    pl.explain_dataset("digits-test", ref, metric_steps=0, limit=n, batch_size=4, progress=False, report=False)
    got, want = maps_of(out, "saliency"), maps_of(ref, "saliency")
    assert got.keys() == want.keys() and len(got) == n
    assert all(np.array_equal(got[k], want[k]) for k in want)
    assert len(list((out / "overlays").rglob("*.png"))) == n


def test_a_job_killed_inside_a_commit_is_read_without_changing_its_folder(tmp_path):
    """kill -9 while a commit writes its pages leaves a hot journal: a read-only reader cannot roll it back, so
    read_results reads a rolled-back copy (the committed rows) and the job's files stay as they are."""
    from pellucid.batch.store import ResultStore

    out = tmp_path / "job"
    out.mkdir()
    store = ResultStore(out, ["saliency"])
    store.commit([{"key": f"k{i}", "position": i, "status": "done", "label": i % 10} for i in range(7)])
    store.close()
    table = out / "results.sqlite"
    killed = subprocess.run([sys.executable, "-c", f"""
import os, signal, sqlite3
db = sqlite3.connect({str(table)!r})
db.execute("PRAGMA cache_size = 1")  # pages go to the file (and the old ones to the journal) before the commit
db.execute("BEGIN")
db.executemany("INSERT INTO results (key, position, status) VALUES (?, ?, 'done')",
               [("x" * 300 + str(i), 100 + i) for i in range(3000)])
os.kill(os.getpid(), signal.SIGKILL)
"""], timeout=60)
    assert killed.returncode == -signal.SIGKILL
    journal = out / "results.sqlite-journal"
    assert journal.is_file() and journal.stat().st_size > 0
    files = {p.name: p.read_bytes() for p in out.iterdir()}
    rows = pl.read_results(out)
    assert [(r["key"], r["position"], r["label"]) for r in rows] == [(f"k{i}", i, i % 10) for i in range(7)]
    assert [r["key"] for r in pl.read_results(out, "done")] == [f"k{i}" for i in range(7)]
    assert {p.name: p.read_bytes() for p in out.iterdir()} == files, "reading changed the job's folder"
    resumed = ResultStore(out, ["saliency"])  # the job's own read-write open rolls the journal back: same rows
    assert resumed.finished() == {f"k{i}" for i in range(7)}
    resumed.close()
    assert not journal.exists()


def test_cli_batch_writes_table_maps_and_report(tmp_path, capsys):
    assert main(["batch", "digits-test", "--limit", "6", "--out", str(tmp_path), "--no-progress"]) == 0
    assert "6 explained, 0 failed" in capsys.readouterr().out
    assert len(maps_of(tmp_path, "saliency")) == 6 and (tmp_path / "report.html").exists()
    assert main(["batch", "digits-test", "--methods", "bogus", "--out", str(tmp_path)]) == 2
    assert "unknown method 'bogus'" in capsys.readouterr().err


def test_ray_missing_is_a_clear_error(monkeypatch):
    from pellucid.dataset import stage as dataset_stage

    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(pl.PellucidError, match="pip install 'pellucid\\[ray\\]'"):
        dataset_stage._ray()


# ---------------------------------------------------------------------------------------------
# Ray Data, locally


@pytest.fixture(scope="module")
def ray_local():
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.data")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def _ray_equals_local(tmp_path, method: str, n: int = 200):
    kw = dict(methods=method, limit=n, batch_size=25, metric_steps=0, progress=False)
    local = pl.explain_dataset("digits-test", tmp_path / "local", report=False, **kw)
    ray = pl.explain_dataset("digits-test", tmp_path / "ray", engine="ray", ray_workers=2, **kw)
    assert local.done == ray.done == n
    a, b = maps_of(tmp_path / "local", method), maps_of(tmp_path / "ray", method)
    assert a.keys() == b.keys() and len(a) == n
    assert all(np.array_equal(a[k], b[k]) for k in a)
    drop = ("finished_at", "seconds")
    rows_a = [{k: v for k, v in r.items() if k not in drop} for r in pl.read_results(tmp_path / "local")]
    rows_b = [{k: v for k, v in r.items() if k not in drop} for r in pl.read_results(tmp_path / "ray")]
    assert rows_a == rows_b
    assert leftovers(tmp_path / "ray") == [] and (tmp_path / "ray" / "report.html").exists()


def test_ray_equals_local_for_saliency(tmp_path, ray_local):
    _ray_equals_local(tmp_path, "saliency")


def test_ray_equals_local_for_integrated_gradients(tmp_path, ray_local):
    _ray_equals_local(tmp_path, "ig")
