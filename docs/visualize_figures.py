"""Regenerate the README's "What has it learned" pictures: python docs/visualize_figures.py [WEIGHTS]

WEIGHTS: an optional resnet18 ImageNet state_dict (.pth/.safetensors); without it, a random-weight
resnet18 is shown (no weights can be downloaded here). The user-supplied resnet18 trained on the digits
(``docs/train_resnet18_digits.py``, cached in ``~/.cache/pellucid``) is shown too; it is trained first if
missing (about a minute).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pellucid as pl  # noqa: E402
from pellucid.drawing import render  # noqa: E402
from pellucid.featureviz import filter_maps  # noqa: E402

OUT = Path(__file__).resolve().parent / "img"


def digits_figures():
    model = pl.load_model("digits")
    v = pl.class_visualization(model, range(10))
    with torch.no_grad():
        probs = model(v.image).softmax(1).diagonal()
    titles = [f"{k} ({100 * float(p):.0f}%)" for k, p in enumerate(probs)]
    render.write_png(render.image_grid(v.image, titles), OUT / "classviz_digits.png")
    render.write_png(render.snapshot_strip({s: im[[0, 3, 8]] for s, im in v.snapshots.items()}, ["0", "3", "8"]),
                     OUT / "classviz_digits_history.png")
    x, _ = pl.sample_images("digits", n=4)
    chans = list(range(6))
    f = pl.channel_visualization(model, "conv2", chans)
    render.write_png(render.filter_grid(f.image, filter_maps(model, "conv2", chans, x), x, chans),
                     OUT / "filters_digits_conv2.png")
    print("digits:", [round(float(p), 3) for p in probs])


def resnet_figures(weights: str, size: int = 128, steps: int = 64):
    model = pl.load_model("resnet18", weights=weights)
    targets = [1, 130, 945]  # goldfish, flamingo, bell pepper
    names = [model.label(t) for t in targets]
    images, titles = [], []
    for param in ("pixel", "fourier"):
        v = pl.class_visualization(model, targets, steps=steps, param=param, size=(3, size, size))
        images.append(v.image)
        titles += [f"{param}: {n} ({100 * float(p):.0f}%)" for n, p in zip(names, v.probability[-1])]
    kind = "random" if weights == "random" else "pretrained"
    render.write_png(render.image_grid(torch.cat(images), titles, ncols=len(targets), scale=2.2),
                     OUT / f"classviz_resnet18_{kind}.png")


def digits_resnet_figures(targets=(0, 2, 3, 7, 8)):
    """pixel vs Fourier class visualizations of a user-supplied resnet18: one trained on the digits."""
    from pellucid.models.data import cache_dir

    path = cache_dir() / "resnet18-digits.pth"
    if not path.is_file():
        import train_resnet18_digits

        train_resnet18_digits.main(path)
    model = pl.load_model("resnet18", weights=str(path))
    images, titles = [], []
    for param in ("pixel", "fourier"):
        v = pl.class_visualization(model, list(targets), param=param)
        images.append(v.image)
        titles += [f"{param}: {t} ({100 * float(p):.0f}%)" for t, p in zip(targets, v.probability[-1])]
    render.write_png(render.image_grid(torch.cat(images), titles, ncols=len(targets), scale=2.0),
                     OUT / "classviz_resnet18_digits.png")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    digits_figures()
    resnet_figures(sys.argv[1] if len(sys.argv) > 1 else "random")
    digits_resnet_figures()
