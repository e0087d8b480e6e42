"""pellucid's attribution methods against Captum and lime, side by side in one process.

Each row: the anchor's time, pellucid's time, their ratio, and the *limit*: the raw input-gradient
(or forward) passes the method needs, in plain PyTorch, at the best batch size of a small sweep
(printed too, so the sweep behind ``default_batch_size`` is on record). The anchor, pellucid and the
sweep of a row run in turn, round after round (``_timing.interleaved``), so that this machine's drift
hits them alike; times are medians of ``--repeats`` rounds (fewer for resnet18). Peak memory of IG at
50 and 200 steps is measured in fresh subprocesses (growth of ``VmHWM``), since torch's CPU
allocations are invisible to tracemalloc.

    python benchmarks/attribution.py [--threads 2] [--repeats 5] [--quick]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's pellucid, not an installed one

import torch  # noqa: E402
from _timing import interleaved, markdown, raw_passes  # noqa: E402

import pellucid as pl  # noqa: E402
from pellucid._grad import default_batch_size  # noqa: E402


def compare(name, anchor_name, anchor, ours, model, x, target, rows: int, sizes, gradients: bool,
            rounds: int) -> dict:
    """Time the anchor and pellucid interleaved (alone, with a pause between them), then ``rows`` raw passes
    over copies of ``x`` at each batch size in rounds of their own, so the sweep does not slow either."""
    xs = x.repeat(rows // len(x) + 1, 1, 1, 1)[:rows].contiguous()
    classes = torch.as_tensor(target).reshape(-1).expand(len(x)).repeat(rows // len(x) + 1)[:rows]
    model.eval()
    t = interleaved({"anchor": anchor, "ours": ours}, rounds)
    sweep = interleaved({bs: (lambda b=bs: raw_passes(model, xs, classes, b, gradients)) for bs in sizes}, rounds)
    best = min(sweep, key=sweep.get)
    return row(name, anchor_name, t["anchor"], t["ours"], sweep[best], best, sweep, default_batch_size(x, model))


def row(name, anchor_name, anchor_t, ours_t, lim, best, sweep, default_bs):
    sweep_txt = ", ".join(f"{b}: {s:.3f}" for b, s in sweep.items())
    print(f"  {name}: {anchor_name} {anchor_t:.3f} s, pellucid {ours_t:.3f} s, limit {lim:.3f} s (bs {best}); "
          f"sweep {sweep_txt}", file=sys.stderr, flush=True)
    return {"work": name, "anchor": f"{anchor_name} {anchor_t:.3f} s", "pellucid": f"{ours_t:.3f} s",
            "speed-up": f"{anchor_t / ours_t:.2f}x", "limit": f"{lim:.3f} s (bs {best})",
            "vs limit": f"{ours_t / lim:.2f}x", "default bs": default_bs, "sweep (bs: s)": sweep_txt}


def ig_row(name: str, model, x, target, steps: int, sizes, rounds: int) -> dict:
    """Captum's ``IntegratedGradients`` against ``pl.integrated_gradients`` (baseline 0) and their raw passes."""
    from captum.attr import IntegratedGradients

    return compare(f"{name}, IG {steps} steps x {len(x)}", "Captum",
                   lambda: IntegratedGradients(model).attribute(x, baselines=0.0, target=target, n_steps=steps),
                   lambda: pl.integrated_gradients(model, x, target, steps=steps), model, x, target, len(x) * steps,
                   sizes, True, rounds)


def smoothgrad_row(name: str, model, x, target, samples: int, sizes, rounds: int) -> dict:
    """Captum's ``NoiseTunnel(Saliency)`` against ``pl.smoothgrad`` (noise 0.15) and their raw passes."""
    from captum.attr import NoiseTunnel, Saliency

    nt = NoiseTunnel(Saliency(model))
    return compare(f"{name}, SmoothGrad {samples} x {len(x)}", "Captum",
                   lambda: nt.attribute(x, nt_type="smoothgrad", nt_samples=samples, stdevs=0.15, target=target,
                                        abs=False),
                   lambda: pl.smoothgrad(model, x, target, samples=samples, sigma=0.15), model, x, target,
                   len(x) * samples, sizes, True, rounds)


