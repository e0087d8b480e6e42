"""LRP against closed forms and Zennit: LRP-0 is gradient x input of the normalized input on piecewise-linear
networks, conservative composites sum to the logit on bias-free networks, every layer keeps its books
(entering = leaving + absorbed), and Zennit 0.5.1 with its own canonizers is the oracle for the composites."""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import check_side_effects
from torch import nn

import pellucid as pl
from pellucid._checks import PellucidError
from pellucid._grad import predictions
from pellucid._state import hook_count
from pellucid.attribution.lrp import canonize, make_rule, reruns
from pellucid.models.base import seeded

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
CONSERVATIVE = ("zero", "epsilon_plus", "epsilon_plus_flat", "epsilon_gamma_box")


def corr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.corrcoef(torch.stack([a.flatten().double(), b.flatten().double()]))[0, 1])


def gradient_x_input(model, x, target) -> torch.Tensor:
    """Gradient x input of the normalized input ``(x - mean) / std`` (the input LRP explains), from pixel space:
    ``(x - mean) / std * std * d f / d x``, i.e. ``pl.input_x_gradient`` less ``mean * gradient``."""
    return pl.input_x_gradient(model, x, target) - model.mean * pl.gradient(model, x, target)


def assert_close(ours: torch.Tensor, want: torch.Tensor, min_corr: float = 0.9999, max_err: float = 1e-2):
    for a, b in zip(ours, want):
        assert corr(a, b) >= min_corr
        assert float((a - b).abs().max()) <= max_err * float(b.abs().max())


