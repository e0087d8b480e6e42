"""Concepts (issue #28): CAVs against liblinear, TCAV against Captum and calibrated on random concepts, FastCAV
against the SVM on ImageNet features, CRAFT's Sobol indices against their closed form, the direction objective."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import check_side_effects
from torch import nn

import pellucid as pl
from pellucid._checks import PellucidError
from pellucid.concept import discovery, significance, vectors
from pellucid.concept.crops import cut, random_boxes
from pellucid.featureviz.objectives import Capture
from pellucid.models.data import digits
from pellucid.models.layers import find_layer
from pellucid.targets import as_target

CLS = 3


@pytest.fixture(scope="module")
def digit_sets():
    """Held-out digits: 24 threes (x), 40 zeros (a concept), 120 other digits (random images)."""
    x, y = digits("test")
    return x[y == CLS][:24], x[y == 0][:40], x[(y != CLS) & (y != 0)][:120]


def test_tcav_scores_match_captum_on_the_same_cavs(digits_model, digit_sets, tmp_path):
    pytest.importorskip("captum")
    from captum.concept import TCAV, Concept
    from captum.concept._utils.classifier import Classifier
    from torch.utils.data import DataLoader

    x, concept_x, random_x = digit_sets
    result = pl.tcav(digits_model, x, CLS, "relu2", concept_x, random_x=random_x, runs=5, kind="svm", seed=1)
    assert result.scores.shape == (5,) and result.share == 8

    class Given(Classifier):  # hands Captum pellucid's CAVs, one per experimental set, in order
        def __init__(self, vectors):
            self.left = list(vectors)

        def train_and_eval(self, dataloader, **kwargs):
            self.current = self.left.pop(0)
            self.ids = torch.cat([labels for _, labels in dataloader]).unique().tolist()  # [0, random set's id]
            return {"accs": torch.tensor(1.0)}

        def weights(self):
            return torch.stack([self.current, -self.current])  # row 0: the concept (id 0), row 1: the random set

        def classes(self):
            return self.ids

    sets = [[Concept(0, "concept", DataLoader(concept_x[:8], batch_size=8)),
             Concept(1 + i, f"random{i}", DataLoader(random_x[8 * i: 8 * i + 8], batch_size=8))] for i in range(5)]
    for s in sets[1:]:
        s[0] = sets[0][0]  # one Concept instance per id, as Captum requires
    captum = TCAV(digits_model, ["net.relu2"], classifier=Given(result.vectors), save_path=str(tmp_path))
    out = captum.interpret(x, sets, target=CLS)
    theirs = torch.stack([out[f"0-{1 + i}"]["net.relu2"]["sign_count"][0] for i in range(5)])
    assert torch.allclose(result.scores, theirs.to(result.scores), atol=0.02), (result.scores, theirs)


def test_the_svm_is_libsvms_solution(digit_sets, digits_model):
    """kind="svm" solves the linear SVM exactly: the normal and intercept of scikit-learn's SVC (LIBSVM, on the
    Gram matrix) with C = 1 / (alpha n), for a large set and for a run's share of two images each."""
    from sklearn.svm import SVC

    _, concept_x, random_x = digit_sets
    acts = vectors.flat_activations(digits_model, torch.cat([concept_x[:20], random_x[:30]]), "relu3", None).double()
    for pos, neg in ((acts[:20], acts[20:]), (acts[:2], acts[20:22])):
        rows = torch.cat([pos, neg])
        w, b = vectors.linear_svm(pos, neg)
        ref = SVC(kernel="precomputed", C=1 / (vectors.SVM_ALPHA * len(rows)), tol=1e-6)
        ref.fit((rows @ rows.T).numpy(), [1] * len(pos) + [0] * len(neg))
        normal = torch.as_tensor(ref.dual_coef_[0]) @ rows[ref.support_]
        assert float(torch.nn.functional.cosine_similarity(w, normal, dim=0)) > 0.9999
        assert math.isclose(b / float(w.norm()), float(ref.intercept_[0]) / float(normal.norm()), rel_tol=1e-3,
                            abs_tol=1e-4)


