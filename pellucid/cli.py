"""The ``pellucid`` command. Subcommands are a dict: name -> (help, add arguments, run)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from ._checks import PellucidError


def add_model_args(p: argparse.ArgumentParser, images: bool = True) -> None:
    p.add_argument("--model", default="digits", help="model name (see `pellucid models`); default digits")
    p.add_argument("--weights", default=None, help="weights file for torchvision models, or 'random'")
    if images:
        p.add_argument("images", nargs="*", metavar="IMAGE", help="image files; default: the model's samples")
        p.add_argument("-n", type=int, default=None, help="how many sample images when no IMAGE is given")


def load_model_and_images(args):
    """The model and the batch the command works on: the given files, or the model's samples."""
    import torch

    from .data import sample_images
    from .io import load_images
    from .models import load_model

    model = load_model(args.model, weights=args.weights)
    if getattr(args, "images", None):
        x = load_images(args.images, model)
        return model, x, torch.full((len(x),), -1, dtype=torch.long)
    x, y = sample_images(model, n=getattr(args, "n", None))
    return model, x, y


def parse_target(value: str | None, model, default):
    """An int class index, or a class name of the model's labels."""
    if value is None:
        return default
    if value.lstrip("-").isdigit():
        return int(value)
    labels = [str(lb).lower() for lb in (getattr(model, "labels", None) or [])]
    if value.lower() in labels:
        return labels.index(value.lower())
    raise PellucidError(f"unknown target {value!r}: give a class index 0..{len(labels) - 1} or a class name")


# ---------------------------------------------------------------------------------------------

def _models_args(p):
    pass


def _models_run(args):
    from .models import list_models

    rows = list_models()
    width = max(len(n) for n, _ in rows)
    for name, desc in rows:
        print(f"{name:<{width}}  {desc}")


def _train_args(p):
    p.add_argument("name", choices=["digits"], help="the built-in model to train")
    p.add_argument("--no-batchnorm", action="store_true", help="train the CNN without BatchNorm layers")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)


def _train_run(args):
    import time

    from .models import digits_checkpoint, save_checkpoint, train_digits

    if args.epochs < 1:
        raise PellucidError(f"--epochs must be >= 1, got {args.epochs}")
    start = time.perf_counter()
    model, acc = train_digits(batchnorm=not args.no_batchnorm, epochs=args.epochs, seed=args.seed)
    seconds = time.perf_counter() - start
    path = digits_checkpoint(not args.no_batchnorm)
    save_checkpoint(model, path, accuracy=acc, seconds=seconds, batchnorm=not args.no_batchnorm)
    kind = "without BatchNorm" if args.no_batchnorm else "with BatchNorm"
    print(f"digits {kind}: held-out accuracy {100 * acc:.2f}% ({args.epochs} epochs, {seconds:.1f}s); saved {path}")


def _saliency_args(p):
    add_model_args(p)
    p.add_argument("--target", default=None, help="class to explain (index or name); default: the prediction")
    p.add_argument("--loss", default="logit", choices=["logit", "cross_entropy"])
    p.add_argument("--normalize", action="store_true", help="min-max normalize each map")
    p.add_argument("--out", default="saliency.png", help="output PNG")


def _saliency_run(args):
    from . import render
    from .attribution import saliency
    from .report import predictions

    model, x, y = load_model_and_images(args)
    probs = predictions(model, x)
    target = parse_target(args.target, model, probs.argmax(1))
    maps = saliency(model, x, target, loss=args.loss, normalize=args.normalize)
    png = render.attribution_grid(x, {"saliency": maps}, render.image_row_titles(model, probs, y))
    print(f"wrote {render.write_png(png, args.out)}")


def _explain_args(p):
    from .attribution import GRID_METHODS, METHODS

    add_model_args(p)
    p.add_argument("--methods", default=",".join(GRID_METHODS),
                   help=f"comma-separated, from: {', '.join(METHODS)}; default {','.join(GRID_METHODS)}")
    p.add_argument("--target", default=None, help="class to explain (index or name); default: the prediction")
    p.add_argument("--shared-scale", action="store_true", help="one colour scale per method over all images")
    p.add_argument("--seed", type=int, default=0, help="seed of SmoothGrad noise and LIME samples")
    p.add_argument("--batch-size", type=int, default=None, help="images per model call (default: automatic)")
    p.add_argument("--out", default="explain.png", help="output PNG")


def _explain_run(args):
    from . import render
    from .attribution import explain
    from .report import predictions

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    model, x, y = load_model_and_images(args)
    probs = predictions(model, x)
    target = parse_target(args.target, model, probs.argmax(1))
    maps = explain(model, x, target, methods, seed=args.seed, batch_size=args.batch_size, progress=True)
    png = render.attribution_grid(x, maps, render.image_row_titles(model, probs, y), shared_scale=args.shared_scale)
    print(f"wrote {render.write_png(png, args.out)}")


def _report_args(p):
    add_model_args(p)
    p.add_argument("--out", default="report", help="output folder; the page is OUT/index.html")
    p.add_argument("--seed", type=int, default=0)


def _report_run(args):
    from .report import build_report

    model, x, y = load_model_and_images(args)
    path = build_report(model, x, y, args.out, seed=args.seed)
    print(f"wrote {path}")


Command = tuple[str, Callable, Callable]
COMMANDS: dict[str, Command] = {
    "models": ("list the models pellucid can load", _models_args, _models_run),
    "train": ("train a built-in model and print its held-out accuracy", _train_args, _train_run),
    "saliency": ("write a grid of saliency maps", _saliency_args, _saliency_run),
    "explain": ("write a grid of attribution maps: rows are images, columns methods", _explain_args, _explain_run),
    "report": ("write the HTML report (the main job)", _report_args, _report_run),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pellucid", description="See what an image classifier looks at.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (help_text, add_args, _run) in COMMANDS.items():
        add_args(sub.add_parser(name, help=help_text, description=help_text))
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        COMMANDS[args.command][2](args)
    except (PellucidError, FileNotFoundError, OSError) as e:
        print(f"pellucid {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("pellucid: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
