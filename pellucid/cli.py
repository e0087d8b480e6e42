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
    p.add_argument("name", choices=["digits", "langid"], help="the built-in model to train")
    p.add_argument("--no-batchnorm", action="store_true", help="train the CNN without BatchNorm layers")
    p.add_argument("--epochs", type=int, default=None, help="default: 10 for digits, 4 for langid")
    p.add_argument("--seed", type=int, default=0)


def _train_run(args):
    import time

    from .models import digits_checkpoint, save_checkpoint, train_digits

    if args.epochs is not None and args.epochs < 1:
        raise PellucidError(f"--epochs must be >= 1, got {args.epochs}")
    if args.name == "langid":
        from .text.cli import train_langid_command

        return train_langid_command(args)
    args.epochs = args.epochs or 10
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
    from .registry import grid_methods, methods

    add_model_args(p)
    p.add_argument("--methods", default=",".join(grid_methods()),
                   help=f"comma-separated, from: {', '.join(methods())}; default {','.join(grid_methods())}")
    p.add_argument("--target", default=None, help="class to explain (index or name); default: the prediction")
    p.add_argument("--target-kind", default="class", choices=TARGET_KINDS,
                   help="class: a logit (default); multilabel: a class's sigmoid; regression: the single output "
                        "itself; segmentation: a class's pixel logits summed over the pixels predicted as it")
    p.add_argument("--shared-scale", action="store_true", help="one colour scale per method over all images")
    p.add_argument("--seed", type=int, default=0, help="seed of SmoothGrad noise and LIME samples")
    p.add_argument("--batch-size", type=int, default=None, help="images per model call (default: automatic)")
    p.add_argument("--out", default="explain.png", help="output PNG")


def _explain_run(args):
    from . import render
    from .attribution import explain
    from .report import predictions

    model, x, y = load_model_and_images(args)
    if args.target_kind == "class":
        probs = predictions(model, x)
        target, titles = parse_target(args.target, model, probs.argmax(1)), render.image_row_titles(model, probs, y)
    else:
        target, titles = explain_target(args.target_kind, args.target, model, x)
    maps = explain(model, x, target, args.methods, seed=args.seed, batch_size=args.batch_size, progress=True)
    png = render.attribution_grid(x, maps, titles, shared_scale=args.shared_scale)
    print(f"wrote {render.write_png(png, args.out)}")


ALSO_IMAGES = 4  # images of each --also report: `make report` stays within 5 minutes on two cores


TARGET_KINDS = ("class", "multilabel", "regression", "segmentation")


def explain_target(kind: str, value: str | None, model, x):
    """The target of ``explain --target-kind`` other than class, and one title per image."""
    import torch

    from ._state import model_state
    from .targets import Target, as_target, segmentation_target

    if kind == "regression":
        return None, [f"image {i}" for i in range(len(x))]
    with model_state(model), torch.no_grad():
        out = model(x)
    if kind == "segmentation":
        out = segmentation_target(0).logits(out)  # (N, K, H, W), from a tensor or a dict's "out"
    if kind == "multilabel":
        probs = torch.sigmoid(out)
        default = probs.argmax(1)
        target = parse_target(value, model, default)
        classes = as_target(target, len(x), out.shape[1]).classes
        label = getattr(model, "label", str)
        titles = [f"{label(int(k))} (sigmoid {float(probs[i, k]):.2f})" for i, k in enumerate(classes)]
        return Target(classes, None, "sigmoid"), titles
    cls = parse_target(value, model, int(out.argmax(1).flatten().mode().values))
    return segmentation_target(cls), [f"class {cls}: {int((out[i].argmax(0) == cls).sum())} px" for i in range(len(x))]


def _report_args(p):
    add_model_args(p)
    p.add_argument("--out", default="report", help="output folder; the page is OUT/index.html")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--also", action="append", default=[], metavar="MODEL",
                   help=f"also report on MODEL (its first {ALSO_IMAGES} samples) in OUT/MODEL/index.html, linked "
                        "from the main page; `make report` adds imagenet")


