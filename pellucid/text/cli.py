"""The text commands of ``pellucid``: ``explain-text``, ``attack-text`` and ``train langid``."""

from __future__ import annotations

import time
from pathlib import Path

from .._checks import PellucidError

TEXT_MODELS = ("langid",)
"""The built-in models that read words, not images."""


def load_text_model(name: str):
    from ..models import load_model
    from .attribution import check_text_model

    if name not in TEXT_MODELS:
        raise PellucidError(f"unknown text model {name!r}; the built-in text model is {', '.join(TEXT_MODELS)}")
    return check_text_model(load_model(name))


def explain_text_run(args) -> None:
    from .. import render
    from .attribution import check_words, explain_text
    from .model import word_titles
    from .render import text_html, text_png

    model = load_text_model(args.model)
    words = check_words(args.words, model)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    maps = explain_text(model, words, args.target, methods, seed=args.seed)
    titles = word_titles(model, words)
    for i, word in enumerate(words):
        print(titles[i].replace("\n", ": "))
        for name, values in maps.items():
            cells = " ".join(f"{c}{float(v):+.2f}" for c, v in zip(word, values[i]))
            print(f"  {name:<21} {cells}")
    png = render.write_png(text_png(words, maps, titles), args.out)
    page = Path(args.out).with_suffix(".html")
    body = text_html(words, maps, [t.replace("\n", " · ") for t in titles])
    section = render.Section("Which characters made it decide?", "Red: the character raised the score of "
                             "the explained language; blue: it lowered it. Hover for values.", body)
    page.write_text(render.html_report(f"pellucid explain-text: {model.name}", " ".join(words), [section]),
                    encoding="utf-8")
    print(f"wrote {png} and {page}")


def attack_text_run(args) -> None:
    from .attack import hotflip

    model = load_text_model(args.model)
    res = hotflip(model, args.word, target=args.target, max_edits=args.max_edits, beam=args.beam,
                  letters=args.letters)
    print(res.describe(model.labels))
    if not res.success:
        print(f"no flip within {args.max_edits} edits; try --max-edits {args.max_edits + 2}")


def train_langid_command(args) -> None:
    from .._training import save_checkpoint
    from .model import langid_checkpoint, train_langid

    start = time.perf_counter()
    model, acc = train_langid(epochs=args.epochs or 4, seed=args.seed)
    seconds = time.perf_counter() - start
    path = langid_checkpoint()
    save_checkpoint(model, path, accuracy=acc, seconds=seconds)
    print(f"langid: held-out accuracy {100 * acc:.2f}% ({seconds:.1f}s); saved {path}")
