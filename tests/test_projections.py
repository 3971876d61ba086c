"""``wrap(model, projections=True)``: the residual branch of a downsampling block is a unit too; dropping
it keeps the projection shortcut."""

from __future__ import annotations

import warnings

import pytest
import torch
import torchvision
from torch import nn

import fxdrop
from fxdrop.models import resnet20

from .helpers import assert_outputs_close, grads, loss_of
from .test_zoo import INPUT_SIZE, ZOO_PARAMS

# downsampling blocks per torchvision family (ResNet-18/34 have none in layer1); every other model gets
# no unit from projections=True (MobileNets and EfficientNets have no skip where they downsample):
# asserted over the whole zoo, so a model that gains or loses one fails here
def _added(name: str) -> int:
    if name in ("resnet18", "resnet34"):
        return 3
    if name.startswith(("resnet", "resnext", "wide_resnet", "regnet")) or name == "maxvit_t":
        return 4
    return 0


@pytest.mark.parametrize("name", ZOO_PARAMS)
def test_projection_units_in_the_zoo(name):
    torch.manual_seed(0)
    model = torchvision.models.get_model(name, weights=None).eval()
    size = INPUT_SIZE.get(name, 64)
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        ref = model(x)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the no-unit warning of DenseNets
        plain = {u.name for u in fxdrop.wrap(model, example_inputs=(x,)).units}
        net = fxdrop.wrap(model, example_inputs=(x,), projections=True)
    names = [u.name for u in net.units]
    added = [n for n in names if n not in plain]
    assert len(added) == _added(name), added
    # a unit it no longer has lay inside a downsampling block's branch, which is one unit now (RegNet's
    # squeeze-excitation, MaxViT's MBConv parts)
    for lost in plain - set(names):
        assert any(lost.startswith(a + ".") for a in added), lost
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())  # wrap changed no weight
    if not added:
        return
    net.eval()
    with torch.no_grad():
        assert_outputs_close(net(x), ref)
    # everything dropped: the network still trains, the projections learn, the dropped branches do not
    net.train()
    full = net.flops()
    assert net.drop(*names) == names and net.flops() < full
    loss_of(net(x)).backward()
    g = grads(model)
    gone = {p for u in net.units for p in u.params}
    for k, v in g.items():
        if k in gone:
            assert v is None, f"dropped parameter {k} got a gradient"
        elif v is not None:
            assert torch.isfinite(v).all(), k
    for u in added:  # the shortcut of a dropped downsampling block is all that is left of it: it learns
        shortcut = [k for k in g if k.startswith(u + ".") and k not in gone]
        assert shortcut and all(g[k] is not None for k in shortcut), u
    assert net.restore(*names) == names and net.flops() == full
    net.eval()
    with torch.no_grad():  # training updated BatchNorm statistics: compare with the model as it is now
        assert_outputs_close(net(x), model.eval()(x))


def test_dropped_downsampling_block_is_its_shortcut():
    torch.manual_seed(0)
    m = torchvision.models.resnet18(num_classes=10).eval()
    x = torch.randn(2, 3, 64, 64)
    net = fxdrop.wrap(m, example_inputs=(x,), projections=True).eval()
    u = net.unit("layer3.0")
    assert u.kind == "residual"
    assert u.params == tuple(k for k, _ in m.named_parameters() if k.startswith("layer3.0.") and ".downsample." not in k)
    net.drop("layer3.0")

    def by_hand(t):
        t = m.layer2(m.layer1(m.maxpool(m.relu(m.bn1(m.conv1(t))))))
        t = m.layer3[1](torch.relu(m.layer3[0].downsample(t)))
        return m.fc(torch.flatten(m.avgpool(m.layer4(t)), 1))

    with torch.no_grad():
        assert_outputs_close(net(x), by_hand(x))
    # its FLOPs are its branch's two 3x3 convs (FlopCounterMode: 2 per multiply-add; BatchNorm, ReLU and the
    # add count none) for the example's 2 rows: 64 px -> 32 (stem) -> 16 (pool) -> 16, 8, 4 out of layer1..3
    assert u.flops == 2 * 2 * (4 * 4 * 256 * 128 * 9 + 4 * 4 * 256 * 256 * 9)


