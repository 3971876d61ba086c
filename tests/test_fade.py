"""Fading a unit out: ``DropNet.fade`` and the ``blend`` rewrite."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fxdrop
from fxdrop.errors import DropStateError, UnitError
from fxdrop.rewrite import blend
from fxdrop.units import UnitSite

from .models import narrow_resnet18


def _net(policy=None):
    torch.manual_seed(0)
    model = narrow_resnet18(width=16).eval()
    x = torch.randn(4, 3, 32, 32)
    return fxdrop.wrap(model, example_inputs=(x[:2],), policy=policy).eval(), x


def test_fade_weights_interpolate_between_unit_and_bypass():
    # a residual unit's output is skip + branch: weight alpha scales the branch, which is what a hook
    # scaling the block's last BatchNorm output does to the original model
    net, x = _net()
    with torch.no_grad():
        gone = net.candidate_graph(["layer4.1"], "eval")(x)
        for alpha in (0.0, 0.25, 0.5, 1.0):
            handle = net.model.layer4[1].bn2.register_forward_hook(lambda m, i, out: out * alpha)
            expected = net.model(x)
            handle.remove()
            net.fade("layer4.1", alpha)
            torch.testing.assert_close(net(x), expected, rtol=1e-5, atol=1e-5)
            if alpha == 0.0:
                torch.testing.assert_close(net(x), gone)
    assert net.fading == {}  # weight 1 removes the fade
    net.graph_module.graph.lint()


def test_fade_next_to_a_dropped_unit_and_drop_clears_fade():
    net, x = _net()
    net.drop("layer1.0")  # layer1.1's entry is layer1.0's exit, erased by the bypass
    net.fade("layer1.1", 0.0)
    with torch.no_grad():
        torch.testing.assert_close(net(x), net.candidate_graph(["layer1.0", "layer1.1"], "eval")(x))
    net.fade("layer1.1", 0.5)
    net.drop("layer1.1")
    assert net.fading == {} and net.dropped == ["layer1.0", "layer1.1"]


def test_candidate_graph_with_dropped_units_put_back():
    # the probation reference: the graph as it is, with some dropped units run again (the others stay
    # dropped, the fades stay), the wrapper itself unchanged
    net, x = _net()
    net.drop("layer1.0", "layer3.1")
    net.fade("layer2.1", 0.5)
    other, _ = _net()
    other.drop("layer3.1")
    other.fade("layer2.1", 0.5)
    with torch.no_grad():
        torch.testing.assert_close(net.candidate_graph([], "eval", restore=["layer1.0"])(x), other(x))
        assert not torch.allclose(net(x), other(x))
    assert net.dropped == ["layer1.0", "layer3.1"] and net.fading == {"layer2.1": 0.5}


def test_fading_unit_still_learns_and_state_dict_keys_unchanged():
    net, x = _net()
    keys = list(net.model.state_dict())
    net.fade("layer2.1", 0.5)
    net.train()
    F.cross_entropy(net(x), torch.arange(4)).backward()
    grad = net.model.layer2[1].conv1.weight.grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0
    assert list(net.model.state_dict()) == keys


class _InplaceFirst(nn.Module):
    """A net whose middle unit starts with an in-place op on its own input."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.mid = nn.Sequential(nn.ReLU(inplace=True), nn.Conv2d(8, 8, 3, padding=1))
        self.head = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        return self.head(self.mid(self.stem(x)))


def test_blend_of_a_region_that_overwrites_its_input_reads_a_copy():
    # the unit finder keeps in-place ops on a unit's input out of units; blend still guards against
    # a site that has one (a hand-made site over ReLU(inplace=True) -> conv)
    torch.manual_seed(0)
    model = _InplaceFirst().eval()
    x = torch.randn(2, 3, 8, 8)
    gm = torch.fx.symbolic_trace(model)
    site = UnitSite(entry="stem", exit="mid_1", nodes=("mid_0", "mid_1"))
    result = blend(gm, [site], [0.25])
    result.graph_module.graph.lint()
    assert any(n.target == "clone" for n in result.graph_module.graph.nodes)
    with torch.no_grad():
        s = model.stem(x)
        expected = model.head(torch.lerp(s.clone(), model.mid(s.clone()), 0.25))
        torch.testing.assert_close(result.graph_module(x), expected)
    with pytest.raises(ValueError, match="1 sites but 2 weights"):
        blend(gm, [site], [0.25, 0.5])


def test_fade_bad_input_and_resume():
    net, x = _net()
    with pytest.raises(ValueError, match="number in \\[0, 1\\]"):
        net.fade("layer2.1", 1.5)
    with pytest.raises(UnitError, match="did you mean"):
        net.fade("layer2.2", 0.5)
    net.drop("layer3.1")
    with pytest.raises(UnitError, match="restore it before fading"):
        net.fade("layer3.1", 0.5)
    net.fade("layer2.1", 0.5)
    state = net.drop_state_dict()
    other, _ = _net()
    other.load_drop_state_dict(state)
    assert other.fading == {"layer2.1": 0.5} and other.dropped == ["layer3.1"]
    with torch.no_grad():
        torch.testing.assert_close(other(x), net(x))
    state["fading"] = {"layer9.9": 0.5}
    with pytest.raises(DropStateError, match="layer9.9"):
        other.load_drop_state_dict(state)
    assert other.fading == {"layer2.1": 0.5}  # refused: nothing changed
