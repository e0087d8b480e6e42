"""A fresh machine and bad files (issue 15): models built on first use, `pellucid serve` stops on SIGTERM
and Ctrl-C, one pixel limit, 16-bit and transparent images read right, batch starts that write nothing
when they fail, NaN in request bodies, and a fuzz of malformed files. Every image case is a real file."""

from __future__ import annotations

import io
import json
import os
import random
import re
import signal
import sqlite3
import struct
import subprocess
import sys
import threading
import time
import urllib.request
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import pellucid as pl
from pellucid import cli
from pellucid.io import MAX_PIXELS, ImageError

ROOT = Path(__file__).resolve().parents[1]
web_deps = pytest.mark.skipif(not all(__import__("importlib").util.find_spec(m) for m in ("fastapi", "uvicorn",
                                                                                          "httpx")),
                              reason="needs pellucid[web] and httpx")


# ---------------------------------------------------------------------------------------------
# real files, made here

def png_with_size(width: int, height: int) -> bytes:
    """A 67-byte PNG whose header claims ``width x height`` pixels (a decompression bomb's header)."""
    buf = io.BytesIO()
    Image.new("L", (1, 1)).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    ihdr = bytearray(data[12:29])  # chunk type + 13 bytes of IHDR
    ihdr[4:12] = struct.pack(">II", width, height)
    data[12:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(ihdr)))
    return bytes(data)


def gradient16(path: Path, h: int = 28, w: int = 28) -> np.ndarray:
    """A 16-bit gray PNG of a gradient over the full 0..65535 range; returns its values / 65535."""
    v = np.linspace(0, 65535, h * w).round().astype(np.uint16).reshape(h, w)
    Image.fromarray(v).save(path)
    with Image.open(path) as img:
        assert img.mode.startswith("I"), img.mode  # PIL really wrote (and reads) 16 bits
    return v / 65535.0


