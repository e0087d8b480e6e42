"""Commands that list, train and explain: models, train, saliency, explain, report, layers."""

from __future__ import annotations

from .._checks import PellucidError
from .common import (
    ALSO_IMAGES,
    TARGET_KINDS,
    add_model_args,
    explain_target,
    load_model_and_images,
    number,
    parse_target,
    seed_flag,
)


def _models_args(p):
    pass


def _models_run(args):
    from ..models import list_models

    rows = list_models()
    width = max(len(n) for n, _ in rows)
    for name, desc in rows:
        print(f"{name:<{width}}  {desc}")


def _train_args(p):
    p.add_argument("name", choices=["digits", "langid"], help="the built-in model to train")
    p.add_argument("--no-batchnorm", action="store_true", help="train the CNN without BatchNorm layers")
    number(p, "--epochs", integer=True, low=1, default=None, help="default: 10 for digits, 4 for langid")
    seed_flag(p)


def _train_run(args):
    import time

    from ..models.digits import digits_checkpoint, save_checkpoint, train_digits

    if args.name == "langid":
        from ..text.cli import train_langid_command

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
    from .._grad import predictions
    from ..attribution import saliency
    from ..drawing import render

    model, x, y = load_model_and_images(args)
    probs = predictions(model, x)
    target = parse_target(args.target, model, probs.argmax(1))
    maps = saliency(model, x, target, loss=args.loss, normalize=args.normalize)
    png = render.attribution_grid(x, {"saliency": maps}, render.image_row_titles(model, probs, y))
    print(f"wrote {render.write_png(png, args.out)}")


def _explain_args(p):
    from ..attribution.lrp.composites import COMPOSITES, DEFAULT
    from ..registry import grid_methods, methods

    add_model_args(p)
    p.add_argument("--methods", default=",".join(grid_methods()),
                   help=f"comma-separated, from: {', '.join(methods())}; default {','.join(grid_methods())}")
    p.add_argument("--target", default=None, help="class to explain (index or name); default: the prediction")
    p.add_argument("--target-kind", default="class", choices=TARGET_KINDS,
                   help="class: a logit (default); multilabel: a class's sigmoid; regression: the single output "
                        "itself; segmentation: a class's pixel logits summed over the pixels predicted as it")
    p.add_argument("--shared-scale", action="store_true", help="one colour scale per method over all images")
    seed_flag(p, help="seed of SmoothGrad noise and LIME samples")
    number(p, "--batch-size", integer=True, low=1, default=None, help="images per model call (default: automatic)")
    p.add_argument("--composite", default=None, choices=list(COMPOSITES),
                   help=f"the LRP composite of --methods lrp (default {DEFAULT})")
    p.add_argument("--out", default="explain.png", help="output PNG")


def _explain_run(args):
    from .._grad import predictions
    from ..attribution import explain
    from ..drawing import render
    from ..registry import methods

    names = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in names if m not in methods()]
    if unknown or not names:  # before the model loads
        what = f"unknown attribution method {unknown[0]!r}" if unknown else "no method given"
        raise PellucidError(f"--methods: {what}; choose from: {', '.join(methods())}")
    model, x, y = load_model_and_images(args)
    if args.target_kind == "class":
        probs = predictions(model, x)
        target, titles = parse_target(args.target, model, probs.argmax(1)), render.image_row_titles(model, probs, y)
    else:
        target, titles = explain_target(args.target_kind, args.target, model, x)
    options = {"lrp": {"composite": args.composite}} if args.composite else None
    maps = explain(model, x, target, args.methods, seed=args.seed, batch_size=args.batch_size, progress=True,
                   options=options)
    png = render.attribution_grid(x, maps, titles, shared_scale=args.shared_scale)
    if "lrp" in maps:
        from ..attribution.lrp.core import default_composite

        print(f"lrp: the {args.composite or default_composite(model)} composite")
    print(f"wrote {render.write_png(png, args.out)}")


def _report_args(p):
    add_model_args(p)
    p.add_argument("--out", default="report", help="output folder; the page is OUT/index.html")
    seed_flag(p)
    p.add_argument("--also", action="append", default=[], metavar="MODEL",
                   help=f"also report on MODEL (its first {ALSO_IMAGES} samples) in OUT/MODEL/index.html, linked "
                        "from the main page; `make report` adds imagenet")


def _report_run(args):
    from pathlib import Path

    from ..drawing.report import IMAGE_SECTIONS, SECTIONS, build_report, link_section
    from ..models import load_model
    from ..models.data import sample_images
    from ..registry import models as model_records

    names = list(dict.fromkeys(m for m in args.also if m != args.model))
    for name in names:
        if name in model_records() and model_records()[name].kind == "text":
            raise PellucidError(f"--also {name!r} is a text model; the report explains image models "
                                f"(use `pellucid explain-text WORD...`)")
    model, x, y = load_model_and_images(args)
    also = {}  # every --also model is loaded with its samples first: a bad name fails before anything is written
    for name in names:
        try:
            other = load_model(name)
        except PellucidError as e:
            raise PellucidError(f"--also {name!r}: {e}") from None
        if getattr(other, "input_size", None) is None:
            raise PellucidError(f"--also {name!r} is not an image model; the report explains image models")
        also[name] = (other, *sample_images(other, n=ALSO_IMAGES))
    links = [link_section([(f"{m}/index.html", m) for m in also], "Also in this report")] if also else []
    print(f"wrote {build_report(model, x, y, args.out, seed=args.seed, sections=[*links, *SECTIONS])}")
    for name, (other, ox, oy) in also.items():  # each on its first ALSO_IMAGES samples, in OUT/NAME/, linking back
        back = link_section([("../index.html", args.model)], "Back")
        page = build_report(other, ox, oy, Path(args.out) / name, seed=args.seed, sections=[back, *IMAGE_SECTIONS])
        print(f"wrote {page}")


def _layers_args(p):
    add_model_args(p, images=False)


def _layers_run(args):
    from ..attribution.cams import describe_grid
    from ..featureviz import layer_names
    from ..models import load_model

    model = load_model(args.model, weights=args.weights)
    rows = layer_names(model)
    width = max(len(n) for n, _, _ in rows)
    kind = max(len(t) for _, t, _ in rows)
    shapes = ["x".join(map(str, shape)) if shape else "-" for _, _, shape in rows]
    span = max(len(t) for t in shapes)
    for (name, type_name, shape), text in zip(rows, shapes):  # a CAM reads layers with a grid (tokens too)
        grid = describe_grid(shape, getattr(model, "input_size", None))
        print(f"{name:<{width}}  {type_name:<{kind}}  {text:<{span}}  {grid}".rstrip())
