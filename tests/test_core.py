"""The shared numerical pieces: quadrature, lime's kernel and the weighted ridge fit."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pellucid._checks import PellucidError
from pellucid._grad import quadrature
from pellucid._surrogate import lime_kernel, weighted_ridge


@pytest.mark.parametrize("rule", ["gausslegendre", "riemann_left", "riemann_right", "riemann_middle",
                                  "riemann_trapezoid"])
def test_quadrature_integrates_polynomials(rule):
    alphas, weights = quadrature(64, rule)
    assert alphas.shape == weights.shape == (64,)
    assert abs(float(weights.sum()) - 1) < 1e-6 and 0 <= alphas.min() and alphas.max() <= 1
    # integral of 3a^2 over [0, 1] is 1
    tol = 1e-5 if rule == "gausslegendre" else 5e-2
    assert abs(float((weights * 3 * alphas**2).sum()) - 1) < tol


@pytest.mark.parametrize("rule", ["gausslegendre", "riemann_left", "riemann_right", "riemann_middle"])
def test_quadrature_matches_captum(rule):
    # (Captum's trapezoid weights sum to (n-1)/n, not 1; ours is the textbook rule, so it is not compared)
    from captum.attr._utils.approximation_methods import approximation_parameters

    step_sizes, alphas = approximation_parameters(rule)
    a, w = quadrature(20, rule)
    assert np.allclose(a.numpy(), alphas(20), atol=1e-6)
    assert np.allclose(w.numpy(), step_sizes(20), atol=1e-6)


def test_quadrature_rejects_bad_input():
    with pytest.raises(PellucidError, match="steps must be an int >= 1"):
        quadrature(0)
    with pytest.raises(PellucidError, match="unknown quadrature rule 'simpson'"):
        quadrature(10, "simpson")


def test_weighted_ridge_and_kernel_match_sklearn_and_lime():
    from sklearn.linear_model import Ridge
    from sklearn.metrics import pairwise_distances

    rng = np.random.default_rng(0)
    z = rng.integers(0, 2, (300, 20)).astype(float)
    z[0] = 1
    y = z @ rng.normal(size=20) + rng.normal(size=300) * 0.1
    d = pairwise_distances(z, z[0:1], metric="cosine").ravel()
    w = np.sqrt(np.exp(-(d**2) / 0.25**2))
    assert np.allclose(lime_kernel(torch.tensor(z)).numpy(), w, atol=1e-6)
    ref = Ridge(alpha=1, fit_intercept=True).fit(z, y, sample_weight=w)
    coef, intercept, r2 = weighted_ridge(torch.tensor(z), torch.tensor(y), torch.tensor(w))
    assert np.allclose(coef.numpy(), ref.coef_, atol=1e-5)
    assert abs(float(intercept) - ref.intercept_) < 1e-5
    assert abs(float(r2) - ref.score(z, y, sample_weight=w)) < 1e-5


def test_gradient_seed_of_ones_is_shared_but_never_written():
    """iter_gradients seeds autograd with a cached tensor of ones; backward must only read it."""
    from pellucid import _grad
    from pellucid.targets import as_target

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 4))
    x = torch.rand(6, 3, 2, 2)
    for p in model.parameters():
        p.requires_grad_(False)
    target = as_target([0, 1, 2, 3, 0, 1], 6, 4)
    for bs in (6, 4, 6):  # a whole-batch chunk (no slice) and chunks of 4 + 2
        grad, scores = _grad.input_gradient(model, x, target, bs)
        want = model[1].weight[target.classes].reshape(6, 3, 2, 2)  # the gradient of a linear logit: its weights
        torch.testing.assert_close(grad, want)
    assert _grad._ONES and all(bool((t == 1).all()) for t in _grad._ONES.values())
