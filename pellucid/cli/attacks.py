"""How easily is it fooled: fool, attack, robustness."""

from __future__ import annotations

from .._checks import PellucidError, check_number
from .common import add_model_args, load_model_and_images, number, parse_target, seed_flag


def _fool_args(p):
    add_model_args(p)
    p.add_argument("--target", default=None, help="class to reach (index or name); default: random, seeded")
    number(p, "--lr", low=0, default=1.0, help="step size (the step is lr * g / ||g||)")
    number(p, "--max-steps", integer=True, low=1, default=100)
    seed_flag(p, help="seed of the random targets")
    p.add_argument("--out", default="fool.png", help="output PNG")


def _fool_run(args):
    from .._grad import predictions
    from ..adversarial import fooling_image, random_targets
    from ..drawing import render

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
    from ..adversarial import NORMS
    from ..registry import attacks

    p.add_argument("--method", default="pgd", choices=list(attacks()))
    number(p, "--eps", low=0, required=True, help="size of the perturbation (pixel scale [0, 1])")
    p.add_argument("--targeted", default=None, metavar="K", help="attack towards class K (index or name)")
    p.add_argument("--norm", default="linf", choices=list(NORMS), help="the ball of the attack")
    number(p, "--steps", integer=True, low=1, default=None,
           help="steps of iterative attacks; default: the attack's own")
    number(p, "--alpha", low=0, default=None, help="step size of iterative attacks; default 2.5 * eps / steps")
    seed_flag(p)
    p.add_argument("--out", default="attack.png", help="output PNG")


def _attack_run(args):
    from .._grad import predictions
    from ..drawing import render
    from ..registry import attack

    model, x, y = load_model_and_images(args)
    before = predictions(model, x)
    label = y.where(y >= 0, before.argmax(1))  # image files have no label: attack the prediction
    targeted = parse_target(args.targeted, model, False, "--targeted")
    adv = attack(args.method).run(model, x, label, args.eps, targeted=targeted, norm=args.norm, steps=args.steps,
                                  alpha=args.alpha, seed=args.seed, progress=True)
    after = predictions(model, adv)
    print(f"{args.method} eps {args.eps:g}: {int((after.argmax(1) != label).sum())}/{len(x)} predictions changed")
    png = render.attack_rows(x, adv, before, after, model.label)
    print(f"wrote {render.write_png(png, args.out)}")


def _robustness_args(p):
    add_model_args(p)
    from ..adversarial import CURVE_ATTACKS, NORMS

    p.add_argument("--attack", default="pgd", choices=CURVE_ATTACKS,
                   help="autoattack: the worst case over APGD-CE, APGD-T, FAB-T and Square")
    p.add_argument("--eps", default=None, help="comma-separated eps values; default depends on the images")
    p.add_argument("--norm", default="linf", choices=list(NORMS))
    number(p, "--steps", integer=True, low=1, default=10,
           help="pgd steps; autoattack: APGD and FAB steps (with 50x as many Square queries)")
    seed_flag(p)
    p.add_argument("--out", default="robustness.png", help="output PNG")


def _eps_list(text: str) -> list[float]:
    """``--eps 0,0.05,0.1``: finite numbers >= 0, each checked with the flag's name."""
    try:
        values = [float(e) for e in text.split(",") if e.strip()]
    except ValueError as e:
        raise PellucidError(f"--eps must be comma-separated numbers like 0,0.05,0.1, got {text!r}") from e
    if not values:
        raise PellucidError(f"--eps must be comma-separated numbers like 0,0.05,0.1, got {text!r}")
    return [check_number(v, "--eps", 0) for v in values]


def _robustness_run(args):
    from .._grad import predictions
    from ..adversarial import default_eps, robustness_curve
    from ..drawing import render

    eps = None if args.eps is None else _eps_list(args.eps)  # before any work
    model, x, y = load_model_and_images(args)
    label = y.where(y >= 0, predictions(model, x).argmax(1))
    eps = default_eps(x) if eps is None else eps
    curve = robustness_curve(model, x, label, eps, args.attack, norm=args.norm, steps=args.steps, seed=args.seed)
    print(f"{args.attack} ({args.norm}) on {len(x)} images\n| eps | accuracy |\n|---|---|")
    for e, a in zip(curve.eps, curve.accuracy):
        print(f"| {float(e):.4g} | {100 * float(a):.1f}% |")
    print(f"wrote {render.write_png(render.robustness_plot(curve), args.out)}")
