"""The built-in ImageNet model (EfficientNet-Lite0 at 224²) side by side: pellucid's IG, SmoothGrad, occlusion
and LIME against Captum and lime_image, each next to its limit (the raw passes it needs, in plain PyTorch, at
the best batch size of a small sweep), interleaved round after round as in ``benchmarks/attribution.py``.
Class visualization on this model against the course's plain PyTorch loop: ``benchmarks/visualization.py
imagenet``. Kept short for a shared 2-core machine: one photo (the cat), few rounds.

    python benchmarks/imagenet.py [--threads 2] [--repeats 3]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from _timing import markdown  # noqa: E402
from attribution import compare  # noqa: E402

import pellucid as pl  # noqa: E402


def rows(rounds: int) -> list[dict]:
    from captum.attr import IntegratedGradients, NoiseTunnel, Occlusion, Saliency

    model = pl.load_model("imagenet")
    x = pl.sample_images("photos", n=1)[0]
    with torch.no_grad():
        t = int(model(x).argmax(1))
    sizes = (4, 8, 16)
    out = [compare("EfficientNet-Lite0 224², IG 32 steps x 1", "Captum",
                   lambda: IntegratedGradients(model).attribute(x, baselines=0.0, target=t, n_steps=32),
                   lambda: pl.integrated_gradients(model, x, t, steps=32), model, x, t, 32, sizes, True, rounds)]
    nt = NoiseTunnel(Saliency(model))
    out.append(compare("EfficientNet-Lite0 224², SmoothGrad 16 x 1", "Captum",
                       lambda: nt.attribute(x, nt_type="smoothgrad", nt_samples=16, stdevs=0.15, target=t, abs=False),
                       lambda: pl.smoothgrad(model, x, t, samples=16, sigma=0.15), model, x, t, 16, sizes, True,
                       rounds))
    occ = Occlusion(model)
    out.append(compare("EfficientNet-Lite0 224², occlusion 56/28 x 1", "Captum default",
                       lambda: occ.attribute(x, sliding_window_shapes=(3, 56, 56), strides=(3, 28, 28),
                                             baselines=0.0, target=t),
                       lambda: pl.occlusion(model, x, t, window=56, stride=28), model, x, t, 7 * 7 + 1, sizes,
                       False, rounds))
    out.append(lime_row(model, x, t, rounds, sizes))
    return out


def lime_row(model, x, label: int, rounds: int, sizes, samples: int = 100) -> dict:
    from lime import lime_image
    from skimage.segmentation import slic

    from pellucid.attribution import perturbation

    img = x[0].permute(1, 2, 0).double().numpy()

    def classifier(images):
        batch = torch.from_numpy(images).permute(0, 3, 1, 2).float()
        with torch.no_grad():
            return model(batch).numpy()

    def theirs():
        seg_fn = lambda im: slic(im, n_segments=100, compactness=1, sigma=1, start_label=0)  # noqa: E731
        lime_image.LimeImageExplainer(random_state=0).explain_instance(
            img, classifier, labels=(label,), top_labels=None, hide_color=0, num_samples=samples,
            segmentation_fn=seg_fn, random_seed=0, batch_size=10)  # its progress bar goes to stderr

    def ours():
        cache = getattr(perturbation, "_SEGMENT_CACHE", None)
        if cache is not None:
            cache.clear()  # segmentation included
        pl.lime(model, x, label, samples=samples)

    return compare(f"EfficientNet-Lite0 224², LIME {samples} samples x 1 (incl. SLIC)", "lime_image", theirs, ours,
                   model, x, label, samples, sizes, False, rounds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    table = rows(args.repeats)
    print(f"torch {torch.__version__}, {args.threads} threads, median of {args.repeats} interleaved rounds\n")
    print(markdown(table, ["work", "limit", "anchor", "pellucid", "speed-up", "vs limit", "default bs"]))
    print("\nbatch-size sweep of the raw passes (the limit), seconds:\n")
    print(markdown(table, ["work", "sweep (bs: s)"]))
    print(f"\ntotal {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