def _report_run(args):
    from pathlib import Path

    from .data import sample_images
    from .models import load_model
    from .report import SECTIONS, build_report, link_section

    model, x, y = load_model_and_images(args)
    also = list(dict.fromkeys(m for m in args.also if m != args.model))
    links = [link_section([(f"{m}/index.html", m) for m in also], "Also in this report")] if also else []
    print(f"wrote {build_report(model, x, y, args.out, seed=args.seed, sections=[*links, *SECTIONS])}")
    for name in also:  # each on its first ALSO_IMAGES samples, in OUT/NAME/, linking back
        other = load_model(name)
        ox, oy = sample_images(other, n=ALSO_IMAGES)
        back = link_section([("../index.html", args.model)], "Back")
        print(f"wrote {build_report(other, ox, oy, Path(args.out) / name, seed=args.seed, sections=[back, *SECTIONS])}")


def _explain_text_args(p):
    p.add_argument("words", nargs="+", metavar="WORD", help="words to explain, e.g. hyvää gezellig")
    p.add_argument("--model", default="langid", help="a text model (default langid)")
    p.add_argument("--methods", default="input_x_gradient,integrated_gradients,occlusion,lime",
                   help="comma-separated: input_x_gradient, integrated_gradients, occlusion, lime")
    p.add_argument("--target", default=None, help="language to explain (name, code or index); default: predicted")
    p.add_argument("--out", default="text.png", help="output PNG (an .html with the same stem is written too)")
    p.add_argument("--seed", type=int, default=0)


def _explain_text_run(args):
    from .text.cli import explain_text_run

    explain_text_run(args)


def _attack_text_args(p):
    p.add_argument("word", metavar="WORD", help="the word to attack")
    p.add_argument("--model", default="langid", help="a text model (default langid)")
    p.add_argument("--target", default=None, help="language to reach (name, code or index); default: any other")
    p.add_argument("--max-edits", type=int, default=3)
    p.add_argument("--beam", type=int, default=5)
    p.add_argument("--letters", default=None, help="replacement letters, e.g. 'ascii' for a-z only; default: all")


def _attack_text_run(args):
    from .text.cli import attack_text_run

    attack_text_run(args)


def _serve_args(p):
    add_model_args(p, images=False)
    p.add_argument("--host", default="127.0.0.1", help="address to bind; default 127.0.0.1 (this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port; 0 picks a free one; default 8000")
    p.add_argument("--replicas", type=int, default=2, help="model copies computing in parallel; default 2")


def _serve_run(args):
    try:
        from .web import serve
    except ImportError as e:
        raise PellucidError(f"`pellucid serve` needs the web extra: pip install 'pellucid[web]' ({e})") from e
    if not 0 <= args.port <= 65535 or args.replicas < 1:
        raise PellucidError(f"--port must be 0..65535 and --replicas >= 1, got {args.port} and {args.replicas}")
    serve(args.model, args.weights, host=args.host, port=args.port, replicas=args.replicas)


def _batch_args(p):
    p.add_argument("input", metavar="INPUT", help="a folder of images (recursive) or digits-test")
    add_model_args(p, images=False)
    p.add_argument("--methods", default="saliency", help="comma-separated attribution methods")
    from .adversarial import MINIMAL_ATTACKS

    p.add_argument("--attack", default=None, choices=MINIMAL_ATTACKS, help="also find the minimal epsilon")
    p.add_argument("--eps", type=float, default=None, help="largest epsilon the search tries")
    p.add_argument("--metric-steps", type=int, default=20, help="deletion/insertion steps; 0 skips them")
    p.add_argument("--out", required=True, help="output folder (rerun with the same arguments to resume)")
    p.add_argument("--batch-size", type=int, default=32, help="images per batch: bounds memory")
    p.add_argument("--num-workers", type=int, default=0, help="DataLoader processes that load images")
    p.add_argument("--limit", type=int, default=None, help="only the first N images")
    p.add_argument("--seed", type=int, default=0, help="seed of random methods (per image)")
    p.add_argument("--engine", default="local", choices=["local", "ray"])
    p.add_argument("--ray-workers", type=int, default=2, help="Ray actors (each loads the model once)")
    p.add_argument("--address", default=None, help="Ray cluster address, e.g. ray://head:10001 or auto")
    p.add_argument("--device", default="cpu", help="cpu or cuda (Ray: one GPU per actor)")
    p.add_argument("--max-pixels", type=int, default=40_000_000, help="larger images are recorded as failed")
    p.add_argument("--fsync", action="store_true", help="fsync every file (survive power loss, not just kill)")
    p.add_argument("--no-progress", action="store_true")


