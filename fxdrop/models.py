"""Models for ``fxdrop run --model``: CIFAR-style ResNets and :func:`build_model`, which resolves a name.

The CIFAR ResNets are those of He et al. 2016 ("Deep Residual Learning for Image Recognition", section
4.2): a 3x3 stem conv with 16 channels and no max-pool, three stages of ``n`` basic blocks with 16, 32
and 64 channels (the first block of stages 2 and 3 halves the resolution), global average pooling and
one linear layer; depth ``6n + 2``. Downsampling shortcuts are the paper's **option B**: a 1x1
convolution with stride 2 plus BatchNorm (``downsample``), as in torchvision's ResNets and most modern
re-implementations; the paper's CIFAR results use option A (zero-padded identity, no parameters), so
these models have a few more parameters (ResNet-20: 272,474 here, 0.27M in the paper).

Module names follow torchvision (``layer1.0.conv1``, ``layer2.0.downsample``), so fxdrop's unit names
read ``layer1.0`` etc., and every block whose skip is the identity is a droppable residual unit.

:func:`cifar_vgg11` is the CIFAR-style VGG-11 with BatchNorm (Simonyan & Zisserman 2015, configuration A,
as CIFAR re-implementations train it): eight 3x3 conv + BN + ReLU layers with five 2x2 max-pools, which
leave one 512-channel pixel of a 32 px image, and one linear layer (torchvision's VGG pools that pixel to
7x7 for a 25,088 → 4,096 → 4,096 classifier, 129M parameters, which no one trains on 32 px). Its
shape-preserving convs (256 → 256, 512 → 512: ``features.11``, ``.18``, ``.22``, ``.25``) are fxdrop's
units: plain layers, no skip, the units of the Learn&Drop paper's VGG experiments.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
from typing import Callable

from torch import Tensor, nn

__all__ = ["BasicBlock", "CifarResNet", "resnet20", "resnet32", "resnet56", "cifar_vgg11", "CIFAR_MODELS",
           "build_model"]


def _init_convs(model: nn.Module) -> None:
    """Kaiming-normal (fan_out) conv weights, BatchNorm weight 1 and bias 0, as torchvision's ResNets and
    VGGs initialise them."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class BasicBlock(nn.Module):
    """Two 3x3 conv + BN layers with a skip: ``relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))``;
    ``shortcut`` is the identity, or ``downsample`` (1x1 conv + BN) when stride or width change."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_planes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += identity
        return self.relu(out)


class CifarResNet(nn.Module):
    """ResNet-(6n+2) for 32x32 inputs (He et al. 2016, CIFAR section, option B shortcuts).

    ``blocks`` is ``n``, the number of basic blocks per stage; input ``B x in_channels x H x W`` (any
    size; 32x32 as designed), output ``B x num_classes`` logits. Convs use Kaiming-normal init (fan-out,
    ReLU), BatchNorm weight 1 / bias 0, the linear layer PyTorch's default.
    """

    def __init__(self, blocks: int, num_classes: int = 10, in_channels: int = 3, widths: tuple[int, int, int] = (16, 32, 64)):
        super().__init__()
        if blocks < 1:
            raise ValueError(f"blocks must be >= 1, got {blocks}")
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.in_planes = widths[0]
        self.layer1 = self._make_layer(widths[0], blocks, stride=1)
        self.layer2 = self._make_layer(widths[1], blocks, stride=2)
        self.layer3 = self._make_layer(widths[2], blocks, stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(widths[2], num_classes)
        _init_convs(self)

    def _make_layer(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
        layers = []
        for i in range(blocks):
            layers.append(BasicBlock(self.in_planes, planes, stride if i == 0 else 1))
            self.in_planes = planes
        return nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(self.avgpool(x).flatten(1))


def resnet20(num_classes: int = 10, in_channels: int = 3) -> CifarResNet:
    """ResNet-20 (n=3): 272,474 parameters for 10 classes."""
    return CifarResNet(3, num_classes, in_channels)


def resnet32(num_classes: int = 10, in_channels: int = 3) -> CifarResNet:
    """ResNet-32 (n=5): 466,906 parameters for 10 classes."""
    return CifarResNet(5, num_classes, in_channels)


def resnet56(num_classes: int = 10, in_channels: int = 3) -> CifarResNet:
    """ResNet-56 (n=9): 855,770 parameters for 10 classes."""
    return CifarResNet(9, num_classes, in_channels)


_VGG11 = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")  # configuration A


def cifar_vgg11(num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    """CIFAR-style VGG-11 with BatchNorm: 9,228,362 parameters for 10 classes (convs without bias, each
    followed by BatchNorm; ``features`` indexed as torchvision's ``vgg11_bn``; ``classifier`` one linear
    layer on the 512 channels of the last 1x1 map)."""
    layers: list[nn.Module] = []
    c = in_channels
    for v in _VGG11:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(c, int(v), 3, padding=1, bias=False), nn.BatchNorm2d(int(v)), nn.ReLU(inplace=True)]
            c = int(v)
    model = nn.Sequential()
    model.add_module("features", nn.Sequential(*layers))
    model.add_module("flatten", nn.Flatten())
    model.add_module("classifier", nn.Linear(c, num_classes))
    _init_convs(model)  # and the linear layer as torchvision's VGG (it comes last: the same draws in order)
    nn.init.normal_(model.classifier.weight, 0, 0.01)
    nn.init.zeros_(model.classifier.bias)
    return model


CIFAR_MODELS: dict[str, Callable[..., nn.Module]] = {"resnet20": resnet20, "resnet32": resnet32, "resnet56": resnet56,
                                                    "cifar_vgg11": cifar_vgg11}


def build_model(name: str, num_classes: int) -> nn.Module:
    """A model by name, with ``num_classes`` outputs and fresh weights: a CIFAR model of this module
    (``resnet20``, ``resnet32``, ``resnet56``, ``cifar_vgg11``), a torchvision classification model (``resnet18``), or
    ``package.module:factory`` (called with ``num_classes=`` if it accepts it).

    Raises ``ValueError`` naming the closest known names for an unknown name.
    """
    if ":" in name:
        mod_name, _, attr = name.partition(":")
        factory = getattr(importlib.import_module(mod_name), attr)
        try:
            params = inspect.signature(factory).parameters.values()
        except (TypeError, ValueError):  # no introspectable signature: pass num_classes
            return factory(num_classes=num_classes)
        if any(p.name == "num_classes" or p.kind is p.VAR_KEYWORD for p in params):
            return factory(num_classes=num_classes)
        return factory()
    if name in CIFAR_MODELS:
        return CIFAR_MODELS[name](num_classes=num_classes)
    import torchvision

    tv_names = torchvision.models.list_models(module=torchvision.models)
    if name not in tv_names:
        close = difflib.get_close_matches(name, sorted(CIFAR_MODELS) + tv_names, n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else "."
        raise ValueError(
            f"unknown model {name!r}{hint} Model names come from: fxdrop.models CIFAR models "
            f"({', '.join(sorted(CIFAR_MODELS))}), torchvision classification models "
            f"(torchvision.models.list_models(module=torchvision.models)), or package.module:factory"
        )
    return torchvision.models.get_model(name, weights=None, num_classes=num_classes)