def test_cav_finds_the_concept_and_holds_out_images(digits_model, digit_sets):
    _, concept_x, random_x = digit_sets
    for kind in ("svm", "mean"):
        v = pl.cav(digits_model, "relu2", concept_x, random_x, kind=kind, seed=0)
        assert v.accuracy >= 0.8 and v.kind == kind and v.layer == "relu2" and v.shape == (32, 28, 28)
        assert math.isclose(float(v.vector.norm()), 1, rel_tol=1e-5)
        # held out: a third of each set (13 + 40 rows), so the accuracy is a multiple of 1/53
        assert math.isclose(v.accuracy * 53, round(v.accuracy * 53), abs_tol=1e-6)
        # the direction points to the concept: zeros project higher than other digits, on average
        acts = vectors.flat_activations(digits_model, torch.cat([concept_x, random_x]), "relu2", None)
        assert float((acts[:40] @ v.vector).mean()) > float((acts[40:] @ v.vector).mean())
    same = pl.cav(digits_model, "relu2", concept_x, random_x, kind="svm", seed=0)
    assert torch.equal(same.vector, pl.cav(digits_model, "relu2", concept_x, random_x, kind="svm", seed=0).vector)


@pytest.fixture(scope="module")
def null_pool(digits_model):
    """Layer gradients of 40 threes and activations of 600 other digits at relu3: computed once for 100 trials."""
    x, y = digits("all")
    threes, others = x[y == CLS][:40], x[y != CLS][:600]
    grads = vectors.layer_gradients(digits_model, threes, as_target(CLS, 40, 10), "relu3", 40)
    return grads, vectors.flat_activations(digits_model, others, "relu3", None)


def test_tcav_is_calibrated_on_random_concepts(null_pool):
    """A "concept" of random digits is significant at alpha = 0.05 in at most 10 of 100 seeded trials (Kim et al.'s
    reuse of one concept set in every run made most of them significant: benchmarks/concepts.py, README.md)."""
    grads, pool = null_pool
    hits, threads = 0, torch.get_num_threads()
    torch.set_num_threads(1)  # small tensors: on a busy 2-core machine two threads' hand-offs cost 50x
    try:
        for trial in range(100):
            gen = torch.Generator().manual_seed(trial)
            order = torch.randperm(len(pool), generator=gen)
            scores, nulls, _ = significance.tcav_runs(grads, pool[order[:40]], pool[order[40:]], 20, "mean", gen)
            hits += significance.t_test(scores, nulls) < 0.05
    finally:
        torch.set_num_threads(threads)
    assert hits <= 10, hits


def test_tcav_result_and_random_crops(digits_model, digit_sets):
    x, concept_x, _ = digit_sets
    r = pl.tcav(digits_model, x, CLS, "relu2", concept_x, runs=4, kind="mean", seed=3)
    assert r.scores.shape == r.random_scores.shape == (4,) and r.vectors.shape == (4, 32 * 28 * 28)
    assert ((r.scores >= 0) & (r.scores <= 1)).all() and math.isclose(r.score, float(r.scores.mean()))
    assert 0 <= r.p_value <= 1 and r.significant == (r.p_value < 0.05) and r.share == 10
    again = pl.tcav(digits_model, x, CLS, "relu2", concept_x, runs=4, kind="mean", seed=3)
    assert torch.equal(r.scores, again.scores) and r.p_value == again.p_value
    strict = pl.tcav(digits_model, x, CLS, "relu2", concept_x, runs=4, kind="mean", seed=3, bonferroni=10 ** 6)
    assert strict.p_value == r.p_value and not strict.significant


def test_tcav_refuses_a_layer_followed_only_by_linear_maps(digits_model, digit_sets):
    """After pool3 the digits CNN has Flatten and one Linear: d logit / d pool3 is the class's weight row for every
    image, so a run's TCAV score could only be 0 or 1. tcav says so and names relu3, where the max-pool's routing
    makes the gradient differ per image; a layer whose gradients differ is returned as it is."""
    x, concept, other = digit_sets
    with pytest.raises(PellucidError, match=r"'pool3' the target's gradient is the same .* e\.g\. 'relu3'"):
        pl.tcav(digits_model, x, CLS, "pool3", concept, random_x=other, runs=4)
    assert significance.sensitive_layer(digits_model, x, CLS, "pool3") == "relu3"
    assert significance.sensitive_layer(digits_model, x, CLS, "flatten") == "relu3"
    assert significance.sensitive_layer(digits_model, x, CLS, "conv2") == "conv2"
    weight_row = digits_model.net.fc.weight[CLS].detach()
    grads = vectors.layer_gradients(digits_model, x, as_target(CLS, len(x), 10), "pool3", len(x))
    assert torch.allclose(grads, weight_row.expand_as(grads), atol=1e-6)


