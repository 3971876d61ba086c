"""Held batches: the ring, held-out batches, checks that leave no trace, BatchNorm recalibration."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

import fxdrop
from fxdrop.policies.checks import held_losses
from fxdrop.probe import Probe, preserved_state, recalibrate_batchnorm

from .models import narrow_resnet18

# The checks on the real torchvision ResNet-18 (no training) stay; the policy tests, whose point is the
# decision logic, train a ResNet-18 of 16 channels in its first stage (same units, ~1/13 of the FLOPs).


def _bn_net(seed=0):
    torch.manual_seed(seed)
    model = torchvision.models.resnet18(num_classes=10)
    return fxdrop.wrap(model, example_inputs=(torch.randn(2, 3, 32, 32),), policy=None)


def test_probe_keeps_a_ring_of_detached_slices_every_stride_steps():
    p = Probe(batches=2, samples=3, stride=2)
    x = torch.arange(10.0, requires_grad=True).view(5, 2)
    for step in range(1, 8):
        p.offer(step, (x * step,), {"flag": True})
    assert len(p) == 2  # steps 2, 4, 6 offered; the ring keeps 6 and 4
    (a6,), kw = p.held[0]  # slot 0 was overwritten by step 6
    (a4,), _ = p.held[1]
    assert a6.shape == (3, 2) and not a6.requires_grad and kw == {"flag": True}
    torch.testing.assert_close(a6, (x * 6)[:3].detach())
    torch.testing.assert_close(a4, (x * 4)[:3].detach())
    with pytest.raises(ValueError, match="batches"):
        Probe(batches=0)
    head = p.head(1)  # the cheaper screen: the first held batch, the same tensors
    assert len(head) == 1 and head.rows == 3 and head.held[0][0][0] is a6 and len(p) == 2
    half = p.half()  # half of the held batches, rounded up: 2 -> 1
    assert len(half) == 1 and half.held[0][0][0] is a6
    three = Probe(batches=3, samples=2)
    for step in range(3):
        three.offer(step, (torch.zeros(2, 1),), {})
    assert len(three.half()) == 2 and len(three.half().half()) == 1


def test_checks_leave_buffers_and_rng_untouched():
    net = _bn_net()
    net.train()
    p = Probe(batches=2, samples=8)
    for s in (1, 2):
        p.offer(s, (torch.randn(8, 3, 32, 32),), {})
    before = {k: v.clone() for k, v in net.state_dict().items()}
    rng = torch.get_rng_state()
    res = held_losses(net.model, net.graph_module, [net.candidate_graph(["layer4.1"]),
                                                    net.candidate_graph(["layer1.0", "layer1.1"])], p)
    assert res.rows == 16 and not res.labelled and all(math.isfinite(v) for v in res.candidates)
    assert torch.equal(rng, torch.get_rng_state())
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k]), k
    # the identity "candidate" costs nothing, and dropout masks are re-drawn identically
    same = held_losses(net.model, net.graph_module, [net.graph_module], p)
    assert same.candidates == [same.now]


def test_preserved_state_reseeds_identically():
    m = nn.Dropout(0.5).train()
    with preserved_state(m, seed=3) as reseed:
        reseed()
        a = m(torch.ones(100))
        reseed()
        b = m(torch.ones(100))
    assert torch.equal(a, b)


def test_recalibrate_batchnorm_matches_average_of_batch_statistics():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.BatchNorm2d(4))
    unused = nn.BatchNorm2d(4)  # in the model but not on the path: keeps its statistics
    model.add_module("unused", unused)
    with torch.no_grad():
        unused.running_mean.fill_(5.0)
    model.train()
    p = Probe(batches=2, samples=16)
    xs = [torch.randn(16, 3, 8, 8) + i for i in range(2)]
    for i, x in enumerate(xs):
        p.offer(i + 1, (x,), {})
    fwd = lambda x: model[3](model[2](model[1](model[0](x))))
    nbt = model[1].num_batches_tracked.clone()
    assert recalibrate_batchnorm(model, fwd, p) == 2  # the two on the path: the unused one is not changed
    with torch.no_grad():
        means = [model[0](x).mean((0, 2, 3)) for x in xs]
    torch.testing.assert_close(model[1].running_mean, (means[0] + means[1]) / 2)
    assert model[1].momentum == 0.1 and torch.equal(model[1].num_batches_tracked, nbt)
    assert torch.all(unused.running_mean == 5.0)


def test_probe_from_held_out_batches():
    # Probe.fixed: the first `batches` batches, `samples` rows each; inputs a tensor or a tuple of
    # positional inputs; 1-d integer labels kept, other second elements (float targets) not used
    a, b, y = torch.randn(5, 3), torch.randn(5, 2), torch.arange(5)
    p = Probe.fixed([((a, b), y), (a, y.float()), a, (a,)], batches=3, samples=2)
    assert len(p) == 3 and p.rows == 6 and not p.labelled
    (args0, kw0), (args1, _), (args2, _) = p.held
    assert torch.equal(args0[0], a[:2]) and torch.equal(args0[1], b[:2]) and kw0 == {}
    assert len(args1) == 1 and len(args2) == 1
    assert torch.equal(p.targets[0], y[:2]) and p.targets[1] is None and p.targets[2] is None
    a.add_(1)  # copies, not views of the caller's tensors
    assert not torch.equal(p.held[0][0][0], a[:2])
    assert Probe.fixed([(a, y)] * 9, batches=4, samples=64).labelled


def test_held_out_batches_of_one_class_are_warned_about():
    x = torch.randn(4, 3)
    with pytest.warns(UserWarning, match="first 2 batches hold a single class"):
        Probe.fixed([(x, torch.zeros(4, dtype=torch.long))] * 3, batches=2, samples=4)

