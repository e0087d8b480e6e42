"""DeepLIFT, GradientSHAP and KernelSHAP against Captum and shap, side by side in one process.

Each row times the anchors, pellucid and a plain-PyTorch limit in turn, round after round
(``_timing.interleaved_runs``), so this machine's drift hits them alike; the table gives medians and the
quartiles of pellucid's per-round ratio to the first anchor.

- DeepLIFT: against Captum's ``DeepLift`` and against one input-gradient pass (``pl.gradient``; the issue asks
  for DeepLIFT within 1.5x of it: the reference runs once, forward only, so DeepLIFT is one gradient pass
  plus the multipliers).
- GradientSHAP: against Captum's ``GradientShap`` (one batch of every sample) and the raw gradient passes.
- KernelSHAP: against shap's ``KernelExplainer`` and Captum's ``KernelShap`` (default: one coalition per
  forward; and 64 per forward), on the same superpixels (SLIC not timed); interleaved, and each contender
  alone in a process of its own (they slow each other in one process).

    python benchmarks/shap.py [--threads 2] [--repeats 5] [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's pellucid, not an installed one

import numpy as np  # noqa: E402
import torch  # noqa: E402
from _timing import interleaved_runs, markdown, ratio_quartiles, raw_passes  # noqa: E402

import pellucid as pl  # noqa: E402

warnings.filterwarnings("ignore")  # Captum's hook and requires_grad notices


def timed(work: str, fns: dict, rounds: int, base: str) -> dict:
    """Medians of ``fns`` interleaved, and the quartiles of each one's per-round ratio to ``base``."""
    runs = interleaved_runs(fns, rounds)
    med = {k: statistics.median(v) for k, v in runs.items()}
    q = ratio_quartiles(runs, base)
    ours = next(k for k in fns if k.startswith("pellucid"))
    lo, mid, hi = q[ours]
    row = {"work": work, "times": ", ".join(f"{k} {v:.3f} s" for k, v in med.items()),
           "ratio": f"{mid:.2f} ({lo:.2f}-{hi:.2f})", "speed-up": f"{1 / mid:.2f}x"}
    print(f"  {work}: {row['times']}; {ours} / {base} per round {row['ratio']}", file=sys.stderr, flush=True)
    return row


