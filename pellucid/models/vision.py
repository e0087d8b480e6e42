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
from .weights import load_into, read_checkpoint

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


def _head_classes(net: nn.Module, state: dict) -> int | None:
    """The number of classes of ``state``'s classifier when it differs from ``net``'s (a fine-tuned head)."""
    heads = [k for k, v in net.state_dict().items() if k.endswith("weight") and v.dim() >= 2 and v.shape[0] == 1000]
    if heads and heads[-1] in state and state[heads[-1]].dim() >= 1 and state[heads[-1]].shape[0] != 1000:
        return int(state[heads[-1]].shape[0])
    return None


def hub_weights_path(name: str) -> Path:
    """Where torchvision would have cached ``name``'s default weights (no download happens)."""
    url = _weights_enum(name).url
    return Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]


def load_torchvision(name: str, weights=None) -> PixelModel:
    import torchvision

    def build(**kw) -> nn.Module:  # reproducible init without touching the global RNG
        return seeded(lambda: torchvision.models.get_model(name, weights=None, **kw))

    net, meta, classes = build(), {}, None
    if weights != "random":
        path = weights if weights is not None else hub_weights_path(name)
        if weights is None and not path.is_file():
            raise PellucidError(
                f"no weights for {name} offline: pass weights='path/to/{name}.pth' (a state_dict, "
                f".pth or .safetensors), place the file at {path} (the torch hub cache), "
                "or use weights='random' for an untrained model"
            )
        state, meta = read_checkpoint(path, name)
        classes = _head_classes(net, state)
        if classes is not None:  # a fine-tuned head: the same architecture with `classes` outputs
            net = build(num_classes=classes)
        load_into(net, state, name, path)
    labels = meta.get("labels") or ([str(k) for k in range(classes)] if classes is not None else imagenet_labels())
    model = PixelModel(net, meta.get("mean", IMAGENET_MEAN), meta.get("std", IMAGENET_STD), labels,
                       meta.get("input_size", (3, 224, 224)), name=name)
    model.samples = "photos"
    model.weights = "random" if weights == "random" else str(weights or hub_weights_path(name))
    if name.startswith("vit_"):  # a fixed grid of position embeddings: one image size only
        model.strict_size = True
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
