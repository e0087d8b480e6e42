"""The ``pellucid`` command. Subcommands are a dict: name -> (help, add arguments, run); each group of
commands lives in its own module."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from .._checks import PellucidError
from .._progress import end_line
from .attacks import _attack_args, _attack_run, _fool_args, _fool_run, _robustness_args, _robustness_run
from .common import check_flags
from .dataset import _diff_args, _diff_run, _scan_args, _scan_run
from .explain import (
    _explain_args,
    _explain_run,
    _layers_args,
    _layers_run,
    _models_args,
    _models_run,
    _report_args,
    _report_run,
    _saliency_args,
    _saliency_run,
    _train_args,
    _train_run,
)
from .learned import _classviz_args, _classviz_run, _filterviz_args, _filterviz_run
from .services import (
    _attack_text_args,
    _attack_text_run,
    _batch_args,
    _batch_run,
    _explain_text_args,
    _explain_text_run,
    _serve_args,
    _serve_run,
)

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
    "attack": ("attack images (FGSM, PGD, APGD, FAB, Square, AutoAttack, CW, DeepFool) and show original | "
               "adversarial | difference", _attack_args, _attack_run),
    "robustness": ("accuracy under attack for several eps, as a table and a plot", _robustness_args,
                   _robustness_run),
    "scan": ("a model's strategies per class across a data set (SpRAy) and the images it decides for unusual "
             "reasons, as an HTML page", _scan_args, _scan_run),
    "diff": ("what moved between two models, image by image: evidence, predictions, beyond noise; an HTML page",
             _diff_args, _diff_run),
}


class Parser(argparse.ArgumentParser):
    """argparse with pellucid's errors: one line on stderr (``pellucid CMD: error: ...``), exit code 2."""

    def error(self, message):
        end_line()
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="pellucid", description="See what an image classifier looks at.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    parser.commands = {}
    for name, (help_text, add_args, _run) in COMMANDS.items():
        parser.commands[name] = sub.add_parser(name, help=help_text, description=help_text)
        add_args(parser.commands[name])
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        check_flags(parser.commands[args.command], args)  # every numeric flag, before any work
        COMMANDS[args.command][2](args)
    except (PellucidError, FileNotFoundError, OSError) as e:
        end_line()
        print(f"pellucid {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        end_line()
        print("pellucid: interrupted", file=sys.stderr)
        return 130
    return 0




