"""fxdrop.wrap on hand-written and torchvision models: units, drops, in-place safety, optimizers."""

from __future__ import annotations

import copy

import pytest
import torch
import torchvision
import torch.nn.functional as F
from torch import nn

import fxdrop

from .helpers import assert_outputs_close, loss_of
from .models import Awkward, Block, LenOfProxy, MLPChain, UntraceableRoot


def _wrap(model, *shape):
    x = torch.randn(*shape)
    return fxdrop.wrap(model, example_inputs=(x,)), x


@pytest.mark.parametrize(
    "name,count",
    [("resnet18", 5), ("resnet50", 12), pytest.param("resnet152", 46, marks=pytest.mark.slow),
     pytest.param("vgg16", 10, marks=pytest.mark.slow)],  # vgg11: test_vgg_chain_units_are_the_shape_preserving_layers
)
def test_unit_counts(name, count):
    net, _ = _wrap(torchvision.models.get_model(name, weights=None, num_classes=10), 1, 3, 32, 32)
    assert len(net.units) == count
    kinds = {u.kind for u in net.units}
    assert kinds == ({"residual"} if name.startswith("resnet") else {"chain"})


def test_resnet_unit_names_and_params():
    model = torchvision.models.resnet18(num_classes=10)
    net, _ = _wrap(model, 1, 3, 32, 32)
    assert [u.name for u in net.units] == ["layer1.0", "layer1.1", "layer2.1", "layer3.1", "layer4.1"]
    u = net.unit("layer2.1")
    assert u.params == tuple(k for k, _ in model.named_parameters() if k.startswith("layer2.1."))
    assert u.flops > 0 and not u.dropped
    assert sum(x.flops for x in net.units) < net.full_flops()


def test_vgg_chain_units_are_the_shape_preserving_layers():
    net, _ = _wrap(torchvision.models.vgg11(num_classes=10), 1, 3, 32, 32)
    assert [u.name for u in net.units] == ["features.8", "features.13", "features.16", "features.18", "classifier.3"]
    assert {u.kind for u in net.units} == {"chain"}
    # conv + its ReLU (parameters of the conv only); the classifier unit is Linear+ReLU+Dropout
    assert net.unit("features.8").params == ("features.8.weight", "features.8.bias")


@pytest.mark.slow
def test_resnet152_drop_all_removes_most_flops():
    net, _ = _wrap(torchvision.models.resnet152(), 1, 3, 224, 224)
    full = net.flops()
    net.drop(*[u.name for u in net.units if u.kind == "residual"])
    assert 1 - net.flops() / full >= 0.85


def test_awkward_model_wrapped_and_correct():
    torch.manual_seed(0)
    model = Awkward()
    x = torch.randn(2, 3, 8, 8)
    model.eval()
    with torch.no_grad():
        ref = model(x)
    net = fxdrop.wrap(model, example_inputs=(x,))
    assert net.auto_leaves == ["odd"]
    names = [u.name for u in net.units]
    # both Blocks and the functional residual; the shared conv is used twice, so it is no unit
    assert "block1" in names and "block2" in names
    assert any(u.params == ("w",) for u in net.units)
    assert not any("shared" in p for u in net.units for p in u.params)
    net.eval()
    with torch.no_grad():
        assert_outputs_close(net(x), ref)
    # every subset can be dropped, trained through and restored
    net.train()
    for drop in ([names[0]], names[1:], names):
        net.drop(*drop)
        loss_of(net(x)).backward()
        net.restore_all()
    net.eval()
    with torch.no_grad():
        assert_outputs_close(net(x), model(x))


def test_inplace_op_with_unused_result_is_kept():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.block = Block(4)

        def forward(self, x):
            y = self.block(x)
            y.add_(1.0)  # result unused: dead-code elimination would wrongly delete it
            return y

    model = M().eval()
    x = torch.randn(1, 4, 5, 5)
    net = fxdrop.wrap(model, example_inputs=(x,)).eval()
    net.drop("block")
    with torch.no_grad():
        assert_outputs_close(net(x), torch.relu(x) + 1.0)


