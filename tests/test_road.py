"""ROAD (Rong et al. 2022): the imputation against pytorch-grad-cam's, the curve against its ROAD metric."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import check_side_effects
from test_metrics import linear_model, rand_images

import pellucid as pl
from pellucid._checks import PellucidError
from pellucid.metrics import impute, random_attribution


@pytest.mark.parametrize("shape, fraction", [((1, 28, 28), 0.5), ((3, 20, 24), 0.9), ((3, 40, 36), 0.3)])
def test_imputation_equals_pytorch_grad_cam_without_noise(shape, fraction):
    road_ref = pytest.importorskip("pytorch_grad_cam.metrics.road")
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(2, *shape, generator=gen)
    removed = torch.rand(2, *shape[1:], generator=gen) < fraction
    removed[1, 4:15, 3:17] = True  # a large hole: the slow case for an iterative solver
    ours = impute(x, removed, tol=1e-7)
    ref = torch.stack([road_ref.NoisyLinearImputer(noise=0)(x[j], (~removed[j]).float()) for j in range(2)])
    torch.testing.assert_close(ours, ref, atol=2e-4, rtol=0)
    assert torch.equal(ours[~removed[:, None].expand_as(x)], x[~removed[:, None].expand_as(x)])


def test_imputation_of_an_affine_image_is_exact_inside():
    """A weighted mean of symmetric neighbours reproduces a linear ramp away from the border."""
    h = w = 16
    ramp = (torch.arange(h)[:, None] * 0.03 + torch.arange(w)[None] * 0.02 + 0.1).expand(1, 1, h, w)
    removed = torch.zeros(1, h, w, dtype=torch.bool)
    removed[0, 4:12, 5:11] = True
    torch.testing.assert_close(impute(ramp, removed, tol=1e-8), ramp, atol=1e-5, rtol=0)
    everything = torch.ones(1, h, w, dtype=torch.bool)
    torch.testing.assert_close(impute(ramp, everything), ramp.mean().expand(1, 1, h, w))


def test_road_curve_has_pytorch_grad_cams_shape(digits_model, digits_batch):
    """Same fractions, same maps: mean curves within 0.03 and correlated, the same ranking of methods.
    (pytorch-grad-cam's ``percentile=p`` removes the top 100-p percent; its noise draws differ.)"""
    road_ref = pytest.importorskip("pytorch_grad_cam.metrics.road")
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

    x, y = digits_batch
    x, y = x[:6], y[:6]
    fractions = [0.1, 0.3, 0.5, 0.7, 0.9]
    maps = {"gradcam": pl.grad_cam(digits_model, x, y), "saliency": pl.saliency(digits_model, x, y),
            "random": random_attribution(x)}
    ours, theirs = {}, {}
    torch.manual_seed(0)  # pytorch-grad-cam's noise comes from the global generator
    for name, a in maps.items():
        curve = pl.road(digits_model, x, y, a, fractions=fractions)
        targets = [ClassifierOutputSoftmaxTarget(int(c)) for c in y]
        ref = np.stack([road_ref.ROADMostRelevantFirst(percentile=round(100 * (1 - f)))(
            x, a.numpy(), targets, digits_model.eval(), return_diff=False) for f in fractions], 1)
        ours[name], theirs[name] = curve.scores.mean(0), torch.as_tensor(ref).mean(0)
        assert (ours[name] - theirs[name]).abs().max() < 0.03, (name, ours[name], theirs[name])
        assert np.corrcoef(ours[name].numpy(), theirs[name].numpy())[0, 1] > 0.97  # the same shape
    auc = lambda c: {k: float(v.mean()) for k, v in c.items()}  # noqa: E731
    assert sorted(auc(ours), key=auc(ours).get) == sorted(auc(theirs), key=auc(theirs).get) == \
        ["gradcam", "saliency", "random"]


def test_most_and_least_relevant_first_on_a_linear_model():
    """Removing the pixels that matter most lowers the logit more than removing the least relevant (on
    average over images: an imputed pixel keeps part of its contribution through its neighbours)."""
    model = linear_model(c=1, h=8, w=8, bias=False)
    x = rand_images(3, 1, 8, 8)
    contrib = pl.input_x_gradient(model, x, 0)
    most = pl.road(model, x, 0, contrib, fractions=[0.0, 0.25, 0.5], score="logit", noise=0.0)
    least = pl.road(model, x, 0, contrib, order="least", fractions=[0.0, 0.25, 0.5], score="logit", noise=0.0)
    torch.testing.assert_close(most.scores[:, 0], model(x)[:, 0].detach())
    assert (most.scores[:, 1:].mean(0) < least.scores[:, 1:].mean(0)).all()  # on average: imputed, not zeroed
    assert most.fractions.tolist() == pytest.approx([0.0, 0.25, 0.5]) and most.auc.shape == (3,)


def test_seeded_batched_and_in_range(digits_model, digits_batch):
    x, y = digits_batch
    x, y = x[:3], y[:3]
    state = torch.random.get_rng_state()
    a = pl.road(digits_model, x, y, "saliency", fractions=[0.2, 0.6], batch_size=1, seed=5)
    b = pl.road(digits_model, x, y, "saliency", fractions=[0.2, 0.6], batch_size=64, seed=5)
    c = pl.road(digits_model, x, y, "saliency", fractions=[0.2, 0.6], seed=6)
    torch.testing.assert_close(a.scores, b.scores)
    assert not torch.equal(a.scores, c.scores)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert ((a.scores >= 0) & (a.scores <= 1)).all()


@pytest.mark.parametrize("kw, message", [
    ({"order": "most relevant"}, r"order.*'most relevant'"),
    ({"fractions": [0.5, 0.2]}, r"fractions must increase"),
    ({"fractions": [0.2, 1.5]}, r"fractions must be one or more numbers in \[0, 1\], got \[0.2, 1.5\]"),
    ({"fractions": "abc"}, r"fractions must be numbers in \[0, 1\], got 'abc'"),
    ({"noise": -0.1}, r"noise must be a finite number >= 0.*-0.1"),
    ({"seed": "x"}, r"seed must be an int.*'x'"),
])
def test_bad_input_is_named(digits_model, digits_batch, kw, message):
    x, y = digits_batch
    with pytest.raises(PellucidError, match=message):
        pl.road(digits_model, x[:2], y[:2], torch.rand(2, 28, 28), **kw)


def test_no_side_effects(digits_model, digits_batch):
    x, y = digits_batch
    check_side_effects(lambda m, xx: pl.road(m, xx, y[:2], "saliency", fractions=[0.3]), digits_model, x[:2])
