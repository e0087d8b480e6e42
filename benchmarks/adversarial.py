"""pellucid's attacks against torchattacks, side by side in one process.

Each row: torchattacks' time, pellucid's time (default batch size), their ratio, and the *limit*:
the raw input-gradient passes the attack needs (PGD: ``steps`` passes over the 64 images), in plain
PyTorch (``_timing.raw_passes``), at the best batch size of a sweep. The contenders of a row run in
turn, round after round (``_timing.interleaved``), so that this machine's drift hits them alike;
times are medians. The early-stop rows report the steps saved (images leave the batch once fooled)
and the time saved against the same PGD without early stop.

    python benchmarks/adversarial.py [--threads 2] [--rounds 9]
"""

from __future__ import annotations

import argparse

import torch
import torchattacks
from _timing import interleaved, raw_passes

import pellucid as pl
from pellucid._grad import default_batch_size
from pellucid.adversarial import _pgd

SIZES = (8, 16, 32, 64, 128)


def success(model, adv, y) -> float:
    with torch.no_grad():
        return float((model(adv).argmax(1) != y).float().mean())


def row(name, model, x, y, passes, theirs, ours, rounds):
    fns = {"torchattacks": theirs, "pellucid": ours}
    fns.update({f"limit bs {b}": (lambda b=b: raw_passes(model, x, y, b, repeat=passes)) for b in SIZES})
    t = interleaved(fns, rounds)
    best = min((k for k in t if k.startswith("limit")), key=t.get)
    sweep = ", ".join(f"{k[9:]}: {v:.3f}" for k, v in t.items() if k.startswith("limit"))
    print(f"  {name}: limit sweep (bs: s) {sweep}", flush=True)
    return (name, t["torchattacks"], t["pellucid"], t[best], best[9:],
            success(model, theirs(), y), success(model, ours(), y))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=9)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    r = args.rounds
    model = pl.load_model("digits").eval()
    x, y = pl.sample_images("digits", n=64)
    print(f"torch {torch.__version__}, {args.threads} threads, median of {r} interleaved rounds "
          f"(FGSM: {4 * r}); pellucid's default batch size {default_batch_size(x, model)}", flush=True)
    rows = []
    ta = torchattacks.FGSM(model, eps=0.1)
    rows.append(row("FGSM x 64", model, x, y, 1, lambda: ta(x, y), lambda: pl.fgsm(model, x, y, 0.1), 4 * r))
    steps, alpha = 40, 0.01
    for norm, e, a, cls in (("linf", 0.1, alpha, torchattacks.PGD), ("l2", 1.5, 0.1, torchattacks.PGDL2)):
        ta = cls(model, eps=e, alpha=a, steps=steps, random_start=False)
        kw = dict(norm=norm, random_start=False, progress=False)
        rows.append(row(f"PGD {norm} {steps} steps x 64", model, x, y, steps, lambda ta=ta: ta(x, y),
                        lambda e=e, a=a, kw=kw: pl.pgd(model, x, y, e, a, steps, **kw), r))

    print("\n| work | torchattacks | pellucid | limit (best bs) | pellucid / torchattacks | pellucid / limit "
          "| success ta / pellucid |")
    print("|---|---|---|---|---|---|---|")
    for name, t_ta, t_pl, lim, best, s_ta, s_pl in rows:
        print(f"| {name} | {t_ta:.3f} s | {t_pl:.3f} s | {lim:.3f} s (bs {best}) | {t_pl / t_ta:.2f}x | "
              f"{t_pl / lim:.2f}x | {100 * s_ta:.0f}% / {100 * s_pl:.0f}% |")

    print("\nearly stop (PGD linf, 40 steps x 64, alpha 0.01, no random start):\n")
    print("| eps | success | steps taken / 2560 | steps saved | time without | time with | speed-up |")
    print("|---|---|---|---|---|---|---|")
    for e in (0.1, 0.2):
        kw = dict(random_start=False, progress=False)
        adv, taken = _pgd(model, x, y, e, alpha, steps, early_stop=True, **kw)
        t = interleaved({"off": lambda e=e, kw=kw: pl.pgd(model, x, y, e, alpha, steps, **kw),
                         "on": lambda e=e, kw=kw: pl.pgd(model, x, y, e, alpha, steps, early_stop=True, **kw)}, r)
        total = steps * len(x)
        print(f"| {e:g} | {100 * success(model, adv, y):.0f}% | {int(taken.sum())} | "
              f"{100 * (1 - int(taken.sum()) / total):.0f}% | {t['off']:.3f} s | {t['on']:.3f} s | "
              f"{t['off'] / t['on']:.2f}x |")


if __name__ == "__main__":
    main()
