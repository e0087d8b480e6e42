"""APGD, FAB, Square, AutoAttack, Carlini-Wagner and DeepFool: against torchattacks on the same digits and
settings, inside their balls, without side effects, reproducible, and clear about bad arguments."""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import check_side_effects

import pellucid as pl
from pellucid import registry
from pellucid.adversarial.auto_pgd import _apgd
from pellucid.adversarial.boundary import _boundary_step, _fab
from pellucid.adversarial.score_based import _square

ta = pytest.importorskip("torchattacks")
EPS = 0.15


@pytest.fixture(scope="module")
def their_model(digits_model):
    """A copy of the digits model for torchattacks, whose CW leaves gradients on the parameters it uses."""
    return copy.deepcopy(digits_model).eval()


def robust(model, adv, y) -> torch.Tensor:
    with torch.no_grad():
        return model(adv).argmax(1) == y


def assert_in_ball(x, adv, eps, norm):
    d = (adv - x).flatten(1)
    size = d.abs().amax(1) if norm == "linf" else d.norm(dim=1)
    assert (size <= eps + 1e-5).all(), float(size.max())
    assert adv.min() >= 0 and adv.max() <= 1


@pytest.mark.parametrize("norm,eps,loss", [("linf", EPS, "ce"), ("linf", EPS, "dlr"), ("l2", 1.5, "ce")])
def test_apgd_is_at_least_as_strong_as_torchattacks(their_model, digits_model, digits_batch, norm, eps, loss):
    x, y = digits_batch
    theirs = ta.APGD(their_model, norm={"linf": "Linf", "l2": "L2"}[norm], eps=eps, steps=20, loss=loss, seed=0)(x, y)
    ours, fooled = _apgd(digits_model, x, y, eps, 20, norm, loss, progress=False)
    assert_in_ball(x, ours, eps, norm)
    assert torch.equal(fooled, ~robust(digits_model, ours, y))
    assert int(robust(digits_model, ours, y).sum()) <= int(robust(digits_model, theirs, y).sum()) + 1


def test_apgd_targeted_top_k_and_given_targets(their_model, digits_model, digits_batch):
    x, y = digits_batch
    theirs = ta.APGDT(their_model, eps=0.1, steps=10, n_classes=10, seed=0)(x, y)
    ours = pl.apgd(digits_model, x, y, 0.1, steps=10, loss="dlr", targeted="top", progress=False)
    assert_in_ball(x, ours, 0.1, "linf")
    assert int(robust(digits_model, ours, y).sum()) <= int(robust(digits_model, theirs, y).sum()) + 1
    goal = (y + 1) % 10
    adv = pl.apgd(digits_model, x, goal, 0.3, steps=20, targeted=True, progress=False)
    with torch.no_grad():
        assert (digits_model(adv).argmax(1) == goal).float().mean() >= 0.8


def test_square_is_at_least_as_strong_as_torchattacks_and_stays_in_its_ball(their_model, digits_model, digits_batch):
    x, y = digits_batch
    for norm, eps in (("linf", 0.2), ("l2", 2.0)):
        adv, fooled = _square(digits_model, x, y, eps, 300, norm, progress=False)
        assert_in_ball(x, adv, eps, norm)
        assert torch.equal(fooled, ~robust(digits_model, adv, y))
        theirs = ta.Square(their_model, norm={"linf": "Linf", "l2": "L2"}[norm], eps=eps, n_queries=300, seed=0)(x, y)
        assert int((~fooled).sum()) <= int(robust(digits_model, theirs, y).sum()) + 1, norm


