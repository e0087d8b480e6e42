"""What has it learned: classviz and filterviz."""

from __future__ import annotations

from .._checks import PellucidError
from .common import add_model_args, load_model_and_images, number, parse_target, seed_flag


def _viz_args(p, steps: int = 100):
    number(p, "--steps", integer=True, low=1, default=steps)
    number(p, "--lr", low=0, low_open=True, default=None, help="step size (default: the method's)")
    p.add_argument("--param", default="pixel", choices=["pixel", "fourier"],
                   help="optimize pixels (the course) or Lucid's decorrelated Fourier spectrum (large models)")
    seed_flag(p)
    p.add_argument("--out", required=True, help="output PNG")


def _classviz_args(p):
    add_model_args(p, images=False)
    p.add_argument("--target", nargs="*", default=None,
                   help="classes (indices or names); default: every class of a model with <= 10 classes")
    _viz_args(p)
    number(p, "--l2", low=0, default=1e-3, help="weight of the L2 penalty on the image")
    number(p, "--jitter", integer=True, low=0, default=16, help="roll in pixels at 224x224 (scaled with the size)")
    number(p, "--blur-every", integer=True, low=0, default=10, help="blur every N steps; 0: never")
    p.add_argument("--history", action="store_true", help="write the iteration strip (steps 1, 25, 50, ...)")


def _classviz_run(args):
    from ..drawing import render
    from ..featureviz import class_visualization
    from ..models import load_model

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
    number(p, "--channel", integer=True, low=0, nargs="+", default=[0, 1, 2, 3], help="channels to show")
    _viz_args(p)


def _filterviz_run(args):
    from ..drawing import render
    from ..featureviz import channel_visualization, filter_layer, filter_maps

    model, x, _ = load_model_and_images(args)
    layer = args.layer or filter_layer(model)
    maps = filter_maps(model, layer, args.channel, x)
    v = channel_visualization(model, layer, args.channel, steps=args.steps, lr=args.lr, seed=args.seed,
                              param=args.param, progress=True)
    png = render.filter_grid(v.image, maps, x, args.channel)
    print(f"wrote {render.write_png(png, args.out)} (layer {layer})")
