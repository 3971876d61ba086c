"""The wrapped net acts as the user's model whatever the user does to the model's modules (issue 33):
BatchNorm modes and statistics (``bn.eval()``, ``model.eval()``, ``momentum=None``), hooks added and
removed, parameters the user froze, any output structure; and, with a unit dropped, as the model with
that block replaced by an identity.

The property test draws, per seed, what a user does to the model and does the same to an untouched copy
(the reference), then compares outputs, gradients-driven parameter updates and every buffer after a
training step. Models are small (narrow ResNet-18, timm's test models) so the fast tier stays cheap.
"""

from __future__ import annotations

import collections
import copy
import random
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fxdrop
from fxdrop.probe import Probe, recalibrate_batchnorm

from .helpers import flat_tensors, loss_of
from .models import narrow_resnet18

BN = nn.modules.batchnorm._BatchNorm


def _timm(name: str):
    timm = pytest.importorskip("timm")

    def build() -> nn.Module:
        return timm.create_model(name, num_classes=10)

    return build


def _torchvision(name: str, **kwargs):
    def build() -> nn.Module:
        import torchvision

        return torchvision.models.get_model(name, weights=None, num_classes=10, **kwargs)

    return build


# (builder, input size); the first two are the fast tier, the rest slow
MODELS = {
    "narrow_resnet18": (narrow_resnet18, 32),
    "timm_test_efficientnet": (_timm("test_efficientnet"), 32),  # BatchNormAct2d: a BatchNorm subclass
    "mobilenetv3_small_050": (_timm("mobilenetv3_small_050"), 32),  # the model
    "cs3darknet_focus_s": (_timm("cs3darknet_focus_s"), 32),
    "mobilenet_v3_small": (_torchvision("mobilenet_v3_small", width_mult=0.25), 32),
    "resnet18": (_torchvision("resnet18"), 32),
}
FAST = {"narrow_resnet18", "timm_test_efficientnet"}
CASES = [pytest.param(name, seed, marks=() if name in FAST and seed < 2 else pytest.mark.slow)
         for name in MODELS for seed in range(3)]


def _same(a, b, what: str) -> None:
    fa, fb = flat_tensors(a), flat_tensors(b)
    assert len(fa) == len(fb) and fa, f"{what}: output structures differ"
    for x, y in zip(fa, fb):
        torch.testing.assert_close(x, y, rtol=1e-4, atol=1e-5, msg=what)


def _same_state(model: nn.Module, ref: nn.Module, skip: str | None = None) -> None:
    theirs = ref.state_dict()
    for k, v in model.state_dict().items():
        if skip is not None and (k.startswith(skip + ".")):
            continue
        torch.testing.assert_close(v, theirs[k], rtol=1e-4, atol=1e-5, msg=k)


