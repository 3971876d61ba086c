"""Decision rule, each policy, the hook path, resume, export and baselines."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
import torchvision

import fxdrop
from fxdrop.baselines import apply_stochastic_depth
from fxdrop.models import resnet20

from .helpers import assert_outputs_close
from .models import narrow_resnet18

# Most tests check the decision logic and the mechanism (hooks, resume, freeze, export): they use a
# ResNet-18 of 16 channels in its first stage (same blocks, same unit names, ~1/13 of the FLOPs).
# test_learn_and_drop_on_real_training_drops_and_records_scores trains the real torchvision ResNet-18,
# and the slow tier repeats resume with it.


def _model(full=False):
    return torchvision.models.resnet18(num_classes=10) if full else narrow_resnet18(width=16)


def _net(policy=None, seed=0, full=False):
    torch.manual_seed(seed)
    model = _model(full)
    x = torch.randn(8, 3, 32, 32)
    return fxdrop.wrap(model, example_inputs=(x[:2],), policy=policy), x


def _train(net, x, steps, opt=None, attach=False, start=0):
    y = torch.arange(8) % 10
    opt = opt or torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    if attach:
        net.attach(opt)
    net.train()
    for i in range(start, steps):
        g = torch.Generator().manual_seed(i)
        xb = x + 0.1 * torch.randn(x.shape, generator=g)
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(net(xb), y).backward()
        opt.step()
        if not attach:
            net.step(opt)
    return opt


class Scripted(fxdrop.LearnAndDrop):
    """LearnAndDrop whose scores are fed by the test (the decision rule in isolation)."""

    def __init__(self, table, **kw):
        super().__init__(**{"min_speedup": None, **kw})  # the scored rule alone, without the default floor
        self.table = table

    def bind(self, net):
        super().bind(net)

        class FakeTracker:
            changes = {u.name: [1.0] * 10 for u in net.units}

            def update(_, names, lr=1.0):
                return {n: dict(self.table[n]) for n in names}

            continuation = staticmethod(fxdrop.scores.ScoreTracker.continuation)

            def forget(_, name):
                pass

            def state_dict(_):
                return {}

            def load_state_dict(_, sd):
                pass

        self.tracker = FakeTracker()


def _table(plateaus, trend=0.0):
    names = ["layer1.0", "layer1.1", "layer2.1", "layer3.1", "layer4.1"]
    return {n: {"change": p, "smoothed": p, "plateau": p, "trend": trend} for n, p in zip(names, plateaus)}


def test_decision_rule_thresholds():
    # median plateau 0.5: continuation = p / 0.5; drop needs p <= 0.3 and continuation <= 0.7
    pol = Scripted(_table([0.2, 0.1, 0.5, 0.9, 1.0]), interval=1, warmup=0, plateau=0.3, threshold=0.7)
    _net(pol)
    assert pol.decide(1) == ["layer1.1", "layer1.0"]  # continuations 0.2 and 0.4, lowest first
    # median 0.35: layer1.1 has plateau 0.3 <= 0.3 but continuation 0.86 > 0.7, so it stays
    pol = Scripted(_table([0.1, 0.3, 0.35, 0.4, 1.0]), interval=1, warmup=0, plateau=0.3, threshold=0.7)
    _net(pol)
    assert pol.decide(1) == ["layer1.0"]
    # a trend falling faster than the median lowers continuation: layer1.1 at log(1/2) vs 0 elsewhere
    table = _table([0.1, 0.3, 0.35, 0.4, 1.0])
    table["layer1.1"]["trend"] = math.log(0.5)
    pol = Scripted(table, interval=1, warmup=0, horizon=2, plateau=0.3, threshold=0.7)
    _net(pol)
    assert pol.decide(1) == ["layer1.0", "layer1.1"]  # continuations 0.29 and 0.86 * 0.375 = 0.32



def test_decision_rule_orders_and_caps():
    pol = Scripted(_table([0.2, 0.1, 0.5, 0.9, 1.0]), interval=1, warmup=0, plateau=0.3, threshold=0.7,
                   max_drops_per_event=1)
    net, _ = _net(pol)
    assert pol.decide(1) == ["layer1.1"]  # lowest continuation first, one per event


def test_decision_rule_warmup_interval_never_and_budget():
    table = _table([0.1, 0.1, 0.6, 0.9, 1.0])
    pol = Scripted(table, interval=5, warmup=10, never=["layer1.0"])
    net, _ = _net(pol)
    assert pol.decide(3) == []  # not a boundary
    assert pol.decide(5) == []  # warm-up
    assert pol.decide(10) == ["layer1.1"]
    pol = Scripted(table, interval=1, warmup=0, max_drop_fraction=0.0)
    _net(pol)
    assert pol.decide(1) == []  # FLOPs budget
    # the default rule: plateau <= 0.5 alone, whatever the others do (no relative test)
    pol = Scripted(_table([0.05, 0.06, 0.5, 0.51, 0.9]), interval=1, warmup=0, max_drop_fraction=1.0)
    _net(pol)
    assert sorted(pol.decide(1)) == ["layer1.0", "layer1.1", "layer2.1"]


def test_stop_drops_units_that_stopped_whatever_the_others_do():
    table = _table([0.05, 0.06, 0.07, 0.08, 0.5])  # all alike: the relative rule alone keeps them
    pol = Scripted(table, interval=1, warmup=0, plateau=0.3, threshold=0.7)
    _net(pol)
    assert pol.decide(1) == []
    pol = Scripted(table, interval=1, warmup=0, plateau=0.3, threshold=0.7, stop=0.1, max_drop_fraction=1.0)
    _net(pol)
    assert sorted(pol.decide(1)) == ["layer1.0", "layer1.1", "layer2.1", "layer3.1"]


def test_decision_rule_non_finite_scores_warn_and_keep():
    table = _table([0.1, 0.1, 0.5, 0.9, 1.0])
    table["layer1.0"]["plateau"] = math.nan
    pol = Scripted(table, interval=1, warmup=0, plateau=0.3)
    _net(pol)
    with pytest.warns(UserWarning, match="non-finite scores.*layer1.0"):
        assert pol.decide(1) == ["layer1.1"]


@pytest.mark.parametrize("kw,msg", [
    ({"interval": 0}, "interval"), ({"plateau": 1.5}, "plateau"), ({"beta": 1.0}, "beta"),
    ({"max_drop_fraction": 2.0}, "max_drop_fraction"), ({"window": 1}, "window"), ({"action": "melt"}, "action"),
])
def test_invalid_knobs(kw, msg):
    with pytest.raises(ValueError, match=msg):
        fxdrop.LearnAndDrop(**kw)


def test_never_must_name_units():
    with pytest.raises(ValueError, match="unknown units"):
        _net(fxdrop.LearnAndDrop(never=["nope"]))


def test_a_policy_serves_one_wrapped_model():
    # a policy keeps one run's scores, backoffs and events: a second wrap with it would mix two runs
    pol = fxdrop.LearnAndDrop(interval=5)
    net, _ = _net(pol)
    model = narrow_resnet18()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match="already drives another wrapped model.*new policy"):
        fxdrop.wrap(model, example_inputs=(torch.randn(2, 3, 32, 32),), policy=pol)
    assert pol.net is net and all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("full", [False, pytest.param(True, marks=pytest.mark.slow, id="resnet18")])
def test_learn_and_drop_on_real_training_drops_and_records_scores(full):
    pol = fxdrop.LearnAndDrop(interval=5, warmup=20, total_steps=80, stop=0.3)
    net, x = _net(pol, full=full)  # the slow tier trains the real torchvision ResNet-18
    _train(net, x, 80)
    assert net.dropped, "a network that has memorised its batch should have dropped units"
    assert pol.events and all(s % 5 == 0 and s >= 20 for s, _ in pol.events)
    u = net.units[0]
    assert u.scores and {"change", "plateau", "trend", "continuation", "step"} <= set(u.scores[0])
    node = next(n for n in net.full_graph_module.graph.nodes if n.meta.get("fxdrop_unit") == u.name)
    assert node.meta["fxdrop_scores"] is u.scores


def test_attach_hook_path_equals_explicit_step():
    a, x = _net(fxdrop.LearnAndDrop(interval=5, warmup=20, total_steps=60, stop=0.3))
    _train(a, x, 60)
    b, _ = _net(fxdrop.LearnAndDrop(interval=5, warmup=20, total_steps=60, stop=0.3))
    _train(b, x, 60, attach=True)
    assert a.steps == b.steps == 60
    assert a.policy.events and a.policy.events == b.policy.events
    for pa, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb)


def test_random_and_position_replay_schedule():
    ref = fxdrop.LearnAndDrop()
    ref.events = [(10, ["layer3.1", "layer4.1"]), (20, ["layer2.1"])]
    pos = fxdrop.PositionDrop.like(ref)
    net, x = _net(pos)
    assert pos.decide(10) == ["layer1.0", "layer1.1"]
    net.drop("layer1.0", "layer1.1")
    assert pos.decide(20) == ["layer2.1"]
    rnd = fxdrop.RandomDrop.like(ref, seed=3)
    net2, _ = _net(rnd)
    first = rnd.decide(10)
    assert len(first) == 2 and len(set(first)) == 2
    rnd2 = fxdrop.RandomDrop.like(ref, seed=3)
    _net(rnd2)
    assert rnd2.decide(10) == first  # seeded
    with pytest.raises(ValueError, match="schedule"):
        fxdrop.RandomDrop([(0, 1)])


def test_replays_put_back_what_they_dropped_where_the_replayed_run_restored():
    """A cohort Learn&Drop restored after its probation is matched by the replay putting back the units
    it dropped at that cohort's step, so both runs carry as many units dropped at every step; the thin
    arm keeps what the run restored."""
    ref = fxdrop.LearnAndDrop()
    ref.events = [(10, ["layer3.1", "layer4.1"]), (20, ["layer2.1"]), (40, ["layer3.1"])]
    ref.restored = [(25, ["layer3.1", "layer4.1"])]
    pos = fxdrop.PositionDrop.like(ref)
    assert pos.restores == {25: [10]}
    net, x = _net(pos)
    _train(net, x, 45)
    assert pos.events == [(10, ["layer1.0", "layer1.1"]), (20, ["layer2.1"]), (40, ["layer1.0"])]
    assert pos.restored == [(25, ["layer1.0", "layer1.1"])]
    assert sorted(net.dropped) == ["layer1.0", "layer2.1"]  # as many as the replayed run: layer2.1, layer3.1
    # resumed between the restore and the next drop: the same history
    again, _ = _net(fxdrop.PositionDrop.like(ref))
    _train(again, x, 30)
    sd = again.policy.state_dict()
    resumed, _ = _net(fxdrop.PositionDrop.like(ref))
    resumed.policy.load_state_dict(sd)
    assert resumed.policy.restored == pos.restored
    assert fxdrop.FixedDrop.thin_like(ref).plan == {1: ["layer2.1", "layer3.1"]}
    with pytest.raises(ValueError, match="restores"):
        fxdrop.RandomDrop([(10, 1)], restores=[(10, 10)])  # a restore before its drop
    # two cohorts put back at one step: both replayed there
    assert fxdrop.RandomDrop([(10, 1), (20, 1)], restores=[(30, 10), (30, 20)]).restores == {30: [10, 20]}


def test_no_drop_never_drops():
    net, x = _net(fxdrop.NoDrop())
    _train(net, x, 10)
    assert net.dropped == [] and net.steps == 10


def test_freeze_action_freezes_instead_of_dropping():
    pol = fxdrop.LearnAndDrop(interval=5, warmup=20, total_steps=80, action="freeze", stop=0.3)
    net, x = _net(pol)
    full = net.flops()
    _train(net, x, 80)
    frozen = [u for u in net.units if u.frozen]
    assert frozen and not net.dropped and net.flops() == full
    params = dict(net.named_parameters())
    assert all(not params[p].requires_grad for u in frozen for p in u.params)


@pytest.mark.parametrize("full", [False, pytest.param(True, marks=pytest.mark.slow, id="resnet18")])
def test_resume_continues_to_same_decisions_and_weights(full):
    kw = dict(interval=5, warmup=20, total_steps=80, stop=0.3)
    # uninterrupted
    a, x = _net(fxdrop.LearnAndDrop(**kw), full=full)
    _train(a, x, 80)
    # interrupted after the first drop event, saved, rebuilt from scratch, resumed
    b, _ = _net(fxdrop.LearnAndDrop(**kw), full=full)
    opt = _train(b, x, 40)
    assert b.dropped, "the checkpoint must be taken after a drop event"
    ckpt = copy.deepcopy({"model": b.state_dict(), "optim": opt.state_dict(), "fxdrop": b.drop_state_dict()})
    c, _ = _net(fxdrop.LearnAndDrop(**kw), seed=123, full=full)  # other init: everything must come from the checkpoint
    c.load_state_dict(ckpt["model"])
    c.load_drop_state_dict(ckpt["fxdrop"])
    opt_c = torch.optim.SGD(c.parameters(), lr=0.05, momentum=0.9)
    opt_c.load_state_dict(ckpt["optim"])
    _train(c, x, 80, opt=opt_c, start=40)
    assert c.dropped == a.dropped and c.policy.events == a.policy.events
    for (n, pa), pc in zip(a.named_parameters(), c.parameters()):
        torch.testing.assert_close(pc, pa, msg=n)


def test_drop_state_from_other_model_is_refused():
    a, _ = _net(fxdrop.LearnAndDrop())
    other = fxdrop.wrap(resnet20(num_classes=10), example_inputs=(torch.randn(1, 3, 32, 32),))  # other unit names
    with pytest.raises(fxdrop.DropStateError, match="other units"):
        other.load_drop_state_dict(a.drop_state_dict())
    with pytest.raises(fxdrop.DropStateError, match="policy"):
        b, _ = _net(None)
        b.load_drop_state_dict(a.drop_state_dict())
    with pytest.raises(fxdrop.DropStateError):
        a.load_drop_state_dict({"format": 99})


def test_export_and_apply_plan():
    net, x = _net()
    net.drop("layer1.0", "layer3.1")
    slim = net.export()
    net.eval()
    with torch.no_grad():
        assert_outputs_close(slim(x), net(x))
    assert not hasattr(slim.layer3, "1") or not any(True for _ in slim.layer3.get_submodule("1").parameters())
    assert next(slim.parameters()).data_ptr() != next(net.parameters()).data_ptr()
    fresh = _model()
    fresh.load_state_dict(net.state_dict())
    rebuilt = fxdrop.apply_plan(fresh, net.plan(), (x[:2],))
    with torch.no_grad():
        assert_outputs_close(rebuilt(x), slim(x))


def test_stochastic_depth_baseline():
    net, x = _net()
    probs = apply_stochastic_depth(net, 0.5)
    assert probs == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5])
    assert "stochastic_depth" in net.graph_module.code
    net.train()
    torch.manual_seed(0)
    a = net(x)
    torch.manual_seed(1)
    b = net(x)
    assert not torch.allclose(a, b)  # branches are skipped at random in training
    net.eval()
    with torch.no_grad():
        assert_outputs_close(net(x), net.model(x))  # evaluation runs the full network


@pytest.mark.parametrize("total, interval", [(None, 50), (282, 9), (330, 11), (20, 1), (29, 1), (60, 2), (10_000, 50)])
def test_default_interval_follows_the_run_length(total, interval):
    # about 30 scoring boundaries over a known run (total // 30, at least 1, at most 50); 50 when unknown
    pol = fxdrop.LearnAndDrop(total_steps=total)
    assert pol.interval == interval and pol.warmup == 0
    assert fxdrop.LearnAndDrop(total_steps=total, interval=7).interval == 7


def test_run_length_told_later():
    # set_total_steps before the first step: as if given (interval and the held batches' stride derived)
    pol = fxdrop.LearnAndDrop()
    net, x = _net(pol)
    pol.set_total_steps(330)
    assert (pol.total_steps, pol.interval, pol.probe.stride) == (330, 11, 2)
    # after steps: the length changes, the interval stays (the scores so far are spaced by it)
    _train(net, x, 3)
    pol.set_total_steps(660)
    assert (pol.total_steps, pol.interval) == (660, 11)
    # an interval the user gave is never re-derived
    given = fxdrop.LearnAndDrop(interval=7)
    given.set_total_steps(330)
    assert (given.total_steps, given.interval) == (330, 7)
    for bad in (0, -3, 2.5, True, None):
        with pytest.raises(ValueError, match="set_total_steps: total_steps must be an int > 0"):
            fxdrop.LearnAndDrop().set_total_steps(bad)
    # a resumed policy not given them takes the told length and its interval from the saved state
    fresh = fxdrop.LearnAndDrop()
    _net(fresh)[0].load_drop_state_dict(net.drop_state_dict())
    assert (fresh.total_steps, fresh.interval, fresh.probe.stride) == (660, 11, 2)
    own = fxdrop.LearnAndDrop(total_steps=100, interval=5)
    _net(own)[0].load_drop_state_dict(net.drop_state_dict())
    assert (own.total_steps, own.interval) == (100, 5)


def test_time_matched_steps_from_measured_cpu_time():
    from fxdrop.train import RunResult, time_matched_steps

    def run(steps, cpu):
        return RunResult("x", wall_s=cpu, test_acc=0.0, flops_ratio=1.0, units=0, dropped=[], events=[],
                         steps=steps, cpu_s=cpu)

    assert time_matched_steps(run(282, 100.0), run(282, 65.0)) == 183  # 282 * 0.65 = 183.3
    assert time_matched_steps(run(282, 100.0), run(282, 104.0)) == 282  # slower: the full run itself
    assert time_matched_steps(run(10, 100.0), run(10, 1.0)) == 1
    with pytest.raises(ValueError, match="no measured CPU time"):
        time_matched_steps(run(282, 0.0), run(282, 1.0))
