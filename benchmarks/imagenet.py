"""The built-in ImageNet model (EfficientNet-Lite0 at 224²) side by side: pellucid's IG, SmoothGrad, occlusion
and LIME against Captum and lime_image, each next to its limit (the raw passes it needs, in plain PyTorch, at
the best batch size of a small sweep), interleaved round after round as in ``benchmarks/attribution.py``.
Class visualization on this model against the course's plain PyTorch loop: ``benchmarks/visualization.py
imagenet``. Kept short for a shared 2-core machine: one photo (the cat), few rounds.

    python benchmarks/imagenet.py [--threads 2] [--repeats 3]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from _timing import markdown  # noqa: E402
from attribution import ig_row, lime_row, occlusion_row, smoothgrad_row  # noqa: E402

import pellucid as pl  # noqa: E402


def rows(rounds: int) -> list[dict]:
    model = pl.load_model("imagenet")
    x = pl.sample_images("photos", n=1)[0]
    with torch.no_grad():
        t = int(model(x).argmax(1))
    sizes = (4, 8, 16)
    name = "EfficientNet-Lite0 224²"
    return [ig_row(name, model, x, t, 32, sizes, rounds), smoothgrad_row(name, model, x, t, 16, sizes, rounds),
            occlusion_row(name, model, x, t, 56, 28, sizes, rounds),
            lime_row(name, model, x, t, rounds, sizes, samples=100)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    table = rows(args.repeats)
    print(f"torch {torch.__version__}, {args.threads} threads, median of {args.repeats} interleaved rounds\n")
    print(markdown(table, ["work", "limit", "anchor", "pellucid", "speed-up", "vs limit", "default bs"]))
    print("\nbatch-size sweep of the raw passes (the limit), seconds:\n")
    print(markdown(table, ["work", "sweep (bs: s)"]))
    print(f"\ntotal {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
