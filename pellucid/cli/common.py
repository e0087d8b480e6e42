"""What every command shares: the model and image arguments, targets by index, name or kind."""

from __future__ import annotations

import argparse
import re

from .._checks import PellucidError, check_number


def number(p: argparse.ArgumentParser, *flags: str, integer: bool = False, low=None, high=None,
           low_open: bool = False, allow_zero: bool = False, hint: str = "", **kw) -> argparse.Action:
    """A numeric flag (an int with ``integer``, else a float) whose range :func:`check_flags` checks, with
    :func:`~pellucid._checks.check_number`, before the command does any work; the error names the flag."""
    action = p.add_argument(*flags, type=int if integer else float, **kw)
    action.pellucid_range = {"low": low, "high": high, "low_open": low_open, "allow_zero": allow_zero,
                             "integer": integer, "hint": hint}
    return action


def seed_flag(p: argparse.ArgumentParser, **kw) -> argparse.Action:
    return number(p, "--seed", integer=True, default=0, **kw)


def check_flags(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Check every numeric flag of the command (see :func:`number`); a bad value is a PellucidError that
    names the flag, its range and the value, before anything is loaded or written."""
    for action in p._actions:
        span = getattr(action, "pellucid_range", None)
        value = getattr(args, action.dest, None)
        if span is None or value is None:
            continue
        flag = max(action.option_strings, key=len) if action.option_strings else action.dest
        for v in value if isinstance(value, list) else [value]:
            check_number(v, flag, **span)


def add_model_args(p: argparse.ArgumentParser, images: bool = True) -> None:
    from ..registry import families, models

    names = [n for n, record in models().items() if record.kind != "text"] if images else list(models())
    others = " or ".join(f"any {f} name" for f in families())
    p.add_argument("--model", default="digits", help=f"model: {', '.join(names)}, {others} (`pellucid models` "
                                                     "describes them); default digits")
    p.add_argument("--weights", default=None, help="weights file for torchvision models, or 'random'")
    if images:
        p.add_argument("images", nargs="*", metavar="IMAGE", help="image files; default: the model's samples")
        number(p, "-n", integer=True, low=1, default=None, help="how many sample images when no IMAGE is given")


def load_model_and_images(args):
    """The model and the batch the command works on: the given files, or the model's samples."""
    import torch

    from ..io import load_images
    from ..models import load_model
    from ..models.data import sample_images

    model = load_model(args.model, weights=args.weights)
    if getattr(args, "images", None):
        x = load_images(args.images, model)
        return model, x, torch.full((len(x),), -1, dtype=torch.long)
    x, y = sample_images(model, n=getattr(args, "n", None))
    return model, x, y


def parse_target(value: str | None, model, default, flag: str = "--target"):
    """An int class index (checked against the model's classes, the error naming ``flag``), or a class name
    of the model's labels."""
    from ..targets import as_indices

    if value is None:
        return default
    if re.fullmatch(r"\s*[+-]?\d+\s*", value):
        return int(as_indices(int(value), 1, flag, getattr(model, "num_classes", None))[0])
    labels = [str(lb).lower() for lb in (getattr(model, "labels", None) or [])]
    if value.lower() in labels:
        return labels.index(value.lower())
    raise PellucidError(f"unknown {flag} {value!r}: give a class index 0..{len(labels) - 1} or a class name")


ALSO_IMAGES = 4  # images of each --also report: `make report` stays within 5 minutes on two cores


TARGET_KINDS = ("class", "multilabel", "regression", "segmentation")


def explain_target(kind: str, value: str | None, model, x):
    """The target of ``explain --target-kind`` other than class, and one title per image."""
    import torch

    from .._state import model_state
    from ..targets import Target, as_target, segmentation_target

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