def test_autoattack_is_no_weaker_than_torchattacks_or_any_part(their_model, digits_model, digits_batch):
    x, y = digits_batch
    r = pl.autoattack(digits_model, x, y, EPS, steps=10, queries=300, progress=False)
    assert_in_ball(x, r.adversarial, EPS, "linf")
    ours = robust(digits_model, r.adversarial, y)
    assert r.robust_accuracy == pytest.approx(float(ours.float().mean()))
    assert r.clean_accuracy == pytest.approx(float(robust(digits_model, x, y).float().mean()))
    assert [b is None for b in r.broken_by] == ours.tolist()
    # torchattacks' AutoAttack (10 steps, as it ships) and each of its parts alone; Square with as many queries
    aa = ta.AutoAttack(their_model, norm="Linf", eps=EPS, n_classes=10, seed=0)
    for part in aa._autoattack.attacks:
        if hasattr(part, "n_queries"):
            part.n_queries = 300
    lowest = int(robust(digits_model, aa(x, y), y).sum())
    for part in aa._autoattack.attacks:
        lowest = min(lowest, int(robust(digits_model, part(x, y), y).sum()))
    assert int(ours.sum()) <= lowest
    # never weaker than its own parts run alone with the same seed
    alone = [_apgd(digits_model, x, y, EPS, 10, progress=False)[1],
             _apgd(digits_model, x, y, EPS, 10, loss="dlr", targeted="top", progress=False)[1],
             _fab(digits_model, x, y, EPS, 10, progress=False)[1],
             _square(digits_model, x, y, EPS, 300, progress=False)[1]]
    for fooled in alone:
        assert not (ours & fooled).any()


def test_fab_t_is_at_least_as_strong_as_torchattacks(their_model, digits_model, digits_batch):
    x, y = digits_batch
    theirs = ta.FAB(their_model, norm="Linf", eps=EPS, steps=10, multi_targeted=True, n_classes=10, seed=0)(x, y)
    ours, broken = _fab(digits_model, x, y, EPS, 10, progress=False)
    assert_in_ball(x, ours, EPS, "linf")
    assert torch.equal(broken, ~robust(digits_model, ours, y))
    assert torch.equal(ours[~broken], x[~broken])
    assert int((~broken).sum()) <= int(robust(digits_model, theirs, y).sum()) + 1


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_untargeted_fab_finds_perturbations_as_small_as_torchattacks(their_model, digits_model, digits_batch, norm):
    x, y = digits_batch[0][:6], digits_batch[1][:6]
    theirs = ta.FAB(their_model, norm={"linf": "Linf", "l2": "L2"}[norm], eps=10.0, steps=30, n_classes=10,
                    seed=0)(x, y)
    ours = pl.fab(digits_model, x, y, None, steps=30, norm=norm, targeted=False, progress=False)
    assert ours.min() >= 0 and ours.max() <= 1
    f_theirs, f_ours = ~robust(digits_model, theirs, y), ~robust(digits_model, ours, y)
    assert f_ours.sum() >= f_theirs.sum() >= 1
    size = {"linf": lambda d: d.flatten(1).abs().amax(1), "l2": lambda d: d.flatten(1).norm(dim=1)}[norm]
    both = f_ours & f_theirs
    assert size(ours - x)[both].median() <= 1.05 * size(theirs - x)[both].median() + 1e-6


def test_fab_towards_given_classes(digits_model, digits_batch):
    x, y = digits_batch
    goal = (y + 1) % 10
    adv = pl.fab(digits_model, x, y, None, steps=20, targeted=goal, progress=False)
    with torch.no_grad():
        assert (digits_model(adv).argmax(1) == goal).float().mean() >= 0.8
    same = pl.fab(digits_model, x, goal, None, steps=20, targeted=True, progress=False)  # label = the targets
    with torch.no_grad():
        assert (digits_model(same).argmax(1) == goal).float().mean() >= 0.8


