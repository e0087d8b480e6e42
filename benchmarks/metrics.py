"""Deletion and insertion time next to the limit, and against Quantus's PixelFlipping.

The limit is the raw forward passes of the same N * steps step images, pre-built in memory, in plain
PyTorch, at the best batch size of a sweep: deletion/insertion can only add the cost of building each
chunk. Quantus (if installed) runs one forward of the whole batch per step, round-tripping through
numpy. All contenders of a case run in turn, round after round (``_timing.interleaved``), so that this
machine's drift hits them alike; times are medians.

    python benchmarks/metrics.py            # digits (32 images) and resnet18 at 64x64 (4 photos)
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout's pellucid, not an installed one

import torch  # noqa: E402
from _timing import interleaved, raw_passes  # noqa: E402

import pellucid as pl  # noqa: E402

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
ROUNDS = 9
STEPS = 50


def quantus_fn(model, x, y, maps, steps):
    try:
        import quantus
    except ImportError:
        return None
    c, h, w = x.shape[1:]
    n_features = c * h * w
    per_step = n_features // (steps - 1)
    if n_features % per_step:
        return None
    metric = quantus.PixelFlipping(features_in_step=per_step, perturb_baseline="black", disable_warnings=True,
                                   display_progressbar=False)
    xn, yn, an = x.numpy(), y.numpy(), maps[:, None].numpy()
    return lambda: metric(model=model, x_batch=xn, y_batch=yn, a_batch=an, batch_size=len(x), softmax=True,
                          device="cpu")


def bench(name, model, x, steps=STEPS, sweep=(16, 32, 64, 128)):
    model.eval()
    y = model(x).argmax(1).detach()
    maps = pl.saliency(model, x, y)
    images = x.repeat_interleave(steps, 0).contiguous()
    fns = {f"limit bs {bs}": (lambda bs=bs: raw_passes(model, images, None, bs, gradients=False)) for bs in sweep}
    fns["pellucid deletion"] = lambda: pl.deletion(model, x, y, maps, steps=steps)
    fns["pellucid insertion"] = lambda: pl.insertion(model, x, y, maps, steps=steps)
    q = quantus_fn(model, x, y, maps, steps)
    if q is not None:
        fns[f"quantus PixelFlipping ({steps - 1} steps)"] = q
    t = interleaved(fns, ROUNDS)
    best = min((k for k in t if k.startswith("limit")), key=t.get)
    t_lim = t[best]
    print(f"\n{name}: {len(x)} images x {steps} steps = {len(x) * steps} forwards, {tuple(x.shape[1:])}; "
          f"median of {ROUNDS} interleaved rounds; default batch {pl._grad.default_batch_size(x, model)}")
    for label, v in t.items():
        mark = "  <- the limit" if label == best else ""
        print(f"  {label:<40} {v * 1000:8.1f} ms   {v / t_lim:5.2f}x limit{mark}")
    if q is None:
        print("  quantus PixelFlipping                    not installed (pip install quantus)")
    else:
        qt = t[f"quantus PixelFlipping ({steps - 1} steps)"]
        print(f"  pellucid deletion is {qt / t['pellucid deletion']:.2f}x faster than Quantus")


def main():
    digits = pl.load_model("digits")
    x, _ = pl.sample_images("digits", n=32)
    bench("digits", digits, x)
    resnet = pl.load_model("resnet18", weights="random")
    resnet.input_size = (3, 64, 64)
    xr, _ = pl.sample_images("photos", n=4, size=64)
    bench("resnet18 (random weights) 64x64", resnet, xr, steps=25, sweep=(8, 16, 32, 64))


if __name__ == "__main__":
    main()