def _batch_run(args):
    import math

    from .batch import explain_dataset

    if args.eps is not None and not (math.isfinite(args.eps) and args.eps > 0):  # the flag's name, not eps_max
        raise PellucidError(f"--eps must be a number > 0 (the largest epsilon the search tries), got {args.eps:g}")
    res = explain_dataset(args.input, args.out, args.model, args.methods, weights=args.weights,
                          attack=args.attack, eps=args.eps, metric_steps=args.metric_steps, seed=args.seed,
                          limit=args.limit, batch_size=args.batch_size, num_workers=args.num_workers,
                          engine=args.engine, ray_workers=args.ray_workers, address=args.address,
                          device=args.device, max_pixels=args.max_pixels, progress=not args.no_progress,
                          fsync=args.fsync)
    print(f"{res.done} explained, {res.failed} failed, {res.skipped} already finished "
          f"({res.images_per_s:.1f} images/s); table {res.out / 'results.sqlite'}; report {res.report}")


def _layers_args(p):
    add_model_args(p, images=False)


def _layers_run(args):
    from .attribution.cams import describe_grid
    from .featureviz import layer_names
    from .models import load_model

    model = load_model(args.model, weights=args.weights)
    rows = layer_names(model)
    width = max(len(n) for n, _, _ in rows)
    kind = max(len(t) for _, t, _ in rows)
    shapes = ["x".join(map(str, shape)) if shape else "-" for _, _, shape in rows]
    span = max(len(t) for t in shapes)
    for (name, type_name, shape), text in zip(rows, shapes):  # a CAM reads layers with a grid (tokens too)
        grid = describe_grid(shape, getattr(model, "input_size", None))
        print(f"{name:<{width}}  {type_name:<{kind}}  {text:<{span}}  {grid}".rstrip())


