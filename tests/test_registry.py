"""Every front end reads the registry: a method or attack registered once appears in the CLI, the web
page, the batch job and ``compare`` with no other edit; every registered method runs with its defaults."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
import torch

import pellucid as pl
from pellucid import registry

pytestmark = pytest.mark.filterwarnings("ignore:Using `httpx` with")


def brightness(model, x, target, batch_size=None):
    """A throwaway method: the image's mean over channels (a map that needs no model)."""
    return x.mean(1)


def unchanged(model, x, label, eps, *, targeted=False, batch_size=None):
    """A throwaway attack that returns the images as they are (within any eps)."""
    return x.clone()


@pytest.fixture
def new_records():
    """A method and an attack registered for one test, removed afterwards."""
    method = registry.register_method(registry.Method("test_brightness", "Brightness (test)", brightness))
    attack = registry.register_attack(registry.Attack("test_unchanged", "Unchanged (test)", unchanged,
                                                      iterative=False, norms=("linf",)))
    yield method, attack
    registry._METHODS.pop(method.name, None)
    registry._ATTACKS.pop(attack.name, None)


def subcommand(name: str) -> argparse.ArgumentParser:
    from pellucid import cli

    sub = next(a for a in cli.build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[name]


def option(parser: argparse.ArgumentParser, flag: str) -> argparse.Action:
    return next(a for a in parser._actions if flag in a.option_strings)


def test_the_cli_offers_a_new_method_and_attack(new_records, tmp_path):
    from pellucid import cli

    method, attack = new_records
    assert method.name in option(subcommand("explain"), "--methods").help
    assert attack.name in option(subcommand("attack"), "--method").choices
    out = tmp_path / "explain.png"
    assert cli.main(["explain", "--methods", f"saliency,{method.name}", "-n", "2", "--out", str(out)]) == 0
    assert out.stat().st_size > 0
    out = tmp_path / "attack.png"
    assert cli.main(["attack", "--method", attack.name, "--eps", "0.1", "-n", "2", "--out", str(out)]) == 0
    assert out.stat().st_size > 0


def test_the_web_page_offers_a_new_method_and_attack(new_records):
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    from fastapi.testclient import TestClient

    from pellucid import web

    method, attack = new_records
    with TestClient(web.create_app({"digits": pl.load_model("digits")}), base_url="http://127.0.0.1") as c:
        info = c.get("/api/models").json()
        assert {"name": method.name, "title": method.title} in info["methods"]
        assert {"name": attack.name, "title": attack.title} in info["attacks"]
        image = c.get("/api/samples?model=digits").json()["samples"][0]["image"]
        r = c.post("/api/explain", json={"image": image, "method": method.name})
        assert r.status_code == 200, r.text
        r = c.post("/api/attack", json={"image": image, "kind": attack.name, "eps": 0.1})
        assert r.status_code == 200 and r.json()["linf"] == 0.0, r.text
        r = c.post("/api/attack", json={"image": image, "kind": "nope", "eps": 0.1})
        assert r.status_code == 400 and attack.name in r.json()["detail"]


def test_the_batch_job_accepts_a_new_method(new_records, tmp_path):
    from pellucid.batch.job import resolve_methods
    from pellucid.models.data import digits

    method, _ = new_records
    assert resolve_methods(f"saliency,{method.name}") == ("saliency", method.name)
    res = pl.explain_dataset("digits-test", tmp_path, methods=method.name, limit=2, metric_steps=0, progress=False,
                             report=False)
    assert res.done == 2
    want = digits("test")[0][:2].mean(1).numpy()
    got = np.stack([np.load(tmp_path / "maps" / method.name / "digits-test" / f"{i:05d}.npy") for i in range(2)])
    assert np.array_equal(got, want)


def test_compare_defaults_to_the_registered_methods(new_records, monkeypatch, digits_model):
    method, _ = new_records
    # only two records, so the default run stays cheap: saliency and the new one, plus the random baseline
    monkeypatch.setattr(registry, "_METHODS", {"saliency": registry.method("saliency"), method.name: method})
    x, y = pl.sample_images("digits", n=2)
    result = pl.compare(digits_model, x, y, steps=2, sanity=False)
    assert [row["method"] for row in result.rows] == ["saliency", method.name, "random"]


def test_every_registered_method_runs_with_its_defaults(digits_model):
    x, y = pl.sample_images("digits", n=2)
    names = list(registry.methods())
    maps = pl.explain(digits_model, x, y, methods=names)
    assert list(maps) == names
    for name, m in maps.items():
        record = registry.method(name)
        assert m.shape == (2, 28, 28) and torch.isfinite(m).all(), name
        assert record.cost in registry.COSTS and record.title, name
    assert set(registry.grid_methods()) <= set(names)


def test_every_registered_attack_runs_with_its_defaults(digits_model):
    x, y = pl.sample_images("digits", n=2)
    for name, attack in registry.attacks().items():
        adv = attack.run(digits_model, x, y, 0.1, steps=2)
        assert adv.shape == x.shape and (adv - x).abs().max() <= 0.1 + 1e-6, name
        assert 0 <= adv.min() and adv.max() <= 1, name
