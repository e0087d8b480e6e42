"""Which registered models the page offers, without building any: image models only, each with what it
needs beyond ``pellucid[web]``, read from the model records (:func:`pellucid.registry.models`).

Listing the models must not build them (the digits CNNs train on a fresh machine): a model is built when
it is first used. Text models are not offered on the image page; asking for one is a 400 that says where
it is served. A model that cannot be built here (its extra is not installed, or it needs a weights file)
is listed with what would make it work, and not offered.
"""

from __future__ import annotations

from collections.abc import Callable

from ..registry import models


def text_models() -> dict[str, str]:
    """``name -> why the page refuses it`` for every registered text model."""
    return {name: f"{name!r} is a text model: explain it with `pellucid explain-text WORD` (this page explains "
                  "image models)" for name, record in models().items() if record.kind == "text"}


def unavailable(name: str) -> str | None:
    """Why registered model ``name`` cannot be built here, or ``None`` when it can."""
    record = models()[name]
    return record.missing() or (None if record.ready is None else record.ready())


def builtin_models(names=None) -> dict[str, tuple[Callable, str, str | None]]:
    """``name -> (loader, description, unavailable)`` of the registered image models (``names``: a subset)."""
    table = models()
    names = [n for n in (table if names is None else names) if n in table and table[n].kind != "text"]
    return {n: (lambda n=n: table[n].load(), table[n].title, unavailable(n)) for n in names}
