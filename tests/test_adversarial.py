"""How easily is it fooled: attacks against torchattacks, the eps-ball, replayed fooling steps,
minimal epsilon, robustness curves, side effects, errors, rendering and the commands."""

from __future__ import annotations

import pytest
import torch
import torchattacks
from conftest import check_side_effects

import pellucid as pl
from pellucid._checks import PellucidError
from pellucid.adversarial import _pgd, random_targets
from pellucid.drawing import render


def predict(model, x):
    model.eval()
    with torch.no_grad():
        return model(x).argmax(1)


@pytest.fixture(scope="module")
def digits50():
    return pl.sample_images("digits", n=50)


@pytest.fixture(scope="module")
def photo_batch(resnet_small, photos_small):
    x, _ = photos_small
    x = torch.cat([x, x.flip(-1)])  # 8 photos at 64x64
    return x, predict(resnet_small, x)


# ---------------------------------------------------------------------------------------------
# FGSM and PGD against torchattacks


def test_fgsm_equals_torchattacks_on_digits(digits_model, digits_batch):
    x, y = digits_batch
    for eps in (0.05, 0.2):
        ours = pl.fgsm(digits_model, x, y, eps)
        ref = torchattacks.FGSM(digits_model, eps=eps)(x, y)
        assert (ours - ref).abs().max() <= 1e-6


def test_fgsm_equals_torchattacks_on_resnet(resnet_small, photo_batch):
    x, y = photo_batch
    ours = pl.fgsm(resnet_small, x, y, 4 / 255)
    ref = torchattacks.FGSM(resnet_small, eps=4 / 255)(x, y)
    assert (ours - ref).abs().max() <= 1e-6
    assert (ours - x).abs().max() > 3.9 / 255  # it did move


def test_targeted_fgsm_equals_torchattacks(digits_model, digits_batch):
    x, y = digits_batch
    goal = (y + 3) % 10
    atk = torchattacks.FGSM(digits_model, eps=0.1)
    atk.set_mode_targeted_by_label(quiet=True)
    ref = atk(x, goal)
    assert (pl.fgsm(digits_model, x, goal, 0.1, targeted=True) - ref).abs().max() <= 1e-6
    assert (pl.fgsm(digits_model, x, y, 0.1, targeted=goal) - ref).abs().max() <= 1e-6


@pytest.fixture(scope="module")
def digits20():
    return pl.sample_images("digits", n=20)


@pytest.mark.parametrize("norm, eps, alpha", [("linf", 0.15, 0.02), ("l2", 1.5, 0.3)])
@pytest.mark.parametrize("random_start", [False, True])
def test_pgd_success_at_least_torchattacks(digits_model, digits20, norm, eps, alpha, random_start):
    # with random_start both draw the same start: torchattacks from the global RNG seeded 3, ours seed=3
    x, y = digits20
    cls = torchattacks.PGD if norm == "linf" else torchattacks.PGDL2
    with torch.random.fork_rng():
        torch.manual_seed(3)
        ref = cls(digits_model, eps=eps, alpha=alpha, steps=10, random_start=random_start)(x, y)
    kw = dict(norm=norm, random_start=random_start, seed=3, progress=False)
    ours = pl.pgd(digits_model, x, y, eps, alpha, 10, **kw)
    early = pl.pgd(digits_model, x, y, eps, alpha, 10, early_stop=True, **kw)
    ref_success = (predict(digits_model, ref) != y).sum()
    assert ref_success >= 5  # the comparison means something
    assert (predict(digits_model, ours) != y).sum() >= ref_success
    assert (predict(digits_model, early) != y).sum() >= ref_success
    if norm == "linf":  # the same algorithm, step for step
        assert (ours - ref).abs().max() <= 1e-6


@pytest.mark.parametrize("norm, eps", [("linf", 0.08), ("l2", 1.0)])
@pytest.mark.parametrize("targeted", [False, True])
def test_pgd_stays_in_the_ball_and_the_box(digits_model, digits_batch, norm, eps, targeted):
    x, y = digits_batch
    label = (y + 1) % 10 if targeted else y
    eps_each = torch.linspace(eps / 4, eps, len(x))
    adv = pl.pgd(digits_model, x, label, eps_each, eps / 4, 15, norm=norm, targeted=targeted, progress=False)
    d = (adv - x).flatten(1)
    size = d.abs().amax(1) if norm == "linf" else d.norm(dim=1)
    assert (size <= eps_each * (1 + 1e-5) + 1e-6).all()
    assert (size >= eps_each * 0.5).any()  # it moved out towards the boundary
    assert adv.min() >= 0 and adv.max() <= 1


