"""Node for node: a dropped graph runs the ops of the network built without those units (fxdrop.fold)."""

from __future__ import annotations

import collections

import pytest
import torch
import torch.fx as fx
import torch.nn.functional as F
import torchvision
from torch import nn
from torchvision.models.resnet import Bottleneck, ResNet

import fxdrop
from fxdrop.fold import fold_redundant


def op_counts(gm: fx.GraphModule) -> collections.Counter:
    """How often the graph calls each module type and each function or method."""
    modules = dict(gm.named_modules())
    return collections.Counter(
        ("module", type(modules[n.target])) if n.op == "call_module" else (n.op, n.target)
        for n in gm.graph.nodes if n.op.startswith("call_"))


@pytest.mark.parametrize("name", [pytest.param("resnet50", marks=pytest.mark.slow), pytest.param("resnet152", marks=pytest.mark.slow)])
def test_drop_all_is_the_thin_network_node_for_node(name):
    torch.manual_seed(0)
    model = torchvision.models.get_model(name, num_classes=10)
    x = torch.randn(1, 3, 32, 32)
    net = fxdrop.wrap(model, example_inputs=(x,))
    net.drop(*[u.name for u in net.units])
    thin = fx.symbolic_trace(ResNet(Bottleneck, [1, 1, 1, 1], num_classes=10))
    for mode in ("train", "eval"):
        net.train(mode == "train")
        assert op_counts(net.graph_module) == op_counts(thin), mode
    # the same computation as the thin network holding the kept blocks' weights
    keep = {k: v for k, v in model.state_dict().items()
            if not any(k.startswith(f"layer{i}.{j}.") for i in range(1, 5) for j in range(1, 36))}
    thin.load_state_dict(keep)
    net.eval(), thin.eval()
    with torch.no_grad():
        torch.testing.assert_close(net(x), thin(x), rtol=0, atol=0)


class Chain(nn.Module):
    """``outer(inner(conv(x)))`` plus a second reader of the inner value."""

    def __init__(self, inner, outer):
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 1)
        self.inner, self.outer = inner, outer

    def forward(self, x):
        y = self.inner(self.conv(x))
        return self.outer(y) * 2 + y


RELUS = [nn.ReLU(), nn.ReLU(inplace=True), F.relu, torch.relu, lambda t: t.relu()]


@pytest.mark.parametrize("inner, outer, folds", [
    *[(i, o, True) for i in RELUS[:3] for o in (nn.ReLU(), torch.relu, lambda t: t.relu())],
    (nn.ReLU6(), nn.ReLU(), True), (nn.ReLU6(), nn.ReLU6(), True), (nn.Hardtanh(0.5, 2.0), F.relu6, True),
    (nn.ReLU(), nn.ReLU6(), False), (nn.ReLU(), nn.Hardtanh(), False), (nn.Hardtanh(), nn.ReLU(), False),
    (nn.Identity(), nn.ReLU(), True), (nn.ReLU(), nn.Identity(), True), (nn.SiLU(), nn.SiLU(), False),
])
def test_fold_is_exact_in_values_and_gradients(inner, outer, folds):
    torch.manual_seed(0)
    model = Chain(inner, outer)
    gm = fx.symbolic_trace(model)
    result = fold_redundant(gm)
    assert result.modified == folds and (len(result.folded) == 1) == folds
    assert result.graph_module is not gm or not folds  # pure by default
    x = torch.randn(3, 2, 4, 4) * 4
    x[0, 0, 0, :2] = torch.tensor([0.0, -0.0])
    outs, grads = [], []
    for f in (gm, result.graph_module):
        model.zero_grad()
        out = f(x)
        out.sum().backward()
        outs.append(out)
        grads.append([p.grad.clone() for p in model.parameters()])
    torch.testing.assert_close(outs[0], outs[1], rtol=0, atol=0)
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_fold_keeps_an_op_whose_input_is_mutated_after_it():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(2, 2, 1)

        def forward(self, x):
            y = torch.relu(self.conv(x))
            z = torch.relu(y)  # a copy: y is changed in place below
            y.add_(1.0)
            return z + y

    gm = fx.symbolic_trace(M())
    assert not fold_redundant(gm).modified
    # names outside the candidates and protected ones are never folded
    gm = fx.symbolic_trace(Chain(nn.ReLU(), nn.ReLU()))
    assert not fold_redundant(gm, candidates=["conv"]).modified
    assert not fold_redundant(gm, protect=["outer"]).modified
    assert fold_redundant(gm, candidates=["outer"], inplace=True).graph_module is gm
