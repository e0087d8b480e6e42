"""LRP against one gradient pass and against Zennit, side by side in one process, interleaved round by round.

- ResNet-18 (random weights): ``pl.gradient`` (one forward and backward), ``pl.lrp`` with the default
  composite (epsilon-plus-flat) and with ``zero``, and Zennit 0.5.1's ``EpsilonPlusFlat`` with its
  ``ResNetCanonizer`` (registered and removed per call, as Zennit is used; Zennit gets the normalized batch).
- EfficientNet-Lite0 (``imagenet``): ``pl.gradient`` and ``pl.lrp`` (Zennit has no canonizer for it).
- The first call on a model also builds the canonical copy (deep copy, probe pass, BatchNorm merge): one
  call with the cache emptied against one cached call, after a warm-up, once per model.

Times are medians over ``--rounds`` rounds (``_timing.interleaved_runs``: the order rotates and each call
starts after a pause), with the per-round ratio to the gradient pass (quartiles).

    python benchmarks/lrp.py [--threads 2] [--rounds 3] [--images 8] [--size 224]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's pellucid, not an installed one

import torch  # noqa: E402
from _timing import interleaved_runs, report, settle  # noqa: E402

import pellucid as pl  # noqa: E402
from pellucid.attribution.lrp import canonize  # noqa: E402


def zennit_run(model, x, classes):
    """Zennit's epsilon-plus-flat with its ResNet canonizer on ``model.net`` and the normalized batch."""
    from zennit.composites import EpsilonPlusFlat
    from zennit.torchvision import ResNetCanonizer

    net, xn = model.net, ((x - model.mean) / model.std)

    def run():
        composite = EpsilonPlusFlat(canonizers=[ResNetCanonizer()])
        flags = [p.requires_grad for p in net.parameters()]
        try:
            for p in net.parameters():
                p.requires_grad_(False)
            with composite.context(net) as modified:
                xi = xn.detach().requires_grad_(True)
                out = modified(xi)
                seed = torch.nn.functional.one_hot(classes, out.shape[1]).to(out) * out
                return torch.autograd.grad(out, xi, seed)[0]
        finally:
            for p, f in zip(net.parameters(), flags):
                p.requires_grad_(f)
    return run


def first_call(model, x, classes) -> str:
    """A call that builds the canonical copy (the cache emptied for this model first) against a cached call,
    both after a warm-up call (the first call of a process also pays oneDNN's one-time kernel set-up)."""
    net = getattr(model, "net", model)
    pl.lrp(model, x, classes)
    times = []
    for cold in (True, False):
        if cold:
            canonize._CACHE.pop(net, None)
        settle()
        start = time.perf_counter()
        pl.lrp(model, x, classes)
        times.append(time.perf_counter() - start)
    return f"{times[0]:.3f} s with the canonical copy built, {times[1]:.3f} s cached"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--size", type=int, default=224)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads, load average {os.getloadavg()}")
    x = pl.sample_images("photos", n=args.images, size=args.size)[0]
    classes = torch.arange(len(x)) * 7

    resnet = pl.load_model("resnet18", weights="random").eval()
    print(f"\nresnet18: {first_call(resnet, x, classes)}")
    fns = {"pl.gradient": lambda: pl.gradient(resnet, x, classes),
           "pl.lrp (epsilon_plus_flat)": lambda: pl.lrp(resnet, x, classes),
           "pl.lrp (zero)": lambda: pl.lrp(resnet, x, classes, "zero"),
           "zennit EpsilonPlusFlat + ResNetCanonizer": zennit_run(resnet, x, classes)}
    report(f"resnet18 (random weights), {len(x)} images {args.size}x{args.size}, {args.rounds} rounds",
           interleaved_runs(fns, args.rounds), "pl.gradient")

    effnet = pl.load_model("imagenet")
    print(f"\nimagenet (EfficientNet-Lite0): {first_call(effnet, x, classes)}")
    fns = {"pl.gradient": lambda: pl.gradient(effnet, x, classes),
           "pl.lrp (epsilon_plus_flat)": lambda: pl.lrp(effnet, x, classes),
           "pl.lrp (zero)": lambda: pl.lrp(effnet, x, classes, "zero")}
    report(f"imagenet (EfficientNet-Lite0), {len(x)} images {args.size}x{args.size}, {args.rounds} rounds",
           interleaved_runs(fns, args.rounds), "pl.gradient")
    print(f"\nload average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
