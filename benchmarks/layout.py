"""Does handing rows in the model's memory format help the perturbation methods? (issue #25)

``perturbation_scores`` lays masked rows out as the model's convolution weights are (channels-last for the
built-in ``imagenet`` model and the digits CNNs, contiguous for torchvision models). This times occlusion,
LIME and KernelSHAP with the rule on and off, interleaved round by round (``_timing.interleaved_runs``, a
pause between contenders), on the channels-last EfficientNet-Lite0 and on a channels-last resnet18 at 224².

    python benchmarks/layout.py [--rounds 5] [--threads 2]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
from pathlib import Path
from unittest import mock

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from _timing import interleaved_runs, markdown, ratio_quartiles  # noqa: E402

import pellucid as pl  # noqa: E402
from pellucid import _grad  # noqa: E402

CASES = {"occlusion": {"window": 32, "stride": 32}, "lime": {"samples": 64}, "kernel_shap": {"samples": 64}}


def timed(fn, follow: bool):
    real = _grad.iter_logits

    def call():
        with mock.patch.object(_grad, "iter_logits",
                               lambda m, s, t, b, follow_layout=False: real(m, s, t, b, follow)):
            fn()
    return call


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    x, _ = pl.sample_images("photos", n=1)
    models = {"imagenet (channels-last)": pl.load_model("imagenet"),
              "resnet18 (channels-last)": copy.deepcopy(pl.load_model("resnet18", weights="random")).to(
                  memory_format=torch.channels_last)}
    rows = []
    for model_name, model in models.items():
        for method, kw in CASES.items():
            def run(method=method, kw=kw, model=model):
                pl.attribution_map(method, model, x, 0, **kw)
            times = interleaved_runs({"follows": timed(run, True), "contiguous": timed(run, False)}, args.rounds)
            q = ratio_quartiles(times, "contiguous")["follows"]
            rows.append({"model": model_name, "method": method,
                         "rows follow the model (s)": f"{statistics.median(times['follows']):.3f}",
                         "contiguous rows (s)": f"{statistics.median(times['contiguous']):.3f}",
                         "ratio (quartiles)": f"{q[1]:.2f} ({q[0]:.2f}-{q[2]:.2f})"})
            print(rows[-1], file=sys.stderr, flush=True)
    print(markdown(rows, list(rows[0])))


if __name__ == "__main__":
    main()
