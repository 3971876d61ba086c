"""Checks re-run only what a rewrite changed (fxdrop.reuse): the same costs as full runs, bit for bit, and a
full run wherever reusing the current graph's values would not be exact (randomness, mutation)."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

import fxdrop
from fxdrop.policies.checks import held_losses
from fxdrop.probe import Probe
from fxdrop.reuse import SharedPrefix, changed_nodes

from .models import narrow_resnet18


def _probe(x, labels=True, batches=2):
    p = Probe(batches, x.shape[0])
    for step in range(1, batches + 1):
        p.offer(step, (x * step,), {})
        if labels:
            p.offer_targets(step, torch.arange(x.shape[0]) % 10)
    return p


def _opaque(g):
    """The same graph, hidden from the reuse (a plain callable): held_losses runs it in full."""
    return lambda *a, **k: g(*a, **k)


def _costs(res):
    return [res.now, *res.candidates, res.rows, res.labelled]


def test_reused_costs_equal_full_runs_on_a_resnet():
    torch.manual_seed(0)
    model = narrow_resnet18(width=16)
    x = torch.randn(16, 3, 32, 32)
    net = fxdrop.wrap(model, example_inputs=(x[:2],), projections=True).train()
    net.drop("layer2.1")
    live = [u.name for u in net.units if not u.dropped]
    cands = [net.candidate_graph([n]) for n in live] + [net.candidate_graph(live[-3:]), net.candidate_graph([])]
    probe = _probe(x)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    reused_costs = held_losses(model, net.graph_module, cands, probe)
    full = held_losses(model, _opaque(net.graph_module), [_opaque(g) for g in cands], probe)
    assert _costs(reused_costs) == _costs(full)  # exact: the same ops on the same values
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # buffers restored
    shared = SharedPrefix(net.graph_module, cands)
    # each single-unit candidate's suffix reads one value: its unit's entry (a projection unit's: the
    # downsample's output); the unchanged candidate runs nothing
    assert [s.frontier for s in shared.suffixes] == [
        ["maxpool"], ["layer1_0_relu_1"], ["layer2_0_downsample_1"], ["layer3_0_downsample_1"],
        ["layer3_0_relu_1"], ["layer4_0_downsample_1"], ["layer4_0_relu_1"], ["layer3_0_relu_1"], []]
    with torch.no_grad():
        _, outs, reused = shared.run((x,), {}, lambda: torch.manual_seed(0))
    assert reused == [True] * len(cands)
    # what a suffix runs, by hand: the current graph's nodes after the frontier value, less the bypassed
    # unit's own; shares of the current graph's FLOPs, counted by held_losses for what it ran
    order = [n.name for n in net.graph_module.graph.nodes]
    flops = {n.name: n.meta["fxdrop_flops"] for n in net.graph_module.graph.nodes}
    whole = sum(flops.values())
    for name, share, front in zip(live, shared.shares, shared.suffixes):
        after = order[order.index(front.frontier[0]) + 1:]
        own = set(net.unit(name).sites["train"].nodes)
        assert share == pytest.approx(sum(flops[n] for n in after if n not in own) / whole), name
    assert shared.shares[-1] == 0.0 and shared.full_shares[-1] == 1.0  # the unchanged candidate runs nothing
    assert shared.shares[:len(live)] == sorted(shared.shares[:len(live)], reverse=True)  # later units: less
    assert all(0 < s < f <= 1 for s, f in zip(shared.shares[:-1], shared.full_shares[:-1]))
    rows = probe.rows
    assert reused_costs.work == pytest.approx(rows * (1 + sum(shared.shares)))
    assert full.work == rows * (1 + len(cands))  # opaque callables count as full runs


def test_changed_nodes_are_the_ones_after_the_bypass():
    model = torchvision.models.resnet18(num_classes=10)
    net = fxdrop.wrap(model, example_inputs=(torch.randn(2, 3, 32, 32),))
    base, cand = net.graph_module, net.candidate_graph(["layer3.1"])
    changed = changed_nodes(base, cand)
    order = [n.name for n in cand.graph.nodes]
    first = min(order.index(n) for n in changed)
    # everything from the first changed node on is changed (ResNet is a chain of blocks), nothing before
    assert set(order[first:]) == changed
    assert order[first - 1] == "layer3_0_relu_1"  # the unit's entry: the last value the candidate shares
    assert changed_nodes(base, base) == set()
    # the same graph over another model's modules: every module call is another computation
    twin = fxdrop.wrap(torchvision.models.resnet18(num_classes=10), example_inputs=(torch.randn(2, 3, 32, 32),))
    assert "conv1" in changed_nodes(base, twin.graph_module)


class Noisy(nn.Module):
    """A dropout before the residual: the prefix draws random numbers."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.drop = nn.Dropout(0.5)
        self.branch = nn.Conv2d(8, 8, 3, padding=1)
        self.head = nn.Linear(8, 10)

    def forward(self, x):
        x = self.drop(self.stem(x))
        x = x + self.branch(x)
        return self.head(x.mean((2, 3)))


class Mutating(nn.Module):
    """The residual's input is changed in place after the residual reads it."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.branch = nn.Conv2d(8, 8, 3, padding=1)
        self.head = nn.Linear(8, 10)

    def forward(self, x):
        a = self.stem(x)
        y = a + self.branch(a)
        a.mul_(2)
        return self.head(y.mean((2, 3))) + a.mean()


def test_randomness_and_mutation_fall_back_to_full_runs():
    x = torch.randn(8, 3, 8, 8)
    for cls in (Noisy, Mutating):
        torch.manual_seed(0)
        model = cls()
        net = fxdrop.wrap(model, example_inputs=(x[:2],)).train()
        assert [u.name for u in net.units] == ["branch"] or len(net.units) == 1, cls
        cands = [net.candidate_graph([net.units[0].name])]
        probe = _probe(x, labels=False)
        reused = held_losses(model, net.graph_module, cands, probe)
        full = held_losses(model, _opaque(net.graph_module), [_opaque(g) for g in cands], probe)
        assert _costs(reused) == _costs(full), cls
        with torch.no_grad():
            shared = SharedPrefix(net.graph_module, cands)
            _, _, ran = shared.run((x,), {}, lambda: torch.manual_seed(0))
        assert not any(ran), f"{cls.__name__}: a suffix reused values it must not"
        # what ran is counted: the whole candidate, not its suffix
        assert reused.work == pytest.approx(probe.rows * (1 + sum(shared.full_shares))), cls
