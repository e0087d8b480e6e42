"""pellucid's attacks against torchattacks, side by side in one process.

Each row: torchattacks' time, pellucid's time (default batch size, and the best batch size of the
sweep), their ratio, and the *limit*: the raw input-gradient passes the attack needs (PGD: ``steps``
passes over the 64 images) at the best batch size of a small sweep. Times are medians of
``--repeats`` runs. The early-stop row reports the steps saved (images leave the batch once fooled)
and the time it saves against the same PGD without early stop.

    python benchmarks/adversarial.py [--threads 2] [--repeats 5]
"""

from __future__ import annotations

import argparse

import torch
import torchattacks
from _timing import median_time  # noqa: E402

import pellucid as pl
from pellucid._grad import default_batch_size, input_gradient
from pellucid._state import model_state
from pellucid.adversarial import _pgd
from pellucid.targets import as_target

SIZES = (8, 16, 32, 64)




def limit(model, x, y, passes: int, repeats: int) -> tuple[float, int, dict]:
    """Fastest time of ``passes`` raw input-gradient passes over ``x`` at the batch sizes of SIZES."""
    t = as_target(y, len(x), None, "log_softmax")
    sweep = {}
    with model_state(model):
        for bs in SIZES:
            def run(b=bs):
                for _ in range(passes):
                    input_gradient(model, x, t, b)
            sweep[bs] = median_time(run, repeats)
    best = min(sweep, key=sweep.get)
    return sweep[best], best, sweep


def success(model, adv, y) -> float:
    with torch.no_grad():
        return float((model(adv).argmax(1) != y).float().mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"measuring (median of {args.repeats} runs)...", flush=True)
    r = args.repeats
    model = pl.load_model("digits").eval()
    x, y = pl.sample_images("digits", n=64)
    bs = default_batch_size(x)
    rows = []

    lim1, best1, sweep1 = limit(model, x, y, 1, r)
    ta = torchattacks.FGSM(model, eps=0.1)
    t_ta = median_time(lambda: ta(x, y), r)
    t_pl = median_time(lambda: pl.fgsm(model, x, y, 0.1), r)
    t_best = median_time(lambda: pl.fgsm(model, x, y, 0.1, batch_size=best1), r)
    rows.append(("FGSM x 64", t_ta, t_pl, t_best, lim1, best1, success(model, ta(x, y), y),
                 success(model, pl.fgsm(model, x, y, 0.1), y)))

    steps, eps, alpha = 40, 0.1, 0.01
    lim40, best40, sweep40 = limit(model, x, y, steps, r)
    for norm, e, a, cls in (("linf", eps, alpha, torchattacks.PGD), ("l2", 1.5, 0.1, torchattacks.PGDL2)):
        ta = cls(model, eps=e, alpha=a, steps=steps, random_start=False)
        t_ta = median_time(lambda ta=ta: ta(x, y), r)
        kw = dict(norm=norm, random_start=False, progress=False)
        t_pl = median_time(lambda e=e, a=a, kw=kw: pl.pgd(model, x, y, e, a, steps, **kw), r)
        t_best = median_time(lambda e=e, a=a, kw=kw: pl.pgd(model, x, y, e, a, steps, batch_size=best40, **kw), r)
        rows.append((f"PGD {norm} {steps} steps x 64", t_ta, t_pl, t_best, lim40, best40,
                     success(model, ta(x, y), y), success(model, pl.pgd(model, x, y, e, a, steps, **kw), y)))

    print(f"torch {torch.__version__}, {args.threads} threads, median of {r} runs; default batch size {bs}")
    print(f"limit sweep, 1 pass (bs: s): {', '.join(f'{b}: {s:.4f}' for b, s in sweep1.items())}")
    print(f"limit sweep, {steps} passes (bs: s): {', '.join(f'{b}: {s:.3f}' for b, s in sweep40.items())}\n")
    print(f"| work | torchattacks | pellucid (bs {bs}) | pellucid (best bs) | limit (best bs) | ours / torchattacks "
          "| ours / limit | success ta / ours |")
    print("|---|---|---|---|---|---|---|---|")
    for name, t_ta, t_pl, t_best, lim, best, s_ta, s_pl in rows:
        print(f"| {name} | {t_ta:.3f} s | {t_pl:.3f} s | {t_best:.3f} s | {lim:.3f} s (bs {best}) | "
              f"{t_pl / t_ta:.2f}x | {t_pl / lim:.2f}x | {100 * s_ta:.0f}% / {100 * s_pl:.0f}% |")

    print("\nearly stop (PGD linf, 40 steps x 64, alpha 0.01, no random start):\n")
    print("| eps | success | steps taken / 2560 | steps saved | time without | time with | speed-up |")
    print("|---|---|---|---|---|---|---|")
    for e in (0.1, 0.2):
        kw = dict(random_start=False, progress=False)
        adv, taken = _pgd(model, x, y, e, alpha, steps, early_stop=True, **kw)
        t_off = median_time(lambda e=e, kw=kw: pl.pgd(model, x, y, e, alpha, steps, **kw), r)
        t_on = median_time(lambda e=e, kw=kw: pl.pgd(model, x, y, e, alpha, steps, early_stop=True, **kw), r)
        total = steps * len(x)
        print(f"| {e:g} | {100 * success(model, adv, y):.0f}% | {int(taken.sum())} | "
              f"{100 * (1 - int(taken.sum()) / total):.0f}% | {t_off:.3f} s | {t_on:.3f} s | {t_off / t_on:.2f}x |")


if __name__ == "__main__":
    main()
