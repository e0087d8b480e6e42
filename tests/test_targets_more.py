"""Outputs other than one class: regression (target=None), multi-label (sigmoid), segmentation and
embedding targets, dict and tuple outputs; each against Captum's Saliency on a forward function that
computes the same scalar; every method and deletion/insertion accept them; the course's sin(x) task."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import check_side_effects
from torch import nn

import pellucid as pl
from pellucid import registry
from pellucid._checks import PellucidError

METHODS = ("saliency", "input_x_gradient", "smoothgrad", "ig", "gradcam", "guided_gradcam", "gradcam++",
           "xgradcam", "hirescam", "layercam", "scorecam", "ablationcam", "eigencam", "occlusion", "lime")


def captum_saliency(fn, x):
    from captum.attr import Saliency

    return Saliency(fn).attribute(x.clone(), abs=False)


class DictSeg(nn.Module):
    """A tiny segmentation net returning torchvision's ``{"out": (N, K, H, W)}``."""

    def __init__(self, k=4):
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU())
        self.head = nn.Conv2d(8, k, 1)
        nn.init.normal_(self.head.weight, std=3.0)

    def forward(self, x):
        return {"out": self.head(self.body(x)), "aux": x.mean((1, 2, 3))}


class Regressor(nn.Module):
    def __init__(self, outputs=1):
        super().__init__()
        torch.manual_seed(1)
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Tanh(), nn.Conv2d(8, 8, 3, padding=1),
                                      nn.ReLU())
        self.fc = nn.Linear(8 * 16 * 16, outputs)

    def forward(self, x):
        return self.fc(self.features(x).flatten(1))


class Embedder(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(2)
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4))
        self.proj = nn.Linear(128, 16)

    def forward(self, x):
        return (self.proj(self.features(x).flatten(1)), "extra")


SEG_CLASS = 0


@pytest.fixture(scope="module")
def x16():
    return torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(0))


# ---------------------------------------------------------------------------------------------
# against Captum

def test_regression_target_none_matches_captum(x16):
    model = Regressor().eval()
    ours = pl.gradient(model, x16, None)
    ref = captum_saliency(lambda z: model(z)[:, 0], x16)
    assert torch.allclose(ours, ref, atol=1e-5)
    # a 1-D output works the same
    flat = nn.Sequential(model, nn.Flatten(0))
    assert torch.allclose(pl.gradient(flat, x16, None), ref, atol=1e-5)


def test_sigmoid_score_matches_captum(digits_model, digits_batch):
    x = digits_batch[0][:4]
    ours = pl.gradient(digits_model, x, 3, score="sigmoid")
    ref = captum_saliency(lambda z: torch.sigmoid(digits_model(z))[:, 3], x)
    assert torch.allclose(ours, ref, atol=1e-5)


def test_segmentation_target_matches_captum(x16):
    model = DictSeg().eval()
    mask = torch.zeros(16, 16, dtype=torch.bool)
    mask[4:10, 3:12] = True
    ours = pl.gradient(model, x16, pl.segmentation_target(2, mask))
    ref = captum_saliency(lambda z: (model(z)["out"][:, 2] * mask).sum((1, 2)), x16)
    assert torch.allclose(ours, ref, atol=1e-5)
    # mask=None: the pixels predicted as the class on x, fixed for every pass
    with torch.no_grad():
        labels = model(x16)["out"].argmax(1)
    cls = int(labels.flatten().mode().values)
    predicted = labels == cls
    assert predicted.any() and not predicted.all()
    ours = pl.integrated_gradients(model, x16, pl.segmentation_target(cls), steps=8)
    ref = pl.integrated_gradients(model, x16, pl.segmentation_target(cls, predicted), steps=8)
    assert torch.allclose(ours, ref, atol=1e-6)
    ref = captum_saliency(lambda z: (model(z)["out"][:, cls] * predicted).sum((1, 2)), x16)
    assert torch.allclose(pl.gradient(model, x16, pl.segmentation_target(cls)), ref, atol=1e-5)


