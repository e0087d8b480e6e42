"""Trust measures against the reference implementations of the same metric, interleaved rounds, medians.

- infidelity (64 Gaussian draws per image, normalized): pellucid vs Captum's ``infidelity`` (its default,
  one batch of all N * samples copies, and ``max_examples_per_batch`` at pellucid's chunk).
- max-sensitivity of saliency (10 draws, radius 0.02): pellucid vs Captum's ``sensitivity_max`` and Quantus's
  ``MaxSensitivity`` (both explaining with Captum's ``Saliency``).
- ROAD, most relevant first at 10%, ..., 90%: pellucid (batched conjugate gradients) vs pytorch-grad-cam's
  ``ROADMostRelevantFirst`` per percentile and Quantus's ``ROAD`` (both one SciPy ``spsolve`` per image and
  fraction).

    python benchmarks/trust.py              # digits, 16 images
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout's pellucid, not an installed one

import numpy as np  # noqa: E402
import torch  # noqa: E402
from _timing import interleaved  # noqa: E402

import pellucid as pl  # noqa: E402

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
warnings.filterwarnings("ignore")
ROUNDS = int(os.environ.get("ROUNDS", 5))
FRACTIONS = [0.1 * k for k in range(1, 10)]


def show(title: str, t: dict[str, float], base: str) -> None:
    print(f"\n{title} (median of {ROUNDS} interleaved rounds)")
    for label, v in t.items():
        print(f"  {label:<52} {v * 1000:9.1f} ms   {v / t[base]:6.2f}x pellucid")


def infidelity_case(model, x, y, maps, samples=64) -> None:
    fns = {"pellucid infidelity": lambda: pl.infidelity(model, x, y, maps, samples=samples),
           f"pellucid infidelity (batch_size={len(x) * samples})": lambda: pl.infidelity(
               model, x, y, maps, samples=samples, batch_size=len(x) * samples)}
    try:
        from captum.metrics import infidelity

        expanded = maps[:, None].expand_as(x).contiguous()

        def perturb(inputs):
            p = 0.1 * torch.randn_like(inputs)
            return p, inputs - p

        fns["captum infidelity (one batch)"] = lambda: infidelity(model, perturb, x, expanded, target=y,
                                                                  n_perturb_samples=samples, normalize=True)
        chunk = pl._grad.default_batch_size(x, model) // samples or 1
        fns[f"captum infidelity (max_examples_per_batch={chunk})"] = lambda: infidelity(
            model, perturb, x, expanded, target=y, n_perturb_samples=samples, normalize=True,
            max_examples_per_batch=chunk)
    except ImportError:
        print("captum not installed")
    show(f"infidelity: {len(x)} images x {samples} draws", interleaved(fns, ROUNDS), "pellucid infidelity")


def sensitivity_case(model, x, y, samples=10) -> None:
    fns = {"pellucid sensitivity (saliency)": lambda: pl.sensitivity(model, x, y, "saliency", samples=samples),
           f"pellucid sensitivity (batch_size={len(x) * samples})": lambda: pl.sensitivity(
               model, x, y, "saliency", samples=samples, batch_size=len(x) * samples)}
    try:
        from captum.attr import Saliency
        from captum.metrics import sensitivity_max

        sal = Saliency(model)
        fns["captum sensitivity_max (Saliency)"] = lambda: sensitivity_max(
            sal.attribute, x, perturb_radius=0.02, n_perturb_samples=samples, target=y)
    except ImportError:
        print("captum not installed")
    try:
        import quantus

        metric = quantus.MaxSensitivity(nr_samples=samples, lower_bound=0.02, disable_warnings=True,
                                        display_progressbar=False)
        xn, yn = x.numpy(), y.numpy()
        an = pl.saliency(model, x, y)[:, None].numpy()
        fns["quantus MaxSensitivity (Saliency)"] = lambda: metric(
            model=model, x_batch=xn, y_batch=yn, a_batch=an, explain_func=quantus.explain,
            explain_func_kwargs={"method": "Saliency"}, device="cpu")
    except ImportError:
        print("quantus not installed")
    show(f"max-sensitivity: {len(x)} images x {samples} draws", interleaved(fns, ROUNDS),
         "pellucid sensitivity (saliency)")


def road_case(model, x, y, maps) -> None:
    fns = {"pellucid road (9 fractions)": lambda: pl.road(model, x, y, maps, fractions=FRACTIONS)}
    try:
        from pytorch_grad_cam.metrics.road import ROADMostRelevantFirst
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

        targets = [ClassifierOutputSoftmaxTarget(int(c)) for c in y]
        cams = maps.numpy()
        fns["pytorch-grad-cam ROADMostRelevantFirst x 9"] = lambda: np.stack([
            ROADMostRelevantFirst(percentile=round(100 * (1 - f)))(x, cams, targets, model, return_diff=False)
            for f in FRACTIONS], 1)
    except ImportError:
        print("grad-cam not installed")
    try:
        import quantus

        metric = quantus.ROAD(percentages=[round(100 * f) for f in FRACTIONS], disable_warnings=True,
                              display_progressbar=False)
        xn, yn, an = x.numpy(), y.numpy(), maps[:, None].numpy()
        fns["quantus ROAD (9 percentages)"] = lambda: metric(model=model, x_batch=xn, y_batch=yn, a_batch=an,
                                                             device="cpu")
    except ImportError:
        print("quantus not installed")
    show(f"ROAD: {len(x)} images x {len(FRACTIONS)} fractions", interleaved(fns, ROUNDS),
         "pellucid road (9 fractions)")


def main():
    model = pl.load_model("digits").eval()
    x, _ = pl.sample_images("digits", n=16)
    y = model(x).argmax(1).detach()
    maps = pl.saliency(model, x, y)
    infidelity_case(model, x, y, maps)
    sensitivity_case(model, x, y)
    road_case(model, x, y, maps)


if __name__ == "__main__":
    main()