def test_fab_rows_eps_zero_restarts_and_images_already_wrong(digits_model, digits_batch):
    x, y = digits_batch
    wrong = y.clone()
    wrong[0] = (y[0] + 1) % 10  # image 0 "misclassified" already: returned as it is, broken
    adv, broken = _fab(digits_model, x, wrong, 0.3, 5, rows=[0, 1, 2], progress=False)
    assert broken[0] and torch.equal(adv[0], x[0])
    assert torch.equal(adv[3:], x[3:]) and not broken[3:].any()  # outside rows: untouched
    eps = torch.full((len(x),), 0.3)
    eps[1] = 0.0
    adv, broken = _fab(digits_model, x, y, eps, 5, progress=False)
    assert not broken[1] and torch.equal(adv[1], x[1])
    # restarts start at half of eps (not of a smaller default) and stay reproducible
    big = pl.fab(digits_model, x[:3], y[:3], 0.5, steps=3, restarts=2, top_k=1, progress=False)
    assert_in_ball(x[:3], big, 0.5, "linf")
    assert torch.equal(big, pl.fab(digits_model, x[:3], y[:3], 0.5, steps=3, restarts=2, top_k=1, progress=False))


def test_fab_runs_on_a_half_precision_model(digits_model, digits_batch):
    half = copy.deepcopy(digits_model).to(torch.bfloat16)
    x, y = digits_batch[0][:3], digits_batch[1][:3]
    for kw in ({"top_k": 2}, {"targeted": False}, {"top_k": 1, "restarts": 2}):
        adv = pl.fab(half, x, y, 0.2, steps=3, progress=False, **kw)
        assert adv.dtype == torch.bfloat16 and adv.shape == x.shape, kw


def test_fab_projection_is_the_smallest_step_to_the_hyperplane_inside_the_box():
    """Against a linear program (L-inf) and a quadratic program (L2) on random small problems."""
    linprog, minimize = pytest.importorskip("scipy.optimize").linprog, pytest.importorskip("scipy.optimize").minimize
    import numpy as np

    g = torch.Generator().manual_seed(0)
    checked, unreachable = 0, 0
    ts, ws = torch.rand(40, 5, generator=g).double(), torch.randn(40, 5, generator=g).double()
    ws[:, 0] = 0.0
    rs = torch.randn(40, generator=g).double() * 0.6
    steps = {norm: _boundary_step(ts, ws, rs, norm) for norm in ("linf", "l2")}  # all rows in one call
    for i in range(40):
        t, w, r = ts[i:i + 1], ws[i:i + 1], rs[i:i + 1]
        wn, lo, hi, rn = w[0].numpy(), -t[0].numpy(), 1 - t[0].numpy(), float(r)
        corner = sum(wi * (h if wi * rn > 0 else low) for wi, low, h in zip(wn, lo, hi))
        for norm in ("linf", "l2"):
            step = steps[norm][i:i + 1]
            assert ((t + step) >= -1e-12).all() and ((t + step) <= 1 + 1e-12).all()
            if abs(corner) < abs(rn):  # out of reach: the corner that gets closest
                assert float((w * step).sum()) == pytest.approx(corner, abs=1e-9)
                unreachable += 1
                continue
            assert float((w * step).sum()) == pytest.approx(rn, abs=1e-9)
            if norm == "linf":
                a_ub = [np.r_[np.eye(5)[i] * s, -1.0] for i in range(5) for s in (1, -1)]
                best = linprog(np.r_[np.zeros(5), 1.0], A_ub=a_ub, b_ub=np.zeros(10), A_eq=[np.r_[wn, 0.0]],
                               b_eq=[rn], bounds=[*zip(lo, hi), (0, None)]).fun
                assert float(step.abs().max()) == pytest.approx(best, abs=1e-7)
            else:
                best = minimize(lambda z: z @ z, np.zeros(5), jac=lambda z: 2 * z, method="SLSQP",
                                bounds=list(zip(lo, hi)), options={"ftol": 1e-14, "maxiter": 500},
                                constraints=[{"type": "eq", "fun": lambda z, w=wn, r=rn: w @ z - r,
                                              "jac": lambda z, w=wn: w}]).fun
                assert float(step.norm()) == pytest.approx(best ** 0.5, abs=1e-5)
            checked += 1
    assert checked >= 40 and unreachable >= 1, (checked, unreachable)


