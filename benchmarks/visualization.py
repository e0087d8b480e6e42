"""Time per optimization step of feature visualization, next to its limit.

The limit is one raw input-gradient pass of the same batch, in plain PyTorch (forward, the target
logits, backward to the input), which every step must pay. pellucid's step adds the jitter, the blur,
the parameterization, the update and the recorded history; the goal is <= 1.15x the limit. The anchor
is the CS231n reference loop written in plain PyTorch (roll, forward, backward into the image,
normalized step, unroll, clamp, blur).

The contenders run in turn, round after round (``_timing.interleaved``), so that this machine's drift
hits them alike; each runs the default 100 steps (20 for the batch of 100 digits, 5 at 224²). Run:
``python benchmarks/visualization.py [linear] [digits] [resnet18] [imagenet]`` (about 3 minutes on 2 quiet CPU cores).
"""

from __future__ import annotations

import os
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _timing import interleaved_runs, ratio_quartiles, raw_passes  # noqa: E402

import pellucid as pl  # noqa: E402
from pellucid._blur import gaussian_blur  # noqa: E402
from pellucid._grad import default_batch_size  # noqa: E402

ROUNDS = 31
torch.set_num_threads(int(os.environ.get("BENCH_THREADS", max(1, min(2, os.cpu_count() or 1)))))


def course_loop(model, targets, steps, lr=25.0, l2=1e-3, jitter=16, blur_every=10):
    """The exercise's loop, in plain PyTorch (the anchor): one image per target, pixel space."""
    gen = torch.Generator().manual_seed(0)
    n, shape = len(targets), model.input_size
    img = torch.rand((n, *shape), generator=gen)
    rows = torch.arange(n)
    jitter = max(1, round(jitter * shape[-1] / 224))
    for p in model.parameters():
        p.requires_grad_(False)
    for t in range(steps):
        ox, oy = (int(torch.randint(0, jitter + 1, (1,), generator=gen)) for _ in range(2))
        img = torch.roll(img, (oy, ox), dims=(2, 3)).requires_grad_(True)
        score = model(img)[rows, targets] - l2 * img.pow(2).flatten(1).sum(1)
        (g,) = torch.autograd.grad(score.sum(), img)
        with torch.no_grad():
            img = img + lr * g / g.flatten(1).norm(dim=1)[:, None, None, None]
            img = torch.roll(img, (-oy, -ox), dims=(2, 3)).clamp(0, 1)
            if t % blur_every == 0:
                img = gaussian_blur(img, 0.5)
    for p in model.parameters():
        p.requires_grad_(True)
    return img


def bench(name, model, targets, steps, rounds=ROUNDS):
    targets = torch.tensor(targets)
    x = torch.rand((len(targets), *model.input_size), generator=torch.Generator().manual_seed(1))
    runs = {
        # in the chunks pellucid takes (all of a batch up to 64 small images), so chunking is no factor
        "limit: one raw input-gradient pass": lambda: raw_passes(model, x, targets, default_batch_size(x, model),
                                                                 repeat=steps),
        "pellucid class_visualization (pixel)": lambda: pl.class_visualization(model, targets, steps=steps,
                                                                               progress=False),
        "pellucid class_visualization (fourier)": lambda: pl.class_visualization(model, targets, steps=steps,
                                                                                 param="fourier", progress=False),
        "course loop, plain PyTorch (anchor)": lambda: course_loop(model, targets, steps),
    }
    runs_ = interleaved_runs(runs, rounds)
    quart = ratio_quartiles(runs_, "limit: one raw input-gradient pass")
    print(f"\n{name}: batch {len(targets)} x {tuple(model.input_size)}, {steps} steps per run, {rounds} "
          "interleaved rounds; median ms per step, and over rounds the ratio to the same round's limit: "
          "median [25%, 75%]; and the median extra microseconds per step")
    base = runs_["limit: one raw input-gradient pass"]
    for label, t in runs_.items():
        q1, med, q3 = quart[label]
        extra = statistics.median(1e6 * (a - b) / steps for a, b in zip(t, base))
        print(f"  {label:<44} {1000 * statistics.median(t) / steps:8.2f}  {med:.2f}x [{q1:.2f}, {q3:.2f}]"
              f"  {extra:+7.0f} us")


def main(which=("digits", "resnet18")):
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    if "digits" in which:
        bench("digits", pl.load_model("digits"), list(range(10)), steps=100, rounds=31)
        # the per-step overhead is fixed (PyTorch calls, not per image): a bigger batch of the same step
        bench("digits, 10 images per class", pl.load_model("digits"), list(range(10)) * 10, steps=20, rounds=15)
    if "linear" in which:  # a model that costs almost nothing: what is left is the fixed cost of a step
        linear = pl.wrap(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10)), input_size=(1, 28, 28))
        bench("linear model on 28² (the fixed cost of a step)", linear, list(range(10)), steps=500, rounds=11)
    if "resnet18" in which:
        bench("resnet18 (random weights)", pl.load_model("resnet18", weights="random"), [1, 500], steps=5, rounds=5)
    if "imagenet" in which:  # the built-in EfficientNet-Lite0: tarantula and stingray, the course's classes
        bench("imagenet (EfficientNet-Lite0)", pl.load_model("imagenet"), [76, 6], steps=5, rounds=5)


if __name__ == "__main__":
    main(sys.argv[1:] or ("linear", "digits", "resnet18"))