def test_early_stop_sends_only_running_images_through_the_model(digits_model, digits20):
    x, y = digits20
    rows = []
    handle = digits_model.register_forward_pre_hook(lambda _m, inp: rows.append(len(inp[0])))
    try:
        adv, taken = _pgd(digits_model, x, y, 0.2, 0.03, 15, early_stop=True, progress=False)
    finally:
        handle.remove()
    # each image is in one pass per step it took, plus the pass that found it fooled (or the final check)
    assert sum(rows) == int(taken.sum()) + len(x)
    assert taken.sum() < 15 * len(x) * 0.8
    stopped = taken < 15
    assert (predict(digits_model, adv[stopped]) != y[stopped]).all()


def test_pgd_is_seeded_and_leaves_the_global_rng_alone(digits_model, digits_batch):
    x, y = digits_batch
    state = torch.get_rng_state()
    a = pl.pgd(digits_model, x, y, 0.1, 0.02, 3, seed=1, progress=False)
    b = pl.pgd(digits_model, x, y, 0.1, 0.02, 3, seed=1, progress=False)
    c = pl.pgd(digits_model, x, y, 0.1, 0.02, 3, seed=2, progress=False)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(torch.get_rng_state(), state)


# ---------------------------------------------------------------------------------------------
# fooling images


def replay_steps(model, x, target, lr=1.0, max_steps=100) -> int:
    """The course exercise written out for one image: the first step at which the target is predicted."""
    x = x.clone()
    for step in range(max_steps + 1):
        if int(predict(model, x)) == target:
            return step
        if step == max_steps:
            return -1
        g = pl.gradient(model, x, target)
        x = (x + lr * g / g.norm()).clamp(0, 1)
    return -1


def test_fooling_image_reaches_random_targets(digits_model, digits50):
    x, y = digits50
    goal = random_targets(y, 10, seed=0)
    assert (goal != y).all()
    r = pl.fooling_image(digits_model, x, goal, progress=False)
    assert r.success.float().mean() >= 0.95
    pred = predict(digits_model, r.image)
    assert torch.equal(pred == goal, r.success)
    assert r.image.min() >= 0 and r.image.max() <= 1
    probs = torch.softmax(digits_model(r.image), 1).detach()
    assert torch.allclose(r.prob_target, probs[torch.arange(50), goal], atol=1e-5)
    assert torch.equal(r.original, predict(digits_model, x))
    assert torch.allclose(r.prob_original, probs[torch.arange(50), r.original], atol=1e-5)
    for i in range(0, 50, 7):  # the step count is the first step at which the target is predicted
        assert replay_steps(digits_model, x[i : i + 1], int(goal[i])) == int(r.steps[i])


def test_fooling_image_stops_each_image_on_its_own(digits_model, digits_batch):
    x, y = digits_batch
    goal = y.clone()
    goal[:5] = (y[:5] + 1) % 10  # the last five already predict their target: zero steps
    r = pl.fooling_image(digits_model, x, goal, max_steps=3, progress=False)
    assert (r.steps[5:] == 0).all() and torch.equal(r.image[5:], x[5:])
    assert (r.steps[:5] <= 3).all()
    assert torch.equal(r.success, predict(digits_model, r.image) == goal)


def test_fooling_image_without_clamp_may_leave_the_box(digits_model, digits_batch):
    x, _ = digits_batch
    r = pl.fooling_image(digits_model, x[:3], 4, lr=3.0, max_steps=5, clamp=False, progress=False)
    assert r.image.min() < 0 or r.image.max() > 1


# ---------------------------------------------------------------------------------------------
# minimal epsilon and robustness curves


def test_minimal_epsilon_fgsm_flips_and_a_smaller_one_does_not(digits_model, digits_batch):
    x, y = digits_batch
    tol = 1e-3
    eps = pl.minimal_epsilon(digits_model, x, y, "fgsm", tol=tol, progress=False)
    found = torch.isfinite(eps) & (eps > 0)
    assert found.sum() >= 8
    e = eps[found]
    assert (predict(digits_model, pl.fgsm(digits_model, x[found], y[found], e)) != y[found]).all()
    below = pl.fgsm(digits_model, x[found], y[found], e - tol)
    assert (predict(digits_model, below) == y[found]).all()
    smaller = 0.9 * e
    assert (predict(digits_model, pl.fgsm(digits_model, x[found], y[found], smaller)) == y[found]).all()


