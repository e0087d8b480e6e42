"""Infidelity and max-sensitivity (Yeh et al. 2019): closed forms, Captum, the paper's finding, hygiene."""

from __future__ import annotations

import pytest
import torch
from conftest import check_side_effects
from test_metrics import linear_model, rand_images

import pellucid as pl
from pellucid._checks import PellucidError
from pellucid.metrics._random import row_noise


def test_linear_gradient_has_zero_infidelity_and_sensitivity():
    model = linear_model(c=2)
    x = rand_images(3, 2, 6, 6)
    grad = pl.gradient(model, x, 1)
    for normalize in (True, False):
        assert pl.infidelity(model, x, 1, grad, normalize=normalize).abs().max() < 1e-9
    assert pl.sensitivity(model, x, 1, pl.gradient).abs().max() == 0
    assert pl.sensitivity(model, x, 1, "saliency").abs().max() == 0
    # a wrong map is not: infidelity grows with how wrong it is
    wrong = pl.infidelity(model, x, 1, grad + rand_images(3, 2, 6, 6, seed=4), normalize=False)
    assert (wrong > 1e-3).all()


def _captum_pair(model, x, y, samples, noise_fn):
    from captum.metrics import infidelity as captum_infidelity

    attribution = pl.saliency(model, x, y)
    ours = pl.infidelity(model, x, y, attribution, noise=0.1, samples=samples)
    ref = captum_infidelity(model.eval(), noise_fn, x, attribution[:, None].expand_as(x).contiguous(), target=y,
                            n_perturb_samples=samples, normalize=True, max_examples_per_batch=250)
    return ours, ref


def test_infidelity_equals_captum_with_the_same_noise(digits_model, digits_batch):
    pytest.importorskip("captum")
    x, y = digits_batch
    x, y = x[:3], y[:3]
    calls = []

    def same(inputs):  # pellucid's draws: row r of copy r % samples of image r // samples
        start = sum(calls)
        calls.append(len(inputs))
        p = 0.1 * row_noise(0, slice(start, start + len(inputs)), inputs.shape[1:], inputs)
        return p, inputs - p

    ours, ref = _captum_pair(digits_model, x, y, 40, same)
    torch.testing.assert_close(ours, ref.float(), rtol=1e-4, atol=1e-6)


def test_infidelity_matches_captum_within_sampling_error(digits_model, digits_batch):
    """Independent Gaussian draws (Captum's own noise, 500 samples): batch means within 5%."""
    pytest.importorskip("captum")
    x, y = digits_batch
    x, y = x[:4], y[:4]

    def gauss(inputs):
        p = 0.1 * torch.randn(inputs.shape, generator=gen)
        return p, inputs - p

    gen = torch.Generator().manual_seed(1)
    ours, ref = _captum_pair(digits_model, x, y, 500, gauss)
    assert abs(float(ours.mean() / ref.mean()) - 1) < 0.05, (ours, ref)
    assert ((ours / ref - 1).abs() < 0.35).all(), (ours, ref)  # per image: a few standard errors


def test_smoothgrad_is_less_sensitive_than_saliency(digits_model, digits_batch):
    """Yeh et al. 2019's finding: smoothing lowers max-sensitivity."""
    x, y = digits_batch
    x, y = x[:4], y[:4]
    plain = pl.sensitivity(digits_model, x, y, "saliency", samples=4)
    smooth = pl.sensitivity(digits_model, x, y, "smoothgrad", samples=4, options={"samples": 12})
    assert float(smooth.mean()) < 0.8 * float(plain.mean()), (smooth, plain)


def test_seeded_reproducible_and_independent_of_batch_size(digits_model, digits_batch):
    x, y = digits_batch
    x, y = x[:3], y[:3]
    state = torch.random.get_rng_state()
    a = pl.infidelity(digits_model, x, y, "saliency", samples=8, seed=3, batch_size=5)
    b = pl.infidelity(digits_model, x, y, "saliency", samples=8, seed=3, batch_size=64)
    c = pl.infidelity(digits_model, x, y, "saliency", samples=8, seed=4)
    torch.testing.assert_close(a, b)
    assert not torch.equal(a, c)
    s1 = pl.sensitivity(digits_model, x, y, "saliency", samples=3, seed=2, batch_size=4)
    s2 = pl.sensitivity(digits_model, x, y, "saliency", samples=3, seed=2, batch_size=64)
    torch.testing.assert_close(s1, s2)
    g = torch.Generator().manual_seed(3)
    assert pl.infidelity(digits_model, x, y, "saliency", samples=4, seed=g).shape == (3,)
    assert torch.equal(torch.random.get_rng_state(), state)


@pytest.mark.parametrize("call, message", [
    (lambda m, x, y: pl.infidelity(m, x, y, "saliency", noise=0), r"noise must be a finite number > 0, got 0"),
    (lambda m, x, y: pl.infidelity(m, x, y, "saliency", samples=0), r"samples"),
    (lambda m, x, y: pl.infidelity(m, x, y, torch.zeros(2, 5, 5)), r"shape \(2, 5, 5\)"),
    (lambda m, x, y: pl.infidelity(m, x, y, "nope"), r"unknown attribution method 'nope'"),
    (lambda m, x, y: pl.infidelity(m, x, y, "saliency", seed=1.5), r"seed must be an int.*1\.5"),
    (lambda m, x, y: pl.sensitivity(m, x, y, "saliency", radius=-1), r"radius must be a finite number > 0, got -1"),
    (lambda m, x, y: pl.sensitivity(m, x, y, "saliency", samples=2.5), r"samples.*2\.5"),
    (lambda m, x, y: pl.sensitivity(m, x, y, lambda *a: torch.zeros(1)), r"one map per image"),
])
def test_bad_input_is_named(digits_model, digits_batch, call, message):
    x, y = digits_batch
    with pytest.raises(PellucidError, match=message):
        call(digits_model, x[:2], y[:2])


@pytest.mark.parametrize("name", ["infidelity", "sensitivity"])
def test_no_side_effects(name, digits_model, digits_batch):
    x, y = digits_batch
    calls = {
        "infidelity": lambda m, xx: pl.infidelity(m, xx, y[:2], "saliency", samples=3),
        "sensitivity": lambda m, xx: pl.sensitivity(m, xx, y[:2], "saliency", samples=2),
    }
    check_side_effects(calls[name], digits_model, x[:2])
