"""``pl.scan`` and ``pl.diff`` against planted ground truth: digits models trained with a known artifact in a
known fraction of one class (tests/planted.py); the artifact, its place, the class and the fraction vary."""

from __future__ import annotations

import pytest
import torch
from planted import clean_model, planted_model
from sklearn.metrics import roc_auc_score

import pellucid as pl
from pellucid._checks import PellucidError

CASES = [(3, "checker", "bottom-left", 0.12), (7, "cross", "top-right", 0.18)]


@pytest.fixture(scope="module", params=CASES, ids=lambda c: f"{c[0]}-{c[1]}-{c[2]}-{c[3]}")
def planted(request):
    cls, artifact, position, fraction = request.param
    model, x, y, marked, xt, yt = planted_model(cls, artifact, position, fraction)
    rows = (y == cls).nonzero().flatten()
    return model, x[rows], y[rows], marked[rows]


def test_scan_finds_the_planted_images_as_their_own_strategy(planted):
    model, x, y, marked = planted
    result = pl.scan(model, x, y)
    score, truth = result.score.numpy(), marked.numpy()
    assert roc_auc_score(truth, score) >= 0.95
    k = int(marked.sum())
    assert marked[result.score.argsort(descending=True)[:k]].float().mean() >= 0.8  # precision at the number planted
    strategies = next(iter(result.classes.values())).strategies
    purity_recall = [(float(marked[s.images].float().mean()), float(marked[s.images].sum()) / k) for s in strategies]
    assert any(p >= 0.9 and r >= 0.9 for p, r in purity_recall), purity_recall
    assert result.flagged[marked].float().mean() >= 0.8 and result.flagged[~marked].float().mean() <= 0.1
    s0 = strategies[0]
    assert s0.size == len(s0.images) and s0.mean_map.shape == result.maps.shape[1:] and len(s0.typical) <= 6


def test_scan_by_predicted_class_and_with_maps_given(planted):
    model, x, y, marked = planted
    sub = torch.cat([x[marked][:10], x[~marked][:40]])
    given = pl.scan(model, sub, y[:50], method="saliency")
    again = pl.scan(model, sub, y[:50], maps=given.maps)
    assert again.score.equal(given.score)  # the maps are all it needs
    by_prediction = pl.scan(model, sub, method="saliency")
    assert by_prediction.targets.equal(pl._grad.predictions(model, sub, 50).argmax(1).cpu())


def test_scan_bad_and_degenerate_input():
    model, x, y, _, _, _ = planted_model(*CASES[0])
    with pytest.raises(PellucidError, match="one integer class per image"):
        pl.scan(model, x[:10], y[:9])
    with pytest.raises(PellucidError, match="clusters=5 but the class has only 3 images"):
        pl.scan(model, x[:3], torch.zeros(3, dtype=torch.long), clusters=5, maps=torch.rand(3, 8, 8))
    with pytest.raises(PellucidError, match="unknown attribution method 'nope'"):
        pl.scan(model, x[:4], y[:4], method="nope")
    with pytest.raises(PellucidError, match="no image of class 9"):
        pl.scan(model, x[:4], torch.zeros(4, dtype=torch.long), classes=[9], maps=torch.rand(4, 8, 8))
    # documented degenerate results: one image of a class, or all maps zero, is one strategy scoring 0
    one = pl.scan(model, x[:5], torch.arange(5), maps=torch.rand(5, 8, 8))
    assert all(len(c.strategies) == 1 for c in one.classes.values()) and one.score.eq(0).all()
    zero = pl.scan(model, x[:20], torch.zeros(20, dtype=torch.long), maps=torch.zeros(20, 8, 8))
    assert len(zero.classes[0].strategies) == 1 and not zero.flagged.any()


def test_diff_ranks_the_planted_images_first_and_two_seeds_move_nothing():
    cls, artifact, position, fraction = CASES[1]
    model, x, y, marked, xt, yt = planted_model(cls, artifact, position, fraction)
    rows = torch.cat([(y == cls).nonzero().flatten(), (y != cls).nonzero().flatten()[:200]])
    d = pl.diff(model, clean_model(), x[rows], y[rows])
    assert roc_auc_score(marked[rows].numpy(), d.distance.numpy()) >= 0.9
    assert d.moved[marked[rows]].float().mean() >= 0.5 and d.order[0] in marked[rows].nonzero()
    seeds = pl.diff(clean_model(0), clean_model(1), xt[:300], yt[:300])
    # two seeds of one training: the long tail of their distances stays within the null, but for at most 1%
    assert seeds.moved.float().mean() <= 0.01, seeds.distance[seeds.order[:5]]
    assert set(seeds.classes) == set(yt[:300].tolist()) and seeds.noise.eq(0).all()  # LRP has no seed


def test_diff_of_a_model_with_itself_and_bad_input():
    model = clean_model()
    x = pl.sample_images("digits", n=12)[0]
    d = pl.diff(model, model, x, method="saliency")
    assert d.distance.abs().max() < 1e-5 and not d.changed.any() and not d.moved.any()
    # the last layer negated: LRP's rules are linear in the relevance, so every map is exactly its negative
    # (distance 2); when every image moves, the bulk is no null, and all of them count as moved
    import copy

    flipped = copy.deepcopy(model)
    last = [m for m in flipped.modules() if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():
        last.weight.neg_()
        last.bias.neg_()
    y = model(x).argmax(1)
    d = pl.diff(model, flipped, x, y)
    assert torch.allclose(d.distance, torch.full_like(d.distance, 2.0), atol=1e-3) and d.moved.all()
    with pytest.raises(PellucidError, match="one integer class per image"):
        pl.diff(model, model, x, torch.zeros(3, dtype=torch.long))
    with pytest.raises(PellucidError, match="classes is empty"):
        pl.scan(model, x, classes=[])
    with pytest.raises(PellucidError, match="z must be a number > 0"):
        pl.diff(model, model, x, z=0)


def test_the_scan_and_diff_commands(tmp_path, capsys):
    from pellucid import cli

    page = tmp_path / "scan.html"
    cli.main(["scan", "digits-test", "--limit", "80", "--method", "saliency", "--out", str(page)])
    text = page.read_text()
    assert "strategy 1" in text and "<svg" in text and "wrote" in capsys.readouterr().out
    job = tmp_path / "job"
    cli.main(["batch", "digits-test", "--methods", "saliency", "--limit", "40", "--out", str(job), "--no-progress"])
    capsys.readouterr()
    from_job = tmp_path / "from_job.html"
    cli.main(["scan", str(job), "--method", "saliency", "--out", str(from_job)])  # the stored maps, no recomputing
    assert "strategy 1" in from_job.read_text()
    assert cli.main(["scan", str(job), "--method", "ig", "--out", str(from_job)]) == 2
    assert "stored maps of saliency, not 'ig'" in capsys.readouterr().err
    assert cli.main(["scan", "digits-test", "--clusters", "many", "--out", str(page)]) == 2
    err = capsys.readouterr().err
    assert "--clusters must be 'auto' or a whole number" in err and len(err.splitlines()) == 1
    moved = tmp_path / "diff.html"
    cli.main(["diff", "digits-test", "--limit", "40", "--method", "saliency", "--weights-b", "random",
              "--out", str(moved)])
    assert "what moved" in moved.read_text() and "images moved beyond the null" in capsys.readouterr().out