def test_similarity_target_matches_captum(x16):
    model = Embedder().eval()
    ref_emb = torch.randn(16, generator=torch.Generator().manual_seed(3))
    ours = pl.gradient(model, x16, pl.similarity_target(ref_emb))
    cos = lambda z: torch.nn.functional.cosine_similarity(model(z)[0], ref_emb[None], dim=1)  # noqa: E731
    assert torch.allclose(ours, captum_saliency(cos, x16), atol=1e-5)
    # one reference per image follows the rows through IG's stacked steps
    per = torch.randn(3, 16, generator=torch.Generator().manual_seed(4))
    ig = pl.integrated_gradients(model, x16, pl.similarity_target(per), steps=8, batch_size=5)
    one = torch.cat([pl.integrated_gradients(model, x16[i:i + 1], pl.similarity_target(per[i]), steps=8)
                     for i in range(3)])
    assert torch.allclose(ig, one, atol=1e-6)


def test_callable_reads_dict_and_tuple_outputs(x16):
    seg, emb = DictSeg().eval(), Embedder().eval()
    g = pl.gradient(seg, x16, lambda out: out["out"][:, 1].mean((1, 2)))
    assert torch.allclose(g, captum_saliency(lambda z: seg(z)["out"][:, 1].mean((1, 2)), x16), atol=1e-5)
    g = pl.gradient(emb, x16, lambda out: out[0][:, 5])
    assert torch.allclose(g, captum_saliency(lambda z: emb(z)[0][:, 5], x16), atol=1e-5)


# ---------------------------------------------------------------------------------------------
# every method and deletion/insertion

@pytest.mark.parametrize("kind", ["regression", "segmentation"])
def test_every_method_and_curve_accepts_the_targets(x16, kind):
    model = Regressor().eval() if kind == "regression" else DictSeg().eval()
    target = None if kind == "regression" else pl.segmentation_target(SEG_CLASS)
    layer = "features.2" if kind == "regression" else "body.2"
    x = x16[:2]
    for name in METHODS:
        record = registry.method(name)
        kw = record.defaults(x, 0, quick=True)
        if "cam" in name:
            kw["layer"] = layer
        if name == "lime":
            kw.update(samples=64, segments=8)
        if name == "smoothgrad":
            kw["samples"] = 4
        out = record(model, x, target, **kw)
        assert out.shape == (2, 16, 16), name
        assert torch.isfinite(out).all(), name
    saliency = pl.saliency(model, x, target)
    for curve in (pl.deletion(model, x, target, saliency, steps=5), pl.insertion(model, x, target, saliency, steps=5)):
        assert curve.scores.shape == (2, 5)
    # the deletion curve starts at the unperturbed score
    with torch.no_grad():
        out = model(x)
    start = out[:, 0] if kind == "regression" else \
        (out["out"][:, SEG_CLASS] * (out["out"].argmax(1) == SEG_CLASS)).sum((1, 2))
    assert torch.allclose(pl.deletion(model, x, target, saliency, steps=5).scores[:, 0], start, atol=1e-5)


def test_ig_completes_for_regression(x16):
    model = Regressor().eval()
    _, err = pl.integrated_gradients(model, x16, None, steps=64, return_error=True)
    assert float(err.max()) < 1e-2


# ---------------------------------------------------------------------------------------------
# the course's regression task: an MLP fit to sin(x) on [-2 pi, 2 pi]

def fit_sine(seed: int = 0):
    """The course's MLP (1 -> 64 -> 64 -> 1, tanh) fit to sin(x) on [-2 pi, 2 pi] until MSE < 0.02, wrapped
    so that its input is a pixel u in [0, 1]: x = 4 pi (u - 0.5), i.e. mean 0.5 and std 1 / (4 pi)."""
    torch.manual_seed(seed)
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(1, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 1))
    xs = torch.linspace(-2 * math.pi, 2 * math.pi, 256)[:, None]
    opt = torch.optim.Adam(mlp.parameters(), lr=1e-2)
    for _ in range(3000):
        opt.zero_grad()
        loss = ((mlp(xs) - torch.sin(xs)) ** 2).mean()
        if loss.item() < 0.001:
            break
        loss.backward()
        opt.step()
    for p in mlp.parameters():
        p.grad = None
    model = pl.wrap(mlp, mean=(0.5,), std=(1 / (4 * math.pi),), input_size=(1, 1, 1)).eval()
    return model, loss.item()