def deeplift_rows(rounds: int, quick: bool) -> list[dict]:
    from captum.attr import DeepLift

    model = pl.load_model("digits")
    x, y = pl.sample_images("digits", n=64)
    rows = [timed("digits, DeepLIFT x 64", {
        "Captum": lambda: DeepLift(model).attribute(x, baselines=0.0, target=y),
        "pellucid": lambda: pl.deeplift(model, x, y),
        "pl.gradient": lambda: pl.gradient(model, x, y),
    }, rounds, "Captum")]
    rows.append(timed("digits, DeepLIFT x 64 vs one gradient pass", {
        "pl.gradient": lambda: pl.gradient(model, x, y),
        "pellucid": lambda: pl.deeplift(model, x, y),
    }, rounds, "pl.gradient"))
    if not quick:
        net = pl.load_model("resnet18", weights="random")
        xr = pl.sample_images("photos", n=8)[0]
        rows.append(timed("resnet18 224², DeepLIFT x 8 vs one gradient pass", {
            "pl.gradient": lambda: pl.gradient(net, xr, 281),
            "pellucid": lambda: pl.deeplift(net, xr, 281),
            # no Captum: its DeepLift refuses torchvision's resnet18, which calls each block's ReLU twice
        }, max(2, rounds // 2), "pl.gradient"))
    return rows


def gradient_shap_rows(rounds: int, quick: bool) -> list[dict]:
    from captum.attr import GradientShap

    model = pl.load_model("digits")
    x, y = pl.sample_images("digits", n=8)
    b = torch.rand(16, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    xs, ys = x.repeat(50, 1, 1, 1), y.repeat(50)
    rows = [timed("digits, GradientSHAP 50 samples x 8", {
        "Captum": lambda: GradientShap(model).attribute(x, baselines=b, target=y, n_samples=50),
        "pellucid": lambda: pl.gradient_shap(model, x, y, b, samples=50),
        "raw passes (bs 64)": lambda: raw_passes(model, xs, ys, 64, True),
    }, rounds, "Captum")]
    if not quick:
        net = pl.load_model("resnet18", weights="random")
        xr = pl.sample_images("photos", n=1)[0]
        br = torch.rand(8, 3, 224, 224, generator=torch.Generator().manual_seed(0))
        rows.append(timed("resnet18 224², GradientSHAP 32 samples x 1", {
            "Captum": lambda: GradientShap(net).attribute(xr, baselines=br, target=281, n_samples=32),
            "pellucid": lambda: pl.gradient_shap(net, xr, 281, br, samples=32),
        }, max(2, rounds // 2), "Captum"))
    return rows


def kernel_shap_contenders() -> tuple[int, dict]:
    """The KernelSHAP contenders on one digit and its superpixels (SLIC not timed)."""
    here = str(Path(__file__).resolve().parent)
    sys.path[:] = [p for p in sys.path if str(Path(p or ".").resolve()) != here]  # `import shap`: not this file
    import shap
    from captum.attr import KernelShap

    model = pl.load_model("digits")
    x, y = pl.sample_images("digits", n=1)
    t = int(y[0])
    seg = pl.attribution.slic_segments(x, 100)[0]
    nseg = int(seg.max()) + 1

    def f(z):
        keep = torch.as_tensor(z, dtype=torch.float32)[:, seg][:, None]
        with torch.no_grad():
            return model(keep * x).numpy()[:, t]

    explainer = shap.KernelExplainer(f, np.zeros((1, nseg)))
    ks = KernelShap(model)
    mask = seg[None, None]
    return nseg, {
        "shap": lambda: explainer.shap_values(np.ones((1, nseg)), nsamples=1000, silent=True, l1_reg=False),
        "Captum": lambda: ks.attribute(x, baselines=0.0, target=t, feature_mask=mask, n_samples=1000),
        "Captum (64 per forward)": lambda: ks.attribute(x, baselines=0.0, target=t, feature_mask=mask,
                                                        n_samples=1000, perturbations_per_eval=64),
        "pellucid": lambda: pl.kernel_shap(model, x, t, samples=1000, segmentation=seg[None]),
    }


def kernel_shap_rows(rounds: int, threads: int) -> list[dict]:
    nseg, fns = kernel_shap_contenders()
    work = f"digits, KernelSHAP 1000 coalitions x 1 ({nseg} superpixels)"
    rows = [timed(work, fns, rounds, "shap")]
    # interleaved in one process these contenders slow each other (a library's threads keep spinning into
    # the next one's turn), so each also runs alone in a process of its own
    alone = {name: _alone(name, threads) for name in fns}
    rows.append({"work": work + ", each alone in its own process (7 runs after 3 warm-ups)",
                 "times": ", ".join(f"{k} {v:.3f} s" for k, v in alone.items()),
                 "ratio": f"{alone['pellucid'] / alone['shap']:.2f}",
                 "speed-up": f"{alone['shap'] / alone['pellucid']:.2f}x"})
    return rows


def _alone(name: str, threads: int) -> float:
    out = subprocess.run([sys.executable, __file__, "--alone", name, "--threads", str(threads)], check=True,
                         capture_output=True, text=True).stdout
    return float(out.strip().splitlines()[-1])


def _time_alone(name: str) -> None:
    fn = kernel_shap_contenders()[1][name]
    for _ in range(3):
        fn()
    runs = []
    for _ in range(7):
        start = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - start)
    print(statistics.median(runs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="skip resnet18")
    parser.add_argument("--alone", default=None, help=argparse.SUPPRESS)  # one KernelSHAP contender, this process
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.alone:
        _time_alone(args.alone)
        return
    start = time.perf_counter()
    rows = deeplift_rows(args.repeats, args.quick) + gradient_shap_rows(args.repeats, args.quick)
    rows += kernel_shap_rows(max(2, args.repeats // 2), args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads, medians of {args.repeats} interleaved rounds "
          f"(resnet18 and KernelSHAP: {max(2, args.repeats // 2)}); ratio = pellucid / the first contender, "
          "per round (median, quartiles)\n")
    print(markdown(rows, ["work", "times", "ratio", "speed-up"]))
    print(f"\ntotal {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
