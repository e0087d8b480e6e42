"""The Symmetric Relevance Gain (Blücher et al. 2024): closed forms on a linear model, its symmetry, and the
property the report leans on: a random map never ranks first, on digits and on the real ImageNet model."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import pellucid as pl
from pellucid.metrics import random_attribution


def test_gain_is_antisymmetric_and_zero_for_a_constant_map(digits_model, digits_batch):
    x, y = digits_batch
    sal = pl.saliency(digits_model, x, y)
    for fill in ("blur", 0.0):
        g = pl.srg(digits_model, x, y, sal, fill=fill, steps=8)
        back = pl.srg(digits_model, x, y, -sal, fill=fill, steps=8)
        assert torch.allclose(g.gain, -back.gain, atol=1e-6)
        assert torch.allclose(g.most.scores, back.least.scores) and g.most.scores.shape == (len(x), 8)
        flat = pl.srg(digits_model, x, y, torch.ones_like(sal), fill=fill, steps=8)
        assert torch.equal(flat.gain, torch.zeros_like(flat.gain))


def test_on_a_linear_model_the_contributions_are_the_best_order():
    """f(x) = w . x, removal to 0: removing pixel i lowers the logit by exactly w_i x_i, so the order of
    w * x gives the largest gain of all orders (the area between the lowest and the highest curve)."""
    gen = torch.Generator().manual_seed(4)
    w = torch.randn(2, 1 * 6 * 6, generator=gen)
    model = pl.wrap(nn.Sequential(nn.Flatten(), nn.Linear(36, 2, bias=False)))
    with torch.no_grad():
        model.net[1].weight.copy_(w)
    x = torch.rand(5, 1, 6, 6, generator=gen)
    best = (w[1].reshape(1, 1, 6, 6) * x)[:, 0]
    g = pl.srg(model, x, 1, best, fill=0.0, steps=37, score="logit").gain
    for other in (w[1].reshape(1, 6, 6).expand(5, 6, 6), random_attribution(x, seed=1), x[:, 0]):
        assert (g >= pl.srg(model, x, 1, other, fill=0.0, steps=37, score="logit").gain - 1e-5).all()
    assert (g > 0).all()


@pytest.mark.parametrize("fill", ["blur", "road"])
def test_a_random_map_never_ranks_first_on_digits(digits_model, fill):
    x, y = pl.sample_images("digits", n=10)
    gains = {name: float(pl.srg(digits_model, x, y, pl.attribution_map(name, digits_model, x, y), fill=fill,
                                steps=10).gain.mean())
             for name in ("saliency", "input_x_gradient", "gradcam")}
    gains["random"] = float(pl.srg(digits_model, x, y, random_attribution(x, seed=0), fill=fill,
                                   steps=10).gain.mean())
    assert max(gains, key=gains.get) != "random" and gains["random"] < min(v for k, v in gains.items()
                                                                           if k != "random")


def test_a_random_map_never_ranks_first_on_the_imagenet_model():
    """Deletion ranks the random map first here (blacking out scattered pixels pushes a photo off the data
    fastest); the gain, with both orders under the same blur, does not (raw saliency is about as good as
    random here, Grad-CAM far better)."""
    model = pl.load_model("imagenet")
    x, _ = pl.sample_images("photos")
    y = model(x).argmax(1)
    maps = {"saliency": pl.saliency(model, x, y), "gradcam": pl.grad_cam(model, x, y),
            "random": random_attribution(x, seed=0)}
    gains = {k: float(pl.srg(model, x, y, m, steps=8).gain.mean()) for k, m in maps.items()}
    assert max(gains, key=gains.get) != "random" and gains["gradcam"] > gains["random"] + 0.05, gains
    deleted = {k: float(pl.deletion(model, x, y, m, steps=8).auc.mean()) for k, m in maps.items()}
    assert min(deleted, key=deleted.get) == "random", deleted  # the failure the gain fixes


def test_bad_fill_and_steps_are_named(digits_model, digits_batch):
    x, y = digits_batch
    with pytest.raises(pl.PellucidError, match="fill must be one of blur, road"):
        pl.srg(digits_model, x, y, "saliency", fill="noise")
    with pytest.raises(pl.PellucidError, match="steps must be an int >= 2"):
        pl.srg(digits_model, x, y, "saliency", steps=1)


@pytest.mark.parametrize("model_name, n", [("digits", 10), ("imagenet", 4)])
def test_the_reports_lead_ranking_never_puts_the_random_map_first(tmp_path, model_name, n):
    """The faithfulness section leads with the gain, on 8 images or more (the ImageNet page has 4 photos:
    the model's own samples top them up); on both models the random map is not first."""
    from pellucid.drawing.report import SRG_IMAGES, ReportContext, ranking_images, srg_ranking

    model = pl.load_model(model_name)
    x, y = pl.sample_images(model_name, n=n)
    ctx = ReportContext(model, x, y, tmp_path, progress=False)
    xr, tr = ranking_images(ctx)
    assert len(xr) >= SRG_IMAGES and torch.equal(xr[:n], x) and torch.equal(tr, model(xr).argmax(1))
    names = ["saliency", "input_x_gradient", "gradcam"] if model_name == "digits" else ["saliency", "gradcam"]
    ranked = srg_ranking(ctx, names, xr, tr)
    assert [name for name, _ in ranked][0] != "random" and {name for name, _ in ranked} == {*names, "random"}
    assert ranked == sorted(ranked, key=lambda kv: -kv[1])
