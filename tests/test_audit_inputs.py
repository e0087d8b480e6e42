"""The second bad-input audit (issue #30): class numbers past int64, non-finite or out-of-range numeric
settings, unknown keyword arguments, the command's flags and the web page's bodies. Each bad value is a
PellucidError that names it and what is accepted; the CLI says it in one line with exit code 2 and the
web page with a 4xx, never a 500."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import pellucid as pl
from pellucid import cli
from pellucid._checks import PellucidError


@pytest.fixture(scope="module")
def two(digits_batch):
    x, y = digits_batch
    return x[:2], y[:2]


# ---------------------------------------------------------------------------------------------
# 1. class numbers past int64: one check in the target layer, inherited by the API, CLI and web page

HUGE = [(2**64 + 5, "18446744073709551621"), (-(2**70), "-1180591620717411303424"),
        ([3, 2**63 + 11], "9223372036854775819"), (np.array([1, 2**63 + 1], dtype=np.uint64), "9223372036854775809"),
        (torch.tensor([4, 2**63 + 3], dtype=torch.uint64), "9223372036854775811")]


@pytest.mark.parametrize("target, shown", HUGE, ids=["int", "negative", "list", "numpy-uint64", "torch-uint64"])
def test_class_numbers_past_int64_name_the_value_and_the_range(digits_model, two, target, shown):
    x, _ = two
    for call in (lambda: pl.saliency(digits_model, x, target), lambda: pl.fooling_image(digits_model, x, target),
                 lambda: pl.attribution_map("ig", digits_model, x, target, steps=2)):
        with pytest.raises(PellucidError, match=rf"target {shown} is out of range: the model has classes 0\.\.9"):
            call()


def test_class_numbers_past_int64_without_a_class_count(two):
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 4))  # no num_classes to check against
    x, _ = two
    with pytest.raises(PellucidError, match=r"target 36893488147419103232 is out of range: .*fits int64"):
        pl.gradient(model, x, 2**65)
    with pytest.raises(PellucidError, match=r"label -36893488147419103232 is negative: .*fits int64"):
        pl.fgsm(model, x, -(2**65), 0.1)
    with pytest.raises(PellucidError, match=r"channel 18446744073709551621 is out of range: .*fits int64"):
        pl.channel_visualization(pl.load_model("digits"), "conv2", 2**64 + 5, steps=1)


@pytest.mark.parametrize("embedding", [object(), [None, None], "a vector", torch.tensor([1.0, float("inf")])])
def test_similarity_target_refuses_what_is_not_a_finite_vector(embedding):
    with pytest.raises(PellucidError, match="similarity_target: embedding"):
        pl.similarity_target(embedding)


def test_cli_class_number_past_int64_is_one_line(tmp_path, capsys, monkeypatch, digits_model):
    from pellucid import _progress

    monkeypatch.setattr(_progress, "_drawn", False)  # no bar of an earlier test left on this (captured) line
    assert cli.main(["saliency", "-n", "2", "--target", "123456789012345678901234", "--out",
                     str(tmp_path / "s.png")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "123456789012345678901234 is out of range" in err and "0..9" in err
    assert not (tmp_path / "s.png").exists()


# ---------------------------------------------------------------------------------------------
# 3. unknown keyword arguments: a PellucidError naming the argument and the accepted ones

@pytest.mark.parametrize("call, unknown, listed", [
    (lambda m, x, y: pl.smoothgrad(m, x, y, samples=2, noise_level=0.1), "noise_level", "sigma"),
    (lambda m, x, y: pl.smoothgrad(m, x, y, samples=2, method=pl.integrated_gradients, stpes=3), "stpes", "steps"),
    (lambda m, x, y: pl.attribution_map("lime", m, x, y, n_samples=10), "n_samples", "kernel_width"),
    (lambda m, x, y: pl.attribution_map("gradcam++", m, x, y, target_layer="conv2"), "target_layer", "layer"),
    (lambda m, x, y: pl.attribution_map("gradient_shap", m, x, y, nsamples=3), "nsamples", "stdevs"),
    (lambda m, x, y: pl.explain(m, x, y, methods="saliency", fast=True), "fast", "quick"),
    (lambda m, x, y: pl.integrated_gradients(m, x, y, n_steps=4), "n_steps", "steps"),
    (lambda m, x, y: pl.occlusion(m, x, y, sliding_window=4), "sliding_window", "window"),
    (lambda m, x, y: pl.pgd(m, x, y, 0.1, 0.01, 2, restarts=2), "restarts", "random_start"),
    (lambda m, x, y: pl.fooling_image(m, x, 3, learning_rate=2.0), "learning_rate", "max_steps"),
    (lambda m, x, y: pl.class_visualization(m, 3, steps=1, l2_reg=0.1), "l2_reg", "jitter"),
    (lambda m, x, y: pl.deletion(m, x, y, "saliency", n_steps=5), "n_steps", "baseline"),
    (lambda m, x, y: pl.sanity_check(m, x, y, "saliency", layer="fc"), "layer", "layers"),
])
def test_unknown_keyword_arguments_are_named_with_the_accepted_ones(digits_model, two, call, unknown, listed):
    x, y = two
    with pytest.raises(PellucidError, match=rf"unknown argument '{unknown}'.*options are: .*\b{listed}\b"):
        call(digits_model, x, y)


def test_checked_functions_keep_their_name_docs_and_signature():
    import inspect

    for fn in (pl.saliency, pl.lime, pl.pgd, pl.class_visualization, pl.road):
        assert fn.__module__.startswith("pellucid.") and fn.__doc__ and fn.__name__ in fn.__qualname__
        params = inspect.signature(fn).parameters
        assert "model" in params and not any(p.kind is p.VAR_KEYWORD for p in params.values())
    ig = pl.registry.method("ig")
    assert "steps" in inspect.signature(ig.fn).parameters and ig.keywords is not None


# ---------------------------------------------------------------------------------------------
# 2. non-finite or out-of-range numeric settings: a PellucidError naming the setting, never a NaN result

@pytest.mark.parametrize("call, message", [
    (lambda m, x, y: pl.lime(m, x, y, samples=8, segments=8, kernel_width=0.0),
     r"kernel_width must be a finite number > 0 \(of the cosine kernel\), got 0.0"),
    (lambda m, x, y: pl.lime(m, x, y, samples=8, segments=8, kernel_width=float("-inf")), r"kernel_width .*got -inf"),
    (lambda m, x, y: pl.lime(m, x, y, samples=8, segments=8, alpha=float("-nan")), r"alpha must be a finite .*got nan"),
    (lambda m, x, y: pl.lime(m, x, y, samples=8, segments=8, alpha=np.float32("inf")), r"alpha .*> 0.*got inf"),
    (lambda m, x, y: pl.smoothgrad(m, x, y, samples=2, sigma=float("inf")), r"sigma must be a finite number >= 0"),
    (lambda m, x, y: pl.gradient_shap(m, x, y, "noise", samples=2, stdevs=float("nan")), r"stdevs .*got nan"),
    (lambda m, x, y: pl.fooling_image(m, x, 3, lr=float("nan")), r"lr must be a finite number >= 0, got nan"),
    (lambda m, x, y: pl.apgd(m, x, y, 0.1, steps=2, rho=1.5), r"rho must be a finite number in \[0, 1\]"),
    (lambda m, x, y: pl.square(m, x, y, 0.1, queries=4, p_init=0.0), r"p_init must be a finite number in \(0, 1\]"),
    (lambda m, x, y: pl.fab(m, x, y, steps=2, eta=0.5), r"eta must be a finite number >= 1, got 0.5"),
    (lambda m, x, y: pl.cw(m, x, y, steps=2, lr=float("inf")), r"lr must be a finite number > 0, got inf"),
    (lambda m, x, y: pl.deletion(m, x, y, "saliency", steps=np.int64(1)), r"steps must be an int >= 2 .*got 1"),
    (lambda m, x, y: pl.road(m, x, y, "saliency", noise=float("inf")), r"noise must be a finite number >= 0"),
    (lambda m, x, y: pl.infidelity(m, x, y, "saliency", noise=float("nan")), r"noise must be a finite .*got nan"),
    (lambda m, x, y: pl.sensitivity(m, x, y, "saliency", radius=float("inf")), r"radius .*> 0, got inf"),
    (lambda m, x, y: pl.explanation_attack(m, x, y, eps=0.05, steps=1, beta=float("nan")), r"beta .*got nan"),
    (lambda m, x, y: pl.explanation_attack(m, x, y, eps=0.05, steps=1, alpha=float("-inf")), r"alpha .*got -inf"),
    (lambda m, x, y: pl.class_visualization(m, 3, steps=2, l2=float("nan")), r"l2 must be a finite number >= 0"),
    (lambda m, x, y: pl.class_visualization(m, 3, steps=2, lr=float("inf")), r"lr must be a finite number > 0"),
    (lambda m, x, y: pl.channel_visualization(m, "conv2", 1, steps=2, blur_sigma=float("nan")), r"blur_sigma .*nan"),
    (lambda m, x, y: pl.visualize(m, pl.class_logit(1) - float("nan") * pl.l2(), steps=2), r"weight .*got nan"),
    (lambda m, x, y: pl.visualize(m, 1, steps=2, seed=float("nan")), r"seed must be an int or a torch.Generator"),
    (lambda m, x, y: pl.minimal_epsilon(m, x, y, tol=float("nan")), r"tol must be a finite number > 0, got nan"),
])
def test_non_finite_and_out_of_range_settings_name_the_setting(digits_model, two, call, message):
    x, y = two
    with pytest.raises(PellucidError, match=message):
        call(digits_model, x, y)


def test_tiny_lime_kernel_width_still_gives_a_finite_map(digits_model, two):
    x, y = two
    assert torch.isfinite(pl.lime(digits_model, x, y, samples=8, segments=8, kernel_width=1e-200)).all()


def test_batch_metric_steps_of_one_is_refused_before_anything_is_written(tmp_path):
    out = tmp_path / "job"
    with pytest.raises(PellucidError, match=r"metric_steps must be 0 or an int >= 2 .*got 1"):
        pl.explain_dataset("digits-test", out, metric_steps=1, limit=1, progress=False)
    assert not out.exists()


# ---------------------------------------------------------------------------------------------
# 6. every registered method and attack, every numeric option, every bad number: an error or a finite result

BAD_NUMBERS = [float("nan"), float("inf"), float("-inf"), -1, 0]
FAST = {"samples": 4, "segments": 6, "steps": 2, "queries": 6, "restarts": 1, "targets": 1, "top_k": 1, "window": 7,
        "stride": 7, "eps": 0.05, "alpha": 0.01, "c": 0.5, "lr": 0.01, "progress": False}  # seconds in all


def _numeric_options(fn) -> list[str]:
    """The options of ``fn`` whose default is an int or a float, and its required eps, alpha and steps."""
    import inspect

    params = inspect.signature(fn).parameters.values()
    return [p.name for p in params if (type(p.default) in (int, float))
            or (p.default is p.empty and p.name in ("eps", "alpha", "steps"))]


def _finite(result) -> bool:
    values = (result,) if isinstance(result, torch.Tensor) else result if isinstance(result, tuple) else \
        vars(result).values()
    parts = [v for v in values if isinstance(v, torch.Tensor) and v.is_floating_point()]
    return bool(parts) and all(torch.isfinite(p).all() for p in parts)


def _call_with_each_bad_number(fn, call, names) -> list[str]:
    """Call ``fn`` with each bad number for each option; the calls that neither refused nor gave finite numbers."""
    import inspect

    accepted = inspect.signature(fn).parameters
    wrong = []
    for name in names:
        for bad in BAD_NUMBERS:
            kw = {k: v for k, v in FAST.items() if k in accepted} | {name: bad}
            try:
                result = call(**kw)
            except PellucidError:
                continue
            if not _finite(result):
                wrong.append(f"{name}={bad}")
    return wrong


@pytest.mark.parametrize("name", list(pl.registry.methods()))
def test_every_method_refuses_or_stays_finite_on_bad_numbers(digits_model, two, name):
    x, y = two
    record = pl.registry.method(name)
    names = _numeric_options(record.fn)
    wrong = _call_with_each_bad_number(record.fn, lambda **kw: record(digits_model, x, y, **kw), names)
    assert not wrong, f"{name}: NaN or infinite maps with {wrong}"


@pytest.mark.parametrize("name", list(pl.registry.attacks()))
def test_every_attack_refuses_or_stays_finite_on_bad_numbers(digits_model, two, name):
    x, y = two
    record, public = pl.registry.attack(name), getattr(pl, name)
    names = _numeric_options(record.fn)
    wrong = _call_with_each_bad_number(record.fn, lambda **kw: record.fn(digits_model, x, y, **kw), names)
    names = _numeric_options(public)
    wrong += _call_with_each_bad_number(public, lambda **kw: public(digits_model, x, y, **kw), names)
    assert not wrong, f"{name}: NaN or infinite images with {wrong}"


# ---------------------------------------------------------------------------------------------
# 4. the command: every flag checked before any work, errors name the flag, one line, exit code 2

@pytest.mark.parametrize("args, flag, value", [
    (["classviz", "--l2=-inf"], "--l2", "-inf"),
    (["classviz", "--lr", "0", "--target", "3"], "--lr", "0.0"),
    (["classviz", "--blur-every", "-2"], "--blur-every", "-2"),
    (["batch", "digits-test", "--metric-steps", "-2"], "--metric-steps", "-2"),
    (["batch", "digits-test", "--eps", "nan", "--attack", "fgsm"], "--eps", "nan"),
    (["batch", "digits-test", "--limit", "0"], "--limit", "0"),
    (["attack", "--eps=-inf"], "--eps", "-inf"),
    (["attack", "--eps", "0.1", "--alpha", "nan"], "--alpha", "nan"),
    (["fool", "--max-steps", "0"], "--max-steps", "0"),
    (["robustness", "--eps", "0.05,inf"], "--eps", "inf"),
    (["explain", "--batch-size", "0"], "--batch-size", "0"),
    (["explain", "--methods", "saliency,gradcamm"], "--methods:", "'gradcamm'"),
    (["filterviz", "--channel", "1", "-7"], "--channel", "-7"),
    (["saliency", "-n", "-4"], "-n", "-4"),
    (["serve", "--replicas", "0"], "--replicas", "0"),
    (["attack-text", "hello", "--beam", "0"], "--beam", "0"),
    (["explain", "--seed", str(2**70)], "--seed", "fits int64"),
    (["fool", "--target", str(-(2**66))], "--target", "is out of range"),
    (["attack", "--eps", "0.1", "--targeted", "11"], "--targeted", "11 is out of range"),
])
def test_cli_flags_are_checked_up_front_and_named(tmp_path, capsys, monkeypatch, args, flag, value):
    import pellucid.models

    monkeypatch.setattr(pellucid.models, "load_model", lambda *a, **k: pytest.fail("a model was loaded"))
    out = tmp_path / "out"
    if "--target" in args or "--targeted" in args:
        monkeypatch.undo()  # a class index is checked against the model's classes: the model is loaded first
    assert cli.main([*args, "--out", str(out)] if args[0] not in ("serve", "attack-text") else args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"pellucid {args[0]}: error: {flag} ") and value in err
    assert not out.exists()


def test_cli_argument_errors_are_one_line(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["attack", "--method", "pgdd", "--eps", "0.1"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1 and "invalid choice: 'pgdd'" in err


def test_report_refuses_an_unknown_also_model_before_writing_anything(tmp_path, capsys, digits_model):
    import time

    out = tmp_path / "rep"
    start = time.perf_counter()
    assert cli.main(["report", "-n", "2", "--also", "resnet19x", "--out", str(out)]) == 2
    assert time.perf_counter() - start < 30  # not the whole digits report first (minutes)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--also 'resnet19x'" in err and "unknown model" in err
    assert not out.exists()
    assert cli.main(["report", "-n", "2", "--also", "langid", "--out", str(out)]) == 2
    assert "text model" in capsys.readouterr().err and not out.exists()


def test_an_error_after_a_progress_bar_starts_on_a_new_line(capsys, monkeypatch):
    from pellucid._progress import bar

    def run(args):
        with bar(10, "working", progress=True) as b:
            b.update(3)
            b.refresh()  # drawn now, without waiting for the half-second delay
            raise PellucidError("--lr broke half-way")

    help_text, add_args, _ = cli.COMMANDS["fool"]
    monkeypatch.setitem(cli.COMMANDS, "fool", (help_text, add_args, run))
    assert cli.main(["fool"]) == 2
    err = capsys.readouterr().err
    assert "working" in err and err.endswith("\npellucid fool: error: --lr broke half-way\n")


# ---------------------------------------------------------------------------------------------
# 5. the web page: no body its schema lets through is answered with a 500

HUGE_INTS = [2**63, 2**63 - 1, 2**64 + 1, 10**40, -(2**63) - 1, -1, 0]
ODD = [None, "", "NaN", "Infinity", "-Infinity", [], {}, 1e308, -0.0, True, "x" * 200]


@pytest.fixture(scope="module")
def client():
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    from fastapi.testclient import TestClient

    from pellucid import web

    with TestClient(web.create_app(), base_url="http://127.0.0.1") as c:
        yield c


def _bodies(image: str):
    """Edge values, one field at a time, on top of a valid body of each POST endpoint."""
    base = {"/api/predict": {"image": image}, "/api/report": {"image": image},
            "/api/explain": {"image": image, "method": "saliency"},
            "/api/fool": {"image": image, "target": 3},
            "/api/attack": {"image": image, "kind": "fgsm", "eps": 0.05, "steps": 1},
            "/api/visualize": {"kind": "class", "target": 1, "steps": 1}}
    fields = {"/api/predict": ["model", "image", "target", "job"], "/api/report": ["image", "model"],  # a report: ~10 s
              "/api/explain": ["target", "method", "model"], "/api/fool": ["target", "image"],
              "/api/attack": ["eps", "steps", "kind", "target"],
              "/api/visualize": ["target", "channel", "steps", "layer", "kind", "model"]}
    for path, names in fields.items():
        for name in names:
            for value in HUGE_INTS + ODD:
                yield path, {**base[path], name: value}
    yield "/api/visualize", {"kind": "channel", "layer": "conv2", "channel": 2**63 + 9, "steps": 1}
    yield "/api/visualize", {"kind": "channel", "layer": "conv2", "channel": 64, "steps": 1}
    for kind in pl.registry.attacks():  # every attack at both ends of eps, with the fewest steps
        for eps in (0.0, 1.0, 5e-324):
            yield "/api/attack", {**base["/api/attack"], "kind": kind, "eps": eps}
    yield "/api/attack", {**base["/api/attack"], "kind": "pgd", "eps": 1.0, "steps": 200}


def test_no_body_the_schema_lets_through_gets_a_500(client):
    image = client.get("/api/samples?model=digits").json()["samples"][0]["image"]
    failed = []
    for path, body in _bodies(image):
        r = client.post(path, json=body)
        if path == "/api/visualize" and r.status_code == 200:
            lines = [line for line in r.text.splitlines() if line]
            if any('"error"' in line and "PellucidError" not in line for line in lines):
                failed.append((path, body, lines[-1][:200]))
        elif r.status_code >= 500:
            failed.append((path, body, r.status_code, r.text[:200]))
    for junk in (b"", b"{", b"[]", b'{"image": NaN}', b"\xff" * 10):
        for path in ("/api/explain", "/api/attack", "/api/fool", "/api/visualize", "/api/report", "/api/predict",
                     "/api/image"):
            r = client.post(path, content=junk, headers={"content-type": "application/json"})
            if r.status_code >= 500:
                failed.append((path, junk, r.status_code, r.text[:200]))
    r = client.post(f"/api/cancel/{'z' * 300}")
    assert r.status_code < 500
    assert not failed, failed


def test_a_class_past_int64_is_a_400_naming_it(client):
    image = client.get("/api/samples?model=digits").json()["samples"][0]["image"]
    for path, body in (("/api/explain", {"image": image, "method": "saliency", "target": 2**64 + 3}),
                       ("/api/fool", {"image": image, "target": 2**64 + 3})):
        r = client.post(path, json=body)
        assert r.status_code == 400 and "18446744073709551619 is out of range" in r.json()["detail"], r.text


def test_a_visualization_of_an_index_past_int64_is_a_400(client):
    for body, shown in (({"kind": "class", "target": 2**63 + 5, "steps": 1}, "target 9223372036854775813"),
                        ({"kind": "channel", "layer": "conv2", "channel": 2**65, "steps": 1},
                         "channel 36893488147419103232")):
        r = client.post("/api/visualize", json=body)
        assert r.status_code == 400 and f"{shown} is out of range" in r.json()["detail"], r.text
