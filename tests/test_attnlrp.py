"""AttnLRP on transformers: against an independent gradient x input implementation of the same rules (lxt's
"efficient" formulation: LayerNorm's standard deviation detached, the identity rule on GELU through a
gradient of ``gelu(x) / x``, the uniform rule as gradients of q and k divided by 4 and v by 2), on the trained
``digits-vit`` against saliency and gradient x input, and on torchvision's ViT and Swin."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import check_side_effects
from torch import nn
from torchvision.models.swin_transformer import SwinTransformer
from torchvision.models.vision_transformer import VisionTransformer

import pellucid as pl
from pellucid._state import hook_count
from pellucid.models.base import seeded


def corr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.corrcoef(torch.stack([a.flatten().double(), b.flatten().double()]))[0, 1])


def tiny_vit(seed: int = 0) -> pl.PixelModel:
    def build():
        net = VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64,
                                num_classes=5)
        with torch.no_grad():  # torchvision starts the head at zero, the tokens near zero: give them values
            for p in (net.heads.head.weight, net.heads.head.bias, net.class_token, net.encoder.pos_embedding):
                p.normal_(0, 0.5)
            for m in net.modules():
                if isinstance(m, nn.LayerNorm):
                    m.weight.uniform_(0.5, 1.5)
                    m.bias.normal_(0, 0.1)
        return net

    return pl.wrap(seeded(build, seed), mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3)).eval()


class _Scale(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, factor):
        ctx.factor = factor
        return x.clone()

    @staticmethod
    def backward(ctx, g):
        return g / ctx.factor, None


class _IdentityRule(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        y = F.gelu(x)
        ctx.save_for_backward(y / (x + 1e-10))
        return y

    @staticmethod
    def backward(ctx, g):
        return g * ctx.saved_tensors[0]


def _layer_norm(m: nn.LayerNorm, x):
    mean = x.mean(-1, keepdim=True)
    std = ((x - mean) ** 2).mean(-1, keepdim=True).add(m.eps).sqrt()
    return (x - mean) / std.detach() * m.weight + m.bias


def _attention(m: nn.MultiheadAttention, x):
    n, t, e = x.shape
    h = m.num_heads
    q, k, v = F.linear(x, m.in_proj_weight, m.in_proj_bias).chunk(3, -1)
    q, k, v = (u.reshape(n, t, h, e // h).transpose(1, 2) for u in (q, k, v))
    q, k, v = _Scale.apply(q, 4.0), _Scale.apply(k, 4.0), _Scale.apply(v, 2.0)
    a = torch.softmax(q @ k.transpose(-2, -1) / (e // h) ** 0.5, -1)
    out = (a @ v).transpose(1, 2).reshape(n, t, e)
    return F.linear(out, m.out_proj.weight, m.out_proj.bias)


def reference_attnlrp(model: pl.PixelModel, x: torch.Tensor, target: int) -> torch.Tensor:
    """AttnLRP as gradient x input of the normalized input, written out for torchvision's VisionTransformer."""
    vit = model.net
    xn = ((x - model.mean) / model.std).requires_grad_(True)
    z = vit._process_input(xn)
    z = torch.cat([vit.class_token.expand(len(z), -1, -1), z], 1) + vit.encoder.pos_embedding
    for block in vit.encoder.layers:
        z = z + _attention(block.self_attention, _layer_norm(block.ln_1, z))
        mlp = block.mlp
        z = z + mlp[3](_IdentityRule.apply(mlp[0](_layer_norm(block.ln_2, z))))
    logits = vit.heads(_layer_norm(vit.encoder.ln, z)[:, 0])
    (g,) = torch.autograd.grad(logits[:, target].sum(), xn)
    return (xn * g).detach()


def test_attnlrp_matches_an_independent_gradient_x_input_implementation():
    model = tiny_vit()
    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    ours = pl.lrp(model, x, 2)
    want = reference_attnlrp(model, x, 2)
    assert ours.shape == x.shape
    for a, b in zip(ours, want):
        assert corr(a, b) >= 0.999
        assert float((a - b).abs().max()) <= 1e-2 * float(b.abs().max())
    assert pl.lrp(model, x, 2, "attnlrp").equal(ours)  # the default for a model with attention


