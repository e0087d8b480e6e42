"""timm architectures by name, ``timm:NAME`` (the optional extra ``pellucid[timm]``).

Weights come only from a local file (``weights=FILE``: a state_dict ``.pth`` or a ``.safetensors`` file, read
as tensors) or are ``"random"``; nothing is downloaded (``pretrained=False`` always). The preprocessing is
timm's own for the architecture (mean, std and input size from its pretrained config,
``timm.data.resolve_data_config``), moved inside the model as for every other model; 1,000 classes get
ImageNet's names. Importing timm takes seconds, so nothing here imports it until a ``timm:`` model is asked for.
"""

from __future__ import annotations

import difflib
from functools import lru_cache
from importlib.util import find_spec

from torch import nn

from .._checks import PellucidError
from ..registry import Model, ModelFamily, register_family
from .base import PixelModel, seeded
from .vision import classifier, imagenet_labels
from .weights import build_with_weights

PREFIX = "timm:"
INSTALL = "pip install 'pellucid[timm]'"
FEATURED = ("resnet50", "vit_small_patch16_224", "deit_tiny_patch16_224", "convnext_tiny", "efficientnet_b0")
FEATURED_SIZE = (3, 224, 224)
"""The input size of timm's pretrained config of every featured architecture, so listing them imports nothing
(``tests/test_timm.py`` checks it against timm)."""
TRANSFORMERS = ("vit_", "deit", "swin", "beit", "cait", "eva", "xcit", "levit", "pit_", "crossvit", "twins", "convit",
                "maxvit", "mvitv2", "coat", "tnt_", "volo", "flexivit", "davit", "gcvit")


def installed() -> bool:
    """Whether timm can be imported here (without importing it)."""
    try:
        return find_spec("timm") is not None
    except (ImportError, ValueError):
        return False


def _timm():
    try:
        import timm
        import timm.data
    except ImportError as e:
        raise PellucidError(f"timm models need the timm package, which is not installed: {INSTALL}") from e
    return timm


@lru_cache(maxsize=1)
def timm_names() -> tuple[str, ...]:
    """Every architecture timm can build (``timm.list_models()``), without the ``timm:`` prefix."""
    return tuple(_timm().list_models())


def architecture(name: str) -> str:
    """The timm name of ``"timm:NAME"`` (a pretrained tag such as ``.augreg_in1k`` allowed); an unknown one is
    a :class:`PellucidError` with the close matches (an unknown tag: the architecture's tags)."""
    arch = name[len(PREFIX):]
    timm = _timm()
    if not timm.is_model(arch):
        close = difflib.get_close_matches(arch, timm_names(), n=5, cutoff=0.6)
        hint = f"; close matches: {', '.join(PREFIX + c for c in close)}" if close else ""
        raise PellucidError(f"unknown timm architecture {arch!r} in model name {name!r}{hint} (timm.list_models() "
                            f"lists the {len(timm_names())} architectures; write them as timm:NAME)")
    try:
        timm.get_pretrained_cfg(arch)
    except RuntimeError:  # a tag timm does not know for this architecture
        base = arch.split(".", 1)[0]
        tags = ", ".join(timm.list_pretrained(f"{base}.*")) or "none"
        raise PellucidError(f"unknown pretrained tag in {name!r}; {base}'s tags: {tags}") from None
    return arch


def load_timm(name: str, weights=None) -> PixelModel:
    """``timm:NAME`` in pixel space with timm's preprocessing inside, weights from ``weights`` (a file or
    ``"random"``); a head of another size in the file builds the architecture with that many classes."""
    arch = architecture(name)
    if weights is None:
        raise PellucidError(f"no weights for {name}: pellucid never downloads them. Pass weights='path/to/{arch}"
                            ".safetensors' (a state_dict, .pth or .safetensors, e.g. timm's own file for this "
                            "architecture) or weights='random' for an untrained model")
    timm = _timm()

    def build(**kw) -> nn.Module:  # reproducible init without touching the global RNG; never a download
        try:
            return seeded(lambda: timm.create_model(arch, pretrained=False, **kw))
        except (RuntimeError, ValueError, TypeError) as e:
            raise PellucidError(f"timm cannot build {arch!r}: {e}") from e

    net, meta, _ = build_with_weights(build, name, weights, weights)
    config = timm.data.resolve_data_config({}, model=net)
    model = classifier(net, name, meta, net.num_classes, config["mean"], config["std"], config["input_size"])
    model.weights = "random" if weights == "random" else str(weights)
    if any(getattr(m, "strict_img_size", False) for m in net.modules()):
        model.strict_size = True  # a fixed grid of position embeddings (timm's ViT, DeiT, Swin): one image size
    return model


def _record(name: str) -> Model:
    arch = name[len(PREFIX):]
    size = FEATURED_SIZE if arch in FEATURED else None
    if size is None and installed():
        cfg = _timm().get_pretrained_cfg(architecture(name))  # architecture() checks the name first
        size = tuple(cfg.input_size) if cfg is not None else None
    kind = "transformer" if arch.startswith(TRANSFORMERS) else "cnn"
    return Model(name, f"timm {arch} (weights=FILE or 'random'; needs pellucid[timm])",
                 lambda weights=None: load_timm(name, weights), size, samples="photos", kind=kind,
                 labels=imagenet_labels, extra="timm", needs="timm", weights="file",
                 ready=lambda: f"needs weights: pellucid serve --model {name} --weights FILE (never downloaded)")


register_family(ModelFamily(
    "timm", "any timm architecture as timm:NAME (pip install 'pellucid[timm]'; weights=FILE or 'random')",
    lambda n: n.startswith(PREFIX), _record, tuple(PREFIX + n for n in FEATURED) if installed() else (),
    # close matches for a name outside every family: the featured ones (all of timm's would import it, seconds)
    lambda: [PREFIX + n for n in FEATURED]))