def test_inplace_relu_after_bypass_trains():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(inplace=True), Block(4), Block(4))
    net, x = _wrap(model, 2, 3, 6, 6)
    net.train()
    net.drop("2", "3")
    loss_of(net(x)).backward()  # would raise "modified by an inplace operation" without the fix
    # the in-place ReLUs of the dropped blocks' consumers were made out-of-place, not the modules; each then
    # read the stem's ReLU output and was folded away (fxdrop.fold): the graph is the stem alone
    assert model[2].relu.inplace and model[3].relu.inplace
    assert "torch.relu(" not in net.graph_module.code
    assert [n.target for n in net.graph_module.graph.nodes if n.op == "call_module"] == ["0", "1"]
    # without a ReLU before them, the first dropped block's ReLU stays, out of place; the second is folded
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), Block(4), Block(4))
    net, x = _wrap(model, 2, 3, 6, 6)
    net.train()
    net.drop("1", "2")
    loss_of(net(x)).backward()
    assert model[1].relu.inplace and net.graph_module.code.count("torch.relu(") == 1


def test_chain_units_in_mlp_and_head_is_not_a_unit():
    net, x = _wrap(MLPChain(), 4, 10)
    assert [u.name for u in net.units] == ["hidden.0", "hidden.2"]
    net.drop("hidden.0")
    out = net(x)
    assert out.shape == (4, 3)


def test_unknown_unit_name_error_suggests():
    net, _ = _wrap(torchvision.models.resnet18(num_classes=10), 1, 3, 32, 32)
    with pytest.raises(fxdrop.UnitError, match=r"no unit named 'layer2\.2'.*did you mean 'layer2\.1'"):
        net.drop("layer2.2")
    with pytest.raises(fxdrop.UnitError):
        net.drop("layer1.0", "nope")  # nothing changes when one name is bad
    assert net.dropped == []


def test_drop_twice_and_restore_live_warn():
    net, _ = _wrap(torchvision.models.resnet18(num_classes=10), 1, 3, 32, 32)
    assert net.drop("layer1.0") == ["layer1.0"]
    with pytest.warns(UserWarning, match="already dropped"):
        assert net.drop("layer1.0") == []
    with pytest.warns(UserWarning, match="not dropped"):
        assert net.restore("layer1.1") == []
    assert net.restore("layer1.0") == ["layer1.0"]


def test_untraceable_root_raises_trace_error():
    with pytest.raises(fxdrop.TraceError, match="root module UntraceableRoot.*concrete_args"):
        fxdrop.wrap(UntraceableRoot())


def test_len_of_proxy_becomes_leaf():
    model = nn.Sequential(nn.Conv2d(3, 4, 1), LenOfProxy(4), Block(4))
    net, x = _wrap(model, 2, 3, 4, 4)
    assert net.auto_leaves == ["1"]
    assert [u.name for u in net.units] == ["1", "2"]  # the awkward leaf is a shape-preserving chain


def test_lazy_initialisation_at_first_call():
    net = fxdrop.wrap(torchvision.models.resnet18(num_classes=10))
    with pytest.raises(fxdrop.NotInitializedError, match="example_inputs"):
        net.units
    net(torch.randn(2, 3, 32, 32))
    assert len(net.units) == 5


def test_bad_example_inputs_are_reported():
    with pytest.raises(TypeError, match="tuple"):
        fxdrop.wrap(torchvision.models.resnet18(), example_inputs=torch.randn(1, 3, 32, 32))
    with pytest.raises(fxdrop.TraceError, match="example inputs"):
        fxdrop.wrap(torchvision.models.resnet18(), example_inputs=(torch.randn(1, 5, 32, 32),))


def test_no_units_warns():
    with pytest.warns(UserWarning, match="no droppable unit"):
        net = fxdrop.wrap(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)), example_inputs=(torch.randn(1, 4),))
    assert net.units == []


def test_wrap_leaves_user_model_untouched():
    model = torchvision.models.resnet18(num_classes=10)
    model.train()
    before = copy.deepcopy(model.state_dict())
    flags = [m.training for m in model.modules()]
    net, x = _wrap(model, 2, 3, 32, 32)
    net.drop(*[u.name for u in net.units])
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BN stats untouched by shape propagation
    assert [m.training for m in model.modules()] == flags
    assert model.layer1[0].relu.inplace


