"""Concept Relevance Propagation: conditional maps conserve (all channels of a layer sum to the full map), a
channel without relevance passes none, and reference images rank by the relevance (or activation) that LRP
and the activations give independently."""

from __future__ import annotations

import pytest
import torch
from test_attnlrp import tiny_vit

import pellucid as pl
from pellucid._checks import PellucidError


@pytest.fixture(scope="module")
def digits():
    model = pl.load_model("digits")
    x, y = pl.sample_images("digits", n=6)
    return model, x, y


@pytest.mark.parametrize("layer", ["conv3", "relu2", "fc"])
def test_the_conditional_maps_of_all_channels_sum_to_the_full_map(digits, layer):
    model, x, y = digits
    full = pl.lrp(model, x, y)
    channels = pl.activations(model, x[:1], layer).shape[1]
    parts = sum(pl.lrp(model, x, y, condition={layer: [c]}) for c in range(channels))
    assert float((parts - full).abs().max()) <= 1e-4 * float(full.abs().max())
    halves = pl.lrp(model, x, y, condition={layer: list(range(0, channels, 2))}) + \
        pl.lrp(model, x, y, condition={layer: list(range(1, channels, 2))})
    assert float((halves - full).abs().max()) <= 1e-4 * float(full.abs().max())


def test_on_a_transformer_the_channels_are_the_token_features():
    model = tiny_vit()
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    layer = "encoder.ln"  # all relevance passes it (a layer inside a residual branch sees only its branch)
    full = pl.lrp(model, x, 1)
    parts = sum(pl.lrp(model, x, 1, condition={layer: [c]}) for c in range(32))
    assert float((parts - full).abs().max()) <= 1e-4 * float(full.abs().max())


def test_a_channel_without_relevance_passes_none(digits):
    """At the logits only the target's channel holds relevance: any other passes nothing, the target's all."""
    model, x, y = digits
    at = pl.lrp(model, x, y, layers=["fc"]).layers["fc"]
    assert (at.argmax(1) == y).all() and (at != 0).sum(1).eq(1).all()
    for i in range(len(x)):
        other = int((y[i] + 1) % 10)
        assert pl.lrp(model, x[i:i + 1], y[i:i + 1], condition={"fc": [other]}).abs().max() == 0
        assert pl.lrp(model, x[i:i + 1], y[i:i + 1], condition={"fc": [int(y[i])]}).equal(
            pl.lrp(model, x[i:i + 1], y[i:i + 1]))


@pytest.mark.parametrize("by", ["relevance", "activation"])
def test_reference_images_rank_by_what_the_channel_gets(digits, by):
    model = digits[0]
    x, y = pl.sample_images("digits", n=40)
    ref = pl.reference_images(model, "relu3", 5, x, k=6, by=by)
    if by == "relevance":
        per = pl.lrp(model, x, pl._grad.predictions(model, x, 40).argmax(1), layers=["relu3"]).layers["relu3"][:, 5]
    else:
        per = pl.activations(model, x, "relu3")[:, 5]
    want = per.flatten(1).sum(1).argsort(descending=True)[:6]
    assert ref.images.tolist() == want.tolist()
    assert ref.crops.shape == (6, 1, 14, 14) and ref.maps.shape == (6, 28, 28)
    assert (ref.scores[:-1] >= ref.scores[1:]).all()


def test_bad_conditions(digits):
    model, x, y = digits
    for bad, message in [({"nope": 1}, "unknown layer 'nope'"), ({"conv3": 1.5}, "channel index or a non-empty"),
                         ({"conv3": []}, "non-empty list"), ({"conv3": 64}, "channel 64 is out of range"),
                         ([("conv3", 1)], "condition must be a dict")]:
        with pytest.raises(PellucidError, match=message):
            pl.lrp(model, x, y, condition=bad)
    with pytest.raises(PellucidError, match="unknown by 'gradient'; choose one of: relevance, activation"):
        pl.reference_images(model, "conv3", 0, x, by="gradient")
    with pytest.raises(PellucidError, match="channel 70 is out of range"):
        pl.reference_images(model, "conv3", 70, x)
