"""`pellucid serve`'s data-set views: a class's strategies (SpRAy) and its concepts (CRAFT) equal
``pl.scan`` and ``pl.concepts`` run alone on the same held-out digits; bad input is a clear 4xx; the
replicas come back as they were."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

import pellucid as pl  # noqa: E402
from pellucid import registry, web  # noqa: E402
from pellucid.dataset.maps import thumbnails  # noqa: E402
from pellucid.drawing.strategies import image_tile, map_tile, strategy_tiles, tile_png  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:Using `httpx` with")


@pytest.fixture(scope="module")
def client():
    from fastapi.testclient import TestClient

    with TestClient(web.create_app(), base_url="http://127.0.0.1") as c:
        yield c


def held_out(n: int):
    """The oracle's images: the digits models' held-out digits, balanced, as the page takes them."""
    return pl.sample_images("digits", n=n)


def test_the_data_set_facts(client, digits_model):
    r = client.get("/api/dataset?model=digits")
    assert r.status_code == 200, r.text
    facts = r.json()
    _, y = pl.models.data.digits("test")
    assert facts["images"] == len(y) == 1000 and facts["set"] == "held-out digits"
    assert [(c["class"], c["images"]) for c in facts["classes"]] == list(enumerate(np.bincount(y.numpy()).tolist()))
    methods = [m["name"] for m in facts["methods"]]
    assert "lrp" in methods and "lime" not in methods  # cheap methods only: a scan maps hundreds of images
    assert all(registry.method(m).cost == "cheap" for m in methods)
    x, _ = held_out(10)
    for name in facts["layers"]:  # every offered layer is spatial and non-negative, as CRAFT needs
        a = pl.activations(digits_model, x, name)
        assert a.dim() == 4 and a.shape[-1] * a.shape[-2] > 1 and a.min() >= 0, name
    for name in ("conv1", "conv2", "conv3", "fc"):  # signed or flat outputs are not offered
        assert name not in facts["layers"]
    assert facts["layer"] == pl.concepts(digits_model, x[:4], 0, n=2, designs=4).layer  # CRAFT's own default


def test_strategies_equal_pl_scan_run_alone(client):
    x, y = held_out(100)
    model = pl.load_model("digits")
    alone = pl.scan(model, x, y, method="lrp", seed=0)
    for c in (3, 7):
        r = client.post("/api/strategies", json={"target": c, "images": 100})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["cached"] is (c == 7)  # the second class comes from the kept scan
        cs = alone.classes[c]
        assert body["class_images"] == len(cs.images) and body["images"] == 100
        assert [s["size"] for s in body["strategies"]] == [s.size for s in cs.strategies]
        for k, (got, want) in enumerate(zip(body["strategies"], cs.strategies)):
            assert [e["image"] for e in got["examples"]] == want.typical.tolist()
            assert got["flagged"] == bool(alone.flagged[want.images].any())
            mean, first, *_ = strategy_tiles(alone, c, k)  # as the report draws them
            assert client.get(got["mean"]).content == tile_png(mean)
            assert client.get(got["examples"][0]["url"]).content == tile_png(first)
        ranked = cs.images[alone.score[cs.images].argsort(descending=True, stable=True)][:8]
        assert [f["image"] for f in body["flagged"]] == [i for i in ranked.tolist() if alone.score[i] > 0]
        first = body["flagged"][0]
        assert np.isclose(first["score"], float(alone.score[first["image"]]), atol=1e-3)
        i = first["image"]
        assert client.get(first["url"]).content == tile_png(map_tile(thumbnails(x, [i])[i], alone.maps[i]))
        assert [k["flagged"] for k in body["classes"]] == [int(alone.flagged[v.images].sum())
                                                            for v in alone.classes.values()]


def test_concepts_equal_pl_concepts_run_alone(client):
    x, y = held_out(1000)
    model = pl.load_model("digits")
    xc = x[y == 3][:8]
    for layer in (None, "relu2"):
        alone = pl.concepts(model, xc, 3, layer=layer, n=3, top=6, seed=0)
        r = client.post("/api/concepts", json={"target": 3, "layer": layer, "n": 3, "images": 8})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["layer"] == alone.layer and body["images"] == 8
        assert [k["index"] for k in body["concepts"]] == [k.index for k in alone.concepts]
        assert np.allclose([k["importance"] for k in body["concepts"]], [k.importance for k in alone.concepts],
                           atol=1e-4)
        top = body["concepts"][0]
        assert len(top["crops"]) == 6
        assert client.get(top["crops"][0]).content == tile_png(image_tile(alone.concepts[0].crops[0]))


@pytest.mark.parametrize("path, body, status, names", [
    ("/api/strategies", {"target": 10}, 400, ["target 10", "0..9"]),
    ("/api/concepts", {"target": 12}, 400, ["target 12", "0..9"]),
    ("/api/strategies", {"target": 5, "images": 2}, 400, ["class 5", "2 held-out digits", "present: 0, 1"]),
    ("/api/strategies", {"target": 3, "method": "lime"}, 400, ["'lime'", "too slow", "lrp"]),
    ("/api/strategies", {"target": 3, "method": "magic"}, 400, ["'magic'", "lrp, deeplift"]),
    ("/api/strategies", {"target": 3, "images": 5000}, 422, ["images", "1000", "5000"]),
    ("/api/concepts", {"target": 3, "images": 500}, 422, ["images", "32", "500"]),
    ("/api/concepts", {"target": 3, "n": 11}, 422, ["n", "10", "11"]),
    ("/api/concepts", {"target": 3, "layer": "conv2"}, 400, ["'conv2'", "no negative value", "pool3"]),
    ("/api/concepts", {"target": 3, "layer": "nope"}, 400, ["'nope'", "not a layer", "relu1, relu2"]),
    ("/api/strategies", {"model": "resnet", "target": 3}, 404, ["'resnet'", "digits"]),
])
def test_bad_input_is_a_clear_4xx(client, path, body, status, names):
    r = client.post(path, json=body)
    assert r.status_code == status, r.text
    detail = r.json()["detail"]
    text = detail if isinstance(detail, str) else "; ".join(f"{e['loc'][-1]}: {e['msg']}" for e in detail)
    for name in names:
        assert name in text, (name, text)


def test_the_replicas_come_back_as_they_were(client):
    """Scans and concept searches ran on replicas: each is back unchanged (eval mode, flags, weights, no hook)."""
    client.post("/api/concepts", json={"target": 1, "n": 2, "images": 4})
    slot = client.app.state.server.models["digits"]
    pristine = slot.model
    idle = list(slot._idle.queue)
    assert idle and client.get("/api/status").json()["idle_replica_hooks"] == 0
    for replica in idle:
        assert not any(m.training for m in replica.modules())
        for (name, p), q in zip(replica.named_parameters(), pristine.parameters()):
            assert torch.equal(p, q) and p.requires_grad == q.requires_grad and p.grad is None, name
        assert all(torch.equal(a, b) for a, b in zip(replica.buffers(), pristine.buffers()))