def test_the_earlier_layer_is_one_that_runs(digit_sets):
    """sensitive_layer walks the layers in the order they run: a registered but unused module is skipped, and
    identical images (whose gradients agree everywhere) get a clear error, not a crash."""
    from pellucid.models.base import seeded

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.relu = nn.Conv2d(1, 8, 3, padding=1), nn.ReLU()
            self.unused = nn.Conv2d(8, 8, 1)  # registered between relu and pool, never called
            self.pool, self.fc = nn.MaxPool2d(2), nn.Linear(8 * 14 * 14, 10)

        def forward(self, x):
            return self.fc(self.pool(self.relu(self.conv(x))).flatten(1))

    model = pl.wrap(seeded(Net, 0), input_size=(1, 28, 28))
    x = digit_sets[0][:6]
    assert significance.sensitive_layer(model, x, 3, "pool") == "relu"
    with pytest.raises(PellucidError, match="'unused' does not run"):
        significance.sensitive_layer(model, x, 3, "unused")
    same = x[:1].repeat(4, 1, 1, 1)
    with pytest.raises(PellucidError, match="are the images identical"):
        significance.sensitive_layer(model, same, 3, "pool")


def test_the_reports_concepts_section(digits_model, digits_batch):
    """Per class of the first sample digits: CRAFT's concepts as pl.concepts finds them alone, and a TCAV table
    of the top three at relu3 (pool3, CRAFT's layer, has one gradient for all images)."""
    from html.parser import HTMLParser
    from pathlib import Path

    from pellucid.drawing import report_dataset as rd
    from pellucid.drawing.report import ReportContext

    x, y = digits_batch
    ctx = ReportContext(digits_model, x, y, Path("."), progress=False)
    section = rd.concepts_section(ctx)
    sets = rd.concept_sets(ctx)
    xt, yt = digits("test")
    assert [c for c, _ in sets] == list(dict.fromkeys(ctx.predicted.tolist()))[:rd.CONCEPT_CLASSES]

    class Cells(HTMLParser):
        def __init__(self):
            super().__init__()
            self.rows = []

        def handle_starttag(self, tag, attrs):
            if tag == "tr":
                self.rows.append([])

        def handle_data(self, data):
            if self.rows and data.strip():
                self.rows[-1].append(data.strip())

    cells = Cells()
    cells.feed(section.body)
    tables = [r for r in cells.rows if r and r[0].startswith("concept ")]
    assert len(tables) == rd.CONCEPTS_TESTED * len(sets)
    for k, (c, images) in enumerate(sets):
        assert torch.equal(images, xt[yt == c][:rd.CONCEPT_IMAGES])
        alone = pl.concepts(digits_model, images, c, n=5, designs=16, top=4 * rd.TCAV_RUNS, seed=0)
        rows = tables[k * rd.CONCEPTS_TESTED:(k + 1) * rd.CONCEPTS_TESTED]
        assert [r[0] for r in rows] == [f"concept {a.index}" for a in alone.concepts[:rd.CONCEPTS_TESTED]]
        assert [r[1] for r in rows] == [f"{a.importance:.2f}" for a in alone.concepts[:rd.CONCEPTS_TESTED]]
        assert all(0 <= float(r[2]) <= 1 and 0 <= float(r[4]) <= 1 and r[5] in ("yes", "no") for r in rows)
    assert "TCAV at relu3" in section.body and section.body.count("<img") == len(sets)
    # a model with no spatial layer CRAFT can factorize (an MLP): no section, not a broken report
    mlp = pl.wrap(nn.Sequential(nn.Flatten(), nn.Linear(784, 32), nn.ReLU(), nn.Linear(32, 10)), input_size=(1, 28, 28))
    assert rd.concepts_section(ReportContext(mlp, x, y, Path("."), progress=False)) is None


def test_t_test_is_scipys_student_test():
    from scipy import stats

    a, b = torch.tensor([0.9, 1.0, 0.8, 0.95], dtype=torch.float64), torch.tensor([0.2, 0.7, 0.5, 0.1]).double()
    assert math.isclose(significance.t_test(a, b), stats.ttest_ind(a.numpy(), b.numpy()).pvalue, rel_tol=1e-9)
    assert significance.t_test(torch.ones(3), torch.ones(3)) == 1 and significance.t_test(torch.ones(3),
                                                                                          torch.zeros(3)) == 0