def _viz_args(p, steps: int = 100):
    p.add_argument("--steps", type=int, default=steps)
    p.add_argument("--lr", type=float, default=None, help="step size (default: the method's)")
    p.add_argument("--param", default="pixel", choices=["pixel", "fourier"],
                   help="optimize pixels (the course) or Lucid's decorrelated Fourier spectrum (large models)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="output PNG")


def _classviz_args(p):
    add_model_args(p, images=False)
    p.add_argument("--target", nargs="*", default=None,
                   help="classes (indices or names); default: every class of a model with <= 10 classes")
    _viz_args(p)
    p.add_argument("--l2", type=float, default=1e-3)
    p.add_argument("--jitter", type=int, default=16, help="roll in pixels at 224x224 (scaled with the size)")
    p.add_argument("--blur-every", type=int, default=10)
    p.add_argument("--history", action="store_true", help="write the iteration strip (steps 1, 25, 50, ...)")


def _classviz_run(args):
    from . import render
    from .featureviz import class_visualization
    from .models import load_model

    model = load_model(args.model, weights=args.weights)
    k = getattr(model, "num_classes", None)
    if not args.target and not (k and k <= 10):
        raise PellucidError(f"give --target K... (the model has {k or 'an unknown number of'} classes)")
    targets = [parse_target(t, model, None) for t in args.target] if args.target else list(range(k))
    v = class_visualization(model, targets, steps=args.steps, lr=args.lr if args.lr is not None else 25,
                            l2=args.l2, jitter=args.jitter, blur_every=args.blur_every, seed=args.seed,
                            param=args.param, progress=True)
    probs = v.probability[-1]
    titles = [f"{model.label(t)} ({100 * float(p):.0f}%)" for t, p in zip(targets, probs)]
    png = render.snapshot_strip(v.snapshots, titles) if args.history else render.image_grid(v.image, titles)
    print(f"wrote {render.write_png(png, args.out)}")


def _filterviz_args(p):
    add_model_args(p)
    p.add_argument("--layer", default=None, help="layer name (see `pellucid layers`); default: the second conv")
    p.add_argument("--channel", type=int, nargs="+", default=[0, 1, 2, 3], help="channels to show")
    _viz_args(p)


def _filterviz_run(args):
    from . import render
    from .featureviz import channel_visualization, filter_layer, filter_maps

    model, x, _ = load_model_and_images(args)
    layer = args.layer or filter_layer(model)
    maps = filter_maps(model, layer, args.channel, x)
    v = channel_visualization(model, layer, args.channel, steps=args.steps, lr=args.lr, seed=args.seed,
                              param=args.param, progress=True)
    png = render.filter_grid(v.image, maps, x, args.channel)
    print(f"wrote {render.write_png(png, args.out)} (layer {layer})")


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
    from .adversarial import NORMS
    from .registry import attacks

    p.add_argument("--method", default="pgd", choices=list(attacks()))
    p.add_argument("--eps", type=float, required=True, help="size of the perturbation (pixel scale [0, 1])")
    p.add_argument("--targeted", default=None, metavar="K", help="attack towards class K (index or name)")
    p.add_argument("--norm", default="linf", choices=list(NORMS), help="the ball of the attack")
    p.add_argument("--steps", type=int, default=None, help="steps of iterative attacks; default: the attack's own")
    p.add_argument("--alpha", type=float, default=None,
                   help="step size of iterative attacks; default 2.5 * eps / steps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="attack.png", help="output PNG")


def _attack_run(args):
    from . import render
    from .registry import attack
    from .report import predictions

    model, x, y = load_model_and_images(args)
    before = predictions(model, x)
    label = y.where(y >= 0, before.argmax(1))  # image files have no label: attack the prediction
    targeted = parse_target(args.targeted, model, False)
    adv = attack(args.method).run(model, x, label, args.eps, targeted=targeted, norm=args.norm, steps=args.steps,
                                  alpha=args.alpha, seed=args.seed, progress=True)
    after = predictions(model, adv)
    print(f"{args.method} eps {args.eps:g}: {int((after.argmax(1) != label).sum())}/{len(x)} predictions changed")
    png = render.attack_rows(x, adv, before, after, model.label)
    print(f"wrote {render.write_png(png, args.out)}")


def _robustness_args(p):
    add_model_args(p)
    from .adversarial import CURVE_ATTACKS

    p.add_argument("--attack", default="pgd", choices=CURVE_ATTACKS,
                   help="autoattack: the worst case over APGD-CE, APGD-T and Square (no FAB)")
    p.add_argument("--eps", default=None, help="comma-separated eps values; default depends on the images")
    p.add_argument("--norm", default="linf", choices=["linf", "l2"])
    p.add_argument("--steps", type=int, default=10,
                   help="pgd steps; autoattack: APGD steps (with 50x as many Square queries)")
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
    "explain": ("write a grid of attribution maps: rows are images, columns methods", _explain_args, _explain_run),
    "report": ("write the HTML report (the main job)", _report_args, _report_run),
    "explain-text": ("which characters made a text model (langid) decide: per-character attributions",
                     _explain_text_args, _explain_text_run),
    "attack-text": ("the fewest letter changes that flip a text model's language (HotFlip)",
                    _attack_text_args, _attack_text_run),
    "serve": ("start the local web page to explore a model", _serve_args, _serve_run),
    "batch": ("explain a whole data set: maps, overlays, a results table; resumable", _batch_args, _batch_run),
    "layers": ("list the layer names that layer= accepts, with output shapes", _layers_args, _layers_run),
    "classviz": ("write class visualizations (gradient ascent from noise)", _classviz_args, _classviz_run),
    "filterviz": ("write channel visualizations beside their activation maps", _filterviz_args, _filterviz_run),
    "fool": ("write fooling images: the smallest steps that make the model predict a target", _fool_args, _fool_run),
    "attack": ("attack images (FGSM, PGD, APGD, Square, AutoAttack, CW, DeepFool) and show original | adversarial | "
               "difference", _attack_args,
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