def test_attnlrp_is_not_the_gradient():
    """The rules change the result: plain gradient x input of the same input differs (so the test above can
    fail), while the CNN composites keep their own rules for the layers."""
    model = tiny_vit(seed=3)
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    xn = (x - model.mean) / model.std
    gxi = xn * pl.gradient(model, x, 1) * model.std
    ours = pl.lrp(model, x, 1)
    assert max(corr(a, b) for a, b in zip(ours, gxi)) < 0.99


def test_swin_and_vit_give_finite_maps_without_side_effects():
    swin = pl.wrap(seeded(lambda: SwinTransformer([4, 4], 16, [2, 2], [2, 2], [4, 4], num_classes=4)), mean=(0.5,) * 3,
                   std=(0.25,) * 3).eval()
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    for model in (swin, tiny_vit()):
        check_side_effects(lambda m, v: pl.lrp(m, v, 1), model, x)
        r = pl.lrp(model, x, 1)
        assert r.shape == x.shape and torch.isfinite(r).all() and r.abs().sum() > 0
        assert hook_count(model) == 0


@pytest.mark.parametrize("arch", ["vit_b_16", "swin_t"])
def test_torchvision_transformers_at_full_size(arch):
    model = pl.load_model(arch, weights="random")
    with torch.no_grad():
        head = model.net.heads.head if arch.startswith("vit") else model.net.head
        head.weight.normal_(0, 0.02)  # torchvision starts ViT's head at zero: every score would be 0
    x = pl.sample_images("photos", n=1, size=224 if arch.startswith("vit") else 112)[0]
    r = pl.lrp(model, x, 1)
    assert r.shape == x.shape and torch.isfinite(r).all() and r.abs().sum() > 0
    assert hook_count(model) == 0


def test_attnlrp_on_the_trained_digits_transformer_beats_the_gradient_maps():
    """digits-vit (trained on first use, cached): AttnLRP's deletion AUC on held-out digits is at least as good
    (as low) as the better of saliency and gradient x input; Grad-CAM finds its token grid."""
    from pellucid.models.data import digits

    model = pl.load_model("digits-vit")
    assert model.accuracy >= 0.95
    x, y = digits("test")
    x, y = x[:100], y[:100]
    auc = {name: float(pl.deletion(model, x, y, a).auc.mean()) for name, a in (
        ("attnlrp", pl.lrp(model, x, y).sum(1)), ("saliency", pl.saliency(model, x, y)),
        ("input_x_gradient", pl.input_x_gradient(model, x, y).sum(1)))}
    assert auc["attnlrp"] <= min(auc["saliency"], auc["input_x_gradient"]), auc
    cam = pl.grad_cam(model, x[:4], y[:4])
    assert cam.shape == (4, 28, 28) and torch.isfinite(cam).all()


def test_attacks_and_the_report_on_the_trained_digits_transformer(tmp_path):
    """The attacks on digits-vit stay in their eps ball and break it (it was not trained against them), and the
    report's image sections all run on it: the explanation attack differentiates twice through attention (the
    math kernel), and DeepLIFT, whose rescale rule has none for LayerNorm, is left out of its tables."""
    from pellucid.drawing.report import IMAGE_SECTIONS, build_report
    from pellucid.models.data import digits

    model = pl.load_model("digits-vit")
    x, y = (t[:32] for t in digits("test"))

    def accuracy(images):
        with torch.no_grad():
            return float((model(images).argmax(1) == y[:len(images)]).float().mean())

    eps, clean = 0.15, accuracy(x)
    for adv in (pl.fgsm(model, x, y, eps), pl.pgd(model, x, y, eps, eps / 4, 10)):
        assert (adv - x).abs().max() <= eps + 1e-6 and adv.min() >= 0 and adv.max() <= 1
        assert accuracy(adv) <= clean - 0.3, (accuracy(adv), clean)
    auto = pl.autoattack(model, x[:6], y[:6], eps, steps=5, targets=2, queries=30, progress=False)
    assert (auto.adversarial - x[:6]).abs().max() <= eps + 1e-6 and auto.robust_accuracy < auto.clean_accuracy
    page = build_report(model, x[:2], y[:2], tmp_path, progress=False, sections=IMAGE_SECTIONS).read_text()
    for title in ("Where does it look", "Faithfulness and sanity checks", "How easily is it fooled",
                  "What has it learned", "Strategies across a data set", "What concepts it uses"):
        assert f">{title}</h2>" in page, title
    faithfulness = page.split(">Faithfulness and sanity checks</h2>")[1].split("</section>")[0]
    assert ">lrp<" in faithfulness and ">deeplift<" not in faithfulness and ">saliency<" in faithfulness