def test_course_regression_task():
    model, mse = fit_sine()
    assert mse < 0.02
    u = torch.linspace(0.02, 0.98, 97).reshape(-1, 1, 1, 1)
    xs = 4 * math.pi * (u.flatten() - 0.5)
    # d f / d x = (d f / d u) / (4 pi) follows cos(x)
    slope = pl.gradient(model, u, None).flatten() / (4 * math.pi)
    assert torch.corrcoef(torch.stack([slope, torch.cos(xs)]))[0, 1] > 0.98
    assert float((slope - torch.cos(xs)).abs().mean()) < 0.1
    # Integrated Gradients completes to f(x) - f(b)
    attr, err = pl.integrated_gradients(model, u, None, baseline=0.5, steps=64, return_error=True)
    with torch.no_grad():
        delta = model(u)[:, 0] - model(torch.full_like(u, 0.5))[:, 0]
    assert torch.allclose(attr.flatten(), delta, atol=1e-4)


# ---------------------------------------------------------------------------------------------
# side effects and bad input

def test_no_side_effects(x16):
    seg = DictSeg()
    check_side_effects(lambda m, xx: pl.gradient(m, xx, pl.segmentation_target(1)), seg, x16, explode_at=seg.head)
    check_side_effects(lambda m, xx: pl.cam(m, xx, pl.segmentation_target(1), "scorecam", "body.2"), seg, x16,
                       explode_at=seg.head)
    reg = Regressor()
    check_side_effects(lambda m, xx: pl.integrated_gradients(m, xx, None, steps=4), reg, x16, explode_at=reg.fc)
    emb = Embedder()
    check_side_effects(lambda m, xx: pl.gradient(m, xx, pl.similarity_target(torch.ones(16))), emb, x16,
                       explode_at=emb.proj)


def test_bad_input(digits_model, digits_batch, x16):
    x = digits_batch[0][:2]
    with pytest.raises(PellucidError, match=r"target=None explains a single-output model.*10 classes.*class index"):
        pl.gradient(digits_model, x, None)
    with pytest.raises(PellucidError, match=r"target=None .* this model returns \(3, 5\)"):
        pl.gradient(Regressor(outputs=5).eval(), x16, None)
    seg = DictSeg().eval()
    with pytest.raises(PellucidError, match=r"mask of shape \(8, 8\) does not fit the model's logits \(3, 4, 16, 16\)"):
        pl.gradient(seg, x16, pl.segmentation_target(1, torch.ones(8, 8, dtype=torch.bool)))
    with pytest.raises(PellucidError, match=r"holds 2 rows for 3 images"):
        pl.gradient(seg, x16, pl.segmentation_target(1, torch.ones(2, 16, 16, dtype=torch.bool)))
    with pytest.raises(PellucidError, match=r"mask must be \(H, W\) or \(N, H, W\) booleans"):
        pl.segmentation_target(1, torch.rand(16, 16))
    with pytest.raises(PellucidError, match=r"class 7 is out of range: the model has classes 0..3"):
        pl.gradient(seg, x16, pl.segmentation_target(7))
    with pytest.raises(PellucidError, match=r"dict with keys 'out', 'aux'.*callable target"):
        pl.gradient(seg, x16, 1)
    with pytest.raises(PellucidError, match=r"reference has 3 dims, the model's embedding 16"):
        pl.gradient(Embedder().eval(), x16, pl.similarity_target(torch.ones(3)))
    with pytest.raises(PellucidError, match=r"unknown score 'probit'"):
        pl.gradient(digits_model, x, 3, score="probit")


