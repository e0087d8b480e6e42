"""pellucid's per-character attribution on langid against Captum and lime, side by side.

Run: PYTHONPATH=. python benchmarks/text_attribution.py   (needs the cached langid model: pellucid train langid)

Anchors: Captum's InputXGradient, IntegratedGradients (128 Gauss-Legendre steps) and FeatureAblation
(one feature per character, ablated to zero = pellucid's ``mode="blank"``) on the one-hot input, one
call per word (Captum needs one length per call); lime's LimeTextExplainer(char_level=True, bow=False)
with 500 samples. "limit" is the raw model passes the method needs at the best batch size.
Targets (the predicted languages) are computed once, outside the timings, for every library.
Prints medians of several runs and the ratio anchor / pellucid (> 1: pellucid faster).
On a shared 2-core machine run it with OMP_NUM_THREADS=1 (two threads contend badly for these small GRU calls).
"""

from __future__ import annotations

import _timing  # noqa: E402
import numpy as np
import torch

import pellucid as pl
from pellucid.text import word_logits

WORDS = ["hyvää", "gezellig", "niezbędny", "bicicleta", "weather", "kiitos", "przepraszam", "mañana"]
REPEATS = 3


def median_time(fn, repeats: int = REPEATS) -> float:
    return _timing.median_time(fn, repeats, warmup=True)


def targets(model) -> list[int]:
    """The predicted language of each word, computed once, outside every timing."""
    return word_logits(model, WORDS).argmax(1).tolist()


def captum_rows(model, cls, **kwargs):
    ks = targets(model)

    def run():
        for w, k in zip(WORDS, ks):
            x = model.encode([w])
            cls(model).attribute(x, target=k, **kwargs)
    return run


def captum_ablation(model):
    from captum.attr import FeatureAblation

    ks = targets(model)

    def run():
        for w, k in zip(WORDS, ks):
            x = model.encode([w])
            mask = torch.arange(len(w))[None, :, None].expand_as(x)
            FeatureAblation(model).attribute(x, target=k, feature_mask=mask, perturbations_per_eval=64)
    return run


def lime_run(model, samples: int):
    from lime.lime_text import LimeTextExplainer

    def classify(strings):
        return word_logits(model, [s.replace(chr(0), "") for s in strings]).softmax(1).numpy()

    ks = targets(model)

    def run():
        for w, k in zip(WORDS, ks):
            LimeTextExplainer(char_level=True, bow=False, mask_string=chr(0), random_state=0,
                              feature_selection="none").explain_instance(w, classify, labels=(k,),
                                                                         num_features=len(w), num_samples=samples)
    return run


def limit_run(model, rows_per_word: int, backward: bool, batch: int = 128):
    """The raw passes alone: rows_per_word copies of each word, forward (and backward), chunked."""
    def run():
        for w in WORDS:
            x = model.encode([w]).expand(rows_per_word, -1, -1)
            for i in range(0, rows_per_word, batch):
                xi = x[i : i + batch].detach().requires_grad_(backward)
                with torch.set_grad_enabled(backward):
                    out = model(xi)[:, 0].sum()
                    if backward:
                        torch.autograd.grad(out, xi)
    return run


def main() -> None:
    from captum.attr import InputXGradient, IntegratedGradients

    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    model = pl.load_model("langid")
    ks = targets(model)
    rows = [
        ("input x gradient", lambda: pl.text_input_x_gradient(model, WORDS, ks),
         captum_rows(model, InputXGradient), limit_run(model, 1, True)),
        ("integrated gradients (128)", lambda: pl.text_integrated_gradients(model, WORDS, ks, steps=128),
         captum_rows(model, IntegratedGradients, n_steps=128, method="gausslegendre", internal_batch_size=128),
         limit_run(model, 128, True)),
        ("occlusion (blank)", lambda: pl.text_occlusion(model, WORDS, ks, mode="blank"), captum_ablation(model),
         limit_run(model, 10, False)),
        ("lime (500 samples)", lambda: pl.text_lime(model, WORDS, ks, samples=500), lime_run(model, 500),
         limit_run(model, 500, False)),
    ]
    print(f"{len(WORDS)} words, torch threads {torch.get_num_threads()}, median of {REPEATS} (seconds)")
    print(f"{'method':<28}{'pellucid':>10}{'anchor':>10}{'ratio':>8}{'limit':>10}")
    for name, ours, anchor, limit in rows:
        t_ours, t_anchor, t_limit = median_time(ours), median_time(anchor), median_time(limit)
        print(f"{name:<28}{t_ours:>10.3f}{t_anchor:>10.3f}{t_anchor / t_ours:>7.1f}x{t_limit:>10.3f}")
    a = pl.text_occlusion(model, WORDS[:1], mode="blank")[0]
    print("occlusion(blank) equals Captum FeatureAblation:", np.allclose(a, _ablation_ref(model, WORDS[0]), atol=1e-5))


def _ablation_ref(model, w):
    from captum.attr import FeatureAblation

    x = model.encode([w])
    k = int(word_logits(model, [w]).argmax())
    mask = torch.arange(len(w))[None, :, None].expand_as(x)
    return FeatureAblation(model).attribute(x, target=k, feature_mask=mask)[0, :, 0].numpy() * 1.0


if __name__ == "__main__":
    main()