def test_state_dict_keys_and_round_trip():
    model = torchvision.models.resnet18(num_classes=10)
    net, x = _wrap(model, 2, 3, 32, 32)
    assert list(net.state_dict().keys()) == list(model.state_dict().keys())
    assert [n for n, _ in net.named_parameters()] == [n for n, _ in model.named_parameters()]
    net.drop("layer1.0")
    assert list(net.state_dict().keys()) == list(model.state_dict().keys())
    other = torchvision.models.resnet18(num_classes=10)
    net.load_state_dict(other.state_dict())  # a plain model's checkpoint loads into the wrapper
    assert torch.equal(model.conv1.weight, other.conv1.weight)
    fresh = torchvision.models.resnet18(num_classes=10)
    fresh.load_state_dict(net.state_dict())  # and the wrapper's into a plain model
    assert torch.equal(fresh.layer4[1].conv2.weight, model.layer4[1].conv2.weight)


@pytest.mark.parametrize("opt", ["sgd", "adam"])
def test_optimizer_step_after_drop(opt):
    model = torchvision.models.resnet18(num_classes=10)
    net, x = _wrap(model, 4, 3, 32, 32)
    params = list(net.parameters())
    o = (torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=1e-4) if opt == "sgd"
         else torch.optim.AdamW(params, lr=1e-2))
    net.train()
    y = torch.randint(0, 10, (4,))
    for _ in range(2):  # momentum/Adam state exists for every parameter before the drop
        o.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        o.step()
    net.drop("layer2.1", "layer3.1")
    dropped = set(net.unit("layer2.1").params + net.unit("layer3.1").params)
    snap = {k: p.detach().clone() for k, p in net.named_parameters()}
    o.zero_grad()
    nn.functional.cross_entropy(net(x), y).backward()
    o.step()
    for k, p in net.named_parameters():
        if k in dropped:
            assert torch.equal(p, snap[k]), f"dropped {k} changed"
    assert not torch.equal(dict(net.named_parameters())["layer1.0.conv1.weight"], snap["layer1.0.conv1.weight"])


def test_rewrite_is_pure_and_shares_parameters():
    model = torchvision.models.resnet18(num_classes=10)
    net, _ = _wrap(model, 1, 3, 32, 32)
    full = net.full_graph_module
    n_nodes = len(full.graph.nodes)
    res = fxdrop.bypass(full, [net.unit("layer1.1").sites["train"]])
    assert res.modified and "add_1" in res.removed
    assert len(full.graph.nodes) == n_nodes  # input untouched
    assert res.graph_module.get_submodule("layer2.1.conv1") is model.layer2[1].conv1
    assert fxdrop.bypass(full, []).modified is False


def test_to_dtype_after_drop_rebinds_graph():
    model = Awkward().eval()
    net, x = _wrap(model, 2, 3, 8, 8)
    net.drop(net.units[0].name)
    net.to(torch.float64).eval()
    with torch.no_grad():
        out = net(x.double())
    assert out.dtype == torch.float64


def test_deepcopy_of_wrapper_is_independent():
    net, x = _wrap(torchvision.models.resnet18(num_classes=10), 2, 3, 32, 32)
    net.drop("layer1.0")
    twin = copy.deepcopy(net)
    assert twin.dropped == ["layer1.0"]
    twin.eval(), net.eval()
    with torch.no_grad():
        assert_outputs_close(twin(x), net(x))
    with torch.no_grad():
        next(twin.parameters()).add_(1.0)
    assert not torch.equal(next(twin.parameters()), next(net.parameters()))


def test_compile_recompiles_only_on_graph_change():
    model = torchvision.models.resnet18(num_classes=10)
    x = torch.randn(2, 3, 32, 32)
    net = fxdrop.wrap(model, example_inputs=(x,), compile={"backend": "eager"})
    net.eval()
    with torch.no_grad():
        a = net(x)
        net(x)
    assert net.compile_count == 1
    net.drop("layer1.0")
    with torch.no_grad():
        net(x), net(x)
    assert net.compile_count == 2
    net.restore("layer1.0")
    with torch.no_grad():
        assert_outputs_close(net(x), a)
    assert net.compile_count == 2  # the full graph's compiled module is reused