# ---------------------------------------------------------------------------------------------
# attacks on a score: FGSM and PGD push a callable's score (or a regression output) down, or up


def test_fgsm_on_a_linear_regression_is_the_signed_weight_step(x16):
    """Closed form: the gradient of w . x + b is w, so FGSM moves every pixel by eps against sign(w)."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 1)).eval()
    w = model[1].weight.detach().reshape(1, 3, 16, 16)
    x = x16 * 0.5 + 0.25  # away from the box edges, so nothing is clamped
    down = pl.fgsm(model, x, None, 0.05)
    assert torch.allclose(down, x - 0.05 * w.sign(), atol=1e-6)
    up = pl.fgsm(model, x, None, 0.05, targeted=True)
    assert torch.allclose(up, x + 0.05 * w.sign(), atol=1e-6)


def test_pgd_pushes_a_segmentation_score_down_and_up_within_eps(x16):
    model = DictSeg().eval()
    target = pl.segmentation_target(2)  # mask None: the pixels predicted as class 2 on the clean images
    mask = torch.zeros(16, 16, dtype=torch.bool)
    mask[2:14, 2:14] = True
    fixed = pl.segmentation_target(2, mask)

    def score(z):
        with torch.no_grad():
            return (model(z)["out"][:, 2] * mask).sum((1, 2))

    before = x16.clone()
    down = pl.pgd(model, x16, fixed, 0.05, 0.01, 10, progress=False)
    up = pl.pgd(model, x16, fixed, 0.05, 0.01, 10, targeted=True, progress=False)
    assert torch.equal(x16, before)
    assert (score(down) < score(x16)).all() and (score(up) > score(x16)).all()
    for adv in (down, up):
        assert (adv - x16).abs().max() <= 0.05 + 1e-6 and adv.min() >= 0 and adv.max() <= 1
    # mask None: the predicted pixels are fixed on the clean images, so it equals the same target with that mask
    with torch.no_grad():
        predicted = model(x16)["out"].argmax(1) == 2
    same = pl.segmentation_target(2, predicted)
    assert torch.equal(pl.pgd(model, x16, target, 0.05, 0.01, 3, progress=False),
                       pl.pgd(model, x16, same, 0.05, 0.01, 3, progress=False))
    regression = Regressor().eval()
    with torch.no_grad():
        lower = regression(pl.pgd(regression, x16, None, 0.05, 0.01, 10, norm="l2", progress=False))[:, 0]
        assert (lower < regression(x16)[:, 0]).all()


def test_score_attacks_refuse_what_is_undefined(digits_model, digits_batch, x16):
    model = DictSeg().eval()
    seg = pl.segmentation_target(1)
    with pytest.raises(PellucidError, match="targeted must be False"):
        pl.pgd(model, x16, seg, 0.05, 0.01, 2, targeted=3, progress=False)
    with pytest.raises(PellucidError, match="early_stop"):
        pl.pgd(model, x16, seg, 0.05, 0.01, 2, early_stop=True, progress=False)
    x = digits_batch[0][:2]
    for targeted in (1, torch.tensor([1, 2])):  # a class is not True: refused, not read as "push up"
        with pytest.raises(PellucidError, match="targeted must be False"):
            pl.fgsm(model, x16, seg, 0.05, targeted=targeted)
    for call in (lambda: pl.apgd(digits_model, x, lambda out: out[:, 0], 0.1, progress=False),
                 lambda: pl.square(digits_model, x, None, 0.1, progress=False)):
        with pytest.raises(PellucidError, match="class indices.*fgsm and pgd"):
            call()
    with pytest.raises(PellucidError, match="single-output"):
        pl.fgsm(digits_model, x, None, 0.1)  # None: the output of a single-output model; this one has 10


def test_score_attacks_have_no_side_effects(x16):
    model = DictSeg().eval()
    check_side_effects(lambda m, xx: pl.pgd(m, xx, pl.segmentation_target(2), 0.05, 0.01, 2, progress=False),
                       model, x16)