def occlusion_row(name: str, model, x, target, window: int, stride: int, sizes, rounds: int) -> dict:
    """Captum's ``Occlusion`` (its default: one window per forward) against ``pl.occlusion``, zero fill, and
    the raw forwards (every window and the image itself)."""
    from captum.attr import Occlusion

    c, h, w = x.shape[1:]
    windows = ((h - window) // stride + 1) * ((w - window) // stride + 1)
    occ = Occlusion(model)
    return compare(f"{name}, occlusion {window}/{stride} x {len(x)}", "Captum default",
                   lambda: occ.attribute(x, sliding_window_shapes=(c, window, window), strides=(c, stride, stride),
                                         baselines=0.0, target=target),
                   lambda: pl.occlusion(model, x, target, window=window, stride=stride), model, x, target,
                   len(x) * (windows + 1), sizes, False, rounds)


def small_cnn_rows(rounds: int) -> list[dict]:
    model = pl.load_model("digits")
    x, y = pl.sample_images("digits", n=64)
    sizes = (16, 32, 64, 128)
    name = "small CNN"
    rows = [ig_row(name, model, x, y, 50, sizes, rounds), smoothgrad_row(name, model, x, y, 50, sizes, rounds),
            occlusion_row(name, model, x, y, 4, 2, sizes, rounds),
            # one image: Captum's default runs one window per forward; pellucid stacks the windows into batches
            occlusion_row(name, model, x[:1], y[:1], 4, 2, sizes, 4 * rounds)]
    rows.append(lime_row(name, model, x[:1], int(y[0]), 2 * rounds, sizes, samples=1000))
    return rows


def lime_row(name: str, model, x, label: int, rounds: int, sizes, samples: int) -> dict:
    """lime_image against ``pl.lime`` on the same SLIC superpixels, segmentation included in both."""
    from lime import lime_image
    from skimage.segmentation import slic

    from pellucid.attribution import perturbation

    gray = x.shape[1] == 1  # lime_image takes (H, W) for gray images and hands back 3 channels
    img = (x[0, 0] if gray else x[0].permute(1, 2, 0)).double().numpy()

    def classifier(images):
        batch = torch.from_numpy(images[..., :1] if gray else images).permute(0, 3, 1, 2).float()
        with torch.no_grad():
            return model(batch).numpy()

    def theirs():
        seg_fn = lambda im: slic(im, n_segments=100, compactness=1, sigma=1, start_label=0)  # noqa: E731
        lime_image.LimeImageExplainer(random_state=0).explain_instance(
            img, classifier, labels=(label,), top_labels=None, hide_color=0, num_samples=samples,
            segmentation_fn=seg_fn, random_seed=0)  # its progress bar goes to stderr

    def ours():
        perturbation._SEGMENT_CACHE.clear()  # segmentation included
        pl.lime(model, x, label, samples=samples)

    return compare(f"{name}, LIME {samples} samples x 1 (incl. SLIC)", "lime_image", theirs, ours, model, x, label,
                   samples, sizes, False, rounds)


def resnet_rows(rounds: int) -> list[dict]:
    model = pl.load_model("resnet18", weights="random")
    x = pl.sample_images("photos", n=1)[0]
    t = 281
    sizes = (4, 8, 16)
    name = "resnet18 224²"
    return [ig_row(name, model, x, t, 50, sizes, rounds), occlusion_row(name, model, x, t, 32, 16, sizes, rounds)]


MEMORY_PROBE = """
import sys, torch

def hwm():  # this process's peak resident memory (ru_maxrss would include the parent's peak)
    line = [l for l in open("/proc/self/status") if l.startswith("VmHWM")][0]
    return int(line.split()[1])

torch.set_num_threads({threads})
import pellucid as pl
lib, steps = sys.argv[1], int(sys.argv[2])
model = pl.load_model("digits"); x, y = pl.sample_images("digits", n=64)
pl.integrated_gradients(model, x[:2], y[:2], steps=2)  # warm up allocator and kernels
before = hwm()
if lib == "pellucid":
    pl.integrated_gradients(model, x, y, steps=steps)
else:
    from captum.attr import IntegratedGradients
    IntegratedGradients(model).attribute(x, baselines=0.0, target=y, n_steps=steps)
print((hwm() - before) / 1024)
"""


def peak_memory(lib: str, steps: int, threads: int) -> float:
    """Growth of the peak resident memory (MiB) while running IG on 64 digits, in a fresh process."""
    out = subprocess.run([sys.executable, "-c", MEMORY_PROBE.format(threads=threads), lib, str(steps)],
                         capture_output=True, text=True, check=True, cwd=ROOT)
    return float(out.stdout.strip().splitlines()[-1])


def memory_table(threads: int) -> str:
    mem = [{"work": "IG x 64 digits, pellucid", "steps 50": f"{peak_memory('pellucid', 50, threads):.1f} MiB",
            "steps 200": f"{peak_memory('pellucid', 200, threads):.1f} MiB"},
           {"work": "IG x 64 digits, Captum (one batch)", "steps 50": f"{peak_memory('captum', 50, threads):.0f} MiB",
            "steps 200": "not run (~4x the 50-step figure)"}]
    return markdown(mem, ["work", "steps 50", "steps 200"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="skip resnet18")
    parser.add_argument("--memory-only", action="store_true", help="only the IG peak-memory probe")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    if args.memory_only:
        return print(memory_table(args.threads))
    rows = small_cnn_rows(args.repeats)
    if not args.quick:
        rows += resnet_rows(max(1, args.repeats - 2))
    print(f"torch {torch.__version__}, {args.threads} threads, median of {args.repeats} interleaved rounds "
          f"(one image: 4x / LIME 2x as many; resnet18: {max(1, args.repeats - 2)})\n")
    print(markdown(rows, ["work", "limit", "anchor", "pellucid", "speed-up", "vs limit", "default bs"]))
    print("\nbatch-size sweep of the raw passes (the limit), seconds:\n")
    print(markdown(rows, ["work", "sweep (bs: s)"]))
    print("\npeak resident memory growth:\n")
    print(memory_table(args.threads))
    print(f"\ntotal {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
