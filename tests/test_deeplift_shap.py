"""DeepLIFT, DeepLIFT-SHAP, GradientSHAP and KernelSHAP against their oracles: completeness, Captum, shap,
closed forms on linear models; plus seeds, side effects and bad arguments."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import check_side_effects
from torch import nn

import pellucid as pl
from pellucid._checks import PellucidError
from pellucid.attribution.shap import coalitions, shapley_kernel


def corr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.corrcoef(torch.stack([a.flatten().double(), b.flatten().double()]))[0, 1])


def scores(model, x, target) -> torch.Tensor:
    target = torch.as_tensor(target).expand(len(x))
    with torch.no_grad():
        return model(x).gather(1, target[:, None])[:, 0]


@pytest.fixture(scope="module")
def digits4(digits_batch):
    x, y = digits_batch
    return x[:4], y[:4]


@pytest.fixture(scope="module")
def background():
    return torch.rand(8, 1, 28, 28, generator=torch.Generator().manual_seed(3))


def linear_model(channels: int = 1, size: int = 28, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Flatten(), nn.Linear(channels * size * size, 10))
    return pl.wrap(net, input_size=(channels, size, size))


# ---------------------------------------------------------------------------------------------
# DeepLIFT

@pytest.mark.parametrize("baseline", [0.0, 0.5, "noise"])
def test_deeplift_completeness_on_digits(digits_model, digits_batch, baseline):
    x, y = digits_batch
    attr, err = pl.deeplift(digits_model, x, y, baseline=baseline, return_error=True)
    assert attr.shape == x.shape and float(err.max()) <= 1e-3
    b = pl.attribution.make_baseline(baseline, x)
    delta = scores(digits_model, x, y) - scores(digits_model, b, y)
    assert torch.allclose(attr.flatten(1).sum(1), delta, rtol=1e-3, atol=1e-4)


def test_deeplift_completeness_on_resnet18(resnet_small, photos_small):
    x = photos_small[0][:2]  # overlapping max-pool windows (3x3, stride 2), in-place ReLUs reused twice a block
    attr, err = pl.deeplift(resnet_small, x, [3, 7], return_error=True)
    assert float(err.max()) <= 1e-3
    t = torch.tensor([3, 7])
    delta = scores(resnet_small, x, t) - scores(resnet_small, torch.zeros_like(x), t)
    assert torch.allclose(attr.flatten(1).sum(1), delta, rtol=1e-3, atol=1e-4)


def test_deeplift_completeness_on_the_imagenet_model():
    try:
        model = pl.load_model("imagenet")
    except Exception as e:  # noqa: BLE001 - the model is optional here
        pytest.skip(f"imagenet model not available: {e}")
    x = pl.sample_images("photos", size=96)[0][:1]
    _, err = pl.deeplift(model, x, 1, return_error=True)
    assert float(err.max()) <= 1e-3


def test_deeplift_matches_captum_per_image(digits_model, digits_batch):
    from captum.attr import DeepLift

    x, y = digits_batch
    ours = pl.deeplift(digits_model, x, y)
    ref = DeepLift(digits_model).attribute(x.clone().requires_grad_(True), baselines=0.0, target=y).detach()
    assert min(corr(ours[i], ref[i]) for i in range(len(x))) >= 0.95


def test_deeplift_is_gradient_times_input_on_a_linear_model(digits4):
    x, y = digits4
    model = linear_model()
    assert torch.allclose(pl.deeplift(model, x, y), pl.input_x_gradient(model, x, y), atol=1e-6)
    # no activation modules besides linear ones: gradient x (x - baseline)
    conv = pl.wrap(nn.Sequential(nn.Conv2d(1, 4, 3), nn.AvgPool2d(2), nn.Flatten(), nn.Linear(4 * 13 * 13, 10)),
                   input_size=(1, 28, 28))
    want = pl.gradient(conv, x, y) * (x - 0.3)
    assert torch.allclose(pl.deeplift(conv, x, y, baseline=0.3), want, atol=1e-6)


@pytest.mark.parametrize("act", [nn.Sigmoid, nn.Tanh, nn.ELU, nn.LeakyReLU, nn.Softplus, nn.GELU, nn.SiLU, nn.ReLU6])
def test_deeplift_rescales_every_activation(act, digits4):
    x, y = digits4
    torch.manual_seed(1)
    model = pl.wrap(nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), act(), nn.MaxPool2d(3, 2, 1), nn.Conv2d(8, 8, 3),
                                  act(), nn.AdaptiveMaxPool2d(4), nn.Flatten(), nn.Linear(128, 10), act(),
                                  nn.Linear(10, 10)), input_size=(1, 28, 28))
    _, err = pl.deeplift(model, x, y, baseline="noise", return_error=True)
    assert float(err.max()) <= 1e-3


class FunctionalNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3)
        self.fc = nn.Linear(8 * 26 * 26, 10)

    def forward(self, x):
        return self.fc(F.relu(self.conv(x)).flatten(1))


def test_deeplift_names_the_module_it_cannot_see(digits4):
    x, y = digits4
    torch.manual_seed(0)
    model = FunctionalNet()
    with pytest.raises(PellucidError, match=r"cannot see; likely: the model \(FunctionalNet.forward calls relu\)"):
        pl.deeplift(model, x, y)
    attr, err = pl.deeplift(model, x, y, check=False, return_error=True)
    assert attr.shape == x.shape and float(err.max()) > 1e-2
    softmax = pl.wrap(nn.Sequential(nn.Flatten(), nn.Linear(784, 10), nn.Softmax(dim=1)), input_size=(1, 28, 28))
    with pytest.raises(PellucidError, match=r"net.2 \(Softmax"):
        pl.deeplift(softmax, x, y)


def test_deeplift_chunks_and_per_image_baselines(digits_model, digits4):
    x, y = digits4
    b = torch.rand(x.shape, generator=torch.Generator().manual_seed(2))
    whole = pl.deeplift(digits_model, x, y, baseline=b)
    tol = 1e-5 * float(whole.abs().max())  # float rounding of convolutions run at other batch sizes
    assert torch.allclose(pl.deeplift(digits_model, x, y, baseline=b, batch_size=3), whole, atol=tol)
    one_by_one = torch.cat([pl.deeplift(digits_model, x[i:i + 1], y[i:i + 1], baseline=b[i:i + 1]) for i in range(4)])
    assert torch.allclose(one_by_one, whole, atol=tol)


def test_deeplift_shap_averages_deeplift_over_baselines(digits_model, digits4, background):
    x, y = digits4
    b = background[:3]
    attr, err = pl.deeplift_shap(digits_model, x, y, b, batch_size=5, return_error=True)
    mean = sum(pl.deeplift(digits_model, x, y, baseline=b[j:j + 1]) for j in range(3)) / 3
    assert torch.allclose(attr, mean, atol=1e-5)
    delta = scores(digits_model, x, y) - torch.stack([scores(digits_model, b, int(t)).mean() for t in y])
    assert torch.allclose(attr.flatten(1).sum(1), delta, rtol=1e-3, atol=1e-4) and float(err.max()) <= 1e-3
    assert torch.allclose(pl.deeplift_shap(digits_model, x, y, b[:1]), pl.deeplift(digits_model, x, y, baseline=b[:1]))


# ---------------------------------------------------------------------------------------------
# GradientSHAP

def test_gradient_shap_matches_captum(digits_model, digits4, background):
    from captum.attr import GradientShap

    x, y = digits4
    ours = pl.gradient_shap(digits_model, x, y, background, samples=256, seed=0)
    state = torch.random.get_rng_state(), np.random.get_state()
    torch.manual_seed(0)
    np.random.seed(0)
    try:
        ref = GradientShap(digits_model).attribute(x, baselines=background, target=y, n_samples=256)
    finally:
        torch.random.set_rng_state(state[0])
        np.random.set_state(state[1])
    assert min(corr(ours[i], ref[i]) for i in range(len(x))) >= 0.95


def test_gradient_shap_completes_in_expectation(digits_model, digits4, background):
    x, y = digits4[0][:2], digits4[1][:2]
    samples = 128
    attr = pl.gradient_shap(digits_model, x, y, background, samples=samples, seed=1)
    # the sampling error of the mean, from an independent sample of the same estimator
    gen = torch.Generator().manual_seed(7)
    k = torch.randint(0, len(background), (samples,), generator=gen)
    a = torch.rand(samples, 1, 1, 1, generator=gen)
    for i in range(len(x)):
        points = background[k] + a * (x[i] - background[k])
        per = (pl.gradient(digits_model, points, int(y[i])) * (x[i] - background[k])).flatten(1).sum(1)
        se = float(per.std()) / samples**0.5
        want = float(scores(digits_model, x[i:i + 1], y[i]) - scores(digits_model, background, y[i]).mean())
        assert abs(float(attr[i].sum()) - want) <= 4 * se + 1e-3


def test_gradient_shap_is_seeded_and_chunked(digits_model, digits4, background):
    x, y = digits4
    before = torch.random.get_rng_state()
    a = pl.gradient_shap(digits_model, x, y, background, samples=8, seed=5)
    assert torch.equal(torch.random.get_rng_state(), before), "the global RNG was used"
    assert torch.equal(a, pl.gradient_shap(digits_model, x, y, background, samples=8, seed=5))
    assert torch.allclose(a, pl.gradient_shap(digits_model, x, y, background, samples=8, seed=5, batch_size=3),
                          atol=1e-5)
    assert torch.equal(a, pl.gradient_shap(digits_model, x, y, background, samples=8,
                                           seed=torch.Generator().manual_seed(5)))
    assert not torch.allclose(a, pl.gradient_shap(digits_model, x, y, background, samples=8, seed=6))
    noisy = pl.gradient_shap(digits_model, x, y, background, samples=8, stdevs=0.1, seed=5)
    assert torch.equal(noisy, pl.gradient_shap(digits_model, x, y, background, samples=8, stdevs=0.1, seed=5))


def test_gradient_shap_on_a_linear_model_is_exact(digits4, background):
    x, y = digits4
    model = linear_model()
    want = pl.gradient(model, x, y) * (x - background.mean(0))
    got = pl.gradient_shap(model, x, y, background, samples=4000)
    assert torch.allclose(got, want, atol=0.05 * float(want.abs().max()))


# ---------------------------------------------------------------------------------------------
# KernelSHAP

def test_kernel_shap_is_exact_on_a_linear_model(photos_small):
    x = photos_small[0][:2]
    model = linear_model(3, 64)
    result = pl.kernel_shap(model, x, 3, samples=400, segments=30, seed=0, return_details=True)
    w = model.net[1].weight[3].detach().reshape(3, 64, 64)
    for i in range(2):
        seg = result.segments[i]
        want = torch.zeros(int(seg.max()) + 1).index_add_(0, seg.flatten(), (w * x[i]).sum(0).flatten())
        assert torch.allclose(result.values[i], want, atol=1e-3 * float(want.abs().max()))
        assert result.map[i].shape == (64, 64) and torch.equal(result.map[i], result.values[i][seg])


def test_kernel_shap_values_sum_to_the_score_change(digits_model, digits4):
    x, y = digits4
    result = pl.kernel_shap(digits_model, x[:2], y[:2], samples=200, seed=0, return_details=True)
    for i in range(2):
        assert float(result.values[i].sum()) == pytest.approx(float(result.score[i] - result.base[i]), abs=1e-4)
    assert torch.allclose(result.score, scores(digits_model, x[:2], y[:2]))
    assert torch.allclose(result.base, scores(digits_model, torch.zeros_like(x[:2]), y[:2]))


def test_kernel_shap_matches_shap_kernel_explainer(digits_model, digits4):
    shap = pytest.importorskip("shap")
    x, y = digits4
    x, t = x[:1], int(y[0])
    # 40 SLIC segments (49 superpixels here): 1000 coalitions pin both estimates down (each correlates ~0.99
    # with itself at another seed; at 100 segments both fall to ~0.95 against themselves)
    result = pl.kernel_shap(digits_model, x, t, samples=1000, segments=40, seed=0, return_details=True)
    seg = result.segments[0]

    def f(z):
        keep = torch.as_tensor(z, dtype=torch.float32)[:, seg][:, None]
        with torch.no_grad():
            return digits_model(keep * x).numpy()[:, t]

    nseg = int(seg.max()) + 1
    explainer = shap.KernelExplainer(f, np.zeros((1, nseg)))
    np.random.seed(0)
    theirs = torch.as_tensor(explainer.shap_values(np.ones((1, nseg)), nsamples=1000, silent=True,
                                                  l1_reg=False)).flatten()
    assert corr(result.values[0], theirs) >= 0.95


def test_coalitions_enumerate_small_problems_exactly():
    gen = torch.Generator().manual_seed(0)
    z, w = coalitions(5, 1000, gen)
    assert len(z) == 2**5 - 2 and len(torch.unique(z, dim=0)) == 30  # every proper coalition once
    want = shapley_kernel(5, z.sum(1).double())
    assert torch.allclose(w / w.sum(), want / want.sum())
    z, w = coalitions(40, 300, gen)
    assert len(z) <= 300 and ((z.sum(1) > 0) & (z.sum(1) < 40)).all() and float(w.sum()) == pytest.approx(1.0)


def test_kernel_shap_is_seeded(digits_model, digits4):
    x, y = digits4
    a = pl.kernel_shap(digits_model, x[:1], y[:1], samples=100, seed=3)
    assert torch.equal(a, pl.kernel_shap(digits_model, x[:1], y[:1], samples=100, seed=3))
    assert not torch.equal(a, pl.kernel_shap(digits_model, x[:1], y[:1], samples=100, seed=4))


# ---------------------------------------------------------------------------------------------
# side effects and bad arguments

CALLS = {
    "deeplift": lambda m, x, y, b: pl.deeplift(m, x, y),
    "deeplift_shap": lambda m, x, y, b: pl.deeplift_shap(m, x, y, b[:2]),
    "gradient_shap": lambda m, x, y, b: pl.gradient_shap(m, x, y, b, samples=4),
    "kernel_shap": lambda m, x, y, b: pl.kernel_shap(m, x, y, samples=20),
}


@pytest.mark.parametrize("name", list(CALLS))
def test_no_side_effects(name, digits_model, digits4, background):
    x, y = digits4
    check_side_effects(lambda m, xx: CALLS[name](m, xx[:2], y[:2], background), digits_model, x)


def test_no_side_effects_with_inplace_relus(resnet_small, photos_small):
    x = photos_small[0][:1]
    check_side_effects(lambda m, xx: pl.deeplift(m, xx, 3), resnet_small, x)


def test_bad_arguments_are_named(digits_model, digits4, background):
    x, y = digits4
    with pytest.raises(PellucidError, match="baselines .*shape"):
        pl.gradient_shap(digits_model, x, y, torch.zeros(2, 3, 28, 28))
    with pytest.raises(PellucidError, match="baselines must be .*'noise'.*'blur'"):
        pl.deeplift_shap(digits_model, x, y, "blur")
    with pytest.raises(PellucidError, match="samples must be an int >= 1, got 0"):
        pl.gradient_shap(digits_model, x, y, background, samples=0)
    with pytest.raises(PellucidError, match="stdevs must be a finite number >= 0.*-1"):
        pl.gradient_shap(digits_model, x, y, background, stdevs=-1)
    with pytest.raises(PellucidError, match="seed must be an int or a torch.Generator, got 'a'"):
        pl.gradient_shap(digits_model, x, y, background, seed="a")
    with pytest.raises(PellucidError, match="baselines contain NaN"):
        pl.deeplift_shap(digits_model, x, y, torch.full((1, 1, 28, 28), float("nan")))
    with pytest.raises(PellucidError, match="baseline"):
        pl.deeplift(digits_model, x, y, baseline="zeros")
    with pytest.raises(PellucidError, match="samples must be an int >= 2, got 1"):
        pl.kernel_shap(digits_model, x, y, samples=1)
    with pytest.raises(PellucidError, match="segmentation must be integer labels"):
        pl.kernel_shap(digits_model, x, y, segmentation=torch.zeros(5, 5, dtype=torch.long))
    with pytest.raises(PellucidError, match="x must have 4 dims"):
        pl.deeplift(digits_model, x[0], 1)


def test_the_records_are_registered():
    from pellucid import registry

    table = registry.methods()
    for name in ("deeplift", "deeplift_shap", "gradient_shap", "kernel_shap"):
        assert name in table and table[name].signed and not table[name].grid
    big = torch.zeros(1, 3, 224, 224)
    assert table["kernel_shap"].defaults(big, quick=True)["samples"] < table["kernel_shap"].defaults(big)["samples"]


def test_max_pools_hand_back_their_arg_maxes_only_for_the_run(digits_model, digits4):
    """DeepLIFT has max-pools return their indices (no second pool for the arg-maxes) and puts the flag back;
    a pool that already returns indices (for a MaxUnpool) keeps its tuple output."""
    x, y = digits4
    pools = [m for m in digits_model.modules() if isinstance(m, nn.MaxPool2d)]
    assert pools and not any(p.return_indices for p in pools)
    attr, err = pl.deeplift(digits_model, x, y, return_error=True)
    assert err.abs().max() < 1e-3 and not any(p.return_indices for p in pools)

    class Unpooled(nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.conv, self.relu = nn.Conv2d(1, 4, 3, padding=1), nn.ReLU()
            self.pool, self.unpool = nn.MaxPool2d(2, return_indices=True), nn.MaxUnpool2d(2)
            self.fc = nn.Linear(4 * 28 * 28, 3)

        def forward(self, z):
            out, idx = self.pool(self.relu(self.conv(z)))
            return self.fc(self.unpool(out, idx).flatten(1))

    model = Unpooled().eval()
    with pytest.raises(PellucidError, match="unpool"):  # the unpooling routes by the image's own arg-maxes
        pl.deeplift(model, x, 1)
    attr = pl.deeplift(model, x, 1, check=False)  # runs: the pool kept handing its tuple to the unpool
    assert attr.shape == x.shape and torch.isfinite(attr).all() and model.pool.return_indices


def test_pools_that_cannot_hand_back_their_indices_still_work(digits4):
    """A user's hook on a pool keeps getting a tensor, and a pool subclass that ignores return_indices (as
    timm's MaxPool2dSame does) falls back to computing the arg-maxes; both stay complete."""
    x, _ = digits4

    class Ignoring(nn.MaxPool2d):
        def forward(self, z):
            return F.max_pool2d(z, self.kernel_size, self.stride)

    for pool in (nn.MaxPool2d(2), Ignoring(2)):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), pool, nn.Flatten(),
                              nn.Linear(4 * 14 * 14, 3)).eval()
        seen = []
        handle = pool.register_forward_hook(lambda _m, _i, out, seen=seen: seen.append(out.shape))
        try:
            attr, err = pl.deeplift(model, x, 1, return_error=True)
        finally:
            handle.remove()
        assert err.abs().max() < 1e-3 and seen and all(len(s) == 4 for s in seen)
        assert not pool.return_indices


def test_set_attr_puts_back_what_was_there():
    from pellucid._state import model_state

    class Flagged(nn.ReLU):
        flag = "class"  # read from the class: deleted again on exit, not copied into the instance

    m = nn.Sequential(Flagged(), nn.MaxPool2d(2))
    with pytest.raises(RuntimeError), model_state(m) as state:
        state.set_attr(m[0], "flag", "run")
        state.set_attr(m[1], "return_indices", True)
        state.set_attr(m[1], "return_indices", False)
        raise RuntimeError("the body fails")
    assert "flag" not in vars(m[0]) and m[0].flag == "class" and m[1].return_indices is False