def test_cw_and_deepfool_are_as_successful_and_as_small_as_torchattacks(their_model, digits_model, digits_batch):
    x, y = digits_batch[0][:6], digits_batch[1][:6]
    pairs = {"cw": (ta.CW(their_model, c=1.0, kappa=0.0, steps=50, lr=0.01)(x, y),
                    pl.cw(digits_model, x, y, steps=50, progress=False)),
             "deepfool": (ta.DeepFool(their_model, steps=50, overshoot=0.02)(x, y),
                          pl.deepfool(digits_model, x, y, progress=False))}
    for name, (theirs, ours) in pairs.items():
        assert ours.min() >= 0 and ours.max() <= 1
        f_theirs, f_ours = ~robust(digits_model, theirs, y), ~robust(digits_model, ours, y)
        assert f_ours.sum() >= f_theirs.sum(), name
        if f_theirs.any():
            l2_t = (theirs - x).flatten(1).norm(dim=1)[f_theirs].median()
            l2_o = (ours - x).flatten(1).norm(dim=1)[f_ours & f_theirs].median()
            assert l2_o <= 1.05 * l2_t + 1e-6, name


CALLS = {
    "apgd": lambda m, x, y: pl.apgd(m, x, y, 0.1, steps=3, progress=False),
    "apgd-t": lambda m, x, y: pl.apgd(m, x, y, 0.1, steps=3, loss="dlr", targeted="top", top_k=2, progress=False),
    "square": lambda m, x, y: pl.square(m, x, y, 0.1, queries=5, progress=False),
    "fab": lambda m, x, y: pl.fab(m, x, y, 0.1, steps=3, top_k=2, restarts=2, progress=False),
    "fab-untargeted": lambda m, x, y: pl.fab(m, x, y, None, steps=2, norm="l2", targeted=False, progress=False),
    "autoattack": lambda m, x, y: pl.autoattack(m, x, y, 0.1, steps=3, queries=5, targets=2,
                                                progress=False).adversarial,
    "cw": lambda m, x, y: pl.cw(m, x, y, steps=3, progress=False),
    "deepfool": lambda m, x, y: pl.deepfool(m, x, y, steps=3, progress=False),
}


@pytest.mark.parametrize("name", list(CALLS))
def test_no_side_effects_and_reproducible(digits_model, digits_batch, name):
    x, y = digits_batch[0][:3], digits_batch[1][:3]
    check_side_effects(lambda m, xx: CALLS[name](m, xx, y), digits_model, x)
    state = torch.get_rng_state()
    a, b = CALLS[name](digits_model, x, y), CALLS[name](digits_model, x, y)
    assert torch.equal(a, b)
    assert torch.equal(state, torch.get_rng_state()), "the global RNG moved"


def test_a_different_seed_gives_a_different_start(digits_model, digits_batch):
    x, y = digits_batch[0][:3], digits_batch[1][:3]
    a = pl.square(digits_model, x, y, 0.05, queries=3, seed=0, progress=False)
    b = pl.square(digits_model, x, y, 0.05, queries=3, seed=1, progress=False)
    assert not torch.equal(a, b)


