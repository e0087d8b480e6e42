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


def _report_args(p):
    add_model_args(p)
    p.add_argument("--out", default="report", help="output folder; the page is OUT/index.html")
    p.add_argument("--seed", type=int, default=0)


def _report_run(args):
    from .report import build_report

    model, x, y = load_model_and_images(args)
    path = build_report(model, x, y, args.out, seed=args.seed)
    print(f"wrote {path}")


def _fool_args(p):
    add_model_args(p)
    p.add_argument("--target", default=None, help="class to reach (index or name); default: random, seeded")
    p.add_argument("--lr", type=float, default=1.0, help="step size (the step is lr * g / ||g||)")
    p.add_argument("--max-steps", type=int, default=100)
    p.add_argument("--seed", type=int, default=0, help="seed of the random targets")
    p.add_argument("--out", default="fool.png", help="output PNG")


def _fool_run(args):
    from . import render
    from .adversarial import fooling_image, random_targets
    from .report import predictions

    model, x, _ = load_model_and_images(args)
    before = predictions(model, x)
    default = random_targets(before.argmax(1), before.shape[1], args.seed)
    r = fooling_image(model, x, parse_target(args.target, model, default), lr=args.lr, max_steps=args.max_steps)
    notes = [f"target {model.label(int(t))}: {'fooled' if s else 'not fooled'} in {int(k)} steps"
             for t, s, k in zip(r.target, r.success, r.steps)]
    for i, note in enumerate(notes):
        print(f"image {i}: {model.label(int(r.original[i]))} -> {note}, p(target) {float(r.prob_target[i]):.3f}")
    png = render.attack_rows(x, r.image, before, predictions(model, r.image), model.label, notes)
    print(f"wrote {render.write_png(png, args.out)}")


def _attack_args(p):
    add_model_args(p)
    p.add_argument("--method", default="pgd", choices=["fgsm", "pgd"])
    p.add_argument("--eps", type=float, required=True, help="size of the perturbation (pixel scale [0, 1])")
    p.add_argument("--targeted", default=None, metavar="K", help="attack towards class K (index or name)")
    p.add_argument("--norm", default="linf", choices=["linf", "l2"], help="pgd's ball")
    p.add_argument("--steps", type=int, default=40, help="pgd steps")
    p.add_argument("--alpha", type=float, default=None, help="pgd step size; default 2.5 * eps / steps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="attack.png", help="output PNG")


def _attack_run(args):
    from . import render
    from .adversarial import fgsm, pgd
    from .report import predictions

    model, x, y = load_model_and_images(args)
    before = predictions(model, x)
    label = y.where(y >= 0, before.argmax(1))  # image files have no label: attack the prediction
    targeted = parse_target(args.targeted, model, False)
    if args.method == "fgsm":
        adv = fgsm(model, x, label, args.eps, targeted)
    else:
        alpha = 2.5 * args.eps / args.steps if args.alpha is None else args.alpha
        adv = pgd(model, x, label, args.eps, alpha, args.steps, args.norm, targeted, seed=args.seed)
    after = predictions(model, adv)
    print(f"{args.method} eps {args.eps:g}: {int((after.argmax(1) != label).sum())}/{len(x)} predictions changed")
    png = render.attack_rows(x, adv, before, after, model.label)
    print(f"wrote {render.write_png(png, args.out)}")


def _robustness_args(p):
    add_model_args(p)
    p.add_argument("--attack", default="pgd", choices=["fgsm", "pgd"])
    p.add_argument("--eps", default=None, help="comma-separated eps values; default depends on the images")
    p.add_argument("--norm", default="linf", choices=["linf", "l2"])
    p.add_argument("--steps", type=int, default=10, help="pgd steps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="robustness.png", help="output PNG")


def _robustness_run(args):
    from . import render
    from .adversarial import default_eps, robustness_curve
    from .report import predictions

    model, x, y = load_model_and_images(args)
    label = y.where(y >= 0, predictions(model, x).argmax(1))
    try:
        eps = default_eps(x) if args.eps is None else [float(e) for e in args.eps.split(",") if e.strip()]
    except ValueError as e:
        raise PellucidError(f"--eps must be comma-separated numbers like 0,0.05,0.1, got {args.eps!r}") from e
    curve = robustness_curve(model, x, label, eps, args.attack, norm=args.norm, steps=args.steps, seed=args.seed)
    print(f"{args.attack} ({args.norm}) on {len(x)} images\n| eps | accuracy |\n|---|---|")
    for e, a in zip(curve.eps, curve.accuracy):
        print(f"| {float(e):.4g} | {100 * float(a):.1f}% |")
    print(f"wrote {render.write_png(render.robustness_plot(curve), args.out)}")


Command = tuple[str, Callable, Callable]
COMMANDS: dict[str, Command] = {
    "models": ("list the models pellucid can load", _models_args, _models_run),
    "train": ("train a built-in model and print its held-out accuracy", _train_args, _train_run),
    "saliency": ("write a grid of saliency maps", _saliency_args, _saliency_run),
    "report": ("write the HTML report (the main job)", _report_args, _report_run),
    "fool": ("write fooling images: the smallest steps that make the model predict a target", _fool_args, _fool_run),
    "attack": ("attack images with FGSM or PGD and show original | adversarial | difference", _attack_args,
               _attack_run),
    "robustness": ("accuracy under attack for several eps, as a table and a plot", _robustness_args,
                   _robustness_run),
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