def random_batchnorm(net: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BatchNorm statistics and affine parameters, seeded."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(0.5 * torch.randn(n, generator=gen))
                m.running_var.copy_(0.5 + torch.rand(n, generator=gen))
                m.weight.copy_(0.5 + torch.rand(n, generator=gen))
                m.bias.copy_(0.5 * torch.randn(n, generator=gen))
    return net.eval()


def torchvision_net(arch: str) -> nn.Module:
    """A torchvision net with seeded random weights and BatchNorm statistics. vgg11_bn is torchvision's VGG with
    vgg11_bn's features and a small classifier (its own holds 120M weights that would only slow the test)."""
    import torchvision
    from torchvision.models import vgg

    if arch == "resnet18":
        return random_batchnorm(seeded(lambda: torchvision.models.resnet18(num_classes=10)))

    def build():
        net = vgg.VGG.__new__(vgg.VGG)
        nn.Module.__init__(net)
        net.features, net.avgpool = vgg.make_layers(vgg.cfgs["A"], batch_norm=True), nn.AdaptiveAvgPool2d((7, 7))
        net.classifier = nn.Sequential(nn.Linear(512 * 7 * 7, 64), nn.ReLU(True), nn.Dropout(), nn.Linear(64, 64),
                                       nn.ReLU(True), nn.Dropout(), nn.Linear(64, 10))
        return net

    return random_batchnorm(seeded(build))


@pytest.fixture(scope="module")
def photos64():
    return pl.sample_images("photos", n=2, size=64)[0]


@pytest.fixture(scope="module")
def resnet():
    return pl.wrap(torchvision_net("resnet18"), MEAN, STD)


# ---------------------------------------------------------------------------------------------
# LRP-0 is gradient x input on piecewise-linear networks

def test_lrp0_is_gradient_x_input_on_digits(digits_model, digits_batch):
    x, y = digits_batch[0][:4], digits_batch[1][:4]
    assert_close(pl.lrp(digits_model, x, y, "zero"), gradient_x_input(digits_model, x, y))
    canon = canonize._CACHE[digits_model.net]
    assert canon.merged == {"bn1": "conv1", "bn2": "conv2", "bn3": "conv3"} and not canon.unmerged
    plain = pl.wrap(digits_model.net)  # no normalization: exactly pl.input_x_gradient
    assert_close(pl.lrp(plain, x, y, "zero"), pl.input_x_gradient(plain, x, y))


def test_lrp0_is_gradient_x_input_on_resnet18_with_batchnorm(resnet, photos64):
    t = torch.tensor([3, 7])
    assert_close(pl.lrp(resnet, photos64, t, "zero"), gradient_x_input(resnet, photos64, t))
    assert len(canonize._CACHE[resnet.net].merged) == 20  # every BatchNorm, downsample ones included


def test_lrp0_is_gradient_x_input_on_efficientnet():
    """Depthwise convolutions, ReLU6 (saturated units absorb relevance, as the gradient does), residual sums."""
    model = pl.load_model("imagenet")
    x = pl.sample_images("photos", n=2)[0]
    t = predictions(model, x).argmax(1)
    assert_close(pl.lrp(model, x, t, "zero"), gradient_x_input(model, x, t))
    assert len(canonize._CACHE[model.net].merged) == 49


def test_a_batchnorm_after_a_relu_gets_its_own_rule():
    net = seeded(lambda: nn.Sequential(
        nn.Conv2d(3, 8, 3), nn.ReLU(), nn.BatchNorm2d(8), nn.Conv2d(8, 8, 3), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Flatten(), nn.Linear(8 * 12 * 12, 5)))
    model = pl.wrap(random_batchnorm(net), MEAN, STD)
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    assert_close(pl.lrp(model, x, 1, "zero"), gradient_x_input(model, x, 1))
    canon = canonize._CACHE[net]
    assert canon.merged == {"4": "3"} and canon.unmerged == ("2",)


# ---------------------------------------------------------------------------------------------
# conservation

class Residual(nn.Module):
    """Bias-free: convolutions, residual sums (``+``, ``+=``, ``torch.sub``), a concatenation, max and average
    pools."""

    def __init__(self):
        super().__init__()
        conv = lambda i, o: nn.Conv2d(i, o, 3, padding=1, bias=False)  # noqa: E731
        self.stem, self.a, self.b, self.c, self.d = conv(3, 8), conv(8, 8), conv(8, 8), conv(16, 8), conv(8, 8)
        self.relu, self.pool, self.avg = nn.ReLU(), nn.MaxPool2d(2), nn.AvgPool2d(2)
        self.head, self.gap = nn.Linear(8, 10, bias=False), nn.AdaptiveAvgPool2d(1)

    def forward(self, x):
        x = self.pool(self.relu(self.stem(x)))
        y = self.relu(self.a(x)) + x
        z = self.relu(self.b(y))
        z += y
        z = torch.sub(z, self.relu(self.d(z)))
        x = self.avg(self.relu(self.c(torch.cat([y, z], 1))))
        return self.head(self.gap(x).flatten(1))


@pytest.mark.parametrize("composite", CONSERVATIVE)
def test_conservative_composites_sum_to_the_logit_on_bias_free_networks(composite):
    model = pl.wrap(seeded(Residual), MEAN, STD)
    x = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([0, 4, 9])
    relevance = pl.lrp(model, x, t, composite)
    logits = model(x).detach().gather(1, t[:, None]).flatten()
    assert torch.allclose(relevance.flatten(1).sum(1), logits, rtol=1e-3, atol=1e-3 * float(logits.abs().max()))


def books(result, name):
    entering = result.layers[name].flatten(1).sum(1)
    leaving = result.passed[name].flatten(1).sum(1)
    return entering, leaving, result.absorbed[name]


def test_every_layer_keeps_its_books_on_efficientnet():
    """entering = leaving + absorbed, absorbed in closed form (bias and stabilizer shares of the rule)."""
    model = pl.load_model("imagenet")
    x = pl.sample_images("photos", n=1)[0]
    names = ["_fc", "_conv_head", "_blocks.15._project_conv", "_blocks.9._depthwise_conv", "_blocks.1._expand_conv",
             "_conv_stem", "_avg_pooling"]
    result = pl.lrp(model, x, 1, layers=names)
    for name in names:
        entering, leaving, absorbed = books(result, name)
        scale = float(entering.abs().max() + leaving.abs().max())
        assert torch.allclose(entering, leaving + absorbed, atol=1e-4 * scale), name
    assert torch.allclose(result.layers["_fc"].sum(1), result.score, rtol=1e-5)
    assert torch.allclose(result.input, pl.lrp(model, x, 1), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("which", ["digits", "resnet18"])
def test_relevance_at_the_input_is_the_score_less_what_the_layers_absorbed(which, digits_model, digits_batch,
                                                                           resnet, photos64):
    """On ReLU networks nothing else absorbs: the score is the input's relevance plus every ruled layer's bias
    and stabilizer shares (convolutions, dense layers, average pools), each in closed form."""
    model, x = (digits_model, digits_batch[0][:2]) if which == "digits" else (resnet, photos64)
    ruled = [n for n, m in model.net.named_modules() if isinstance(m, nn.Conv2d | nn.Linear | nn.AdaptiveAvgPool2d)]
    result = pl.lrp(model, x, 1, layers=ruled)
    absorbed = sum(result.absorbed.values())
    total = result.input.flatten(1).sum(1) + absorbed
    assert torch.allclose(total, result.score, rtol=1e-3, atol=1e-3 * float(result.score.abs().max()))
    for name in ruled:
        entering, leaving, kept = books(result, name)
        assert torch.allclose(entering, leaving + kept, atol=1e-4 * float(entering.abs().max() + 1e-3)), name


# ---------------------------------------------------------------------------------------------
# Zennit as the oracle

def _zennit(net, composite, xn, t):
    from zennit.composites import EpsilonAlpha2Beta1Flat, EpsilonGammaBox, EpsilonPlusFlat
    from zennit.torchvision import ResNetCanonizer, VGGCanonizer

    canonizer = ResNetCanonizer() if hasattr(net, "layer1") else VGGCanonizer()
    mean, std = torch.tensor(MEAN).reshape(1, 3, 1, 1), torch.tensor(STD).reshape(1, 3, 1, 1)
    made = {"epsilon_plus_flat": lambda: EpsilonPlusFlat(canonizers=[canonizer]),
            "epsilon_gamma_box": lambda: EpsilonGammaBox(low=-mean / std, high=(1 - mean) / std,
                                                         canonizers=[canonizer]),
            "epsilon_alpha2_beta1_flat": lambda: EpsilonAlpha2Beta1Flat(canonizers=[canonizer])}[composite]()
    with made.context(net) as modified:
        xi = xn.clone().requires_grad_(True)
        out = modified(xi)
        return torch.autograd.grad(out, xi, nn.functional.one_hot(t, out.shape[1]) * out)[0]


@pytest.mark.parametrize("arch", ["resnet18", "vgg11_bn"])
def test_composites_match_zennit(arch, photos64):
    pytest.importorskip("zennit")
    net = torchvision_net(arch)
    model = pl.wrap(net, MEAN, STD)
    t = torch.tensor([2, 5])
    xn = (photos64 - model.mean) / model.std
    for composite in ("epsilon_plus_flat", "epsilon_gamma_box", "epsilon_alpha2_beta1_flat"):
        ours = pl.lrp(model, photos64, t, composite)
        ref = _zennit(copy.deepcopy(net), composite, xn, t)
        for a, b in zip(ours, ref):
            assert corr(a, b) >= 0.99, composite


def same_padded_net(explicit: bool) -> nn.Module:
    """Convolutions that pad their input themselves with ``F.pad`` (TensorFlow's "same", odd padding at the bottom
    and right, as EfficientNet's), a depthwise one whose output stays signed, a 1x1 convolution reading that
    signed output (z+ then needs both of its input's signs) and a grouped one reading the 1x1's signed output
    (padded, its parts one by one). ``explicit``: the same weights with the padding as ``nn.ZeroPad2d`` modules in
    front of plain convolutions."""
    from pellucid.models.efficientnet import SameConv2d

    def build():
        return nn.Sequential(SameConv2d(3, 8, 3, 2), nn.ReLU(), SameConv2d(8, 8, 5, 2, groups=8),
                             SameConv2d(8, 16, 1, bias=True), SameConv2d(16, 12, 3, 2, groups=4, bias=True),
                             nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(12, 5))

    net = seeded(build, 3).eval()
    if not explicit:
        return net
    layers = []
    for m in net:
        if isinstance(m, SameConv2d):
            plain = nn.Conv2d(m.in_channels, m.out_channels, m.kernel_size, m.stride, groups=m.groups,
                              bias=m.bias is not None)
            plain.load_state_dict(m.state_dict())
            total = max(m.kernel_size[0] - m.stride[0], 0)  # the inputs here are 64, 32, 16, 16: even sizes
            layers += [nn.ZeroPad2d((total // 2, total - total // 2) * 2), plain]
        else:
            layers.append(m)
    return nn.Sequential(*layers).eval()


@pytest.mark.parametrize("composite", ["epsilon_plus", "epsilon_alpha2_beta1", "zero"])
def test_a_layer_that_pads_itself_matches_the_padding_as_its_own_layer(composite, photos64):
    """A rule runs a layer's recorded convolution on the padded input it read (no second padding) and crops the
    relevance back; a signed input runs z+ and alpha-beta as one convolution on [x+, x-]. The oracle: the same
    network with the padding as a module of its own (its gradient crops)."""
    t = torch.tensor([1, 4])
    ours = pl.lrp(pl.wrap(same_padded_net(False), MEAN, STD), photos64, t, composite)
    want = pl.lrp(pl.wrap(same_padded_net(True), MEAN, STD), photos64, t, composite)
    assert want.abs().sum() > 0
    assert torch.allclose(ours, want, rtol=1e-4, atol=1e-6 * float(want.abs().max()))


def test_a_layer_that_pads_itself_matches_zennit(photos64):
    """Zennit runs each layer's own forward with modified weights: the oracle of the replayed, padded and side by
    side convolutions, and of flat and z^B on a first layer that pads (ones and bounds, then zero padding); no
    BatchNorm, no residual: no canonizer needed."""
    pytest.importorskip("zennit")
    from zennit.composites import EpsilonAlpha2Beta1, EpsilonGammaBox, EpsilonPlus, EpsilonPlusFlat

    net = same_padded_net(False)
    model = pl.wrap(net, MEAN, STD)
    t = torch.tensor([0, 3])
    xn = (photos64 - model.mean) / model.std
    low, high = -model.mean / model.std, (1 - model.mean) / model.std  # z^B's bounds: the pixel range, normalized
    for name, made in (("epsilon_plus", EpsilonPlus), ("epsilon_alpha2_beta1", EpsilonAlpha2Beta1),
                       ("epsilon_plus_flat", EpsilonPlusFlat),
                       ("epsilon_gamma_box", lambda: EpsilonGammaBox(low=low, high=high))):
        with made().context(copy.deepcopy(net)) as modified:
            xi = xn.clone().requires_grad_(True)
            out = modified(xi)
            ref = torch.autograd.grad(out, xi, nn.functional.one_hot(t, out.shape[1]) * out)[0]
        ours = pl.lrp(model, photos64, t, name)
        for a, b in zip(ours, ref):
            assert corr(a, b) >= 0.9999, name
            assert float((a - b).abs().max()) <= 1e-3 * float(b.abs().max()), name


class _Gates(nn.Module):
    """Convolutions that read signed inputs (each after a convolution with no activation), gated by a ReLU module,
    ``F.relu``, ``clamp(min=0)`` and a ReLU6; one gated by ``hardtanh(-1, 1)``, which passes negative values."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 16, 1)
        self.relu, self.p, self.d = nn.ReLU(), nn.Conv2d(16, 8, 3, padding=1, groups=8), nn.Conv2d(8, 12, 1)
        self.q, self.e = nn.Conv2d(12, 12, 3, padding=1, groups=4), nn.Conv2d(12, 12, 1)
        self.r, self.f, self.relu6 = nn.Conv2d(12, 10, 1), nn.Conv2d(10, 16, 1), nn.ReLU6()
        self.s, self.g = nn.Conv2d(16, 8, 1), nn.Conv2d(8, 8, 3, padding=1)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(32, 5))

    def forward(self, x):
        x = self.relu(self.b(self.a(x)))
        x = nn.functional.relu(self.d(self.p(x)))
        x = self.e(self.q(x)).clamp(min=0)
        x = self.relu6(self.f(self.r(x)))
        x = nn.functional.hardtanh(self.g(self.s(x)), -1.0, 1.0)
        return self.head(x)


def test_a_gated_layer_on_a_signed_input_runs_z_plus_from_its_own_output_and_matches_zennit(photos64, monkeypatch):
    """z+ and alpha's group on a signed input behind a ReLU-like gate are ``(W x + |W| |x|) / 2``: the layer's output
    and one convolution on ``|x|``. The gates are found in the probe pass (module, function, clamp, ReLU6; not a
    hardtanh that passes negative values); the maps equal the direct sums on ``[x+, x-]`` and Zennit's."""
    pytest.importorskip("zennit")
    from zennit.composites import EpsilonAlpha2Beta1, EpsilonPlus

    from pellucid.attribution.lrp import rules

    net = seeded(_Gates, 5).eval()
    model = pl.wrap(net, MEAN, STD)
    t = torch.tensor([1, 3])
    xn = (photos64 - model.mean) / model.std
    assert canonize.canonical(net, xn[:1]).gated == {"b", "d", "e", "f"}
    calls = []
    run = rules.run_mirrored
    monkeypatch.setattr(rules, "run_mirrored", lambda *a: calls.append(1) or run(*a))
    for name, made in (("epsilon_plus", EpsilonPlus), ("epsilon_alpha2_beta1", EpsilonAlpha2Beta1)):
        with made().context(copy.deepcopy(net)) as modified:
            xi = xn.clone().requires_grad_(True)
            out = modified(xi)
            ref = torch.autograd.grad(out, xi, nn.functional.one_hot(t, out.shape[1]) * out)[0]
        calls.clear()
        ours = pl.lrp(model, photos64, t, name)
        assert len(calls) == 4  # b, d, e and f, each on a signed input, once (the two images are one chunk)
        with monkeypatch.context() as m:
            m.setattr(rules, "_mirrored", lambda group, epsilon: False)
            direct = pl.lrp(model, photos64, t, name)
        for a, b, c in zip(ours, ref, direct):
            assert corr(a, b) >= 0.9999, name
            assert float((a - b).abs().max()) <= 1e-3 * float(b.abs().max()), name
            assert float((a - c).abs().max()) <= 1e-5 * float(c.abs().max()), name


def test_a_layer_gated_in_place_is_gated(photos64):
    """An in-place gate (``y.relu_()``; LRP's forward drops ``inplace=True`` arguments, not in-place methods) gates:
    what reads its output later reads the gate's output. z+ then runs from the layer's output, which the gate
    changed only where no relevance arrives: the map is that of the same net with the ReLU out of place."""
    class Net(nn.Module):
        def __init__(self, mode: str):
            super().__init__()
            self.mode = mode  # not "inplace": the canonical copy turns a module's inplace flag off
            self.a, self.b, self.fc = nn.Conv2d(3, 6, 3), nn.Conv2d(6, 8, 1), nn.Linear(8, 4)

        def forward(self, x):
            y = self.b(self.a(x))
            x = y.relu_() if self.mode == "in place" else y.relu()
            return self.fc(x.mean((2, 3)))

    plain = seeded(lambda: Net("plain"), 4).eval()
    inplace = Net("in place").eval()
    inplace.load_state_dict(plain.state_dict())
    t = torch.tensor([0, 3])
    want = pl.lrp(pl.wrap(plain, MEAN, STD), photos64, t, "epsilon_plus")
    got = pl.lrp(pl.wrap(inplace, MEAN, STD), photos64, t, "epsilon_plus")
    assert canonize._CACHE[inplace].gated == {"b"}
    assert torch.allclose(got, want, rtol=1e-5, atol=1e-6 * float(want.abs().max()))


def _with_and_without_mirroring(monkeypatch, model, x, t, composite, **kw):
    """``pl.lrp`` as it runs, the number of mirrored runs it made, and ``pl.lrp`` with every group on its direct
    sums (the oracle: ``[x+, x-]`` against ``[W+, W-]``)."""
    from pellucid.attribution.lrp import rules

    calls = []
    run = rules.run_mirrored
    with monkeypatch.context() as m:
        m.setattr(rules, "run_mirrored", lambda *a: calls.append(1) or run(*a))
        ours = pl.lrp(model, x, t, composite, **kw)
    with monkeypatch.context() as m:
        m.setattr(rules, "_mirrored", lambda group, epsilon: False)
        direct = pl.lrp(model, x, t, composite, **kw)
    return ours, len(calls), direct


def _padded_gates() -> nn.Module:
    from pellucid.models.efficientnet import SameConv2d

    return nn.Sequential(SameConv2d(3, 8, 3, 2), SameConv2d(8, 12, 3, 2, bias=True), nn.ReLU6(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(12, 5))


def _mlp() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 64 * 64, 20), nn.Linear(20, 30), nn.ReLU(), nn.Linear(30, 5))


@pytest.mark.parametrize("case", ["linear", "padded", "channels_last", "condition", "alpha2beta1"])
def test_mirrored_runs_equal_the_direct_sums(case, photos64, monkeypatch):
    """z+ from a gated layer's output on a dense layer (channels last in the input), a layer that pads its input
    itself (TensorFlow's "same": the relevance is cropped back), channels-last memory, a condition on the gated
    layer, and alpha-beta (whose beta group keeps its direct sums; the weight cache holds both without refilling)."""
    from pellucid.attribution.lrp import reruns

    build = {"linear": _mlp, "padded": _padded_gates}.get(case, _Gates)
    net = seeded(build, 6).eval()
    x, t, kw = photos64, torch.tensor([2, 4]), {}
    composite = {nn.Linear: "zplus"} if case == "linear" else "epsilon_alpha2_beta1" if case == "alpha2beta1" \
        else "epsilon_plus"
    if case == "channels_last":
        net, x = net.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    if case == "condition":
        kw = {"condition": {"d": [1, 5, 7]}}
    model = pl.wrap(net, MEAN, STD)
    ours, mirrored, direct = _with_and_without_mirroring(monkeypatch, model, x, t, composite, **kw)
    assert mirrored >= 1 and direct.abs().sum() > 0
    assert torch.allclose(ours, direct, rtol=1e-5, atol=1e-5 * float(direct.abs().max()))
    if case == "alpha2beta1":  # a third call reuses every modified weight the second one made
        layer = canonize._CACHE[net].modules["b"]
        pl.lrp(model, x, t, composite)
        kept = {k: v[1] for k, v in reruns._MODIFIED[layer].items()}
        pl.lrp(model, x, t, composite)
        assert all(reruns._MODIFIED[layer][k][1] is v for k, v in kept.items())


def test_what_could_let_relevance_past_a_gate_turns_mirroring_off(photos64, monkeypatch):
    """A gate changed in place again (``clamp_`` then ``add_``, ``relu_`` then ``y[:, 0] = 1``) does not gate; an
    in-place gate does not let a BatchNorm after it merge into the layer before it; a hook on the model (here one
    that passes the gradient through a ReLU where it is <= 0) turns gating off for the call."""
    class Net(nn.Module):
        def __init__(self, mode: str):
            super().__init__()
            self.mode = mode
            self.a, self.b, self.c = nn.Conv2d(3, 6, 3), nn.Conv2d(6, 8, 1), nn.Conv2d(8, 4, 1)
            self.bn, self.relu = nn.BatchNorm2d(8), nn.ReLU()

        def forward(self, x):
            y = self.b(self.a(x))
            if self.mode == "clamp then add":
                y.clamp_(min=0)
                y.add_(0.5)
            elif self.mode == "out of place":
                y = y.clamp(min=0) + 0.5
            elif self.mode == "relu in place, then BatchNorm":
                y.relu_()
            elif self.mode == "relu in place, then a slice set":
                y.relu_()
                y[:, 0] = 1.0
            else:
                y = self.relu(y)
            return self.c(self.bn(y)).mean((2, 3))

    def build(mode):
        net = random_batchnorm(seeded(lambda: Net("out of place"), 7))
        net.mode = mode
        return net

    t = torch.tensor([1, 2])
    spoiled, plain = build("clamp then add"), build("out of place")
    want = pl.lrp(pl.wrap(plain, MEAN, STD), photos64, t, "epsilon_plus")
    got = pl.lrp(pl.wrap(spoiled, MEAN, STD), photos64, t, "epsilon_plus")
    assert canonize._CACHE[spoiled].gated == frozenset()
    assert torch.allclose(got, want, rtol=1e-5, atol=1e-6 * float(want.abs().max()))

    assert canonize.canonical(build("relu in place, then a slice set"), photos64[:1]).gated == frozenset()
    inplace = build("relu in place, then BatchNorm")
    canon = canonize.canonical(inplace, photos64[:1])
    assert canon.merged == {} and canon.gated == {"b"}
    with torch.no_grad():
        assert torch.allclose(canon.net(photos64), inplace(photos64), atol=1e-5)

    hooked = build("module")
    model = pl.wrap(hooked, MEAN, STD)
    assert canonize.canonical(hooked, photos64[:1]).gated == {"b"}
    handle = hooked.relu.register_full_backward_hook(lambda m, grad_in, grad_out: (grad_out[0],))
    try:
        ours, mirrored, direct = _with_and_without_mirroring(monkeypatch, model, photos64, t, "epsilon_plus")
    finally:
        handle.remove()
    assert mirrored == 0 and torch.allclose(ours, direct, rtol=1e-5, atol=1e-6 * float(direct.abs().max()))


def test_a_layer_is_gated_only_when_a_gate_is_all_that_reads_it():
    """A merged BatchNorm in between still gates; an output read twice, by a leaky ReLU or by a hardtanh that keeps
    negative values does not."""
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.bn, self.b = nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4), nn.Conv2d(4, 4, 1)
            self.c, self.d, self.e = nn.Conv2d(4, 4, 1), nn.Conv2d(4, 4, 1), nn.Conv2d(4, 4, 1)
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            x = torch.relu(self.bn(self.a(x)))
            y = self.b(x)
            x = nn.functional.relu(y) + y  # read twice
            x = nn.functional.leaky_relu(self.c(x))
            x = nn.functional.hardtanh(self.d(x), 0.0, 6.0)  # a ReLU6 as a function
            return self.fc(torch.clamp(self.e(x), -1.0).mean((2, 3)))

    net = random_batchnorm(seeded(Net, 2))
    assert canonize.canonical(net, torch.rand(1, 3, 8, 8)).gated == {"a", "d"}


def test_lrp_keeps_nothing_alive_after_it_returns(photos64):
    """The recorded calls tie a forward pass's graph to the rules: what the hooks left must go with the pass (a
    reference cycle through autograd's nodes once kept every call's graph, 230 MB a call on EfficientNet)."""
    import gc
    import warnings

    from pellucid.attribution.lrp.replay import Replay

    def alive(kind) -> int:
        gc.collect()
        with warnings.catch_warnings():  # looking at every object touches torch.distributed's deprecated names
            warnings.simplefilter("ignore")
            return sum(isinstance(o, kind) for o in gc.get_objects())

    model = pl.wrap(same_padded_net(False), MEAN, STD)
    pl.lrp(model, photos64, 1)
    before = alive(torch.Tensor)
    for _ in range(3):
        pl.lrp(model, photos64, 1)
    assert alive(Replay) == 0 and alive(torch.Tensor) <= before


def test_the_recorder_replays_only_a_layers_own_call(photos64):
    """A layer's call is replayed only when it is the layer: its own weight and bias, on its batched input (or a
    zero padding of it), making its output unchanged since. A layer with an activation inside (in place or not),
    one calling its weight twice or one convolving single images runs its module again; a convolution after a
    padding layer replays on its own input."""
    from pellucid.attribution.lrp.functional import Functional
    from pellucid.attribution.lrp.replay import Recorder

    class Inside(nn.Linear):  # an activation after the linear map, inside the layer
        def forward(self, x):
            return torch.tanh(super().forward(x))

    class Twice(nn.Conv2d):
        def forward(self, x):
            return super().forward(x) + super().forward(x.flip(-1))

    class InPlace(nn.Conv2d):  # an activation applied in place: the same tensor, another value
        def forward(self, x):
            return super().forward(x).relu_()

    class Unbatched(nn.Conv2d):  # one image (C, H, W) at a time
        def forward(self, x):
            return torch.stack([super(Unbatched, self).forward(image) for image in x])

    net = same_padded_net(False)
    padded = nn.Sequential(nn.ZeroPad2d(1), nn.Conv2d(3, 2, 3))  # padded by a layer of its own
    layers = [net[0], net[2], net[3], Inside(4, 3), Twice(3, 2, 3, padding=1), nn.Linear(4, 3), InPlace(3, 2, 3),
              Unbatched(3, 2, 3), padded]
    inputs = [photos64, torch.rand(2, 8, 32, 32), torch.randn(2, 8, 16, 16), torch.randn(2, 4), photos64,
              torch.randn(5, 4), photos64, photos64, photos64]
    recorder = Recorder({id(m.weight): m.bias for m in (*layers[:-1], padded[1])})
    taken = []
    for m, x in zip(layers, inputs):
        x = x.requires_grad_(True)
        with Functional(1e-6, frozenset(), recorder):
            if m is padded:  # the convolution reads the padding layer's output
                m, x = padded[1], padded[0](x)
            out = m(x)
        taken.append(recorder.take(m, x, out))
    same3, same5, one, inside, twice, linear, in_place, unbatched, after_pad = taken
    assert same3.pads == (0, 1, 0, 1) and same5.pads == (1, 2, 1, 2) and one.pads is None
    assert inside is None and twice is None and linear is not None and linear.pads is None
    assert in_place is None and unbatched is None and after_pad is not None and after_pad.pads is None
    assert same3.crop(same3.input).shape == photos64.shape
    assert torch.equal(same3.run(same3.input, net[0].weight, net[0].bias), net[0](photos64))


@pytest.mark.parametrize("composite", ["zero", "epsilon_gamma_box", "epsilon_plus_flat"])
def test_a_layer_that_pads_itself_keeps_its_books(composite, photos64):
    """``layers=`` on layers that pad themselves: the bias share of a plain part runs on the padded zeros its
    call read; entering = leaving + absorbed at each."""
    result = pl.lrp(pl.wrap(same_padded_net(False), MEAN, STD), photos64, 2, composite, layers=["0", "2", "3", "4"])
    for name in ("0", "2", "3", "4"):
        entering, leaving, absorbed = books(result, name)
        scale = float(entering.abs().max() + leaving.abs().max())
        assert torch.allclose(entering, leaving + absorbed, atol=1e-4 * scale), (composite, name)


def test_layers_that_replay_differently_give_the_maps_of_their_plain_twins(photos64):
    """The same network written three ways: convolutions padded by the module, padded with F.pad and then run
    with ``padding="valid"`` (autograd differentiates that call), and convolving one image at a time (never
    replayed)."""
    import torch.nn.functional as F

    class PadValid(nn.Conv2d):
        def forward(self, x):
            return F.conv2d(F.pad(x, (1, 1, 1, 1)), self.weight, self.bias, self.stride, "valid", self.dilation,
                            self.groups)

    class Unbatched(nn.Conv2d):
        def forward(self, x):
            return torch.stack([super(Unbatched, self).forward(image) for image in x])

    class Net(nn.Module):
        def __init__(self, kind: str = "plain"):
            super().__init__()
            three = {"padvalid": lambda: PadValid(6, 8, 3), "unbatched": lambda: Unbatched(6, 8, 3, padding=1)}
            one = Unbatched if kind == "unbatched" else nn.Conv2d
            self.a, self.b = nn.Conv2d(3, 6, 3, padding=1), three.get(kind, lambda: nn.Conv2d(6, 8, 3, padding=1))()
            self.c, self.head = one(6, 8, 1), nn.Linear(8, 5)

        def forward(self, x):
            h = torch.relu(self.a(x))
            y = self.b(h)
            y = (y + self.c(self.a(x))) * 0.5  # the shortcut reads a signed input
            return self.head(torch.relu(y).mean((2, 3)))

    plain = seeded(lambda: Net(), 1).eval()
    x, t = photos64[:, :, :16, :16], torch.tensor([3, 0])
    for kind in ("padvalid", "unbatched"):
        twin = Net(kind).eval()
        twin.load_state_dict(plain.state_dict())
        for composite in ("epsilon_plus", "epsilon_alpha2_beta1", "zero"):
            want = pl.lrp(pl.wrap(plain), x, t, composite)
            ours = pl.lrp(pl.wrap(twin), x, t, composite)
            assert want.abs().sum() > 0
            assert torch.allclose(ours, want, rtol=1e-4, atol=1e-6 * float(want.abs().max())), (kind, composite)


def test_an_output_changed_in_place_further_on_is_recomputed_and_a_changed_input_is_refused(digits_batch):
    """Rules that read a layer's output (epsilon, LRP-0) keep no copy of it: an in-place op after the layer
    (``y.relu_()``) changes its version, and the rule runs the layer again. A layer's input changed in place after
    the layer read it cannot be recovered: a clear error."""
    class Net(nn.Module):
        def __init__(self, mode: str):
            super().__init__()
            self.mode = mode
            self.a, self.b, self.c = nn.Linear(784, 32), nn.Linear(32, 16), nn.Linear(16, 10)

        def forward(self, x):
            y = self.a(x.flatten(1))
            y = y.relu_() if self.mode == "in place" else torch.relu(y)
            z = self.b(y)
            if self.mode == "input changed":
                y.clamp_(max=0.5)  # an in-place change of b's input, after b ran
            return self.c(torch.relu(z))

    plain = seeded(lambda: Net("plain"), 2).eval()
    x = digits_batch[0][:3]
    for composite in ("epsilon_plus", "zero"):
        twin = Net("in place").eval()
        twin.load_state_dict(plain.state_dict())
        want = pl.lrp(pl.wrap(plain, input_size=(1, 28, 28)), x, 1, composite)
        assert torch.allclose(pl.lrp(pl.wrap(twin, input_size=(1, 28, 28)), x, 1, composite), want, atol=1e-7)
    broken = Net("input changed").eval()
    broken.load_state_dict(plain.state_dict())
    with pytest.raises(PellucidError, match="changed in place after the layer ran"):
        pl.lrp(pl.wrap(broken, input_size=(1, 28, 28)), x, 1)


def test_pairs_of_modifiers_are_cached_boundedly_and_a_clamp_tells_its_sign_only_when_it_can():
    from pellucid.attribution.lrp import rules

    for i in range(100):  # rules built anew, each with its own modifiers
        reruns.side_by_side(lambda p, i=i: p + i, rules.minus, 1)
    assert reruns.side_by_side.cache_info().currsize <= 32
    y = torch.randn(3, 4, requires_grad=True) * 1
    assert rules._nonnegative(y.clamp(min=0), y.detach().clamp(min=0))
    odd = y.clamp(min=0, max=-1)  # min above max: every value is max, -1
    assert not rules._nonnegative(odd, odd.detach())


# ---------------------------------------------------------------------------------------------
# mappings, layers, the cache, side effects, bad input

def test_a_user_mapping_names_before_types(digits_model, digits_batch):
    x, y = digits_batch[0][:2], digits_batch[1][:2]
    mapping = {nn.Conv2d: "zplus", nn.Linear: "epsilon", "conv1": "flat"}
    assert torch.equal(pl.lrp(digits_model, x, y, mapping), pl.lrp(digits_model, x, y))
    rule = make_rule("zero")
    assert torch.equal(pl.lrp(digits_model, x, y, {nn.Conv2d: rule, nn.Linear: rule}),
                       pl.lrp(digits_model, x, y, "zero"))


def test_the_canonical_copy_is_cached_until_a_weight_changes(digits_model, digits_batch):
    x, y = digits_batch[0][:2], digits_batch[1][:2]
    model = copy.deepcopy(digits_model)
    before = pl.lrp(model, x, y)
    canon = canonize._CACHE[model.net]
    assert torch.equal(pl.lrp(model, x, y), before) and canonize._CACHE[model.net] is canon
    # the copy is pellucid's own: calls leave it as it was made (eval mode, frozen, no gradient, no hook)
    assert not any(m.training for m in canon.net.modules()) and hook_count(canon.net) == 0
    assert not any(p.requires_grad or p.grad is not None for p in canon.net.parameters())
    with torch.no_grad():
        model.net.bn2.running_var.mul_(4)
    after = pl.lrp(model, x, y)
    assert canonize._CACHE[model.net] is not canon and not torch.allclose(after, before)
    assert torch.equal(after, pl.lrp(copy.deepcopy(model), x, y))
    # an edit through .data keeps the parameter's version: the weights' sums still tell
    with torch.no_grad():
        model.net.conv2.weight.data.mul_(-1)
    edited = pl.lrp(model, x, y)
    assert not torch.allclose(edited, after) and torch.equal(edited, pl.lrp(copy.deepcopy(model), x, y))


def test_modified_weights_are_cached_and_bounded(digits_model, digits_batch):
    """z+'s clamped weights are computed once per canonical module and reused; sweeping gamma keeps at most
    MODIFIED_PER_MODULE of them per module, and every sweep value still gets its own weights (its own maps)."""

    x, y = digits_batch[0][:2], digits_batch[1][:2]
    model = copy.deepcopy(digits_model)
    first = pl.lrp(model, x, y)
    conv = canonize._CACHE[model.net].net.conv2
    cached = {k: v[1] for k, v in reruns._MODIFIED[conv].items()}
    assert torch.equal(pl.lrp(model, x, y), first)
    assert all(reruns._MODIFIED[conv][k][1] is v for k, v in cached.items())  # reused, not recomputed
    maps = [pl.lrp(model, x, y, "epsilon_gamma_box", gamma=g) for g in (0.1, 0.2, 0.4, 0.8, 1.6, 3.2)]
    assert len(reruns._MODIFIED[conv]) <= reruns.MODIFIED_PER_MODULE
    assert all(not torch.allclose(a, b) for a, b in zip(maps, maps[1:]))
    assert torch.equal(maps[0], pl.lrp(model, x, y, "epsilon_gamma_box", gamma=0.1))


def test_a_users_module_whose_output_its_backward_reads(digits_batch):
    """A user's leaf layer ending in tanh (its backward reads its output) under z+: the rule must not reuse the
    memory of its re-run outputs (the copy was first made in place and autograd refused)."""
    class Dense(nn.Module):
        def __init__(self, cin, cout):
            super().__init__()
            self.weight = nn.Parameter(torch.randn(cout, cin, generator=torch.Generator().manual_seed(0)) * 0.05)
            self.bias = nn.Parameter(torch.zeros(cout))

        def forward(self, x):
            return torch.tanh(nn.functional.linear(x, self.weight, self.bias))

    net = seeded(lambda: nn.Sequential(nn.Flatten(), Dense(784, 32), nn.ReLU(), nn.Linear(32, 10)), 0)
    model = pl.wrap(net, input_size=(1, 28, 28))
    x = digits_batch[0][:3]
    r = pl.lrp(model, x, 0, {Dense: "zplus", nn.Linear: "epsilon"})
    assert r.shape == x.shape and torch.isfinite(r).all() and r.abs().sum() > 0


def test_lrp_has_no_side_effects(digits_model, digits_batch):
    x, y = digits_batch[0][:2], digits_batch[1][:2]
    check_side_effects(lambda m, xx: pl.lrp(m, xx, y), digits_model, x)
    check_side_effects(lambda m, xx: pl.lrp(m, xx, y, "epsilon_gamma_box", layers=["conv2", "bn2"]), digits_model, x)


def test_the_record_and_the_cli(digits_model, digits_batch, tmp_path, capsys):
    from pellucid import registry
    from pellucid.cli import main

    x, y = digits_batch[0][:2], digits_batch[1][:2]
    record = registry.method("lrp")
    assert record.signed and record.cost == "cheap"
    assert torch.equal(record(digits_model, x, y), pl.lrp(digits_model, x, y).sum(1))
    maps = pl.explain(digits_model, x, y, "saliency,lrp", options={"lrp": {"composite": "zero"}})
    assert torch.equal(maps["lrp"], pl.lrp(digits_model, x, y, "zero").sum(1))
    with pytest.raises(PellucidError, match="options given for 'lrp', which is not among the methods run"):
        pl.explain(digits_model, x, y, "saliency", options={"lrp": {"composite": "zero"}})
    out = tmp_path / "lrp.png"
    assert main(["explain", "--methods", "lrp", "--composite", "epsilon_gamma_box", "-n", "2", "--out", str(out)]) == 0
    assert out.stat().st_size > 0 and "lrp: the epsilon_gamma_box composite" in capsys.readouterr().out
    assert main(["explain", "--methods", "saliency,lrp", "-n", "1", "--out", str(out)]) == 0
    assert "lrp: the epsilon_plus_flat composite" in capsys.readouterr().out  # the default, named


@pytest.mark.parametrize("kwargs, message", [
    ({"composite": "epsilon_pluss"}, r"unknown LRP composite 'epsilon_pluss'; choose one of: zero, epsilon_plus, "),
    ({"composite": {nn.Conv2d: "zplus"}}, r"layer 'fc' \(Linear\) has no LRP rule.*'fc': 'epsilon'.*nn.Linear"),
    ({"composite": {nn.Conv2d: "zplsu", nn.Linear: "epsilon"}}, r"unknown LRP rule 'zplsu'; choose one of: zero, "),
    ({"composite": {"conv9": "flat"}}, r"no layer 'conv9' runs in this model.*conv1"),
    ({"epsilon": 0}, r"epsilon must be a number > 0, got 0; .*divide by zero"),
    ({"composite": "epsilon_gamma_box", "gamma": -0.5}, r"gamma must be a number >= 0, got -0.5"),
    ({"layers": ["fcc"]}, r"unknown layer 'fcc'"),
    ({"composite": 3}, r"composite must be a name"),
])
def test_bad_input(digits_model, digits_batch, kwargs, message):
    with pytest.raises(PellucidError, match=message):
        pl.lrp(digits_model, digits_batch[0][:1], 1, **kwargs)
