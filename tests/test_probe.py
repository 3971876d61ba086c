"""Drop checks on held batches: the cost measure, that checks leave no trace, BatchNorm recalibration."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

import fxdrop
from fxdrop.probe import Probe, drop_cost, predictions, preserved_state, recalibrate_batchnorm

from .models import narrow_resnet18

# The checks on the real torchvision ResNet-18 (no training) stay; the policy tests, whose point is the
# decision logic, train a ResNet-18 of 16 channels in its first stage (same units, ~1/13 of the FLOPs).


def _small_net(pol, full=False):
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10) if full else narrow_resnet18(width=16)
    return fxdrop.wrap(model, example_inputs=(torch.randn(2, 3, 32, 32),), policy=pol)


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


def test_drop_cost_disagreement_and_kl_hand_computed():
    # "current" predicts class 0 for every row; the candidate flips rows 1 and 3 of 4
    cur_logits = torch.tensor([[2.0, 0.0], [2.0, 0.0], [2.0, 0.0], [2.0, 0.0]])
    new_logits = torch.tensor([[2.0, 0.0], [0.0, 2.0], [2.0, 0.0], [0.0, 2.0]])
    p = Probe(batches=1, samples=4)
    p.offer(1, (torch.zeros(4, 1),), {})
    (cost,) = drop_cost(nn.Linear(1, 1), lambda x: cur_logits, [lambda x: new_logits], p)
    assert cost.disagreement == pytest.approx(0.5) and cost.samples == 4
    # KL(old || new) on a flipped row: p=(e^2,1)/(e^2+1), q=(1,e^2)/(e^2+1): sum p log p/q = (p0-p1)*2
    p0 = math.exp(2) / (math.exp(2) + 1)
    assert cost.kl == pytest.approx(2 * (2 * p0 - 1) * 2 / 4, rel=1e-5)


def test_drop_cost_measures_accuracy_when_labels_are_held():
    cur = torch.tensor([[2.0, 0.0], [2.0, 0.0], [0.0, 2.0], [2.0, 0.0]])  # predicts 0, 0, 1, 0
    new = torch.tensor([[0.0, 2.0], [2.0, 0.0], [2.0, 0.0], [2.0, 0.0]])  # predicts 1, 0, 0, 0
    p = Probe(batches=1, samples=4)
    p.offer(5, (torch.zeros(4, 1),), {})
    (unlabelled,) = drop_cost(nn.Linear(1, 1), lambda x: cur, [lambda x: new], p)
    assert math.isnan(unlabelled.accuracy_drop) and unlabelled.cost == unlabelled.disagreement == 0.5
    p.offer_targets(4, torch.tensor([0, 0, 1, 0]))  # no batch held for step 4: ignored
    assert p.targets == [None]
    p.offer_targets(5, torch.tensor([0, 0, 1, 1]))
    (c,) = drop_cost(nn.Linear(1, 1), lambda x: cur, [lambda x: new], p)
    # current right on rows 0, 1, 2 (3 of 4); candidate right on row 1 only: accuracy falls by 2/4;
    # cost = min(d, a + sqrt((d - a^2) / n)) = min(0.5, 0.5 + sqrt(0.25 / 4)) = 0.5
    assert c.accuracy_drop == pytest.approx(0.5) and c.cost == pytest.approx(0.5) and c.disagreement == 0.5
    p.offer_targets(5, torch.tensor([1, 0, 0, 1]))  # now the candidate is better: a negative cost
    (c,) = drop_cost(nn.Linear(1, 1), lambda x: cur, [lambda x: new], p)
    assert c.accuracy_drop == pytest.approx(-0.5)
    assert c.cost == pytest.approx(-0.5 + math.sqrt((0.5 - 0.25) / 4))  # = 0: one standard error up


def test_drop_cost_upper_bound_hand_computed():
    from fxdrop.probe import DropCost

    # 512 rows, 20% changed, accuracy unchanged: SE = sqrt(0.2 / 512) = 0.0198 -> refused at 1%
    assert DropCost(0.2, 0.0, 512, 0.0).cost == pytest.approx(math.sqrt(0.2 / 512))
    # 1 of 512 changed, for the worse: min(d, a + sqrt((d - a^2)/n)) = d
    d = 1 / 512
    assert DropCost(d, 0.0, 512, d).cost == pytest.approx(d)
    assert DropCost(0.03, 0.0, 512).cost == 0.03  # no labels: the disagreement itself


def test_drop_cost_of_non_logit_outputs_is_relative_change():
    p = Probe(batches=1, samples=4)
    p.offer(1, (torch.zeros(2, 3, 4),), {})
    old = torch.ones(2, 3, 4)
    (cost,) = drop_cost(nn.Linear(1, 1), lambda x: old, [lambda x: old * 1.1], p)
    assert cost.disagreement == pytest.approx(0.1, rel=1e-5)


def _bn_net(seed=0):
    torch.manual_seed(seed)
    model = torchvision.models.resnet18(num_classes=10)
    net = fxdrop.wrap(model, example_inputs=(torch.randn(2, 3, 32, 32),))
    return net


def test_checks_leave_buffers_and_rng_untouched():
    net = _bn_net()
    net.train()
    p = Probe(batches=2, samples=8)
    for s in (1, 2):
        p.offer(s, (torch.randn(8, 3, 32, 32),), {})
    before = {k: v.clone() for k, v in net.state_dict().items()}
    rng = torch.get_rng_state()
    costs = drop_cost(net.model, net.graph_module, [net.candidate_graph(["layer4.1"]),
                                                    net.candidate_graph(["layer1.0", "layer1.1"])], p)
    assert all(0 <= c.disagreement <= 1 for c in costs)
    assert torch.equal(rng, torch.get_rng_state())
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k]), k
    # the identity "candidate" costs nothing, and dropout masks are re-drawn identically
    (same,) = drop_cost(net.model, net.graph_module, [net.graph_module], p)
    assert same.disagreement == 0 and same.kl == pytest.approx(0, abs=1e-6)


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


def _train_steps(net, pol, steps, lr=0.05, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(64, 3, 32, 32, generator=g)
    y = torch.randint(0, 10, (64,), generator=g)
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9)
    net.train()
    for i in range(steps):
        idx = torch.randint(0, 64, (16,), generator=g)
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(net(x[idx]), y[idx]).backward()
        opt.step()
        net.step(opt)
    return x


@pytest.mark.parametrize("full", [False, pytest.param(True, marks=pytest.mark.slow, id="resnet18")])
def test_checked_policy_rejects_costly_drops_and_backs_off(full):
    # tolerance 0: a bypass that changes any prediction is refused; each refusal doubles the wait
    pol = fxdrop.LearnAndDrop(min_speedup=None, interval=4, warmup=0, window=2, plateau=1.0, tolerance=0.0, probe_samples=16)
    net = _small_net(pol, full)
    _train_steps(net, pol, 24)
    rejected = [c for c in pol.checks if not c["accepted"]]
    assert rejected, "a random network's blocks change some predictions"
    assert all(c["disagreement"] > 0 for c in rejected)
    assert all(c["disagreement"] == 0 for c in pol.checks if c["accepted"])
    for name, (retry, wait) in pol.backoff.items():
        tries = [c["step"] for c in pol.checks if c["units"] == [name] and not c["accepted"]]
        assert wait == 2 ** len(tries) or wait == 64
        assert retry == tries[-1] + 2 ** (len(tries) - 1) * 4
    for u in net.units:  # every checked unit has its cost on its score history
        assert all("drop_cost" in s for s in u.scores if any(c["step"] == s["step"] and c["units"] == [u.name]
                                                            for c in pol.checks))


def test_checked_policy_accepts_within_tolerance_and_recalibrates():
    pol = fxdrop.LearnAndDrop(min_speedup=None, interval=4, warmup=0, window=2, plateau=1.0, tolerance=1.0, probe_samples=16,
                              max_drops_per_event=1)
    net = _small_net(pol)
    seen = []
    net.on_drop(lambda n, names, ev: seen.append((ev, list(names))))
    _train_steps(net, pol, 8)
    # window=2: the first boundary with two scores is step 8; one unit per event
    assert pol.events and pol.events[0][0] == 8 and len(pol.events[0][1]) == 1
    assert seen[0] == ("drop", pol.events[0][1])
    # recalibrated on the first half of the held batches through the new graph: re-running that average
    # changes nothing
    bn = net.model.layer2[0].bn1
    after = bn.running_mean.clone()
    assert len(pol.probe) == 4
    recalibrate_batchnorm(net.model, net.graph_module, pol.probe.head(2))
    torch.testing.assert_close(bn.running_mean, after)
    assert bn.momentum == 0.1


def test_target_speedup_drops_until_the_predicted_speedup_is_reached():
    # target_measure="flops": deterministic (the time model is tested on its own below)
    pol = fxdrop.LearnAndDrop(min_speedup=None, interval=2, warmup=0, window=2, plateau=1e-9, tolerance=1.0, target_speedup=1.3,
                              total_steps=40, probe_samples=8, target_measure="flops")
    net = _small_net(pol)
    _train_steps(net, pol, 12)
    assert net.dropped, "plateau=1e-9 never fires: only the target makes candidates"
    assert pol.predicted_speedup(12) >= 1.3
    # no overshoot: without the last unit dropped, the target would not have been met
    last = [u for u in net.units if u.name == pol.events[-1][1][-1]][0]
    assert pol.predicted_speedup(pol.events[-1][0], -last.flops) < 1.3
    before = list(net.dropped)
    _train_steps(net, pol, 10, seed=1)
    assert net.dropped == before  # target met: nothing more


def test_predicted_speedup_hand_computed():
    pol = fxdrop.LearnAndDrop(total_steps=100, target_measure="flops")
    net = _small_net(pol)
    full = net.full_flops("train")
    u = net.unit("layer4.1")
    pol._frac_sum = 40.0  # 40 full steps so far
    f = 1 - u.flops / full
    assert pol.predicted_speedup(40, u.flops) == pytest.approx(100 / (40 + 60 * f))
    pol.total_steps = None
    assert pol.predicted_speedup(40, u.flops) == pytest.approx(1 / f)


def test_time_model_hand_computed():
    pol = fxdrop.LearnAndDrop(total_steps=100)
    assert pol.time_model() == (None, 0.0)  # nothing timed yet
    pol.step_times = {"1.000000": [1.0] * 7 + [1.2, 9.0], "0.500000": [0.6] * 7}
    assert pol.time_model() == (1.0, 0.0)  # median of the full graph (one outlier); 7 dropped-graph steps: too few
    pol.step_times["0.500000"].append(0.6)
    t_full, c = pol.time_model()  # 0.6 = 1.0 * (c + (1 - c) * 0.5)
    assert t_full == 1.0 and c == pytest.approx(0.2)
    # two graphs: least squares of r - f = c (1 - f), weighted by the steps timed
    pol.step_times["0.250000"] = [0.55] * 16
    num = 8 * 0.5 * (0.6 - 0.5) + 16 * 0.75 * (0.55 - 0.25)
    den = 8 * 0.5 ** 2 + 16 * 0.75 ** 2
    assert pol.time_model()[1] == pytest.approx(num / den)
    pol.step_times = {"1.000000": [1.0] * 8, "0.500000": [1.5] * 8}  # slower after a drop: clipped
    assert pol.time_model()[1] == 0.95


def test_predicted_speedup_by_time_hand_computed():
    pol = fxdrop.LearnAndDrop(total_steps=100)
    net = _small_net(pol)
    u = net.unit("layer4.1")
    f = 1 - u.flops / net.full_flops("train")
    pol._frac_sum, pol.check_seconds = 40.0, 2.0  # 40 full steps so far, 2 s of checks
    assert pol.predicted_speedup(40, u.flops) == pytest.approx(100 / (40 + 60 * f + 0))  # untimed: the FLOPs' model
    pol.step_times = {"1.000000": [0.5] * 8, "0.500000": [0.3] * 8}  # t_full 0.5 s, c = 0.2
    checks = 2.0 / 0.5
    assert pol.predicted_speedup(40, u.flops) == pytest.approx(100 / (0.2 * 100 + 0.8 * (40 + 60 * f) + checks))
    pol.total_steps = None
    assert pol.predicted_speedup(40, u.flops) == pytest.approx(1 / (0.2 + 0.8 * f))


def test_step_times_leave_checks_out_and_survive_a_resume(monkeypatch):
    pol = fxdrop.LearnAndDrop(total_steps=100)
    clock = iter([10.0, 10.5, 11.5])
    monkeypatch.setattr(fxdrop.policy.time, "perf_counter", lambda: next(clock))
    pol._time_step(1.0)  # the first step starts the clock
    assert pol.step_times == {}
    pol._time_step(1.0)
    pol.check_seconds += 0.4  # a check between the next two steps
    pol._time_step(0.5)
    assert pol.step_times == {"1.000000": [0.5], "0.500000": [pytest.approx(0.6)]}
    again = fxdrop.LearnAndDrop(total_steps=100)
    again.load_state_dict(pol.state_dict())
    assert again.step_times == pol.step_times and again._clock is None


@pytest.mark.parametrize("labelled", [False, True])
def test_checks_run_only_while_the_drops_could_pay_for_them(labelled):
    pol = fxdrop.LearnAndDrop(min_speedup=None, interval=2, window=2, plateau=1e-9, total_steps=1000, probe_samples=8)
    net = _small_net(pol)
    _train_steps(net, pol, 8)  # 16 rows a step; 4 held batches of 8 rows
    if labelled:  # on trial: screen on 1 batch, sets on 2, probation check on all 4
        pol.probe.targets = [torch.zeros(8, dtype=torch.long)] * 4
    units = [net.unit("layer4.1"), net.unit("layer3.1")]
    share = sum(u.flops for u in units) / net.full_flops("train")
    # each candidate's check runs the nodes after its block's add (the shared prefix, reuse.py): head only
    # for layer4.1, layer4 and the head for layer3.1; a set runs at most its earliest unit's suffix
    nodes = list(net.graph_module.graph.nodes)
    whole = sum(n.meta["fxdrop_flops"] for n in nodes)
    after = [sum(n.meta["fxdrop_flops"] for n in nodes[[n.name for n in nodes].index(u.sites["train"].exit) + 1:])
             / whole for u in units]
    assert 0 < after[0] < after[1] < 0.5
    # before the screen: screen (reference and 2 suffixes), sets {1, 2} and the reference, BatchNorm
    # (2 batches), probation (reference and one suffix on 4 batches); after it, all but the screen
    top = max(after)
    if labelled:
        after_screen = 16 * (1 + 2 * top) + 16 + 32 * (1 + top)
        before = 8 * (1 + sum(after)) + after_screen
    else:  # every stage on all 4 batches, so the set {1} is the screen's: set {1, 2} and the reference
        after_screen = 32 * (1 + top) + 16
        before = 32 * (1 + sum(after)) + after_screen
    after = after_screen
    for screened, cost in ((False, before), (True, after)):
        last = max(s for s in range(1000) if 3 * 16 * share * (1000 - s) > cost)  # the last step that pays
        assert pol._pays(units, last, screened) and not pol._pays(units, last + 1, screened)
    pol.total_steps = None  # the end unknown: checks always may pay
    assert pol._pays(units, 10 ** 6, False)


@pytest.mark.parametrize("labelled", [False, True])
@pytest.mark.parametrize("k", [1, 2, 5])
def test_payoff_prices_the_rows_a_choice_runs(labelled, k):
    # what the payoff rule prices before the screen bounds what the choice then runs (screen and sets,
    # counted in check_rows), plus BatchNorm re-estimation and, on trial, the probation check; every unit
    # passes. The screen is priced exactly (each unit's suffix), a set at its earliest unit's: exact for one
    pol = fxdrop.LearnAndDrop(min_speedup=None, interval=2, window=2, plateau=1e-9, total_steps=1000, probe_samples=8,
                              tolerance=1.0, shock=1.0)
    net = _small_net(pol)
    _train_steps(net, pol, 8)
    if labelled:
        pol.probe.targets = [torch.zeros(8, dtype=torch.long)] * 4
    units = net.units[:k]
    _, cost = pol.payoff(units, 9, screened=False)
    before = pol.check_rows
    chosen = pol._checked(units, 9)
    assert len(chosen) == k
    on_trial, _, _ = pol._check_probes()
    ran = pol.check_rows - before
    top = max(pol._suffix_shares(units))
    priced = cost - pol.probe.half().rows - (pol.probe.rows * (1 + top) if on_trial else 0)
    assert ran <= priced + 1e-9
    if k == 1:
        assert ran == pytest.approx(priced)
    else:  # bounded, not wildly: every candidate is a late block here
        assert ran > 0.5 * priced


def test_no_drop_in_the_final_fraction_when_total_steps_is_known():
    pol = fxdrop.LearnAndDrop(min_speedup=None, interval=2, warmup=0, window=2, plateau=1.0, tolerance=1.0, total_steps=20,
                              final_fraction=0.5, probe_samples=8)
    net = _small_net(pol)
    pol.max_drop_fraction = 0.0  # nothing fits before the final half ...
    _train_steps(net, pol, 10)
    pol.max_drop_fraction = 1.0  # ... and the final half is closed
    _train_steps(net, pol, 10, seed=1)
    assert net.dropped == [] and net.steps == 20


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


def test_predictions_run_like_the_checks_and_leave_no_trace():
    torch.manual_seed(0)
    model = narrow_resnet18(width=16).train()
    x = torch.randn(6, 3, 32, 32)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    got = predictions(model, model, ((x,), {}))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # BN buffers restored
    with torch.no_grad():
        assert torch.equal(got, model(x).argmax(1))  # training mode: batch statistics
    assert predictions(model, lambda x: x.sum(), ((x,), {})) is None  # not N x C logits