@pytest.mark.parametrize("call,needle", [
    (lambda m, x, y: pl.apgd(m, x, y, -0.1), "-0.1"),
    (lambda m, x, y: pl.apgd(m, x, y, 0.1, norm="l3"), "l3"),
    (lambda m, x, y: pl.apgd(m, x, y, 0.1, loss="mse"), "mse"),
    (lambda m, x, y: pl.apgd(m, x, y, 0.1, targeted="bottom"), "bottom"),
    (lambda m, x, y: pl.square(m, x, y, 0.1, queries=0), "0"),
    (lambda m, x, y: pl.fab(m, x, y, -0.2), "-0.2"),
    (lambda m, x, y: pl.fab(m, x, y, 0.1, norm="l1"), "l1"),
    (lambda m, x, y: pl.fab(m, x, y, 0.1, targeted="bottom"), "bottom"),
    (lambda m, x, y: pl.fab(m, x, y, 0.1, steps=0), "steps"),
    (lambda m, x, y: pl.fab(m, x, y, 0.1, alpha_max=2.0), "alpha_max"),
    (lambda m, x, y: pl.fab(m, x, torch.full_like(y, 11), 0.1), "11"),
    (lambda m, x, y: pl.fab(m, x, lambda out: out[:, 0], 0.1), "class indices"),
    (lambda m, x, y: pl.fab(m, x, y, 0.1, targeted=lambda out: out[:, 0]), "targeted must be class indices"),
    (lambda m, x, y: pl.pgd(m, x, y, 0.1, 0.01, 2, targeted="top"), "'top' is for apgd and fab"),
    (lambda m, x, y: pl.fab(torch.nn.Sequential(m, torch.nn.Flatten(0)), x, y, 0.1), "shape"),
    (lambda m, x, y: pl.square(m, x, y, -1.0), "-1"),
    (lambda m, x, y: pl.autoattack(m, x, y, 0.1, version="fast"), "fast"),
    (lambda m, x, y: pl.autoattack(m, x, y, 0.1, norm="l1"), "l1"),
    (lambda m, x, y: pl.autoattack(m, x, torch.full_like(y, 10), 0.1), "10"),
    (lambda m, x, y: pl.cw(m, x, torch.full_like(y, 12)), "12"),
    (lambda m, x, y: pl.cw(m, x, y, c=-1.0), "-1"),
    (lambda m, x, y: pl.deepfool(m, x, torch.full_like(y, -3)), "-3"),
    (lambda m, x, y: pl.deepfool(m, x, y, steps=0), "0"),
])
def test_bad_arguments_are_refused_clearly(digits_model, digits_batch, call, needle):
    x, y = digits_batch[0][:2], digits_batch[1][:2]
    with pytest.raises(pl.PellucidError, match=needle):
        call(digits_model, x, y)


def test_the_new_attacks_run_through_their_records(digits_model, digits_batch):
    x, y = digits_batch[0][:2], digits_batch[1][:2]
    for name in ("apgd", "fab", "square", "autoattack", "cw", "deepfool"):
        record = registry.attack(name)
        for norm, eps in (("linf", 0.1), ("l2", 1.0)):
            adv = record.run(digits_model, x, y, eps, norm=norm, steps=2)
            assert_in_ball(x, adv, eps, norm)


def test_autoattack_curve_and_eps_zero(digits_model, digits_batch):
    x, y = digits_batch[0][:4], digits_batch[1][:4]
    r = pl.autoattack(digits_model, x, y, 0.0, steps=2, queries=2, progress=False)
    assert torch.equal(r.adversarial, x) and r.robust_accuracy == r.clean_accuracy
    curve = pl.robustness_curve(digits_model, x, y, [0.0, 0.3], "autoattack", steps=5, progress=False)
    assert curve.accuracy[0] >= curve.accuracy[1]


def test_pgd_momentum_is_mifgsm(their_model, digits_model, digits_batch):
    x, y = digits_batch
    theirs = ta.MIFGSM(their_model, eps=0.1, alpha=0.02, steps=10, decay=1.0)(x, y)
    ours = pl.pgd(digits_model, x, y, 0.1, 0.02, 10, random_start=False, momentum=1.0, progress=False)
    assert (ours - theirs).abs().max() < 1e-5
    early = pl.pgd(digits_model, x, y, 0.1, 0.02, 10, random_start=False, momentum=1.0, early_stop=True,
                   progress=False)
    assert_in_ball(x, early, 0.1, "linf")