def test_bad_concept_arguments_are_clear(digits_model, digit_sets, resnet_small):
    x, concept_x, random_x = digit_sets
    with pytest.raises(pl.PellucidError, match="runs must be an int >= 2"):
        pl.tcav(digits_model, x, CLS, "relu2", concept_x, runs=1)
    with pytest.raises(pl.PellucidError, match="concept_x has 1 image"):
        pl.tcav(digits_model, x, CLS, "relu2", concept_x[:1], runs=2)
    with pytest.raises(pl.PellucidError, match="concept_x has 1 image"):
        pl.cav(digits_model, "relu2", concept_x[:1], random_x)
    with pytest.raises(pl.PellucidError, match="runs <= the number of concept images"):
        pl.tcav(digits_model, x, CLS, "relu2", concept_x[:5], runs=6)
    with pytest.raises(pl.PellucidError, match="random_x has 3 images"):
        pl.tcav(digits_model, x, CLS, "relu2", concept_x[:10], random_x=random_x[:3], runs=2)
    with pytest.raises(pl.PellucidError, match="unknown kind"):
        pl.cav(digits_model, "relu2", concept_x, random_x, kind="lda")
    with pytest.raises(pl.PellucidError, match="unknown layer"):
        pl.cav(digits_model, "relu9", concept_x, random_x)
    photos = torch.rand(4, 3, 64, 64)
    with pytest.raises(pl.PellucidError, match=r"concept_x images are \(3, 48, 48\)"):
        pl.tcav(resnet_small, photos, 0, "layer3", torch.rand(4, 3, 48, 48), runs=2)
    with pytest.raises(pl.PellucidError, match="not a spatial map"):
        pl.concepts(digits_model, x, layer="fc")
    with pytest.raises(pl.PellucidError, match="non-negative"):
        pl.concepts(digits_model, x, layer="conv2", n=3)
    with pytest.raises(pl.PellucidError, match="one class index"):
        pl.concepts(digits_model, x, target=[1, 2])


def test_concept_methods_leave_no_trace(digits_model, digit_sets):
    x, concept_x, random_x = digit_sets
    calls = [lambda m, xx: pl.tcav(m, xx, CLS, "relu2", concept_x[:8], random_x=random_x[:20], runs=2, kind="mean"),
             lambda m, xx: pl.cav(m, "relu2", xx, random_x[:10], kind="mean"),
             lambda m, xx: pl.concepts(m, xx, CLS, n=3, crop_size=0.5, designs=4)]
    for call in calls:
        check_side_effects(call, digits_model, x[:6])


# ---------------------------------------------------------------------------------------------
# FastCAV against the SVM on the real ImageNet model


def test_fastcav_points_where_the_svm_does_on_imagenet_features():
    model = pl.load_model("imagenet")
    photos, _ = pl.sample_images("photos")
    gen = torch.Generator().manual_seed(0)
    concept = cut(photos, random_boxes(photos, torch.zeros(16, dtype=torch.long), gen, (0.4, 0.8)))
    others = cut(photos, random_boxes(photos, torch.arange(1, len(photos)).repeat(3)[:16], gen, (0.4, 0.8)))
    assert discovery.concept_layer(model, photos[:1]) == "_relu1"
    svm = pl.cav(model, "_relu1", concept, others, kind="svm")
    mean = pl.cav(model, "_relu1", concept, others, kind="mean")
    assert float(svm.vector @ mean.vector) >= 0.9
    assert svm.accuracy >= 0.8 and mean.accuracy >= 0.8


# ---------------------------------------------------------------------------------------------
# CRAFT


def test_sobol_indices_of_the_layers_after_are_their_closed_form(digits_model, digit_sets):
    """After pool3 the digits CNN is linear (flatten, fc), so the class score of masked concepts is
    ``b + sum_k m_k c_k`` and concept k's total Sobol index is ``c_k^2 / sum_j c_j^2`` (masks iid uniform)."""
    x = digit_sets[0][:6]
    gen = torch.Generator().manual_seed(0)
    coeffs, w = torch.rand(6, 7, 7, 4, generator=gen), torch.rand(4, 64, generator=gen)
    coeffs[..., 3] *= 0.2
    t = as_target(CLS, 6, 10)
    module = find_layer(digits_model, "pool3")
    got = discovery._importance(digits_model, x, t, module, coeffs, w, 64, gen)
    fc = digits_model.net.fc.weight[CLS].reshape(64, 7, 7)
    c = torch.einsum("nhwk,kc,chw->nk", coeffs, w, fc)
    exact = (c ** 2 / (c ** 2).sum(1, keepdim=True)).mean(0)
    assert torch.allclose(got, exact.float(), atol=0.03), (got, exact)


