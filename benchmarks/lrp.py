"""LRP against one gradient pass and against Zennit, side by side in one process, interleaved round by round.

- ResNet-18 (random weights): ``pl.gradient`` (one forward and backward), ``pl.lrp`` with the default
  composite (epsilon-plus-flat) and with ``zero``, and Zennit 0.5.1's ``EpsilonPlusFlat`` with its
  ``ResNetCanonizer`` (registered and removed per call, as Zennit is used; Zennit gets the normalized batch).
- EfficientNet-Lite0 (``imagenet``): ``pl.gradient`` and ``pl.lrp`` (Zennit has no canonizer for it).
- The first call on a model also builds the canonical copy (deep copy, probe pass, BatchNorm merge): one
  call with the cache emptied against one cached call, after a warm-up, once per model.
- Memory of one call (``--memory``): each contender in a process of its own, after a warm-up call and
  ``malloc_trim`` (freed memory back to the system, so the resident size is what is alive): the peak resident
  size during one more call (Linux ``VmHWM``, reset through ``/proc/self/clear_refs``) less the resident size
  before it. Zennit's row includes its canonizer and composite being registered and removed, as it is used.

Times are medians over ``--rounds`` rounds (``_timing.interleaved_runs``: the order rotates and each call
starts after a pause), with the per-round ratio to the gradient pass (quartiles).

    python benchmarks/lrp.py [--threads 2] [--rounds 3] [--images 8] [--size 224] [--memory]
"""

from __future__ import annotations

import argparse
import ctypes
import os
import subprocess
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


def contenders(name: str, x, classes) -> tuple[dict, object]:
    """The calls timed (and measured) on model ``name``, and the model."""
    model = pl.load_model("resnet18", weights="random").eval() if name == "resnet18" else pl.load_model("imagenet")
    fns = {"pl.gradient": lambda: pl.gradient(model, x, classes),
           "pl.lrp (epsilon_plus_flat)": lambda: pl.lrp(model, x, classes),
           "pl.lrp (zero)": lambda: pl.lrp(model, x, classes, "zero")}
    if name == "resnet18":
        fns["zennit EpsilonPlusFlat + ResNetCanonizer"] = zennit_run(model, x, classes)
    return fns, model


def _resident(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def peak_of_one_call(fn) -> float:
    """MB the call needs above what is alive before it (run in a process of its own; see the module docstring)."""
    fn()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    before = _resident("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # the peak resident size starts again from the current one
    fn()
    return _resident("VmHWM") - before


def memory_table(args) -> None:
    rows = []
    for name in ("resnet18", "imagenet"):
        for contender in contenders(name, *_batch(args))[0]:
            out = subprocess.run([sys.executable, __file__, "--peak", name, contender, "--images", str(args.images),
                                  "--size", str(args.size), "--threads", str(args.threads)],
                                 capture_output=True, text=True, check=True)
            rows.append((name, contender, float(out.stdout.split()[-1])))
    print(f"\nmemory of one call ({args.images} images {args.size}x{args.size}): peak resident MB above what is alive")
    print("| model | contender | MB |\n|---|---|---|")
    for name, contender, mb in rows:
        print(f"| {name} | {contender} | {mb:.0f} |")


def _batch(args):
    x = pl.sample_images("photos", n=args.images, size=args.size)[0]
    return x, torch.arange(len(x)) * 7


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--memory", action="store_true", help="also the peak memory of one call of each contender")
    ap.add_argument("--peak", nargs=2, metavar=("MODEL", "CONTENDER"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.peak:
        torch.set_num_threads(args.threads)
        print(f"{peak_of_one_call(contenders(args.peak[0], *_batch(args))[0][args.peak[1]]):.1f}")
        return
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads, load average {os.getloadavg()}")
    x, classes = _batch(args)
    titles = {"resnet18": "resnet18 (random weights)", "imagenet": "imagenet (EfficientNet-Lite0)"}
    for name, title in titles.items():
        fns, model = contenders(name, x, classes)
        print(f"\n{title}: {first_call(model, x, classes)}")
        report(f"{title}, {len(x)} images {args.size}x{args.size}, {args.rounds} rounds",
               interleaved_runs(fns, args.rounds), "pl.gradient")
    print(f"\nload average after: {os.getloadavg()}")
    if args.memory:
        memory_table(args)


if __name__ == "__main__":
    main()