def test_minimal_epsilon_pgd(digits_model, digits_batch):
    x, y = digits_batch
    x, y = x[:4], y[:4]
    tol = 2e-3
    eps = pl.minimal_epsilon(digits_model, x, y, "pgd", steps=5, tol=tol, eps_max=0.4, progress=False)
    assert torch.isfinite(eps).all() and (eps > 0).all()

    def attack(e):
        return pl.pgd(digits_model, x, y, e, e * 2.5 / 5, 5, random_start=False, early_stop=True, progress=False)

    assert (predict(digits_model, attack(eps)) != y).all()
    assert (predict(digits_model, attack(eps * 0.9)) == y).all()


def test_minimal_epsilon_of_a_misclassified_image_is_zero(digits_model, digits_batch):
    x, y = digits_batch
    wrong = (predict(digits_model, x[:2]) + 1) % 10
    assert (pl.minimal_epsilon(digits_model, x[:2], wrong, progress=False) == 0).all()


def test_robustness_curve_fgsm_matches_torchattacks(digits_model, digits50):
    x, y = digits50
    eps = [0.0, 0.05, 0.1, 0.2]
    curve = pl.robustness_curve(digits_model, x, y, eps, attack="fgsm", progress=False)
    for e, acc in zip(eps, curve.accuracy):
        ref = torchattacks.FGSM(digits_model, eps=e)(x, y)
        assert abs(float(acc) - float((predict(digits_model, ref) == y).float().mean())) < 1e-6


def test_robustness_curve_pgd(digits_model, digits20):
    x, y = digits20
    curve = pl.robustness_curve(digits_model, x, y, [0.0, 0.1, 0.3], steps=10, progress=False)
    clean = float((predict(digits_model, x) == y).float().mean())
    assert abs(float(curve.accuracy[0]) - clean) < 1e-6
    ref = torchattacks.PGD(digits_model, eps=0.1, alpha=0.025, steps=10, random_start=False)(x, y)
    assert float(curve.accuracy[1]) <= float((predict(digits_model, ref) == y).float().mean()) + 0.051
    assert float(curve.accuracy[2]) <= 0.05
    png = render.robustness_plot(curve)
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000


# ---------------------------------------------------------------------------------------------
# side effects and errors


CALLS = {
    "fooling_image": lambda m, x: pl.fooling_image(m, x, 3, max_steps=3, progress=False),
    "fgsm": lambda m, x: pl.fgsm(m, x, 1, 0.1),
    "pgd_linf": lambda m, x: pl.pgd(m, x, 1, 0.1, 0.02, 3, progress=False),
    "pgd_l2_early": lambda m, x: pl.pgd(m, x, 1, 1.0, 0.3, 3, norm="l2", early_stop=True, progress=False),
    "minimal_epsilon": lambda m, x: pl.minimal_epsilon(m, x, 1, grid=2, tol=0.05, progress=False),
    "minimal_epsilon_pgd": lambda m, x: pl.minimal_epsilon(m, x, 1, "pgd", grid=2, tol=0.1, steps=2,
                                                           progress=False),
    "robustness_curve": lambda m, x: pl.robustness_curve(m, x, 1, [0, 0.1], steps=2, progress=False),
}


@pytest.mark.parametrize("name", list(CALLS))
def test_no_side_effects(digits_model, digits_batch, name):
    check_side_effects(CALLS[name], digits_model, digits_batch[0][:3])


def test_no_side_effects_on_resnet(resnet_small, photo_batch):
    check_side_effects(CALLS["pgd_linf"], resnet_small, photo_batch[0][:2])


