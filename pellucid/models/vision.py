"""torchvision classifiers by name, with offline weights: ``weights=FILE``, the torch hub cache, or
``"random"``. Nothing is downloaded."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import torch
from torch import nn

from .._checks import PellucidError
from ..registry import Model, ModelFamily, register_family
from .base import PixelModel, seeded
from .weights import build_with_weights

FEATURED = ("resnet18", "resnet50", "vgg16", "squeezenet1_1", "alexnet", "mobilenet_v3_small",
            "densenet121", "efficientnet_b0", "vit_b_16", "swin_t")
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
TRANSFORMERS = ("vit_", "swin_", "maxvit_")


def _weights_enum(name: str):
    import torchvision

    return torchvision.models.get_model_weights(name).DEFAULT


@lru_cache(maxsize=1)
def _imagenet_labels() -> tuple[str, ...]:
    return tuple(_weights_enum("resnet18").meta["categories"])


def imagenet_labels() -> list[str]:
    """torchvision's 1,000 ImageNet class names (offline metadata)."""
    return list(_imagenet_labels())


@lru_cache(maxsize=1)
def torchvision_names() -> tuple[str, ...]:
    """Every classifier of ``torchvision.models``."""
    import torchvision

    return tuple(torchvision.models.list_models(module=torchvision.models))


def hub_weights_path(name: str) -> Path:
    """Where torchvision would have cached ``name``'s default weights (no download happens)."""
    url = _weights_enum(name).url
    return Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]


def load_torchvision(name: str, weights=None) -> PixelModel:
    import torchvision

    def build(**kw) -> nn.Module:  # reproducible init without touching the global RNG
        return seeded(lambda: torchvision.models.get_model(name, weights=None, **kw))

    path = None if weights == "random" else weights if weights is not None else hub_weights_path(name)
    if weights is None and not path.is_file():
        raise PellucidError(
            f"no weights for {name} offline: pass weights='path/to/{name}.pth' (a state_dict, "
            f".pth or .safetensors), place the file at {path} (the torch hub cache), "
            "or use weights='random' for an untrained model"
        )
    net, meta, classes = build_with_weights(build, name, weights, path)
    model = classifier(net, name, meta, classes or 1000, IMAGENET_MEAN, IMAGENET_STD, (3, 224, 224))
    model.weights = "random" if weights == "random" else str(path)
    if name.startswith("vit_"):  # a fixed grid of position embeddings: one image size only
        model.strict_size = True
    return model


def classifier(net: nn.Module, name: str, meta: dict, classes: int, mean, std, input_size) -> PixelModel:
    """An image classifier in pixel space, in eval mode, showing the photos: the checkpoint's ``meta`` (mean,
    std, input_size, labels) over the architecture's defaults; ImageNet's class names for 1,000 classes."""
    labels = meta.get("labels") or (imagenet_labels() if classes == 1000 else [str(k) for k in range(classes)])
    model = PixelModel(net, meta.get("mean", mean), meta.get("std", std), labels, meta.get("input_size", input_size),
                       name=name)
    model.samples = "photos"
    return model.eval()


def _record(name: str) -> Model:
    kind = "transformer" if name.startswith(TRANSFORMERS) else "cnn"
    return Model(name, f"torchvision {name} (ImageNet architecture; weights=FILE, hub cache, or 'random')",
                 lambda weights=None: load_torchvision(name, weights), (3, 224, 224), samples="photos", kind=kind,
                 labels=imagenet_labels, weights="file", ready=lambda: _hub_ready(name))


def _hub_ready(name: str) -> str | None:
    if hub_weights_path(name).is_file():
        return None
    return f"needs weights: pellucid serve --model {name} --weights FILE (or place them in the torch hub cache)"


register_family(ModelFamily("torchvision", "any classifier of torchvision.models (weights=FILE, hub cache, or "
                                           "'random')", lambda n: n in torchvision_names(), _record, FEATURED,
                            lambda: list(torchvision_names())))
