"""Deletion and insertion time next to the limit, and against Quantus's PixelFlipping.

The limit is the raw forward passes of the same N * steps step images, pre-built in memory, at
the best batch size of a sweep: deletion/insertion can only add the cost of building each chunk.
Quantus (if installed) runs one forward of the whole batch per step, round-tripping through numpy.

    python benchmarks/metrics.py            # digits (32 images) and resnet18 at 64x64 (4 photos)
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout's pellucid, not an installed one

import _timing  # noqa: E402
import torch  # noqa: E402

import pellucid as pl  # noqa: E402
from pellucid._grad import logits_of  # noqa: E402
from pellucid._state import model_state  # noqa: E402

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
REPEATS = 3
STEPS = 50


def median_time(fn, repeats: int = REPEATS) -> float:
    return _timing.median_time(fn, repeats, warmup=True)


def limit(model, x, steps, sweep) -> tuple[float, int]:
    """Best median time of the raw forwards of N * steps images, and its batch size."""
    images = x.repeat_interleave(steps, 0).contiguous()
    best = None
    for bs in sweep:
        with model_state(model):
            t = median_time(lambda bs=bs: logits_of(model, images, len(images), bs), repeats=3)
        if best is None or t < best[0]:
            best = (t, bs)
    return best


def quantus_time(model, x, y, maps, steps):
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
    model.eval()
    return median_time(lambda: metric(model=model, x_batch=xn, y_batch=yn, a_batch=an, batch_size=len(x),
                                      softmax=True, device="cpu"), repeats=3)


def bench(name, model, x, steps=STEPS, sweep=(16, 32, 64, 128)):
    y = model(x).argmax(1).detach()
    maps = pl.saliency(model, x, y)
    t_lim, bs = limit(model, x, steps, sweep)
    rows = [(f"limit (raw forwards, best batch {bs})", t_lim)]
    rows.append(("pellucid deletion (default batch)", median_time(lambda: pl.deletion(model, x, y, maps, steps=steps))))
    rows.append(("pellucid insertion (default batch)",
                 median_time(lambda: pl.insertion(model, x, y, maps, steps=steps))))
    rows.append((f"pellucid deletion (batch {bs})",
                 median_time(lambda: pl.deletion(model, x, y, maps, steps=steps, batch_size=bs))))
    q = quantus_time(model, x, y, maps, steps)
    print(f"\n{name}: {len(x)} images x {steps} steps = {len(x) * steps} forwards, {tuple(x.shape[1:])}")
    for label, t in rows:
        print(f"  {label:<40} {t * 1000:8.1f} ms   {t / t_lim:5.2f}x limit")
    if q is None:
        print("  quantus PixelFlipping                    not installed (pip install quantus)")
    else:
        label = f"quantus PixelFlipping ({steps - 1} steps)"
        print(f"  {label:<40} {q * 1000:8.1f} ms   {q / t_lim:5.2f}x limit"
              f"   pellucid deletion is {q / rows[1][1]:.2f}x faster")


def main():
    digits = pl.load_model("digits")
    x, _ = pl.sample_images("digits", n=32)
    bench("digits", digits, x)
    resnet = pl.load_model("resnet18", weights="random")
    resnet.input_size = (3, 64, 64)
    xr, _ = pl.sample_images("photos", size=64)
    bench("resnet18 (random weights) 64x64", resnet, xr, steps=25, sweep=(8, 16, 32))


if __name__ == "__main__":
    main()
