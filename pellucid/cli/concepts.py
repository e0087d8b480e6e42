"""What concepts it uses: tcav (does a concept of example images matter for a class?) and concepts (CRAFT)."""

from __future__ import annotations

from .._checks import PellucidError
from .common import add_model_args, load_model_and_images, number, parse_target, seed_flag


def _files(items: list[str], flag: str) -> list[str]:
    """Image files: each item a file, or a folder whose images (every file under it, sorted) are taken."""
    from pathlib import Path

    from ..dataset.sources import list_items

    out = []
    for item in items:
        out += [str(i.source) for i in list_items(item)] if Path(item).is_dir() else [item]
    if not out:
        raise PellucidError(f"{flag}: no image files in {', '.join(items)}")
    return out


def _images(items, model, flag: str):
    from ..io import load_images

    return load_images(_files(items, flag), model)


def _batch(args):
    """The model and the images to explain: files or folders, else the model's samples."""
    from pathlib import Path

    if any(Path(i).is_dir() for i in args.images):
        args.images = _files(args.images, "IMAGE")
    return load_model_and_images(args)


def _target(args, model, x) -> int:
    """--target, or the class the model predicts most often on ``x``."""
    if args.target is not None:
        return parse_target(args.target, model, None)
    from .._grad import predictions

    return int(predictions(model, x).argmax(1).mode().values)


def _common(p, what: str):
    add_model_args(p)
    p.add_argument("--layer", default=None, help=f"layer name (see `pellucid layers`); {what}")
    p.add_argument("--target", default=None, help="class index or name; default: the class predicted most often")
    seed_flag(p)


def _tcav_args(p):
    _common(p, "required")
    p.add_argument("--concept", nargs="+", required=True, metavar="PATH",
                   help="concept example images: files or folders (at least --runs of them)")
    p.add_argument("--random", nargs="+", default=None, metavar="PATH",
                   help="random images: files or folders; default: random crops of the images to explain")
    number(p, "--runs", integer=True, low=2, default=20, help="concept runs, each on its own concept images")
    p.add_argument("--kind", default="svm", choices=["svm", "mean"], help="linear SVM or FastCAV (mean)")
    number(p, "--alpha", low=0, high=1, low_open=True, default=0.05, help="significance level")
    number(p, "--bonferroni", integer=True, low=1, default=1, help="how many concepts or layers you test")


def _tcav_run(args):
    from ..concept import tcav

    if args.layer is None:
        raise PellucidError("give --layer (see `pellucid layers --model M`); TCAV tests a concept at one layer")
    model, x, _ = _batch(args)
    target = _target(args, model, x)
    concept = _images(args.concept, model, "--concept")
    random = _images(args.random, model, "--random") if args.random else None
    r = tcav(model, x, target, args.layer, concept, random_x=random, runs=args.runs, kind=args.kind,
             seed=args.seed, alpha=args.alpha, bonferroni=args.bonferroni)
    verdict = "significant" if r.significant else "not significant"
    print(f"TCAV of {len(concept)} concept images for class {model.label(target)} at layer {r.layer} "
          f"({len(x)} images, {len(r.scores)} runs of {r.share} concept images, CAV accuracy {r.accuracy:.2f})")
    print(f"score {r.score:.3f} (runs {float(r.scores.min()):.2f}-{float(r.scores.max()):.2f}), random runs "
          f"{float(r.random_scores.mean()):.3f}; p = {r.p_value:.3g}: {verdict} at alpha {args.alpha:g}"
          + (f" / {args.bonferroni}" if args.bonferroni > 1 else ""))


def _concepts_args(p):
    _common(p, "default: the last spatial layer before pooling")
    number(p, "--concepts", integer=True, low=1, default=10, help="how many concepts to find")
    number(p, "--crop-size", low=0, high=1, low_open=True, default=0.3,
           help="side of the crops, a fraction of the image side (a grid overlapping by 20%%)")
    number(p, "--top", integer=True, low=1, default=6, help="crops shown per concept")
    p.add_argument("--out", default=None, help="write a PNG of each concept's top crops (rows by importance)")


def _concepts_run(args):
    from ..concept import concepts

    model, x, _ = _batch(args)
    target = _target(args, model, x)
    c = concepts(model, x, target, layer=args.layer, n=args.concepts, crop_size=args.crop_size,
                 top=args.top, seed=args.seed)
    print(f"{len(c.concepts)} concepts of class {model.label(target)} at layer {c.layer} from {len(x)} images "
          f"({len(c.boxes)} crops; NMF relative reconstruction error {c.error:.3f})")
    print("rank  concept  importance  images of its top crops")
    for rank, k in enumerate(c.concepts, 1):
        print(f"{rank:4d}  {k.index:7d}  {k.importance:10.3f}  {sorted(set(k.boxes[:, 0].tolist()))}")
    if args.out:
        import torch

        from ..drawing import render

        crops = torch.cat([k.crops for k in c.concepts])
        titles = [f"#{r} concept {k.index} ({k.importance:.2f})" if j == 0 else ""
                  for r, k in enumerate(c.concepts, 1) for j in range(len(k.crops))]
        print(f"wrote {render.write_png(render.image_grid(crops, titles, ncols=args.top), args.out)}")