@pytest.fixture(scope="module")
def craft(digits_model, digit_sets):
    return pl.concepts(digits_model, digit_sets[0][:16], n=5, designs=32, top=6, seed=0)


def test_concepts_are_seeded_ranked_and_sum_sensibly(digits_model, digit_sets, craft):
    x = digit_sets[0][:16]
    assert craft.layer == "pool3" and craft.target == CLS and len(craft.concepts) == 5
    again = pl.concepts(digits_model, x, n=5, designs=32, top=6, seed=0)
    for a, b in zip(craft.concepts, again.concepts):
        assert a.index == b.index and a.importance == b.importance and torch.equal(a.vector, b.vector)
        assert torch.equal(a.boxes, b.boxes) and torch.equal(a.maps, b.maps)
    other = pl.concepts(digits_model, x, n=5, designs=32, top=6, seed=1)  # other Sobol' scrambles
    assert [c.importance for c in other.concepts] != [c.importance for c in craft.concepts]
    imp = [c.importance for c in craft.concepts]
    assert imp == sorted(imp, reverse=True) and min(imp) >= 0
    # the layers after pool3 are linear (see above): total indices of an additive function sum to 1
    assert abs(sum(imp) - 1) < 0.1, imp


def test_concepts_report_their_reconstruction_error_crops_and_maps(digits_model, digit_sets, craft):
    from pellucid.concept.crops import crop_activations

    x = digit_sets[0][:16]
    acts = crop_activations(digits_model, x, craft.boxes, "pool3", None, reduce=lambda a: a.mean((2, 3)))
    w = torch.stack([c.vector for c in sorted(craft.concepts, key=lambda c: c.index)])
    error = float((acts - craft.coefficients @ w).norm() / acts.norm())
    assert 0 < craft.error < 0.5 and math.isclose(craft.error, error, rel_tol=1e-3)
    # CRAFT's grid: 8-pixel squares 6 apart, the last flush with the border: at 0, 6, 12, 18, 20
    assert craft.boxes.shape == (16 * 25, 5) and (craft.boxes[:, 3:] == 8).all()
    assert sorted(set(craft.boxes[:, 1].tolist())) == [0, 6, 12, 18, 20] == sorted(set(craft.boxes[:, 2].tolist()))
    for c in craft.concepts:
        assert c.crops.shape == (6, 1, 28, 28) and c.maps.shape == (16, 28, 28) and (c.maps >= 0).all()
        # its crops are those that hold most of it
        best = craft.coefficients[:, c.index].argsort(descending=True)[:6]
        assert torch.equal(c.boxes, craft.boxes[best]) and torch.equal(c.crops, cut(x, craft.boxes[best]))


# ---------------------------------------------------------------------------------------------
# the direction objective


def test_direction_objective_scores_the_projection(digits_model, digit_sets):
    x = digit_sets[0][:4]
    acts = pl.activations(digits_model, x, "relu2")
    logits = digits_model(x)
    cap = Capture(logits, x, {"relu2": acts}, slice(0, 4))
    channel_dir = torch.randn(32)
    got = pl.direction("relu2", channel_dir).bind(digits_model, 4)(cap)
    assert torch.allclose(got, torch.einsum("nchw,c->n", acts, channel_dir) / (28 * 28), atol=1e-4)
    v = pl.cav(digits_model, "relu2", digit_sets[1], digit_sets[2], kind="mean")
    got = pl.direction("relu2", v).bind(digits_model, 4)(cap)
    assert torch.allclose(got, acts.flatten(1) @ v.vector, atol=1e-4)
    with pytest.raises(pl.PellucidError, match="32 .* or 25088"):
        pl.direction("relu2", torch.randn(5)).bind(digits_model, 4)(cap)
    with pytest.raises(pl.PellucidError, match="float tensor"):
        pl.direction("relu2", [1, 2])
    start = x[:1]
    viz = pl.visualize(digits_model, pl.direction("relu2", v), start=start, steps=15, seed=0)
    along = [float(vectors.flat_activations(digits_model, img, "relu2", None)[0] @ v.vector)
             for img in (start, viz.image)]
    assert along[1] > along[0] + 1, along


# ---------------------------------------------------------------------------------------------
# the command line


