"""The course project's BatchNorm question, measured: digits with and without BatchNorm.

Prints each model's held-out accuracy (1,000 digits) and how faithful and how model-dependent its
saliency maps are on the 10 sample digits: deletion and insertion AUC against a random map, and
the cascading-randomization similarity. Trains ``digits-nobn`` first if it is not cached
(``pellucid train digits --no-batchnorm``).

    python benchmarks/batchnorm.py
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

import pellucid as pl  # noqa: E402
from pellucid.models.base import accuracy  # noqa: E402
from pellucid.models.data import digits  # noqa: E402

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def main():
    xt, yt = digits("test")
    x, y = pl.sample_images("digits", n=10)
    print("model         held-out acc   method    deletion AUC  insertion AUC  rank corr. randomized  SSIM randomized")
    for name in ("digits", "digits-nobn"):
        model = pl.load_model(name)
        acc = accuracy(model, xt, yt)
        result = pl.compare(model, x, y, ["saliency"], steps=50)
        for row in result.rows:
            print(f"{name:<13} {100 * acc:10.2f}%   {row['method']:<9} {row['deletion AUC']:12.3f}  "
                  f"{row['insertion AUC']:13.3f}  {row['rank corr. randomized']:21.3f}  {row['SSIM randomized']:15.3f}")


if __name__ == "__main__":
    main()