def transparent_square(path: Path, side: int = 28) -> None:
    """An RGBA PNG: a fully transparent background (black in its colour channels) and an opaque dark square."""
    a = np.zeros((side, side, 4), np.uint8)
    a[side // 4 : 3 * side // 4, side // 4 : 3 * side // 4] = (40, 40, 40, 255)
    Image.fromarray(a, "RGBA").save(path)


def png_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------
# 5: one pixel limit, one message

def test_a_decompression_bomb_is_refused_alike_everywhere(tmp_path, capsys):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_with_size(20000, 20000))
    mid = tmp_path / "mid.png"  # between pellucid's limit and PIL's: refused by pellucid's, not decoded
    mid.write_bytes(png_with_size(10000, 10000))
    assert bomb.stat().st_size < 100 and mid.stat().st_size < 100
    for path in (bomb, mid):
        with pytest.raises(ImageError, match=rf"too large: .*at most {MAX_PIXELS:,} pixels") as e:
            pl.load_image(path, size=(28, 28))
        assert e.value.kind == "too large"
        assert cli.main(["explain", str(path), "--out", str(tmp_path / "x.png")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "too large" in err[0] and "Traceback" not in err[0], err


# ---------------------------------------------------------------------------------------------
# 6: 16-bit and transparent images

def test_16_bit_png_keeps_its_grey_levels(tmp_path):
    want = gradient16(tmp_path / "g16.png")
    x = pl.load_image(tmp_path / "g16.png", size=(28, 28), channels=1)
    assert np.abs(x[0, 0].numpy() - want).max() <= 0.5 / 255 + 1e-6  # 8-bit rounding, not binarized
    assert 0.45 < float(x.mean()) < 0.55


def test_transparent_background_is_composited_on_white(tmp_path):
    transparent_square(tmp_path / "rgba.png")
    for channels in (1, 3):
        x = pl.load_image(tmp_path / "rgba.png", size=(28, 28), channels=channels)[0]
        assert torch.allclose(x[:, 0, 0], torch.ones(channels))  # the transparent corner is white
        assert torch.allclose(x[:, 14, 14], torch.full((channels,), 40 / 255))  # the square keeps its colour
    gray_alpha = np.zeros((28, 28, 2), np.uint8)
    gray_alpha[10:18, 10:18] = (0, 255)
    Image.fromarray(gray_alpha, "LA").save(tmp_path / "la.png")
    x = pl.load_image(tmp_path / "la.png", size=(28, 28), channels=1)[0, 0]
    assert float(x[0, 0]) == 1.0 and float(x[14, 14]) == 0.0


# ---------------------------------------------------------------------------------------------
# 7, 9, 10: the batch job

def test_a_failed_batch_start_writes_nothing_so_its_advice_can_be_followed(tmp_path, capsys):
    out = tmp_path / "out"
    assert cli.main(["batch", "digits-test", "--model", "resnet18", "--out", str(out), "--limit", "1"]) == 2
    err = capsys.readouterr().err
    assert "random" in err and len(err.strip().splitlines()) == 1
    assert not (out / "job.json").exists()
    res = pl.explain_dataset("digits-test", out, "resnet18", weights="random", limit=1, metric_steps=0,
                             progress=False, report=False)  # the advice, followed: accepted
    assert res.done == 1


def test_batch_arguments_name_the_flag_and_fail_before_any_work(tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    assert cli.main(["batch", "digits-test", "--attack", "fgsm", "--eps", "-1", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "--eps" in err and "eps_max" not in err and "-1" in err and len(err.splitlines()) == 1
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert cli.main(["batch", "digits-test", "--device", "cuda", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "'cuda'" in err and "--device cpu" in err and len(err.splitlines()) == 1
    assert cli.main(["batch", "digits-test", "--device", "gpu0", "--out", str(out)]) == 2
    assert "unknown device 'gpu0'" in capsys.readouterr().err
    assert not out.exists()
    with pytest.raises(pl.PellucidError, match=r"eps must be a number > 0.*got nan"):
        pl.explain_dataset("digits-test", out, attack="fgsm", eps=float("nan"))


def test_attack_with_zero_steps_is_one_line_and_exit_2(tmp_path, capsys):
    assert cli.main(["attack", "--eps", "0.1", "--steps", "0", "-n", "1", "--out", str(tmp_path / "a.png")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "steps" in err[0] and "0" in err[0]


def _rows(out: Path) -> dict[str, dict]:
    with sqlite3.connect(out / "results.sqlite") as db:
        db.row_factory = sqlite3.Row
        return {r["key"]: dict(r) for r in db.execute("SELECT * FROM results")}


def test_batch_deletes_only_its_own_temporaries_and_skips_its_output_folder(tmp_path):
    src = tmp_path / "images"
    src.mkdir()
    x, _ = pl.sample_images("digits", n=2)
    for i in range(2):
        pl.save_image(x[i], src / f"d{i}.png")
    out = src / "results"  # the output folder inside the input folder
    pl.explain_dataset(str(src), out, metric_steps=0, progress=False, report=False)
    assert sorted(_rows(out)) == ["d0.png", "d1.png"]  # its own maps and overlays are not inputs
    theirs = [out / ".notes.tmp", out / "data" / ".cache.tmp", src / ".x.tmp"]  # put into the job's folder later
    for p in theirs:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("someone else's")
    ours = out / "maps" / "saliency" / ".pellucid-d0.png.npy.123.tmp"  # what a killed run leaves
    ours.write_bytes(b"half")
    again = pl.explain_dataset(str(src), out, metric_steps=0, progress=False, report=False)
    assert all(p.read_text() == "someone else's" for p in theirs)
    assert not ours.exists()
    assert again.done == again.failed == 0 and again.skipped == 2


def test_symlink_loops_and_unreadable_files_get_failed_rows(tmp_path, monkeypatch):
    src = tmp_path / "images"
    src.mkdir()
    pl.save_image(pl.sample_images("digits", n=1)[0][0], src / "ok.png")
    os.symlink("loop.png", src / "loop.png")  # a link to itself
    os.symlink("nowhere.png", src / "broken.png")
    locked = src / "locked.png"
    pl.save_image(pl.sample_images("digits", n=1)[0][0], locked)
    locked.chmod(0)
    if os.access(locked, os.R_OK):  # root reads any file: make the read fail as it would for a user
        import pellucid.io as pio

        real_open = open

        def no_permission(path, *args, **kw):
            if Path(path).name == "locked.png":
                raise PermissionError(13, "Permission denied", str(path))
            return real_open(path, *args, **kw)

        monkeypatch.setattr(pio, "open", no_permission, raising=False)
    try:
        res = pl.explain_dataset(str(src), tmp_path / "out", metric_steps=0, progress=False, report=False)
    finally:
        locked.chmod(0o644)
    rows = _rows(tmp_path / "out")
    assert res.done == 1 and res.failed == 3 and rows["ok.png"]["status"] == "done"
    assert "symbolic link loop" in rows["loop.png"]["reason"] and rows["loop.png"]["status"] == "failed"
    assert "broken symbolic link" in rows["broken.png"]["reason"]
    assert "permission denied" in rows["locked.png"]["reason"] and "PNG" not in rows["locked.png"]["reason"]


def test_batch_rows_for_bombs_16_bit_and_transparent_files(tmp_path):
    src = tmp_path / "images"
    src.mkdir()
    (src / "bomb.png").write_bytes(png_with_size(20000, 20000))
    want = gradient16(src / "g16.png")
    transparent_square(src / "rgba.png")
    out = tmp_path / "out"
    pl.explain_dataset(str(src), out, metric_steps=0, progress=False, report=False)
    rows = _rows(out)
    assert rows["bomb.png"]["status"] == "failed" and f"at most {MAX_PIXELS:,} pixels" in rows["bomb.png"]["reason"]
    assert rows["g16.png"]["status"] == rows["rgba.png"]["status"] == "done"
    # the overlay's first panel is the image as the job read it (gray, enlarged 4x)
    with Image.open(out / "overlays" / "g16.png.png") as img:
        panel = np.asarray(img.convert("L"))[::4, :112:4] / 255.0
    assert np.abs(panel - want).max() <= 1.5 / 255


# ---------------------------------------------------------------------------------------------
# the web page: models built on first use, text models refused, files and bodies that are 4xx

@pytest.fixture
def counted_app():
    from pellucid.web import create_app

    built = []

    def loader(name):
        def load():
            built.append(name)
            return pl.load_model("digits")
        return load

    app = create_app({"digits": loader("digits"), "other": loader("other")},
                     unavailable={"fancy": "needs the fancy package, which is not installed: pip install fancy"})
    return app, built


@web_deps
def test_the_model_list_answers_at_once_and_builds_nothing(counted_app):
    from fastapi.testclient import TestClient

    app, built = counted_app
    with TestClient(app, base_url="http://127.0.0.1") as c:
        info = c.get("/api/models").json()
        assert built == []  # listing loaded no model
        states = {m["name"]: (m["state"], m["offered"]) for m in info["models"]}
        assert states == {"digits": ("not built yet", True), "other": ("not built yet", True),
                          "fancy": ("needs an extra", False)}
        fancy = c.get("/api/samples?model=fancy")
        assert fancy.status_code == 400 and "pip install fancy" in fancy.json()["detail"]
        text = c.get("/api/samples?model=langid")
        assert text.status_code == 400 and "text model" in text.json()["detail"]
        assert "explain-text" in text.json()["detail"] and built == []
        chosen = c.get("/api/models/digits").json()  # the page's choice builds it
        assert chosen["state"] == "ready" and chosen["labels"] == [str(i) for i in range(10)]
        assert built == ["digits"]
        assert len(c.get("/api/samples?model=digits").json()["samples"]) > 0 and built == ["digits"]
        assert {m["name"]: m["state"] for m in c.get("/api/models").json()["models"]}["other"] == "not built yet"


@web_deps
def test_serve_offers_image_built_ins_only_and_needs_no_text_extra(monkeypatch):
    from pellucid.web import catalog

    monkeypatch.setitem(sys.modules, "wordfreq", None)  # pellucid[web] only: import wordfreq fails
    models = catalog.builtin_models()
    assert "langid" not in models and {"digits", "digits-nobn"} <= set(models)
    import dataclasses

    from pellucid import registry

    nobn = dataclasses.replace(registry.models()["digits-nobn"], extra="nosuch", needs="no_such_module_here")
    monkeypatch.setitem(registry._MODELS, "digits-nobn", nobn)
    assert "pip install 'pellucid[nosuch]'" in catalog.builtin_models()["digits-nobn"][2]
    assert catalog.builtin_models()["digits"][2] is None


@web_deps
def test_nan_and_infinity_in_request_bodies_are_4xx_that_name_the_value():
    from fastapi.testclient import TestClient

    from pellucid.web import create_app

    with TestClient(create_app({"digits": pl.load_model("digits")}), base_url="http://127.0.0.1") as c:
        image = c.get("/api/samples?model=digits").json()["samples"][0]["image"]
        start = f'{{"image": "{image}"'
        for body, field in ((start + ', "kind": "fgsm", "eps": NaN}', "eps"),
                            (start + ', "kind": "fgsm", "eps": Infinity}', "eps"),
                            (start + ', "steps": -Infinity}', "steps"), (start + ', "target": NaN}', "target")):
            r = c.post("/api/attack", content=body, headers={"Content-Type": "application/json"})
            assert r.status_code == 422, (body, r.status_code, r.text)
            detail = r.json()["detail"]
            assert detail[0]["loc"][-1] == field and re.search(r"NaN|Infinity", detail[0]["msg"]), detail
        r = c.post("/api/visualize", content='{"steps": NaN}', headers={"Content-Type": "application/json"})
        assert r.status_code == 422 and "NaN" in r.json()["detail"][0]["msg"]


@web_deps
def test_uploads_of_bombs_16_bit_and_transparent_images(tmp_path):
    from fastapi.testclient import TestClient

    from pellucid.web import create_app

    with TestClient(create_app({"digits": pl.load_model("digits")}), base_url="http://127.0.0.1") as c:
        r = c.post("/api/image", content=png_with_size(20000, 20000))
        assert r.status_code == 413 and f"at most {MAX_PIXELS:,} pixels" in r.json()["detail"]
        want = gradient16(tmp_path / "g16.png")
        r = c.post("/api/image", content=(tmp_path / "g16.png").read_bytes())
        assert r.status_code == 200, r.text
        held = c.app.state.server.picture(r.json()["image"]).image[0].numpy() / 255.0
        assert np.abs(held - want).max() <= 0.5 / 255 + 1e-6
        transparent_square(tmp_path / "rgba.png")
        r = c.post("/api/image", content=(tmp_path / "rgba.png").read_bytes())
        held = c.app.state.server.picture(r.json()["image"]).image
        assert held[:, 0, 0].tolist() == [255, 255, 255] and held[:, 14, 14].tolist() == [40, 40, 40]


# ---------------------------------------------------------------------------------------------
# `pellucid serve` on an empty cache: the address at once, stops on SIGTERM / Ctrl-C while training

def _get(port: int, path: str, timeout: float = 60) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        body = e.read()
        try:
            return e.code, json.loads(body or b"null")
        except ValueError:
            return e.code, {"detail": body.decode("latin-1")}


def _get_quietly(port: int, path: str, timeout: float) -> None:
    """A request whose answer does not matter (the server stops while it runs)."""
    try:
        _get(port, path, timeout)
    except OSError:
        pass


@web_deps
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_serve_on_an_empty_cache_answers_at_once_and_stops_while_training(tmp_path, sig):
    cache = tmp_path / "cache"
    env = {**os.environ, "PELLUCID_CACHE": str(cache), "XDG_CACHE_HOME": str(tmp_path / "xdg"),
           "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen([sys.executable, "-m", "pellucid.cli", "serve", "--port", "0"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        line = proc.stdout.readline()
        match = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
        assert match, f"serve printed {line!r}"
        port = int(match.group(1))
        status, info = _get(port, "/api/models", timeout=10)
        assert status == 200  # the list does not train (the state and the missing checkpoint say so)
        names = {m["name"]: m["state"] for m in info["models"]}
        assert "langid" not in names and names["digits"] == "not built yet", names
        assert not (cache / "digits.pt").exists()
        threading.Thread(target=_get_quietly, args=(port, "/api/models/digits", 120), daemon=True).start()  # trains
        time.sleep(4.0)  # reading the digits, then training
        assert proc.poll() is None
        proc.send_signal(sig)
        start = time.perf_counter()
        try:
            proc.wait(8)
        except subprocess.TimeoutExpired:
            pytest.fail(f"`pellucid serve` did not stop within 8 s of {sig.name}")
        assert time.perf_counter() - start < 6.0, f"stopped {time.perf_counter() - start:.1f} s after {sig.name}"
        assert not (cache / "digits.pt").exists()  # the stopped training wrote no checkpoint
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# ---------------------------------------------------------------------------------------------
# fuzz: malformed files get PellucidError (API), a 4xx (web) and a failed row (batch), never a crash

def malformed_files(seed: int = 0, n: int = 100) -> list[tuple[str, bytes]]:
    """``n`` named byte strings: truncated and bit-flipped PNG/JPEG/WebP, random bytes, other formats."""
    rng = random.Random(seed)
    img = np.asarray(Image.fromarray((np.random.default_rng(seed).random((24, 20, 3)) * 255).astype(np.uint8)))
    valid = {}
    for fmt in ("PNG", "JPEG", "WEBP", "GIF", "TIFF", "BMP"):
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, fmt)
        valid[fmt] = buf.getvalue()
    cases = [("empty.png", b""), ("bomb.png", png_with_size(20000, 20000)), ("huge-side.png", png_with_size(1, 10**7)),
             ("zero-size.png", png_with_size(0, 0)), ("text.png", b"not an image at all\n" * 20)]
    cases += [(f"valid.{fmt.lower()}", data) for fmt, data in valid.items()]
    while len(cases) < n:
        fmt = rng.choice(list(valid))
        data = bytearray(valid[fmt])
        kind = rng.choice(["truncate", "flip", "random", "header"])
        if kind == "truncate":
            data = data[: rng.randrange(1, len(data))]
        elif kind == "flip":
            for _ in range(rng.randint(1, 8)):
                data[rng.randrange(len(data))] = rng.randrange(256)
        elif kind == "random":
            data = bytearray(rng.randbytes(rng.randint(1, 400)))
        else:
            data = data[:16] + rng.randbytes(rng.randint(0, 64))
        cases.append((f"{kind}-{len(cases)}.{rng.choice(['png', 'jpg', 'webp', 'gif', 'txt'])}", bytes(data)))
    return cases


def test_fuzz_load_image_gets_a_tensor_or_a_pellucid_error(tmp_path):
    outcomes = {"ok": 0, "refused": 0}
    for name, data in malformed_files():
        path = tmp_path / name
        path.write_bytes(data)
        try:
            x = pl.load_image(path, size=(28, 28), channels=1)
        except pl.PellucidError as e:
            assert str(e) and "\n" not in str(e), name
            outcomes["refused"] += 1
        else:
            assert x.shape == (1, 1, 28, 28) and torch.isfinite(x).all() and 0 <= x.min() and x.max() <= 1, name
            outcomes["ok"] += 1
    assert outcomes["refused"] > 50 and outcomes["ok"] >= 6  # the six valid files (any PIL format) load
    for missing in (tmp_path / "nope.png", tmp_path):  # a path that does not exist, a folder
        with pytest.raises(ImageError):
            pl.load_image(missing)


@web_deps
def test_fuzz_uploads_are_200_or_4xx_never_500():
    from fastapi.testclient import TestClient

    from pellucid.web import create_app

    with TestClient(create_app({"digits": pl.load_model("digits")}), base_url="http://127.0.0.1") as c:
        for name, data in malformed_files(seed=1):
            r = c.post("/api/image", content=data)
            assert r.status_code == 200 or 400 <= r.status_code < 500, (name, r.status_code, r.text)
            if r.status_code != 200:
                assert isinstance(r.json()["detail"], str) and r.json()["detail"], name


def test_fuzz_batch_records_every_bad_file_as_a_failed_row(tmp_path):
    src = tmp_path / "images"
    src.mkdir()
    files = malformed_files(seed=2, n=40)
    for name, data in files:
        (src / name).write_bytes(data)
    res = pl.explain_dataset(str(src), tmp_path / "out", metric_steps=0, batch_size=16, progress=False, report=False)
    rows = _rows(tmp_path / "out")
    assert len(rows) == len(files) == res.done + res.failed
    assert all(r["reason"] for r in rows.values() if r["status"] == "failed")