def _user_does_things(rng: random.Random, model: nn.Module, ref: nn.Module) -> None:
    """What a fine-tuning user does to their modules, done to ``model`` and ``ref`` alike (by name)."""
    mods, refs = dict(model.named_modules()), dict(ref.named_modules())
    names = [n for n in mods if n and n in refs]  # not inside a block the reference replaced
    bns = [n for n in names if isinstance(mods[n], BN)]
    for n in rng.sample(bns, k=max(1, len(bns) // 4)):  # "freeze BatchNorm"
        mods[n].eval()
        refs[n].eval()
    for n in rng.sample(bns, k=max(1, len(bns) // 4)):  # cumulative averaging
        mods[n].momentum = None
        refs[n].momentum = None
    for n in rng.sample(names, k=max(1, len(names) // 10)):  # modes flipped anywhere
        mode = rng.random() < 0.5
        mods[n].train(mode)
        refs[n].train(mode)


def _hook(tag: str, log: list, scale: float | None = None):
    def fn(module, args, out):
        log.append(tag)
        return out * scale if scale is not None and isinstance(out, torch.Tensor) else None

    return fn


def _step(module: nn.Module, x: torch.Tensor) -> None:
    opt = torch.optim.SGD([p for p in module.parameters() if p.requires_grad], lr=0.05)
    torch.manual_seed(3)
    loss_of(module(x)).backward()
    opt.step()


def _identity(ref: nn.Module, path: str) -> None:
    parent, _, child = path.rpartition(".")
    setattr(ref.get_submodule(parent) if parent else ref, child, nn.Identity())


@pytest.mark.parametrize("name,seed", CASES)
@pytest.mark.parametrize("dropped", [False, True], ids=["whole", "dropped"])
def test_net_acts_as_the_model(name, seed, dropped):
    build, size = MODELS[name]
    rng = random.Random(seed)
    torch.manual_seed(seed)
    model = build().train()
    x = torch.randn(4, 3, size, size)
    # before wrap: a frozen parameter, an output-changing hook on a block (kept whole by wrap) and a
    # feature hook on a leaf
    frozen = rng.choice([n for n, _ in model.named_parameters()])
    model.get_parameter(frozen).requires_grad_(False)
    blocks = [n for n, m in model.named_modules() if n.count(".") == 1 and any(True for _ in m.children())]
    hooked_block = rng.choice(blocks)
    ref = copy.deepcopy(model)
    log_m: list = []
    log_r: list = []
    h_block_m = model.get_submodule(hooked_block).register_forward_hook(_hook("block", log_m, 1.5))
    h_block_r = ref.get_submodule(hooked_block).register_forward_hook(_hook("block", log_r, 1.5))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "kept whole because of hooks"
        net = fxdrop.wrap(model, example_inputs=(x,))
    assert hooked_block in net.auto_leaves or hooked_block in net._traced.hooked
    # units that are a whole module (a residual block, a squeeze-excitation): dropping one is replacing
    # that module by an identity
    units = [u for u in net.units if u.kind in ("residual", "module") and u.name in dict(model.named_modules())]
    skip = None
    if dropped:
        if not units:
            pytest.skip(f"{name}: no residual unit that is a whole module")
        unit = rng.choice(units)
        net.drop(unit.name)
        _identity(ref, unit.name)
        skip = unit.name
    live = [u.name for u in net.units if not u.dropped]
    net.freeze(*live)
    net.unfreeze(*live)
    assert not model.get_parameter(frozen).requires_grad, "unfreeze undid the user's own freeze"

    # after wrap: modes, momentum, BN freezing; hooks added on leaves, the block's hook removed on both
    _user_does_things(rng, model, ref)
    leaves = sorted({str(n.target) for n in net.graph_module.graph.nodes if n.op == "call_module"})
    leaves = [n for n in leaves if skip is None or not n.startswith(skip + ".")]
    leaf = rng.choice(leaves)
    h_m = model.get_submodule(leaf).register_forward_hook(_hook("leaf", log_m, 0.5))
    h_r = ref.get_submodule(leaf).register_forward_hook(_hook("leaf", log_r, 0.5))
    root_m = model.register_forward_hook(_hook("root", log_m))
    root_r = ref.register_forward_hook(_hook("root", log_r))

    # a training step under both, then both in eval mode through the model (not the net)
    log_m.clear()  # wrap ran the model and its graph once each on the example inputs: hooks fired then
    log_r.clear()
    torch.manual_seed(1)
    out_n = net(x)
    torch.manual_seed(1)
    out_r = ref(x)
    _same(out_n, out_r, "train-mode output")
    assert log_m == log_r
    _step(net, x)
    _step(ref, x)
    _same_state(model, ref, skip)
    h_m.remove()
    h_r.remove()
    root_m.remove()
    root_r.remove()
    h_block_m.remove()  # removed after wrap: the module stays whole, without its hook now
    h_block_r.remove()
    model.eval()
    ref.eval()
    assert not net.training
    with torch.no_grad():
        _same(net(x), ref(x), "eval output after a step")
    _same_state(model, ref, skip)


def test_hook_added_after_wrap_on_a_traced_through_module_is_refused_by_name():
    model = narrow_resnet18()
    net = fxdrop.wrap(model, example_inputs=(torch.randn(2, 3, 32, 32),))
    h = model.layer4.register_forward_hook(lambda m, i, o: None)
    with pytest.raises(fxdrop.TraceError, match=r"layer4 \(Sequential\).*after fxdrop.wrap.*leaf_modules=\['layer4'\]"):
        net(torch.randn(2, 3, 32, 32))
    h.remove()
    net(torch.randn(2, 3, 32, 32))  # removed: fine again


def test_hooks_on_the_dropnet_itself_work_as_on_any_module():
    net = fxdrop.wrap(narrow_resnet18(), example_inputs=(torch.randn(2, 3, 32, 32),))
    seen = []
    net.register_forward_pre_hook(lambda m, args: seen.append("pre"))
    net.register_forward_hook(lambda m, args, out: out * 0)
    assert torch.equal(net(torch.randn(2, 3, 32, 32)), torch.zeros(2, 10)) and seen == ["pre"]


def test_one_training_flag_model_eval_runs_the_eval_graph():
    model = narrow_resnet18().train()
    net = fxdrop.wrap(model, example_inputs=(torch.randn(2, 3, 32, 32),))
    model.eval()
    assert not net.training and net.graph_module is net._current["eval"]
    net.train()
    assert model.training and all(m.training for m in model.modules())


def test_recalibration_keeps_frozen_batchnorm_and_counts_what_changed():
    torch.manual_seed(0)
    model = narrow_resnet18().train()
    model.bn1.eval()  # the user froze the stem's BatchNorm
    with torch.no_grad():
        model.bn1.running_mean.fill_(0.3)
    net = fxdrop.wrap(model, example_inputs=(torch.randn(2, 3, 32, 32),))
    net.drop("layer1.0")
    ref = copy.deepcopy(model)
    ref.layer1[0] = nn.Identity()
    probe = Probe(batches=2, samples=8)
    xs = [torch.randn(8, 3, 32, 32) + i for i in range(2)]
    for i, x in enumerate(xs):
        probe.offer(i + 1, (x,), {})
    stem = model.bn1.running_mean.clone()
    dropped = model.layer1[0].bn1.running_mean.clone()
    n = recalibrate_batchnorm(model, net.graph_module, probe)
    live = [m for m in ref.modules() if isinstance(m, BN) and m.training]
    assert n == len(live)  # every BN but the frozen stem and the dropped block's two
    assert torch.equal(model.bn1.running_mean, stem) and torch.equal(model.layer1[0].bn1.running_mean, dropped)
    with torch.no_grad():  # the reference: each live BN re-estimated as the plain average, stem in eval mode
        for m in live:
            m.reset_running_stats()
            m.momentum = None
        for x in xs:
            ref(x)
    theirs = ref.state_dict()
    for k, v in model.state_dict().items():  # num_batches_tracked is put back: re-estimation is no training
        if k.startswith("layer1.0.") or not k.endswith(("running_mean", "running_var")):
            continue
        torch.testing.assert_close(v, theirs[k], msg=k)


def test_freeze_keeps_the_users_requires_grad_through_a_drop_state():
    model = narrow_resnet18()
    net = fxdrop.wrap(model, example_inputs=(torch.randn(2, 3, 32, 32),))
    model.layer2[1].conv1.weight.requires_grad_(False)
    net.freeze("layer2.1")
    state = net.drop_state_dict()
    net.load_drop_state_dict(state)
    net.unfreeze("layer2.1")
    assert not model.layer2[1].conv1.weight.requires_grad and model.layer2[1].conv2.weight.requires_grad


class _Heads(nn.Module):
    """Residual blocks and an output of every structure: a dict holding a list and a named tuple."""

    Out = collections.namedtuple("Out", ["logits", "aux"])

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.blocks = nn.Sequential(*[nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8))
                                      for _ in range(2)])
        self.head = nn.Linear(8, 4)

    def forward(self, x):
        x = self.stem(x)
        feats = []
        for b in self.blocks:
            x = x + b(x)
            feats.append(x)
        pooled = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return {"out": self.Out(self.head(pooled), pooled), "features": feats}


def test_any_output_structure_wraps_verifies_and_drops():
    torch.manual_seed(0)
    model = _Heads().eval()
    x = torch.randn(2, 3, 8, 8)
    net = fxdrop.wrap(model, example_inputs=(x,))  # verify=True by default
    out = net(x)
    assert isinstance(out["out"], _Heads.Out) and isinstance(out["features"], list)
    _same(out, model(x), "eval output")
    assert len(net.units) == 2, net.units
    net.drop(net.units[0].name)
    ref = copy.deepcopy(model)
    ref.blocks[0] = _Zero()
    _same(net(x), ref(x), "dropped")


class _Zero(nn.Module):
    def forward(self, x):
        return torch.zeros_like(x)


def test_plan_carries_fades_like_export_and_the_drop_state():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 32, 32)
    model = narrow_resnet18().eval()
    net = fxdrop.wrap(model, example_inputs=(x,))
    net.drop("layer1.0")
    net.fade("layer2.1", 0.3)
    with torch.no_grad():
        a = net.export()(x)
        b = fxdrop.apply_plan(copy.deepcopy(model), net.plan(), (x,))(x)
        other = fxdrop.wrap(copy.deepcopy(model), example_inputs=(x,))
        other.load_drop_state_dict(net.drop_state_dict())
        other.eval()
        c = other(x)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    torch.testing.assert_close(a, c, rtol=0, atol=0)


def test_norms_with_running_statistics_of_their_own_read_their_state_when_called():
    """timm's EvoNorm is no BatchNorm subclass but keeps a ``running_var`` and reads ``self.training``:
    kept whole, so freezing it (``.eval()``) works and it is never the anchor of a unit."""
    layers = pytest.importorskip("timm.layers")

    class Block(nn.Module):
        def __init__(self, c: int):
            super().__init__()
            self.conv = nn.Conv2d(c, c, 3, padding=1)
            self.norm = layers.EvoNorm2dB0(c)

        def forward(self, x):
            return x + self.norm(self.conv(x))

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), layers.EvoNorm2dB0(8), Block(8), Block(8),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3))
    x = torch.randn(4, 3, 8, 8)
    net = fxdrop.wrap(model, example_inputs=(x,))
    assert [u.name for u in net.units] == ["2", "3"]
    ref = copy.deepcopy(model)
    model.train()
    ref.train()
    model[2].norm.eval()
    ref[2].norm.eval()
    _same(net(x), ref(x), "train output with one norm frozen")
    _same_state(model, ref)


