"""The CAM family against pytorch-grad-cam, side by side in one process, interleaved round by round.

- Gradient CAMs (Grad-CAM, Grad-CAM++, XGrad-CAM, HiResCAM, LayerCAM) on resnet18 ``layer4``: pellucid,
  pytorch-grad-cam, and the limit in plain PyTorch: one forward and one backward to the layer's output
  (``autograd.grad`` of the target logits with respect to the hooked activation), in pellucid's chunks.
- Score-CAM and Ablation-CAM on resnet18 ``layer4`` (512 channels): pellucid against pytorch-grad-cam
  with its defaults (Score-CAM batches of 16, Ablation-CAM batches of 32).

Times are medians over ``--rounds`` rounds (``_timing.interleaved_runs``: the order rotates, so drift hits
all alike), with the per-round ratio's quartiles. Random weights (the work does not depend on them).

    python benchmarks/cam.py [--threads 2] [--rounds 5] [--size 224] [--images 4] [--expensive-size 112]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's pellucid, not an installed one

import torch  # noqa: E402
from _timing import interleaved_runs, report  # noqa: E402

import pellucid as pl  # noqa: E402
from pellucid._grad import default_batch_size  # noqa: E402

PGC = {"gradcam": "GradCAM", "gradcam++": "GradCAMPlusPlus", "xgradcam": "XGradCAM", "hirescam": "HiResCAM",
       "layercam": "LayerCAM", "scorecam": "ScoreCAM", "ablationcam": "AblationCAM"}


def theirs(method, model, layer, x, classes):
    import pytorch_grad_cam as pgc
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    def run():
        with contextlib.redirect_stderr(io.StringIO()), getattr(pgc, PGC[method])(model, [layer]) as c:
            out = c(x, [ClassifierOutputTarget(int(k)) for k in classes])
        for p in model.parameters():
            p.grad = None
        return out
    return run


def layer_gradient_limit(model, layer, x, classes, bs):
    """One forward and one backward to ``layer``'s output, chunk by chunk, in plain PyTorch."""
    def run():
        store = {}
        handle = layer.register_forward_hook(lambda _m, _i, out: store.__setitem__("a", out))
        flags = [p.requires_grad for p in model.parameters()]
        try:
            for p in model.parameters():
                p.requires_grad_(False)
            for s in range(0, len(x), bs):
                xi = x[s:s + bs].detach().requires_grad_(True)
                logits = model(xi)
                torch.autograd.grad(logits.gather(1, classes[s:s + bs, None]).sum(), store["a"])
        finally:
            handle.remove()
            for p, f in zip(model.parameters(), flags):
                p.requires_grad_(f)
    return run


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--size", type=int, default=224, help="image side for the gradient CAMs")
    ap.add_argument("--images", type=int, default=4)
    ap.add_argument("--expensive-size", type=int, default=112, help="image side for Score-CAM and Ablation-CAM")
    ap.add_argument("--expensive-rounds", type=int, default=3)
    ap.add_argument("--skip-gradient", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = pl.load_model("resnet18", weights="random").eval()
    layer = model.net.layer4

    if not args.skip_gradient:
        x = pl.sample_images("photos", size=args.size)[0][: args.images]
        classes = torch.arange(len(x)) * 7
        bs = default_batch_size(x, model)
        fns = {"limit: forward + backward to layer4": layer_gradient_limit(model, layer, x, classes, bs)}
        for m in ("gradcam", "gradcam++", "xgradcam", "hirescam", "layercam"):
            fns[f"pellucid {m}"] = lambda m=m: pl.cam(model, x, classes, m, "layer4")
            fns[f"pytorch-grad-cam {m}"] = theirs(m, model, layer, x, classes)
        times = interleaved_runs(fns, args.rounds)
        report(f"gradient CAMs, resnet18 layer4, {len(x)} images {args.size}x{args.size}, {args.rounds} rounds",
               times, "limit: forward + backward to layer4")

    x = pl.sample_images("photos", size=args.expensive_size)[0][:1]
    classes = torch.tensor([3])
    for m in ("scorecam", "ablationcam"):
        fns = {f"pytorch-grad-cam {m}": theirs(m, model, layer, x, classes),
               f"pellucid {m}": lambda m=m: pl.cam(model, x, classes, m, "layer4")}
        times = interleaved_runs(fns, args.expensive_rounds)
        report(f"{m}, resnet18 layer4 (512 channels), 1 image {args.expensive_size}x{args.expensive_size}, "
               f"{args.expensive_rounds} rounds", times, f"pytorch-grad-cam {m}")


if __name__ == "__main__":
    main()