def test_cli_tcav_and_concepts_read_folders(digit_sets, tmp_path, capsys):
    from pellucid import cli

    x, concept_x, random_x = digit_sets
    for name, images in (("threes", x[:8]), ("zeros", concept_x[:12]), ("others", random_x[:12])):
        (tmp_path / name).mkdir()
        for i, img in enumerate(images):
            pl.save_image(img, tmp_path / name / f"{i:02d}.png")
    assert cli.main(["tcav", "--layer", "relu2", "--target", "3", "--concept", str(tmp_path / "zeros"), "--random",
                     str(tmp_path / "others"), "--runs", "3", "--kind", "mean", str(tmp_path / "threes")]) == 0
    out = capsys.readouterr().out
    assert "TCAV of 12 concept images for class 3 at layer relu2 (8 images, 3 runs of 4" in out and "p = " in out
    png = tmp_path / "concepts.png"
    argv = ["concepts", "--concepts", "3", "--crop-size", "0.5", "--out", str(png), str(tmp_path / "threes")]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "3 concepts of class 3 at layer pool3 from 8 images (72 crops" in out and png.stat().st_size > 0
    for argv, message in ((["tcav", "--concept", str(tmp_path / "zeros"), str(tmp_path / "threes")], "--layer"),
                          (["tcav", "--layer", "relu2", "--runs", "1", "--concept", str(tmp_path)], "--runs"),
                          (["concepts", "--layer", "fc", str(tmp_path / "threes")], "spatial")):
        assert cli.main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, err


# ---------------------------------------------------------------------------------------------
# planted ground truth: the digits CNN trained with a checker in the bottom-left corner of 15% of its threes


# two of the shortcut tests' planted models (shared in one process): artifact, corner, class and fraction differ.
# The third there, a square in the bottom-right of 10% of the zeros, is missed by both TCAV (score 0.71, p = 0.078)
# and CRAFT (none of the top three concepts holds it): README.md
PLANTED = [(3, "checker", "bottom-left", 0.15), (7, "cross", "top-right", 0.1)]


@pytest.fixture(scope="module", params=PLANTED, ids=lambda c: f"{c[0]}-{c[1]}-{c[2]}-{c[3]}")
def planted(request):
    from planted import clean_model, planted_model

    cls, artifact, position, fraction = request.param
    model, _, _, _, xt, yt = planted_model(cls, artifact, position, fraction)
    return model, clean_model(), xt, yt, cls, artifact, position


def test_tcav_finds_the_planted_artifact_for_its_class(planted):
    """The artifact concept (held-out digits with the artifact pasted against the same digits without it) is
    significant for the planted class with a high score, at a Bonferroni level for the 10 classes tested.

    Not asserted: that it is insignificant for every other class and for the clean model. Ink in the corner
    moves the logits of every digits CNN, the clean one included: it lowers those of 1, 4, 6 and 8 for 80-95%
    of their images (significant, score 0.05-0.2, in both models) and raises the clean model's 3 for 60-85% of
    threes (significant in 2 of 6 seeds and layers with these sizes; README.md). What is asserted instead is
    what planting adds: only the planted class gets a significant score above one half, and the clean model's
    score for it is lower and less significant."""
    model, clean, xt, yt, planted_cls, artifact, position = planted
    base = xt[-400:]
    pasted = pl.paste_artifact(base, artifact, position)

    def run(m, cls):
        return pl.tcav(m, xt[yt == cls][:80], cls, "relu3", pasted, random_x=base, runs=20, kind="mean",
                       bonferroni=10)

    hit = run(model, planted_cls)
    assert hit.score >= 0.8 and hit.p_value < 0.01 and hit.significant, hit
    control = run(clean, planted_cls)
    assert control.score < hit.score - 0.05 and control.p_value > hit.p_value, (hit, control)
    for cls in sorted(set(range(10)) - {planted_cls}):
        other = run(model, cls)
        assert not (other.significant and other.score > 0.5), (cls, other)


def test_craft_finds_the_planted_artifact_among_the_top_concepts(planted):
    """Among the planted class's three most important concepts (its images with the artifact pasted), one
    is the artifact: at least 80% of its top crops hold at least half of it."""
    model, _, xt, yt, cls, artifact, position = planted
    x = pl.paste_artifact(xt[yt == cls][:40], artifact, position)
    found = pl.concepts(model, x, cls, seed=0, top=10)
    inside = pl.artifact_mask(x[:1], position)

    def holds(box) -> bool:
        _, top, left, h, w = box.tolist()
        return bool(inside[top:top + h, left:left + w].sum() * 2 >= inside.sum())

    shares = [sum(map(holds, c.boxes)) / len(c.boxes) for c in found.concepts[:3]]
    assert max(shares) >= 0.8, (shares, [c.importance for c in found.concepts])