class _MyDropout(nn.Module):
    """Reads ``self.training`` in code the tracer goes through: each mode's graph holds its own value."""

    def forward(self, x):
        return F.dropout(x, 0.5, self.training)


def test_a_traced_through_module_in_another_mode_than_the_model_is_refused_by_name():
    model = nn.Sequential(nn.Linear(4, 4), _MyDropout(), nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 4), nn.Linear(4, 2))
    net = fxdrop.wrap(model, example_inputs=(torch.randn(3, 4),))
    assert not net._traced.same_graph
    net(torch.randn(3, 4))
    model[1].eval()  # the model itself still trains
    with pytest.raises(fxdrop.TraceError, match=r"^1 \(_MyDropout\) is in eval mode while Sequential is in train mode.*"
                                                r"leaf_modules=\['1'\]"):
        net(torch.randn(3, 4))
    model.eval()  # everything in one mode again: the eval graph, as the model would run
    torch.testing.assert_close(net(torch.randn(3, 4, generator=torch.Generator().manual_seed(0))),
                               model(torch.randn(3, 4, generator=torch.Generator().manual_seed(0))))
    leafy = fxdrop.wrap(model, example_inputs=(torch.randn(3, 4),), leaf_modules=["1"])  # the way out
    model.train()
    model[1].eval()
    x = torch.randn(3, 4)
    torch.testing.assert_close(leafy(x), model(x))
