"""Time per optimization step of feature visualization, next to its limit.

The limit is one input-gradient pass of the same batch (``pl.gradient``: forward + backward to the
input), which every step must pay. pellucid's step adds the jitter, the blur, the parameterization and
the update; the goal is <= 1.15x the limit. The anchor is the CS231n reference loop written in plain
PyTorch (roll, forward, backward into the image, normalized step, unroll, clamp, scipy-free blur).

Run: ``python benchmarks/visualization.py [digits] [resnet18]`` (about a minute on 2 quiet CPU cores;
much longer on a loaded machine; ``BENCH_THREADS=1`` avoids thread oversubscription there). Median
of ``REPEATS``.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pellucid as pl  # noqa: E402
from pellucid.visualize import gaussian_blur  # noqa: E402

REPEATS = 3
torch.set_num_threads(int(os.environ.get("BENCH_THREADS", max(1, min(2, os.cpu_count() or 1)))))


def median_time(fn, repeats: int = REPEATS) -> tuple[float, float]:
    """Median wall-clock and CPU (process) seconds of ``fn()``; CPU time is steadier on a busy machine."""
    fn()  # warm-up
    wall, cpu = [], []
    for _ in range(repeats):
        w, c = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - w)
        cpu.append(time.process_time() - c)
    return statistics.median(wall), statistics.median(cpu)


def course_loop(model, targets, steps, lr=25.0, l2=1e-3, jitter=16, blur_every=10):
    """The exercise's loop, in plain PyTorch (the anchor): one image per target, pixel space."""
    gen = torch.Generator().manual_seed(0)
    n, shape = len(targets), model.input_size
    img = torch.rand((n, *shape), generator=gen)
    rows = torch.arange(n)
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


def bench(name, model, targets, steps):
    x = torch.rand((len(targets), *model.input_size), generator=torch.Generator().manual_seed(1))
    limit = median_time(lambda: pl.gradient(model, x, targets))
    runs = {
        "pellucid class_visualization (pixel)": lambda: pl.class_visualization(model, targets, steps=steps),
        "pellucid class_visualization (fourier)": lambda: pl.class_visualization(model, targets, steps=steps,
                                                                                 param="fourier"),
        "course loop, plain PyTorch (anchor)": lambda: course_loop(model, targets, steps),
    }
    print(f"\n{name}: batch {len(targets)} x {tuple(model.input_size)}, {steps} steps per run, "
          f"median of {REPEATS}; ms per step (ratio to the limit)")
    print(f"  {'':<44} {'wall':>16} {'CPU':>16}")
    print(f"  {'limit: one input-gradient pass':<44} {1000 * limit[0]:8.1f} (1.00x) {1000 * limit[1]:8.1f} (1.00x)")
    for label, fn in runs.items():
        wall, cpu = (t / steps for t in median_time(fn))
        print(f"  {label:<44} {1000 * wall:8.1f} ({wall / limit[0]:.2f}x) {1000 * cpu:8.1f} ({cpu / limit[1]:.2f}x)")


def main(which=("digits", "resnet18")):
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; timings on a shared machine are noisy")
    if "digits" in which:
        bench("digits", pl.load_model("digits"), list(range(10)), steps=20)
    if "resnet18" in which:
        bench("resnet18 (random weights)", pl.load_model("resnet18", weights="random"), [1, 500], steps=3)


if __name__ == "__main__":
    main(sys.argv[1:] or ("digits", "resnet18"))
