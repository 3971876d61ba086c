"""Small hand-written models with the awkward parts real code has."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Block(nn.Module):
    """A residual block written as torchvision does: ``out += identity`` and an in-place ReLU."""

    def __init__(self, c: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += identity
        return self.relu(out)


class DataDependent(nn.Module):
    """Untraceable: a Python ``if`` on a tensor value."""

    def __init__(self, c: int):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 1)

    def forward(self, x):
        if x.sum() > 0:
            return self.conv(x)
        return self.conv(-x)


class LenOfProxy(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.convs = nn.ModuleList([nn.Conv2d(c, c, 1) for _ in range(2)])

    def forward(self, x):
        for i in range(len(x)):  # len() of a proxy
            pass
        return self.convs[1](self.convs[0](x))


class Awkward(nn.Module):
    """Functional calls, in-place adds, torch.cat, a module used twice, an untraceable block."""

    def __init__(self, c: int = 8, n_classes: int = 5):
        super().__init__()
        self.stem = nn.Conv2d(3, c, 3, padding=1)
        self.block1 = Block(c)
        self.odd = DataDependent(c)
        self.shared = nn.Conv2d(c, c, 3, padding=1)  # called twice below
        self.w = nn.Parameter(torch.randn(c, c, 3, 3) * 0.1)  # functional conv weight
        self.block2 = Block(c)
        self.merge = nn.Conv2d(2 * c, c, 1)
        self.head = nn.Linear(c, n_classes)

    def forward(self, x):
        x = F.relu(self.stem(x))
        x = self.block1(x)
        x = self.odd(x)
        y = self.shared(self.shared(x))
        x = x + F.conv2d(x, self.w, padding=1)  # functional residual
        x.add_(0.0)  # in-place, result unused: must survive the rewrite
        x = self.block2(x)
        x = self.merge(torch.cat([x, y], dim=1))
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return self.head(x)


class MLPChain(nn.Module):
    def __init__(self, d: int = 16):
        super().__init__()
        self.inp = nn.Linear(10, d)
        self.hidden = nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Linear(d, d), nn.ReLU())
        self.out = nn.Linear(d, 3)

    def forward(self, x):
        return self.out(self.hidden(F.relu(self.inp(x))))


class UntraceableRoot(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x):
        if x.mean() > 0:  # in the root itself: cannot become a leaf
            return self.lin(x)
        return x


def tiny_resnet(num_classes: int = 10) -> nn.Module:
    """A user's own model given to the CLI as ``tests.models:tiny_resnet``."""
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU(inplace=True),
        Block(8), Block(8), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, num_classes),
    )


def narrow_resnet18(num_classes: int = 10, width: int = 8) -> nn.Module:
    """torchvision's ResNet-18 (same blocks, same module names, so the same units ``layer1.0`` ...
    ``layer4.1``) with ``width`` instead of 64 channels in the first stage: about 1/(64/width)^2 of the
    compute, for tests whose point is the mechanism rather than the network's size."""
    import torchvision
    from torchvision.models.resnet import BasicBlock

    model = torchvision.models.ResNet(BasicBlock, [2, 2, 2, 2], num_classes=num_classes)
    widths = [width, 2 * width, 4 * width, 8 * width]
    model.inplanes = width
    model.conv1 = nn.Conv2d(3, width, 7, stride=2, padding=3, bias=False)
    model.bn1 = nn.BatchNorm2d(width)
    model.layer1 = model._make_layer(BasicBlock, widths[0], 2)
    model.layer2 = model._make_layer(BasicBlock, widths[1], 2, stride=2)
    model.layer3 = model._make_layer(BasicBlock, widths[2], 2, stride=2)
    model.layer4 = model._make_layer(BasicBlock, widths[3], 2, stride=2)
    model.fc = nn.Linear(widths[3], num_classes)
    for m in model.modules():  # torchvision's initialisation
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.constant_(m.weight, 1)
            nn.init.constant_(m.bias, 0)
    return model
