"""Batch jobs on the held-out digits: images/s of the local engine against the single-image API in a
loop, Ray Data with 1 and 2 workers, the per-image cost breakdown, and peak memory for 200 vs 2,000 images.

    python benchmarks/batch.py            # about 2 minutes on 2 quiet cores
    python benchmarks/batch.py --n 1000 --skip-ray --skip-memory

"limit" is the method alone on an in-memory tensor at the default chunk size: no loading, no
prediction pass, no files. Timings are medians of ``--repeats`` runs; a busy machine makes them noisy.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from _timing import median_time  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pellucid as pl  # noqa: E402
from pellucid import batch, registry  # noqa: E402
from pellucid.models.data import digits  # noqa: E402

METHODS = ("saliency", "ig", "lime")




def run_job(method: str, n: int, **kw) -> batch.BatchResult:
    with tempfile.TemporaryDirectory() as out:
        return pl.explain_dataset("digits-test", out, methods=method, limit=n, metric_steps=0, progress=False,
                                  report=False, **kw)


def single_image_loop(model, x, method: str) -> None:
    """What a user writes without the batch job: one image at a time, predict, explain, save."""
    record = registry.method(method)
    with tempfile.TemporaryDirectory() as out:
        for i in range(len(x)):
            xi = x[i : i + 1]
            pred = model(xi).argmax(1)
            m = record(model, xi, pred, **record.defaults(xi))
            torch.save(m, Path(out) / f"{i}.pt")


def local_table(methods, n: int, repeats: int) -> dict:
    model = pl.load_model("digits")
    x = digits("test")[0][:n]
    rows, breakdown = {}, {}
    for method in methods:
        record = registry.method(method)
        results = [run_job(method, n) for _ in range(repeats)]
        job = statistics.median(r.seconds for r in results)
        loop = median_time(lambda: single_image_loop(model, x, method), repeats)  # noqa: B023
        pred = torch.cat([model(x[i : i + 32]).argmax(1) for i in range(0, n, 32)])
        limit = median_time(lambda: record(model, x, pred, **record.defaults(x)), repeats)  # noqa: B023
        rows[method] = {"batch job": n / job, "single-image loop": n / loop, "limit": n / limit}
        breakdown[method] = {k: 1000 * v / n for k, v in results[-1].stages.items()}
    return {"images/s": rows, "ms per image": breakdown}


def ray_table(methods, n: int, workers=(1, 2)) -> dict:
    import ray

    ray.init(num_cpus=max(workers), include_dashboard=False, log_to_driver=False)
    try:
        return {method: {f"ray {w} worker{'s' if w > 1 else ''}": n / run_job(method, n, engine="ray",
                                                                              ray_workers=w).seconds
                         for w in workers} for method in methods}
    finally:
        ray.shutdown()


def peak_rss_mb(n: int) -> tuple[float, float]:
    """Peak resident memory (VmHWM) of a fresh process while it explains ``n`` digits (saliency, files,
    table), and its resident memory just before: torch, the model and the 5,000 digits loaded. The peak
    is reset (``/proc/self/clear_refs``) after loading, so it measures the job, not the loading."""
    code = ("import re, tempfile, pellucid as pl\n"
            "from pellucid.models.data import digits\n"
            "kb = lambda f: int(re.search(f + r':\\s+(\\d+)', open('/proc/self/status').read()).group(1))\n"
            "pl.load_model('digits'); digits('all'); open('/proc/self/clear_refs', 'w').write('5')\n"
            "base = kb('VmRSS')\n"
            "with tempfile.TemporaryDirectory() as out:\n"
            f"    pl.explain_dataset('digits', out, limit={n}, metric_steps=0, progress=False, report=False)\n"
            "print(kb('VmHWM') / 1024, base / 1024)")
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True)
    peak, base = map(float, done.stdout.strip().splitlines()[-1].split())
    return peak, base


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=200, help="held-out digits per run")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--skip-ray", action="store_true")
    p.add_argument("--skip-memory", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(2)
    have = [m for m in METHODS if m in registry.methods()]
    missing = [m for m in METHODS if m not in have]
    print(f"torch threads {torch.get_num_threads()}; methods {have}" + (f"; not in this build: {missing}"
                                                                       if missing else ""))
    local = local_table(have, args.n, args.repeats)
    ray = {} if args.skip_ray else ray_table(have, args.n)
    print(f"\nimages/s on {args.n} held-out digits (median of {args.repeats}; ray: one run, actor start included)")
    print(f"{'method':<18}{'batch job':>11}{'1-image loop':>14}{'ratio':>7}{'limit':>9}{'ray 1':>9}{'ray 2':>9}")
    for m, r in local["images/s"].items():
        ray_cells = "".join(f"{v:>9.1f}" for v in ray.get(m, {}).values())
        print(f"{m:<18}{r['batch job']:>11.1f}{r['single-image loop']:>14.1f}"
              f"{r['batch job'] / r['single-image loop']:>6.1f}x{r['limit']:>9.1f}{ray_cells}")
    print("\nper-image cost of the batch job, ms (one run)")
    for m, stages in local["ms per image"].items():
        print(f"  {m}: " + ", ".join(f"{k} {v:.2f}" for k, v in stages.items()))
    if not args.skip_memory:
        (small, base_s), (large, base_l) = peak_rss_mb(200), peak_rss_mb(2000)
        print(f"\npeak RSS: 200 images {small:.0f} MB, 2,000 images {large:.0f} MB, ratio {large / small:.3f}; "
              f"above the process before the job: {small - base_s:.0f} MB and {large - base_l:.0f} MB")
    print("\njson " + json.dumps({"local": local, "ray": ray}))


if __name__ == "__main__":
    main()
