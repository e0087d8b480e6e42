"""The second bad-input audit, images and folders (issue 30): EXIF orientation, batch folders and databases
that are not pellucid's, I/O edges, silently ignored arguments, glyphs drawn by their alpha channel, and
the length cap of text explanations. Every image case is a real file made here."""

from __future__ import annotations

import io
import json
import os
import sqlite3
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

import pellucid as pl
from pellucid import cli
from pellucid.batch import store
from pellucid.dataset import Item, load_item
from pellucid.io import MAX_PIXELS, decode_image

# how each EXIF orientation was stored: the transpose that turns the upright image into the stored one
STORED = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
          5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_90, 7: Image.Transpose.TRANSVERSE,
          8: Image.Transpose.ROTATE_270}
UNDO = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
        5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
        8: Image.Transpose.ROTATE_90}


def upright_array(h: int = 10, w: int = 17) -> np.ndarray:
    """A non-square RGB image with no symmetry, so every wrong orientation differs from it."""
    return (np.random.default_rng(3).random((h, w, 3)) * 255).astype(np.uint8)


def smooth_array(h: int = 24, w: int = 40) -> np.ndarray:
    """A smooth RGB image (JPEG keeps it closely) that no flip or rotation maps onto itself."""
    yy, xx = np.mgrid[0:h, 0:w] / np.array([h, w])[:, None, None]
    return (np.dstack([yy, xx, yy * xx ** 2]) * 255).round().astype(np.uint8)


def sideways(path: Path, arr: np.ndarray, orientation: int) -> None:
    """``arr`` stored as a phone stores it: transposed, with the EXIF tag that says how to show it."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    extra = {"quality": 95, "subsampling": 0} if path.suffix == ".jpg" else {}
    Image.fromarray(arr).transpose(STORED[orientation]).save(path, exif=exif, **extra)


def as_uint8(x: torch.Tensor) -> np.ndarray:
    """``(1, C, H, W)`` in [0, 1] as the ``(H, W, C)`` uint8 it was decoded from."""
    return (x[0] * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()


def files_of(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def foreign_sqlite(path: Path) -> None:
    """Another application's SQLite file that happens to have a ``results`` table."""
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE results (run TEXT, score REAL)")
        db.execute("INSERT INTO results VALUES ('exp1', 0.5)")
    db.close()


def glyph_mask(side: int = 56) -> np.ndarray:
    mask = Image.new("L", (side, side), 0)
    ImageDraw.Draw(mask).line([(14, 10), (40, 10), (24, 46)], fill=255, width=6)
    return np.asarray(mask)


def on_transparency(mask: np.ndarray, colour: int, hidden: int) -> np.ndarray:
    """An RGBA glyph whose shape lives in alpha: colour ``colour``, transparent pixels stored as ``hidden``."""
    a = np.zeros((*mask.shape, 4), np.uint8)
    a[..., :3] = np.where(mask[..., None] > 0, colour, hidden)
    a[..., 3] = mask
    return a


# ---------------------------------------------------------------------------------------------
# 1: EXIF orientation, in the one decoder (API, uploads, batch items)

@pytest.mark.parametrize("orientation", [5, 6, 7, 8, 2])
def test_exif_orientation_png_is_applied(tmp_path, orientation):
    up = upright_array()
    sideways(tmp_path / "phone.png", up, orientation)
    assert np.array_equal(as_uint8(pl.load_image(tmp_path / "phone.png")), up)
    data = (tmp_path / "phone.png").read_bytes()
    assert np.array_equal(decode_image(data).permute(1, 2, 0).numpy(), up)  # the web page's uploads
    item = Item(0, "phone.png", str(tmp_path / "phone.png"))
    x = load_item(item, (3, *up.shape[:2]), MAX_PIXELS)  # the batch job's images
    assert np.array_equal(as_uint8(x[None]), up)


@pytest.mark.parametrize("orientation", [6, 8, 3, 4])
def test_exif_orientation_jpeg_is_applied(tmp_path, orientation):
    up = smooth_array()
    path = tmp_path / "phone.jpg"
    sideways(path, up, orientation)
    with Image.open(path) as img:  # the stored pixels, turned upright by hand
        want = np.asarray(img.convert("RGB").transpose(UNDO[orientation]))
    got = as_uint8(pl.load_image(path))
    assert got.shape == up.shape and np.array_equal(got, want)
    assert np.abs(got.astype(int) - up).mean() < 3  # and it is the upright picture (JPEG noise aside)