def test_on_drop_listener():
    net, _ = _wrap(torchvision.models.resnet18(num_classes=10), 1, 3, 32, 32)
    events = []
    net.on_drop(lambda n, names, ev: events.append((ev, names)))
    net.drop("layer1.0")
    net.restore("layer1.0")
    assert events == [("drop", ["layer1.0"]), ("restore", ["layer1.0"])]


def test_summary_table():
    net, _ = _wrap(torchvision.models.resnet18(num_classes=10), 1, 3, 32, 32)
    net.drop("layer4.1")
    text = net.summary()
    assert "layer4.1" in text and "dropped" in text and "5 units, 1 dropped" in text


def test_unit_params_means_weights_everywhere():
    """``params`` in repr and summary is the number of weights, never the number of tensors."""
    net, _ = _wrap(torchvision.models.resnet18(num_classes=10), 1, 3, 32, 32)
    u = net.unit("layer1.0")
    weights = sum(p.numel() for p in net.parameters_of(u))
    assert u.n_params == weights == 2 * 64 * 64 * 9 + 4 * 64  # two 3x3 convs, two BatchNorms
    assert f"params={weights}," in repr(u)
    row = next(line for line in net.summary().splitlines() if line.startswith("layer1.0 "))
    assert str(weights) in row.split()


class _BranchyRoot(nn.Module):
    """A root forward with data-dependent control flow around a traceable backbone."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.backbone = nn.Sequential(Block(8), Block(8))
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        x = self.stem(x)
        if x.mean() > 10:  # data-dependent: the root cannot be traced
            x = x * 2
        return self.head(self.backbone(x).mean((2, 3)))


def test_untraceable_root_names_the_largest_traceable_child_and_the_way_forward():
    model = _BranchyRoot().eval()
    x = torch.randn(2, 3, 16, 16)
    with pytest.raises(fxdrop.TraceError, match=r"'backbone'.*model\.backbone = fxdrop\.wrap"):
        fxdrop.wrap(model, example_inputs=(x,))
    with torch.no_grad():
        ref = model(x)
    model.backbone = fxdrop.wrap(model.get_submodule("backbone"))  # the way the error points to
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref)
    assert [u.name for u in model.backbone.units] == ["0", "1"]
    model.backbone.drop("0")
    model.train()
    model(x).sum().backward()
    assert model.backbone.model[0].conv1.weight.grad is None


class _BNAct(nn.Module):
    """Like timm's BatchNormAct2d but not a BatchNorm subclass (those are kept whole): a module with its own
    forward, so it is traced through and the train graph holds ``training=True`` (and
    ``num_batches_tracked.add_(1)``) as constants."""

    def __init__(self, c: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(c))
        self.bias = nn.Parameter(torch.zeros(c))
        self.register_buffer("running_mean", torch.zeros(c))
        self.register_buffer("running_var", torch.ones(c))
        self.register_buffer("num_batches_tracked", torch.tensor(0))
        self.momentum, self.eps = 0.1, 1e-5

    def forward(self, x):
        if self.training:
            self.num_batches_tracked.add_(1)
        x = F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                         self.training, self.momentum, self.eps)
        return torch.relu(x)


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_wrap_never_changes_the_models_weights(mode):
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), _BNAct(8), nn.Conv2d(8, 8, 3, padding=1), _BNAct(8),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 2))
    with torch.no_grad():
        for bn in (model[1], model[3]):
            bn.running_mean.uniform_(-1, 1)
            bn.running_var.uniform_(0.5, 2)
    model.train(mode == "train")
    state = {k: v.clone() for k, v in model.state_dict().items()}
    modes = [m.training for m in model.modules()]
    net = fxdrop.wrap(model, example_inputs=(torch.randn(4, 3, 8, 8),))  # verify passes: nothing moved
    assert net._traced.same_graph  # kept whole (it holds running statistics): it reads its mode at call time
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), f"wrap changed {k}"
    assert modes == [m.training for m in model.modules()]