@pytest.mark.parametrize("call, message", [
    (lambda m, x, y: pl.fgsm(m, x, y, -0.1), "eps must be a finite number >= 0, got -0.1"),
    (lambda m, x, y: pl.pgd(m, x, y, -1, 0.1, 3), "eps must be a finite number >= 0, got -1"),
    (lambda m, x, y: pl.pgd(m, x, y, 0.1, -0.1, 3), "alpha must be a finite number >= 0"),
    (lambda m, x, y: pl.pgd(m, x, y, 0.1, 0.1, 0), "steps must be an int >= 1, got 0"),
    (lambda m, x, y: pl.pgd(m, x, y, 0.1, 0.1, 3, norm="l1"), "unknown norm 'l1'; choose one of: linf, l2"),
    (lambda m, x, y: pl.fgsm(m, x, y, 0.1, targeted=y), "target .* equals the label of image 0"),
    (lambda m, x, y: pl.pgd(m, x, y, 0.1, 0.1, 3, targeted=int(y[2])), "equals the label of image 2"),
    (lambda m, x, y: pl.fgsm(m, x, y[:3], 0.1), "got 3 labels for 10 images"),
    (lambda m, x, y: pl.pgd(m, x, [1, 2], 0.1, 0.1, 3), "got 2 labels for 10 images"),
    (lambda m, x, y: pl.fgsm(m, x, y, [0.1, 0.2]), "got 2 values of eps for 10 images"),
    (lambda m, x, y: pl.apgd(m, x, lambda z: z[:, 0], 0.1), "label must be class indices"),
    (lambda m, x, y: pl.fgsm(m, x, 12, 0.1), "label 12 is out of range"),
    (lambda m, x, y: pl.fooling_image(m, x, [1, 2]), "got 2 targets for 10 images"),
    (lambda m, x, y: pl.fooling_image(m, x, 1, max_steps=0), "max_steps must be an int >= 1"),
    (lambda m, x, y: pl.minimal_epsilon(m, x, y, "cw"), "unknown attack 'cw'; choose one of: fgsm, pgd"),
    (lambda m, x, y: pl.minimal_epsilon(m, x, y, "fgsm", norm="l2"), "fgsm is an L-infinity attack"),
    (lambda m, x, y: pl.robustness_curve(m, x, y, []), "eps_values is empty"),
    (lambda m, x, y: pl.robustness_curve(m, x, y, [0.1, -0.2]), "eps must be a finite number >= 0, got -0.2"),
    (lambda m, x, y: pl.pgd(m, x, y, 0.1, 0.1, 3, seed=1.5), "seed must be an int or a torch.Generator"),
    (lambda m, x, y: pl.fgsm(m, x * 255, y, 0.1), "pixel space"),
])
def test_clear_errors(digits_model, digits_batch, call, message):
    x, y = digits_batch
    with pytest.raises(PellucidError, match=message):
        call(digits_model, x, y)


def test_progress_false_prints_nothing(digits_model, digits_batch, capsys):
    x, y = digits_batch
    pl.pgd(digits_model, x, y, 0.1, 0.01, 2, progress=False)
    pl.robustness_curve(digits_model, x, y, [0, 0.1], steps=2, progress=False)
    assert capsys.readouterr().err == ""


# ---------------------------------------------------------------------------------------------
# pictures, commands, report


def test_attack_rows_png(digits_model, digits_batch):
    x, y = digits_batch
    adv = pl.fgsm(digits_model, x[:3], y[:3], 0.1)
    probs = torch.softmax(digits_model(x[:3]), 1).detach()
    from io import BytesIO

    from PIL import Image

    three = Image.open(BytesIO(render.attack_rows(x[:3], adv, probs, probs, digits_model.label, ["a", "b", "c"])))
    one = Image.open(BytesIO(render.attack_rows(x[:1], adv[:1], probs[:1], probs[:1])))
    assert three.height > 2.5 * one.height and abs(three.width - one.width) < 30  # one row per image


@pytest.mark.parametrize("args, expect", [
    (["fool", "-n", "3", "--target", "7"], "fooled in"),
    (["attack", "-n", "3", "--method", "fgsm", "--eps", "0.2"], "predictions changed"),
    (["attack", "-n", "3", "--eps", "0.2", "--steps", "5", "--targeted", "9", "-n", "3"], "predictions changed"),
    (["robustness", "-n", "5", "--eps", "0,0.2", "--steps", "3"], "| 0.2 |"),
])
def test_commands(tmp_path, capsys, digits_model, args, expect):
    from pellucid.cli import main

    out = tmp_path / "out.png"
    assert main([*args, "--out", str(out)]) == 0
    assert expect in capsys.readouterr().out
    assert out.read_bytes()[:4] == b"\x89PNG"


def test_command_errors(capsys, digits_model):
    from pellucid.cli import main

    assert main(["attack", "-n", "2", "--eps", "-1"]) == 2
    assert "eps must be a finite number >= 0" in capsys.readouterr().err
    assert main(["robustness", "--eps", "0,x"]) == 2
    assert "--eps must be comma-separated numbers" in capsys.readouterr().err


def test_report_section(tmp_path, digits_model, digits_batch):
    from pellucid.drawing.report import SECTIONS, build_report, fooled_section

    assert fooled_section in SECTIONS
    x, y = digits_batch
    page = build_report(digits_model, x[:4], y[:4], tmp_path, progress=False, sections=[fooled_section]).read_text()
    assert "How easily is it fooled" in page and page.count("data:image/png;base64,") == 2
    assert "accuracy under PGD" in page
