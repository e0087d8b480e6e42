"""AutoAttack and APGD against torchattacks, side by side in one process, interleaved rounds.

Rows:

- AutoAttack (standard, L-infinity) on the digits model (64 images, eps 0.15) and a random resnet18 at
  64x64 (16 images, labels = its predictions, eps 8/255): torchattacks' ``AutoAttack`` as it ships
  (APGD, APGD-T and FAB with 10 steps, Square with 5,000 queries) against ``pl.autoattack(steps=10)``,
  and both with the reference's 100 steps. Both suites run APGD-CE, APGD-T, FAB-T and Square.
- APGD-CE (100 steps, eps 0.01 so that almost no image leaves early) against torchattacks' ``APGD`` and
  the *limit*: the same number of raw input-gradient passes in plain PyTorch (``_timing.raw_passes``).

Each row also gives the robust accuracy each contender leaves (lower is stronger).

    python benchmarks/attacks.py [--threads 2] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics

import torch
import torchattacks
from _timing import interleaved_runs, raw_passes

import pellucid as pl
from pellucid._grad import default_batch_size


def accuracy(model, adv, y) -> float:
    with torch.no_grad():
        return float((model(adv).argmax(1) == y).float().mean())


def ta_autoattack(model, eps, steps):
    aa = torchattacks.AutoAttack(model, norm="Linf", eps=eps, version="standard", n_classes=10, seed=0)
    for part in aa._autoattack.attacks:
        if hasattr(part, "steps"):
            part.steps = steps
    return aa


def compare(name, fns, model, y, rounds):
    last = {}

    def keep(k, fn):
        def run():
            last[k] = fn()
        return run

    times = interleaved_runs({k: keep(k, fn) for k, fn in fns.items()}, rounds)  # the warm-up run counts here
    med = {k: statistics.median(t) for k, t in times.items()}
    acc = {k: accuracy(model, out.adversarial if isinstance(out, pl.AutoAttackResult) else out, y)
           for k, out in last.items() if not k.startswith("limit")}
    print(f"| {name} | " + " | ".join(f"{k}: {v:.2f} s" for k, v in med.items()) + " | "
          + ", ".join(f"{k} {100 * v:.1f}%" for k, v in acc.items()) + " |", flush=True)
    return med


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--only", default="", help="comma-separated: digits, resnet, apgd")
    ap.add_argument("--steps", default="10,100", help="AutoAttack step counts to time (comma-separated)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    only = set(filter(None, args.only.split(",")))
    r = args.rounds
    print(f"torch {torch.__version__}, torchattacks {torchattacks.__version__}, {args.threads} threads, "
          f"median of {r} interleaved rounds\n")
    print("| work | times (median) | robust accuracy |\n|---|---|---|")

    digits = pl.load_model("digits").eval()
    x, y = pl.sample_images("digits", n=64)
    resnet = pl.load_model("resnet18", weights="random").eval()
    resnet.input_size = (3, 64, 64)
    xr = pl.sample_images("photos", n=4, size=64)[0].repeat(4, 1, 1, 1)
    xr = (xr + 0.05 * torch.rand(xr.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    with torch.no_grad():
        yr = resnet(xr).argmax(1)
    cases = [("digits", digits, x, y, 0.15), ("resnet", resnet, xr, yr, 8 / 255)]
    for case, model, xs, ys, eps in cases:
        if only and case not in only:
            continue
        for steps in map(int, args.steps.split(",")):
            ta = ta_autoattack(model, eps, steps)
            compare(f"AutoAttack {case} {len(xs)} x {tuple(xs.shape[1:])}, eps {eps:.3g}, {steps} steps",
                    {"torchattacks": lambda ta=ta, xs=xs, ys=ys: ta(xs, ys),
                     "pellucid": lambda m=model, xs=xs, ys=ys, e=eps, s=steps: pl.autoattack(m, xs, ys, e, steps=s,
                                                                                           progress=False)},
                    model, ys, r)

    if not only or "apgd" in only:
        steps, eps = 100, 0.01
        ta = torchattacks.APGD(digits, norm="Linf", eps=eps, steps=steps, loss="ce", seed=0)
        bs = default_batch_size(x, digits)
        med = compare(f"APGD-CE digits 64, eps {eps}, {steps} steps",
                      {"torchattacks": lambda: ta(x, y),
                       "pellucid": lambda: pl.apgd(digits, x, y, eps, steps, progress=False),
                       "limit": lambda: raw_passes(digits, x, y, bs, repeat=steps + 1)}, digits, y, r)
        print(f"\nAPGD pellucid / limit: {med['pellucid'] / med['limit']:.2f}x; "
              f"pellucid / torchattacks: {med['pellucid'] / med['torchattacks']:.2f}x")


if __name__ == "__main__":
    main()