def test_cifar_resnet_with_projections():
    torch.manual_seed(0)
    model = resnet20(num_classes=10).eval()
    x = torch.randn(2, 3, 32, 32)
    net = fxdrop.wrap(model, example_inputs=(x,), projections=True).eval()
    assert [u.name for u in net.units] == [f"layer{s}.{i}" for s in (1, 2, 3) for i in range(3)]
    net.drop("layer2.0", "layer3.0")
    with torch.no_grad():
        t = model.layer1(model.relu(model.bn1(model.conv1(x))))
        t = model.layer2[2](model.layer2[1](torch.relu(model.layer2[0].downsample(t))))
        t = model.layer3[2](model.layer3[1](torch.relu(model.layer3[0].downsample(t))))
        assert_outputs_close(net(x), model.fc(model.avgpool(t).flatten(1)))


class TwoPaths(nn.Module):
    """``conv_a(x) + conv_b(x)``: two equal paths merged, no shortcut among them."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.a = nn.Conv2d(8, 8, 3, padding=1)
        self.b = nn.Conv2d(8, 8, 3, padding=1)
        self.head = nn.Linear(8, 2)

    def forward(self, x):
        x = self.stem(x)
        return self.head((self.a(x) + self.b(x)).mean((2, 3)))


class TwoInputs(nn.Module):
    """``branch(x) + proj(y)``: the cheap side reads another input, not the branch's fork."""

    def __init__(self):
        super().__init__()
        self.branch = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1))
        self.proj = nn.Conv2d(3, 8, 1)

    def forward(self, x, y):
        return self.branch(x) + self.proj(y)


def test_merges_that_are_not_shortcuts_are_not_units():
    x = torch.randn(1, 3, 8, 8)
    for model, inputs in ((TwoPaths(), (x,)), (TwoInputs(), (x, x))):
        with pytest.warns(UserWarning, match="no droppable unit: no residual add whose skip is an identity or a proj"):
            net = fxdrop.wrap(model, example_inputs=inputs, projections=True)
        assert net.units == []


def test_projections_must_be_a_bool():
    with pytest.raises(TypeError, match="projections must be True or False"):
        fxdrop.wrap(torchvision.models.resnet18(), projections="yes")


def test_unreachable_target_speedup_warns_with_the_bound():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 32, 32)
    model = torchvision.models.resnet18(num_classes=10)
    plain = fxdrop.wrap(model, example_inputs=(x,))
    share = sum(u.flops for u in plain.units) / plain.full_flops("train")  # 64% at 32 px
    bound = 1 / (1 - share)
    with pytest.warns(UserWarning, match=rf"at most {bound:.2f}x .*projections=True"):
        pol = fxdrop.LearnAndDrop(target_speedup=3.0)
        fxdrop.wrap(model, example_inputs=(x,), policy=pol)
    assert pol.reachable_speedup() == pytest.approx(bound)
    # with the downsampling blocks' branches more than 2/3 of the FLOPs can go: 3x is within reach
    pol = fxdrop.LearnAndDrop(target_speedup=3.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fxdrop.wrap(model, example_inputs=(x,), policy=pol, projections=True)
    assert pol.reachable_speedup() > 3.0


def test_resume_names_the_unit_options_it_was_saved_with():
    x = torch.randn(2, 3, 32, 32)
    model = torchvision.models.resnet18(num_classes=10)
    net = fxdrop.wrap(model, example_inputs=(x,), projections=True)
    net.drop("layer2.0")
    state = net.drop_state_dict()
    other = fxdrop.wrap(model, example_inputs=(x,))
    with pytest.raises(fxdrop.DropStateError, match=r"found with projections=True: pass the same to fxdrop.wrap"):
        other.load_drop_state_dict(state)
    assert other.dropped == [] and other.flops() == other.full_flops()  # the refusal changed nothing
    again = fxdrop.wrap(model, example_inputs=(x,), projections=True)
    again.load_drop_state_dict(state)
    assert again.dropped == ["layer2.0"]
