"""Attacks on the explanation (Ghorbani et al. 2019): the class stays, the map moves more than under noise."""

from __future__ import annotations

import pytest
import torch
from conftest import check_side_effects

import pellucid as pl
from pellucid._checks import PellucidError
from pellucid.metrics import ATTACKABLE, spearman, topk_overlap


@pytest.fixture(scope="module")
def attacked(digits_model, digits_batch):
    x, y = digits_batch
    return x[:5], pl.explanation_attack(digits_model, x[:5], None, "saliency", eps=0.05, steps=20, seed=0)


def test_keeps_every_prediction_and_stays_in_the_ball(digits_model, attacked):
    x, r = attacked
    assert r.kept.all()
    assert torch.equal(digits_model(r.image).argmax(1), digits_model(x).argmax(1))
    assert torch.equal(r.predicted, digits_model(x).argmax(1))
    assert (r.image - x).abs().max() <= 0.05 + 1e-6
    assert r.image.min() >= 0 and r.image.max() <= 1


def test_moves_the_map_more_than_noise_of_the_same_size(digits_model, attacked):
    x, r = attacked
    torch.testing.assert_close(r.map, pl.saliency(digits_model, r.image, r.predicted).abs())
    torch.testing.assert_close(r.similarity.spearman, spearman(r.original, r.map))
    torch.testing.assert_close(r.similarity.topk, topk_overlap(r.original, r.map, 0.1))
    attack_rho, attack_top = r.similarity.mean()
    noise_rho, noise_top = r.noise.mean()
    assert attack_rho < noise_rho and attack_top < noise_top - 0.05, (r.similarity, r.noise)
    assert r.similarity.k == round(0.1 * 28 * 28)


def test_gradient_x_input_is_attackable_too(digits_model, digits_batch):
    x, y = digits_batch
    r = pl.explanation_attack(digits_model, x[:3], y[:3], "input_x_gradient", eps=0.05, steps=8, checks=2)
    assert r.kept.all() and r.method == "input_x_gradient"
    assert float(r.similarity.topk.mean()) < 1
    assert set(ATTACKABLE) >= {"saliency", "input_x_gradient", "smoothgrad", "ig"}


def test_seeded_and_leaves_the_global_rng_alone(digits_model, digits_batch):
    x, _ = digits_batch
    state = torch.random.get_rng_state()
    a = pl.explanation_attack(digits_model, x[:2], None, steps=3, seed=1, checks=1)
    b = pl.explanation_attack(digits_model, x[:2], None, steps=3, seed=1, checks=1)
    assert torch.equal(a.image, b.image) and torch.equal(a.similarity.spearman, b.similarity.spearman)
    assert torch.equal(torch.random.get_rng_state(), state)


def test_the_model_is_not_modified_bit_for_bit(digits_model, digits_batch):
    x, _ = digits_batch
    before = {k: v.clone() for k, v in digits_model.state_dict().items()}
    relus = [type(m) for m in digits_model.modules()]
    pl.explanation_attack(digits_model, x[:2], None, steps=2, checks=1)
    assert all(torch.equal(before[k], v) for k, v in digits_model.state_dict().items())
    assert [type(m) for m in digits_model.modules()] == relus
    logits = digits_model(x[:2])
    torch.testing.assert_close(logits, digits_model(x[:2]))


@pytest.mark.parametrize("kw, message", [
    ({"method": "gradcam"}, r"differentiates saliency, input_x_gradient.*got method 'gradcam'"),
    ({"eps": 0}, r"eps must be a finite number in \(0, 1\].*got 0"),
    ({"eps": 2.0}, r"eps must be a finite number in \(0, 1\].*got 2.0"),
    ({"steps": -1}, r"steps must be an int >= 0, got -1"),
    ({"beta": 0}, r"beta must be a finite number > 0.*got 0"),
    ({"top": 1.5}, r"top must be a pixel count >= 1 or a fraction in \(0, 1\], got 1.5"),
])
def test_bad_input_is_named(digits_model, digits_batch, kw, message):
    x, _ = digits_batch
    with pytest.raises(PellucidError, match=message):
        pl.explanation_attack(digits_model, x[:2], None, **{"steps": 1, **kw})


def test_no_side_effects(digits_model, digits_batch):
    x, _ = digits_batch
    check_side_effects(lambda m, xx: pl.explanation_attack(m, xx, None, steps=2, checks=1), digits_model, x[:2])
