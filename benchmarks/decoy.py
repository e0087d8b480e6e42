"""Decoy MNIST (Ross et al. 2017) on the shipped digits: plain training, Right for the Right Reasons, and a
clean model, all the digits CNN trained the same way (same seed, epochs, schedule), scored on the decoy test
split, where the swatch's shade is random. Then Projective ClArC on digits models with a planted artifact.

    python benchmarks/decoy.py                # EPOCHS=10 by default
    EPOCHS=3 python benchmarks/decoy.py       # the tests' short schedule
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout's pellucid, not an installed one
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import torch  # noqa: E402

import pellucid as pl  # noqa: E402
from pellucid.models.base import accuracy, channels_last, seeded  # noqa: E402
from pellucid.models.data import digits  # noqa: E402
from pellucid.models.digits import digits_model, digits_net  # noqa: E402

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
EPOCHS = int(os.environ.get("EPOCHS", 10))


def train(x, y, masks=None, weight=None, epochs=EPOCHS):
    net = channels_last(digits_model(seeded(digits_net, 0)))
    start = time.perf_counter()
    model = pl.train_right_reasons(net, x, y, masks, weight=weight, epochs=epochs, progress=False)
    return model, time.perf_counter() - start


def decoy() -> None:
    x, y, masks = pl.decoy_digits("train", masks=True)
    xt, yt, mt = pl.decoy_digits("test", masks=True)
    clean_x, clean_y = digits("train")
    runs = {"clean digits, plain": (clean_x, clean_y, None), "decoy digits, plain": (x, y, None),
            "decoy digits, right for the right reasons": (x, y, masks)}
    print(f"Decoy MNIST, digits CNN, {EPOCHS} epochs, accuracy on the decoy test split (random swatch shades)")
    print(f"  {'training':<44} {'decoy test':>10} {'decoy train':>12} {'swatch grad':>12} {'time':>8}")
    for name, (xx, yy, mm) in runs.items():
        model, seconds = train(xx, yy, mm)
        g = pl.gradient(model, xt[:200], yt[:200])[:, 0].abs()
        share = float((g * mt[:200]).sum() / g.sum())  # the share of |input gradient| on the swatch
        print(f"  {name:<44} {accuracy(model, xt, yt):10.1%} {accuracy(model, x, y):12.1%} {share:12.2%} "
              f"{seconds:7.0f}s", flush=True)


def clarc() -> None:
    from planted import EPOCHS as PLANTED_EPOCHS
    from planted import artifact_gain, clean_model, planted_model, reliance

    print(f"\nProjective ClArC at relu2, digits CNN with an artifact planted in one class ({PLANTED_EPOCHS} epochs):"
          "\nreliance = the gain of the class's log-probability when the artifact is pasted onto other classes'"
          "\ntest digits, beyond the clean model's; raw = the gain itself")
    print(f"  {'planted':<36} {'reliance':>9} {'-> paired':>10} {'-> class':>9} {'raw':>6} {'-> paired':>10} "
          f"{'accuracy':>9} {'-> paired':>10}")
    for cls, artifact, position, fraction in [(3, "checker", "bottom-left", 0.15), (7, "cross", "top-right", 0.1),
                                              (0, "square", "bottom-right", 0.1), (2, "plus", "top-left", 0.1),
                                              (5, "stripes", "center", 0.2)]:
        model, xp, yp, marked, xt, yt = planted_model(cls, artifact, position, fraction)
        sample = xp[~marked][:1000]
        paired = pl.clarc(model, "relu2", pl.paste_artifact(sample, artifact, position), sample)
        by_class = pl.clarc(model, "relu2", xp[marked], xp[(yp == cls) & ~marked])
        other = xt[yt != cls]
        r = [reliance(m, clean_model(), xt, yt, cls, artifact, position) for m in (model, paired, by_class)]
        raw = [artifact_gain(m, other, cls, artifact, position) for m in (model, paired)]
        acc = [accuracy(m, xt, yt) for m in (model, paired)]
        label = f"{artifact} {position}, class {cls}, {fraction:.0%}"
        print(f"  {label:<36} {r[0]:9.2f} {r[1]:10.2f} {r[2]:9.2f} {raw[0]:6.2f} {raw[1]:10.2f} {acc[0]:9.1%} "
              f"{acc[1]:10.1%}", flush=True)


if __name__ == "__main__":
    decoy()
    clarc()