# ---------------------------------------------------------------------------------------------
# 2: batch folders and databases that are not pellucid's

def run(out, **kw):
    args = {"limit": 2, "metric_steps": 0, "progress": False, "report": False, **kw}
    return pl.explain_dataset("digits-test", out, **args)


def test_a_folder_the_job_did_not_make_is_refused_and_left_byte_identical(tmp_path, capsys):
    out = tmp_path / "mine"
    (out / "sub").mkdir(parents=True)
    (out / "report.html").write_text("<p>my own report</p>")
    (out / ".pellucid-draft.tmp").write_text("my notes")
    (out / "sub" / ".pellucid-a.npy.77.tmp").write_bytes(b"mine too")
    foreign_sqlite(out / "results.sqlite")
    Image.new("RGB", (9, 9), "red").save(out / "photo.png")
    before = files_of(out)
    with pytest.raises(pl.PellucidError, match=r"not a pellucid batch folder.*\.pellucid-draft\.tmp.*new or empty"):
        run(out, report=True)
    assert cli.main(["batch", "digits-test", "--limit", "2", "--metric-steps", "0", "--no-progress",
                     "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(out) in err[0]
    assert files_of(out) == before  # nothing overwritten, deleted or added (no .lock either)
    with pytest.raises(pl.PellucidError, match=r"results.sqlite.*not a pellucid results table.*other columns"):
        pl.read_results(out)
    assert files_of(out) == before


@pytest.mark.parametrize("text, why", [("{not json", "not JSON"), ("[1, 2]", "not an object"),
                                       ('{"name": "my-tool", "hash": 7}', "no \"format\"")])
def test_a_job_json_that_is_not_the_jobs_is_one_clear_line(tmp_path, capsys, text, why):
    out = tmp_path / "out"
    out.mkdir()
    (out / "job.json").write_text(text)
    with pytest.raises(pl.PellucidError, match=rf"job\.json.*not a pellucid job file.*{why}"):
        run(out)
    assert cli.main(["batch", "digits-test", "--limit", "1", "--no-progress", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "job.json" in err[0]
    assert files_of(out) == {"job.json": text.encode()}


def test_a_results_database_that_is_not_pellucids_is_refused_by_job_and_reader(tmp_path, capsys):
    out = tmp_path / "out"
    run(out)
    assert len(pl.read_results(out)) == 2
    (out / "results.sqlite").write_bytes(os.urandom(3000))
    junk = (out / "results.sqlite").read_bytes()
    for call in (lambda: run(out), lambda: pl.read_results(out)):
        with pytest.raises(pl.PellucidError, match=r"results\.sqlite.*not a SQLite database.*move the file away"):
            call()
    assert cli.main(["batch", "digits-test", "--limit", "2", "--metric-steps", "0", "--no-progress",
                     "--out", str(out)]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert (out / "results.sqlite").read_bytes() == junk
    (out / "results.sqlite").unlink()
    foreign_sqlite(out / "results.sqlite")
    theirs = (out / "results.sqlite").read_bytes()
    with pytest.raises(pl.PellucidError, match=r"other columns \(run, score\)"):
        run(out)
    assert (out / "results.sqlite").read_bytes() == theirs
    with sqlite3.connect(out / "results.sqlite") as db:
        db.execute("PRAGMA application_id = 1234")
    with pytest.raises(pl.PellucidError, match="another application's database"):
        pl.read_results(out)


def test_the_jobs_own_folder_and_table_are_recognized_and_resumed(tmp_path):
    out = tmp_path / "out"
    first = run(out)
    meta = json.loads((out / "job.json").read_text())
    assert meta["format"] == store.MARK
    with sqlite3.connect(out / "results.sqlite") as db:
        assert db.execute("PRAGMA application_id").fetchone()[0] == store.APPLICATION_ID
    db.close()
    (out / "mine.txt").write_text("a note the user put beside the results")
    (out / "overlays" / ".pellucid-sketch.tmp").write_text("not a temporary of the job")
    again = run(out)
    assert (first.done, again.skipped) == (2, 2)
    assert (out / "mine.txt").exists() and (out / "overlays" / ".pellucid-sketch.tmp").exists()
    legacy = {"hash": meta["hash"], "config": meta["config"]}  # written before the mark: still the job's
    (out / "job.json").write_text(json.dumps(legacy))
    assert run(out).skipped == 2
    assert json.loads((out / "job.json").read_text())["format"] == store.MARK


def test_read_results_refuses_an_unknown_status(tmp_path):
    run(tmp_path / "out")
    assert [r["status"] for r in pl.read_results(tmp_path / "out", status="done")] == ["done", "done"]
    with pytest.raises(pl.PellucidError, match=r"unknown status 'finished'.*done, failed"):
        pl.read_results(tmp_path / "out", status="finished")


def test_out_that_is_a_file_or_under_a_file_and_a_bad_model(tmp_path):
    (tmp_path / "f.txt").write_text("x")
    with pytest.raises(pl.PellucidError, match="is a file, not a folder"):
        run(tmp_path / "f.txt")
    with pytest.raises(pl.PellucidError, match="f.txt' is a file, not a folder"):
        run(tmp_path / "f.txt" / "out")
    with pytest.raises(pl.PellucidError, match=r"model must be a model's name.*got float 4\.5"):
        run(tmp_path / "o", model=4.5)
    assert not (tmp_path / "o").exists() and (tmp_path / "f.txt").read_text() == "x"


# ---------------------------------------------------------------------------------------------
# 3 and 4: I/O edges and silently ignored arguments

@pytest.fixture
def photo(tmp_path) -> Path:
    Image.fromarray((np.random.default_rng(0).random((30, 44, 3)) * 255).astype(np.uint8)).save(tmp_path / "p.png")
    return tmp_path / "p.png"


@pytest.mark.parametrize("size", [(0, 7), (-3, 9), (12,), "big"])
def test_load_image_refuses_a_bad_size(photo, size):
    with pytest.raises(pl.PellucidError, match=r"size must be \(height, width\).*ints >= 1"):
        pl.load_image(photo, size=size)


def test_load_image_size_as_one_int_is_a_square(photo):
    assert pl.load_image(photo, size=9).shape == (1, 3, 9, 9)


@pytest.mark.parametrize("channels", [0, 5, 2.0, "rgb"])
def test_load_image_refuses_channels_other_than_1_and_3(photo, channels):
    with pytest.raises(pl.PellucidError, match="channels must be 1 .grey. or 3 .RGB."):
        pl.load_image(photo, channels=channels)


@pytest.mark.parametrize("source", [None, 17, ["a.png"]])
def test_load_image_refuses_what_is_not_a_path(source):
    with pytest.raises(pl.PellucidError, match="file path .str or pathlib.Path."):
        pl.load_image(source)


def test_load_images_of_nothing_or_one_path(photo):
    for empty in ((), iter([])):
        with pytest.raises(pl.PellucidError, match="no image files given"):
            pl.load_images(empty)
    assert pl.load_images(str(photo), size=(5, 6)).shape == (1, 3, 5, 6)


def test_load_image_takes_a_model_name_and_refuses_other_models(photo):
    assert pl.load_image(photo, "digits").shape == (1, 1, 28, 28)
    assert torch.equal(pl.load_image(photo, "digits"), pl.load_image(photo, pl.load_model("digits")))
    assert pl.load_image(photo, "resnet18").shape == (1, 3, 224, 224)
    with pytest.raises(pl.PellucidError, match="unknown model 'digitz'.*digits"):
        pl.load_image(photo, "digitz")
    with pytest.raises(pl.PellucidError, match="'langid' is a text model"):
        pl.load_image(photo, "langid")
    with pytest.raises(pl.PellucidError, match=r"model must be a model.*got float 2\.5"):
        pl.load_image(photo, 2.5)
    with pytest.raises(pl.PellucidError, match=r"\(C, H, W\).*got \(64, 64\); for an output size give size="):
        pl.load_image(photo, (64, 64))


def test_save_image_converts_2d_and_uint8_and_refuses_the_rest(tmp_path):
    grey = torch.rand(6, 11)
    path = pl.save_image(grey, tmp_path / "grey.png")
    with Image.open(path) as img:
        assert img.mode == "L" and np.array_equal(np.asarray(img), (grey * 255).round().byte().numpy())
    u8 = torch.randint(0, 256, (3, 5, 4), dtype=torch.uint8)
    with Image.open(pl.save_image(u8, tmp_path / "u8.png")) as img:
        assert np.array_equal(np.asarray(img), u8.permute(1, 2, 0).numpy())
    bad = {"six channels": (torch.rand(6, 8, 8), "1 .grey., 3 .RGB. or 4 .RGBA. channels.*\\(6, 8, 8\\)"),
           "channels last": (torch.rand(8, 8, 3), "x.permute\\(2, 0, 1\\)"),
           "a batch": (torch.rand(3, 1, 8, 8), "one image, got a batch of 3"),
           "NaN": (torch.full((1, 4, 4), float("nan")), "NaN"),
           "infinity": (torch.tensor([[[0.5, float("inf")]]]), "NaN or infinite"),
           "out of range": (torch.rand(3, 4, 4) * 3 - 1, "values in \\[.*\\]; save_image writes \\[0, 1\\]"),
           "int64": (torch.ones(1, 4, 4, dtype=torch.long), "dtype torch.int64")}
    for name, (img, message) in bad.items():
        before = img.clone()
        with pytest.raises(pl.PellucidError, match=message):
            pl.save_image(img, tmp_path / f"{name}.png")
        assert not (tmp_path / f"{name}.png").exists(), name
        assert torch.allclose(img.double(), before.double(), equal_nan=True), name


def test_save_image_refuses_paths_it_cannot_write(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    for path, message in ((tmp_path / "notes.txt" / "x.png", "notes.txt' is a file, not a folder"),
                          (tmp_path, "it is a folder"), (tmp_path / "noext", "unknown extension '.none.'"),
                          (tmp_path / "a.xyz", "unknown extension '.xyz'"), (None, "file path")):
        with pytest.raises(pl.PellucidError, match=message):
            pl.save_image(torch.rand(3, 4, 4), path)
    with pytest.raises(pl.PellucidError, match="cannot write image .*RGBA"):
        pl.save_image(torch.rand(4, 4, 4), tmp_path / "rgba.jpg")
    assert (tmp_path / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_transforms_refuse_bad_ranges_when_made():
    for bad in ((), [], 0.9, (1.0, 0.0), (0.9, float("nan"))):
        with pytest.raises(pl.PellucidError, match="scale"):
            pl.random_scale(bad)
    for bad in (-3, 2.5, True):
        with pytest.raises(pl.PellucidError, match=r"jitter pixels must be an int >= 0"):
            pl.jitter(bad)
    with pytest.raises(pl.PellucidError, match="roll pixels"):
        pl.roll(-2)
    with pytest.raises(pl.PellucidError, match=r"jitter\(30\) crops 30 pixels from a 28x28 image"):
        pl.jitter(30)(torch.rand(1, 1, 28, 28), torch.Generator().manual_seed(0))
    x = torch.rand(1, 1, 28, 28)
    assert pl.random_scale([1.2])(x, torch.Generator().manual_seed(0)).shape == x.shape  # one factor: a fixed zoom


def test_layer_names_refuses_a_bad_size(digits_model):
    for bad in ((1, 0, 28), (), "28", (1, 28.0, 28)):
        with pytest.raises(pl.PellucidError, match=r"size must be the model's input shape.*\(3, 224, 224\)"):
            pl.layer_names(digits_model, size=bad)
    with pytest.raises(pl.PellucidError, match=r"cannot run on an input of size \(3, 28, 28\).*\(1, 28, 28\)"):
        pl.layer_names(digits_model, size=(3, 28, 28))
    assert dict((n, s) for n, _, s in pl.layer_names(digits_model, size=(1, 28, 28)))["conv1"] == (16, 28, 28)


# ---------------------------------------------------------------------------------------------
# 5: a glyph drawn by its alpha channel

@pytest.mark.parametrize("hidden", [0, 255])  # what the transparent pixels store: black or white
def test_a_white_glyph_on_transparency_is_a_bright_stroke_on_dark(tmp_path, hidden):
    mask = glyph_mask()
    Image.fromarray(on_transparency(mask, 255, hidden), "RGBA").save(tmp_path / "glyph.png")
    for channels in (1, 3):
        x = pl.load_image(tmp_path / "glyph.png", size=(56, 56), channels=channels)[0].mean(0)
        assert float(x.std()) > 0.2  # not a constant image
        stroke, ground = x[torch.from_numpy(mask == 255)], x[torch.from_numpy(mask == 0)]
        assert float(stroke.min()) == 1.0 and float(ground.max()) == 0.0  # white on black, as the digits


def test_a_drawn_digit_reaches_the_digits_model_as_a_digit(tmp_path, digits_model):
    x, y = pl.sample_images("digits", n=4)
    for i in range(4):
        alpha = (x[i, 0] * 255).round().byte().numpy()
        rgba = np.dstack([np.full_like(alpha, 255)] * 3 + [alpha])  # white, the shape in alpha only
        Image.fromarray(rgba, "RGBA").save(tmp_path / f"d{i}.png")
        got = pl.load_image(tmp_path / f"d{i}.png", digits_model)
        assert torch.allclose(got, x[i : i + 1], atol=0.5 / 255 + 1e-6)
        assert int(digits_model(got).argmax()) == int(y[i])


def test_a_black_glyph_and_grey_alpha_glyphs_keep_their_shape(tmp_path):
    mask = glyph_mask(40)
    Image.fromarray(on_transparency(mask, 0, 0), "RGBA").save(tmp_path / "black.png")
    x = pl.load_image(tmp_path / "black.png", size=(40, 40), channels=1)[0, 0]
    assert float(x[torch.from_numpy(mask == 255)].max()) == 0.0 and float(x[torch.from_numpy(mask == 0)].min()) == 1.0
    la = np.dstack([np.full_like(mask, 250), mask])  # a light grey glyph in an LA file
    Image.fromarray(la, "LA").save(tmp_path / "la.png")
    x = pl.load_image(tmp_path / "la.png", size=(40, 40), channels=1)[0, 0]
    assert float(x[torch.from_numpy(mask == 0)].max()) == 0.0 and float(x[torch.from_numpy(mask == 255)].min()) > 0.95


def test_an_ordinary_photo_with_partial_transparency_is_composited_on_white_as_before(tmp_path):
    rng = np.random.default_rng(5)
    rgb = (rng.random((24, 30, 3)) * 255).astype(np.uint8)
    alpha = np.tile(np.linspace(0, 255, 30).astype(np.uint8), (24, 1))
    Image.fromarray(np.dstack([rgb, alpha]), "RGBA").save(tmp_path / "photo.png")
    a = alpha[..., None].astype(np.uint32)
    want = ((rgb * a + 255 * (255 - a) + 127) // 255).astype(np.uint8)
    assert np.array_equal(as_uint8(pl.load_image(tmp_path / "photo.png")), want)
    buf = io.BytesIO()
    Image.fromarray(np.dstack([rgb, alpha]), "RGBA").save(buf, "PNG")
    assert np.array_equal(decode_image(buf.getvalue()).permute(1, 2, 0).numpy(), want)


# ---------------------------------------------------------------------------------------------
# 6: the length cap of text explanations

@pytest.fixture(scope="module")
def gru():
    from pellucid.models.langid import CharGRU

    torch.manual_seed(0)
    return CharGRU().eval()


def test_a_word_past_the_cap_is_refused_at_once_by_every_text_method(gru):
    from pellucid.text.attribution import MAX_WORD, TEXT_METHODS

    word = "kissa" * 1600  # 8,000 letters: minutes of work before the cap
    message = rf"word 0 \('kissakissakissakissa\.\.\.'\) has 8,000 letters; at most {MAX_WORD} are accepted"
    start = time.perf_counter()
    for call in [lambda: pl.explain_text(gru, ["talo", word])] + \
                [lambda fn=fn: fn(gru, [word]) for fn in TEXT_METHODS.values()] + [lambda: pl.hotflip(gru, word)]:
        with pytest.raises(pl.PellucidError, match=message.replace("word 0", "word [01]")) as e:
            call()
        assert len(str(e.value)) < 200
    assert time.perf_counter() - start < 20  # a loaded machine's margin; the work past the cap takes minutes
    ok = "a" * MAX_WORD  # the cap itself is accepted
    assert pl.explain_text(gru, [ok], methods=["occlusion"])["occlusion"][0].shape == (MAX_WORD,)
    with pytest.raises(pl.PellucidError, match=f"has {MAX_WORD + 1} letters"):
        pl.text_occlusion(gru, ["a" * (MAX_WORD + 1)])


def test_text_commands_refuse_a_long_word_in_one_line(gru, monkeypatch, capsys, tmp_path):
    from pellucid.text import cli as text_cli

    monkeypatch.setattr(text_cli, "load_text_model", lambda name: gru)
    word = "ab" * 2500
    assert cli.main(["explain-text", "talo", word, "--out", str(tmp_path / "t.png")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "5,000 letters" in err[0] and len(err[0]) < 250
    assert cli.main(["attack-text", word]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "5,000 letters" in err[0]
    assert not (tmp_path / "t.png").exists()
