"""Learn&Drop's checks with probation: the shock of a drop, its lasting cost, restores, resume."""

from __future__ import annotations

import logging

import pytest
import torch

import fxdrop

from .test_fade import _net
from .test_policy import Scripted, _table


class _Cost:
    def __init__(self, cost):
        self.cost, self.disagreement, self.accuracy_drop, self.kl = cost, cost, None, 0.0
        self.share = 1.0  # a scripted candidate counts as a full run


def _hold(net, x, labels=True):
    """One training forward, so the probe holds a batch (with its labels, as ``net.step(opt, targets=y)``
    gives them)."""
    net.train()
    net(x)
    if labels:
        net.policy.probe.offer_targets(net.steps + 1, torch.arange(len(x)) % 10)


def _scripted_costs(monkeypatch, costs):
    costs = iter(costs)
    monkeypatch.setattr(fxdrop.policy, "drop_cost",
                        lambda model, current, candidates, probe, seed=0: [_Cost(c) for c in next(costs)])


@pytest.mark.parametrize("lasting, restored", [(0.005, False), (0.5, True)])
def test_probation_keeps_a_drop_that_recovered_and_restores_one_that_did_not(monkeypatch, lasting, restored):
    # selection: the drop's shock 0.03 (screened on one held batch, then measured on all) is within
    # shock=0.05 though above tolerance=0.01; two intervals later the network without the unit is
    # compared with it put back
    _scripted_costs(monkeypatch, [[0.03], [0.03], [lasting]])
    pol = Scripted(_table([0.2, 0.9, 0.9, 0.9, 0.9]), interval=1, warmup=0, probation=2, check_budget=1e9,
                   total_steps=100)
    net, x = _net(pol)
    _hold(net, x)
    net.steps = 0
    assert net.step() == ["layer1.0"] and pol.on_probation == {"layer1.0": 3}
    assert net.step() == [] and net.dropped == ["layer1.0"]  # no other candidate meanwhile
    assert net.step() == []
    assert net.dropped == ([] if restored else ["layer1.0"]) and pol.on_probation == {}
    assert [c["stage"] for c in pol.checks] == [1, 1, "probation"]
    assert pol.checks[-1]["accepted"] is not restored
    if restored:
        # not a candidate again for `probation` (2) intervals, the time its lasting cost took to measure
        # (a refused unit waits 1): a screen one interval later would see only the shock it had passed
        assert pol.restored == [(3, ["layer1.0"])] and pol.backoff["layer1.0"] == (5, 4)
        assert net.step() == [] and len(pol.checks) == 3  # step 4: its scores say "stopped", it waits


def test_cohorts_on_probation_overlap_and_each_is_judged_alone(monkeypatch):
    # layer1.0 dropped at step 1 (probation 2: judged at 3), layer1.1 chosen at step 2 while layer1.0 is
    # on probation (judged at 4); at step 3 layer1.0's lasting cost 0.5 restores it, measured against the
    # network with layer1.0 alone put back (layer1.1 stays dropped in both), and nothing is chosen then
    seen = []
    costs = iter([[0.03], [0.03], [0.02], [0.02], [0.5], [0.005]])

    def scripted(model, current, candidates, probe, seed=0):
        seen.append((seed, current))
        return [_Cost(c) for c in next(costs)]

    monkeypatch.setattr(fxdrop.policy, "drop_cost", scripted)
    pol = Scripted(_table([0.2, 0.9, 0.9, 0.9, 0.9]), interval=1, warmup=0, probation=2, check_budget=1e9,
                   total_steps=100)
    net, x = _net(pol)
    _hold(net, x)
    net.steps = 0
    assert net.step() == ["layer1.0"] and pol.on_probation == {"layer1.0": 3}
    pol.table = _table([0.9, 0.2, 0.9, 0.9, 0.9])
    assert net.step() == ["layer1.1"] and pol.on_probation == {"layer1.0": 3, "layer1.1": 4}
    pol.table = _table([0.2, 0.9, 0.9, 0.9, 0.9])  # layer1.0 would be a candidate again, but was just restored
    assert net.step() == [] and net.dropped == ["layer1.1"] and pol.on_probation == {"layer1.1": 4}
    assert pol.restored == [(3, ["layer1.0"])]
    step, reference = seen[4]
    called = {n.target for n in reference.graph.nodes if n.op == "call_module"}
    assert step == 3 and "layer1.0.conv1" in called and not any(t.startswith("layer1.1.") for t in called)
    pol.table = _table([0.9] * 5)
    assert net.step() == [] and net.dropped == ["layer1.1"] and pol.on_probation == {}
    assert [(c["step"], c["units"], c["stage"], c["accepted"]) for c in pol.checks][-2:] == [
        (3, ["layer1.0"], "probation", False), (4, ["layer1.1"], "probation", True)]


def test_without_total_steps_one_cohort_at_a_time(monkeypatch):
    # the end unknown, a second cohort waits until the first is confirmed: a run that stops early stops
    # with at most one cohort whose lasting cost was never checked (each screened on every held batch,
    # within the tolerance: the screen is the set of one)
    _scripted_costs(monkeypatch, [[0.005], [0.005], [0.005]])
    pol = Scripted(_table([0.2, 0.9, 0.9, 0.9, 0.9]), interval=1, warmup=0, probation=2, check_budget=1e9)
    net, x = _net(pol)
    _hold(net, x)
    net.steps = 0
    assert net.step() == ["layer1.0"]
    pol.table = _table([0.9, 0.2, 0.9, 0.9, 0.9])
    assert net.step() == [] and pol.on_probation == {"layer1.0": 3}  # layer1.1 waits
    assert net.step() == ["layer1.1"] and pol.on_probation == {"layer1.1": 5}  # layer1.0 confirmed at 3


@pytest.mark.parametrize("total_steps", [None, 100])
def test_the_shock_bound_needs_the_end_of_the_run(monkeypatch, total_steps):
    # a drop that moves 3% of the held predictions (within shock=0.05, above tolerance=0.01) goes on
    # probation only when total_steps says the probation ends in time; with the end unknown any step may
    # be the last, so it must be within the tolerance at once, measured on every held batch
    _scripted_costs(monkeypatch, [[0.03], [0.03]])
    pol = Scripted(_table([0.2, 0.9, 0.9, 0.9, 0.9]), interval=1, warmup=0, probation=2, check_budget=1e9,
                   total_steps=total_steps)
    net, x = _net(pol)
    for i in range(4):  # four labelled held batches
        net.steps = i
        _hold(net, x)
    net.steps = 0
    on_trial, screen, wide = pol._check_probes()
    assert on_trial
    if total_steps is None:
        assert screen.rows == wide.rows == pol.probe.rows
        assert net.step() == [] and [c["accepted"] for c in pol.checks] == [False] and "layer1.0" in pol.backoff
    else:
        assert screen.rows < wide.rows < pol.probe.rows
        assert net.step() == ["layer1.0"] and pol.on_probation == {"layer1.0": 3}


def test_units_that_pass_the_screen_but_cannot_repay_the_rest_back_off(monkeypatch, caplog):
    # the payoff rule after the screen: layer1.0 passed it, but the rest of its checks would cost more
    # than it could save; it is kept, backs off like a refused unit, and the log says why
    _scripted_costs(monkeypatch, [[0.01, 0.9]])
    pol = Scripted(_table([0.2, 0.2, 0.9, 0.9, 0.9]), interval=1, warmup=0, check_budget=1e9, total_steps=100)
    net, x = _net(pol)
    _hold(net, x)
    net.steps = 1
    monkeypatch.setattr(pol, "_pays", lambda units, step, screened: not screened)
    with caplog.at_level("INFO", logger="fxdrop.policy"):
        assert pol.decide(1) == []
    assert "['layer1.0'] passed the screen but could not save" in caplog.text
    assert set(pol.backoff) == {"layer1.0", "layer1.1"} and net.dropped == []


def test_a_choice_that_cannot_repay_its_checks_is_not_screened(monkeypatch, caplog):
    # the payoff rule before the screen: nothing is measured (no check recorded, no rows spent) and the
    # log names the candidates
    _scripted_costs(monkeypatch, [])  # any measurement would raise StopIteration
    pol = Scripted(_table([0.2, 0.2, 0.9, 0.9, 0.9]), interval=1, warmup=0, check_budget=1e9, total_steps=100)
    net, x = _net(pol)
    _hold(net, x)
    net.steps = 1
    monkeypatch.setattr(pol, "_pays", lambda units, step, screened: False)
    with caplog.at_level("INFO", logger="fxdrop.policy"):
        assert pol.decide(1) == []
    assert "['layer1.0', 'layer1.1'] could not save what checking them costs before step 100" in caplog.text
    assert pol.checks == [] and pol.check_rows == 0


def test_without_probation_the_drop_itself_must_be_within_tolerance(monkeypatch):
    _scripted_costs(monkeypatch, [[0.03]])
    pol = Scripted(_table([0.2, 0.9, 0.9, 0.9, 0.9]), interval=1, warmup=0, probation=0, check_budget=1e9)
    net, x = _net(pol)
    _hold(net, x)
    assert pol.decide(1) == [] and pol.checks[0]["accepted"] is False


def test_probation_state_survives_resume(monkeypatch):
    _scripted_costs(monkeypatch, [[0.03], [0.03]])
    pol = Scripted(_table([0.2, 0.9, 0.9, 0.9, 0.9]), interval=1, warmup=0, probation=4, check_budget=1e9,
                   total_steps=100)
    net, x = _net(pol)
    _hold(net, x)
    net.steps = 0
    net.step()
    state = net.drop_state_dict()
    pol2 = Scripted(_table([0.2, 0.9, 0.9, 0.9, 0.9]), interval=1, warmup=0, probation=4, check_budget=1e9,
                    total_steps=100)
    other, _ = _net(pol2)
    other.load_drop_state_dict(state)
    assert pol2.on_probation == {"layer1.0": 5} and other.dropped == ["layer1.0"]


def test_selection_screens_each_unit_then_drops_the_largest_set_that_passes(monkeypatch):
    # screen (one held batch): layer1.0 0.01, layer1.1 0.02, layer2.1 0.2 (refused, backs off);
    # then the sets {layer1.0} and {layer1.0, layer1.1} (cheapest per FLOP first) on every held batch
    _scripted_costs(monkeypatch, [[0.01, 0.02, 0.2], [0.01, 0.06]])
    pol = Scripted(_table([0.2, 0.2, 0.2, 0.9, 0.9]), interval=1, warmup=0, check_budget=1e9, total_steps=100)
    net, x = _net(pol)
    _hold(net, x)
    assert pol.decide(1) == ["layer1.0"]
    assert [(c["units"], c["accepted"]) for c in pol.checks] == [
        (["layer1.0"], True), (["layer1.1"], True), (["layer2.1"], False),
        (["layer1.0"], True), (["layer1.0", "layer1.1"], False)]
    assert "layer2.1" in pol.backoff and "layer1.1" not in pol.backoff


def test_without_labels_drops_are_not_put_on_probation(monkeypatch):
    # without labels the lasting check could only count changed predictions: a drop must pass the
    # tolerance at once, on every held batch, as with probation=0
    _scripted_costs(monkeypatch, [[0.03]])
    pol = Scripted(_table([0.2, 0.9, 0.9, 0.9, 0.9]), interval=1, warmup=0, probation=3, check_budget=1e9)
    net, x = _net(pol)
    _hold(net, x, labels=False)
    assert not pol.probe.labelled
    assert pol.decide(1) == [] and pol.checks[0]["accepted"] is False and pol.on_probation == {}


def test_no_drop_whose_probation_would_end_in_the_final_fraction(monkeypatch):
    # total_steps=40, final_fraction 0.1: drops up to step 36; with probation 3 x interval 2 a drop at
    # step 32 would be judged at 38 > 36, so the last choice is at step 30
    _scripted_costs(monkeypatch, [[0.01], [0.01]])
    kw = dict(interval=2, warmup=0, probation=3, total_steps=40, check_budget=1e9)
    pol = Scripted(_table([0.2, 0.9, 0.9, 0.9, 0.9]), **kw)
    net, x = _net(pol)
    _hold(net, x)
    assert pol.decide(32) == [] and pol.checks == []
    pol = Scripted(_table([0.2, 0.9, 0.9, 0.9, 0.9]), **kw)
    net, x = _net(pol)
    _hold(net, x)
    assert pol.decide(30) == ["layer1.0"] and pol.on_probation == {"layer1.0": 36}


def test_check_budget_reinvests_a_share_of_the_compute_drops_saved():
    # budget in forward rows: check_budget * 3 * rows trained + reinvest * 3 * rows trained * (1 - FLOPs
    # fraction run); one step of 4 rows with layer4.1 gone: 0.05*3*4 = 0.6 plus 0.5 * 12 * (1 - f)
    pol = Scripted(_table([0.9] * 5), interval=1, warmup=0, check_budget=0.05, reinvest=0.5)
    net, x = _net(pol)
    net.drop("layer4.1")
    f = net.flops("train") / net.full_flops("train")
    assert 0 < f < 1
    net.train()
    net(x)
    assert net.step() == []
    assert pol.saved_rows == pytest.approx(12 * (1 - f))
    budget = 0.6 + 0.5 * 12 * (1 - f)
    assert 1 < budget < 2  # rows are whole: one row of checks is within it, two are not
    pol.check_rows = 1
    assert pol.check_allowed()
    pol.check_rows = 2
    assert not pol.check_allowed() and pol.check_allowance() == pytest.approx(budget)
    pol.reinvest, pol.check_rows = 0.0, 1  # without reinvesting, the base 0.6 rows only
    assert not pol.check_allowed()
    pol.reinvest, pol.check_rows = 0.5, 2
    again = Scripted(_table([0.9] * 5), interval=1, warmup=0, reinvest=0.5)
    _net(again)
    again.load_state_dict(pol.state_dict())
    assert again.saved_rows == pol.saved_rows and not again.check_allowed()
    with pytest.raises(ValueError, match="reinvest"):
        fxdrop.LearnAndDrop(reinvest=1.5)


def test_candidates_over_the_check_budget_wait_and_are_named_in_the_log(caplog):
    pol = Scripted(_table([0.1] * 5), interval=1, warmup=0)
    net, x = _net(pol)
    net.train()
    net(x)
    pol.check_rows = 10.0 ** 9
    with caplog.at_level(logging.INFO, logger="fxdrop.policy"):
        assert net.step() == []
    assert pol.checks == [] and pol.check_rows == 10.0 ** 9  # nothing measured, nothing spent
    assert "over their budget" in caplog.text and "'layer1.0'" in caplog.text


def test_check_budget_counts_what_kept_drops_will_save_when_the_run_length_is_known():
    # with total_steps=10, after step 1 (4 rows) with layer4.1 dropped for good (share g of the FLOPs):
    # future savings from step 1 = 3 * 4 rows/step * g * (10 - 1); units on probation do not count yet
    pol = Scripted(_table([0.9] * 5), interval=1, warmup=0, total_steps=10, reinvest=0.5)
    net, x = _net(pol)
    net.drop("layer4.1")
    g = 1 - net.flops("train") / net.full_flops("train")
    net.train()
    net(x)
    net.step()
    assert pol.future_savings(1) == pytest.approx(3 * 4 * g * 9)
    assert pol.future_savings(10) == 0 and pol.future_savings(None) == 0
    budget = 0.025 * 12 + 0.5 * (12 * g + 3 * 4 * g * 9)
    assert int(budget) > 0.3 + 6 * g  # the future savings are what makes these rows affordable
    pol.check_rows = int(budget)
    assert pol.check_allowed(1) and not pol.check_allowed(None)
    pol.check_rows = int(budget) + 1
    assert not pol.check_allowed(1)
    pol.on_probation = {"layer4.1": 4}  # on probation: not yet dropped for good
    assert pol.future_savings(1) == 0
    unknown = Scripted(_table([0.9] * 5), interval=1, warmup=0)
    _net(unknown)
    assert unknown.future_savings(1) == 0


def _held_out(n=5, rows=6, labels=True):
    g = torch.Generator().manual_seed(1)
    xs = [torch.randn(rows, 3, 32, 32, generator=g) for _ in range(n)]
    return [(x, torch.arange(rows) % 10) for x in xs] if labels else xs


def test_checks_run_on_check_data_when_given(monkeypatch):
    # every check (screen, sets, the lasting cost after probation) runs on the first probe_batches of
    # check_data, probe_samples rows each; BatchNorm re-estimation keeps the held training batches
    seen = []
    costs = iter([[0.03], [0.03], [0.005]])

    def scripted(model, current, candidates, probe, seed=0):
        seen.append(probe)
        return [_Cost(c) for c in next(costs)]

    monkeypatch.setattr(fxdrop.policy, "drop_cost", scripted)
    val = _held_out()
    pol = Scripted(_table([0.2, 0.9, 0.9, 0.9, 0.9]), interval=1, warmup=0, probation=2, check_budget=1e9,
                   total_steps=100, check_data=val, probe_batches=4, probe_samples=4)
    net, x = _net(pol)
    _hold(net, x)
    net.steps = 0
    assert pol.checks_on is pol.held_out and len(pol.held_out) == 4 and pol.held_out.labelled
    for (args, _), t, (vx, vy) in zip(pol.held_out.held, pol.held_out.targets, val):
        assert torch.equal(args[0], vx[:4]) and torch.equal(t, vy[:4])
    assert net.step() == ["layer1.0"] and net.step() == [] and net.step() == [] and net.dropped == ["layer1.0"]
    assert [len(p) for p in seen] == [1, 2, 4]  # screen on one batch, the set on half, the lasting cost on all
    assert all(p.held[0][0][0] is pol.held_out.held[0][0][0] for p in seen)
    assert len(pol.probe) == 1 and pol.probe.held[0][0][0].shape[0] == len(x)  # the training batch, for BN
    # resumed without check_data: the same held-out rows, not a new draw
    fresh = Scripted(_table([0.2, 0.9, 0.9, 0.9, 0.9]), interval=1, total_steps=100)
    _net(fresh)[0].load_drop_state_dict(net.drop_state_dict())
    assert torch.equal(fresh.held_out.held[3][0][0], val[3][0][:4]) and fresh.checks_on is fresh.held_out


def test_check_data_without_labels_means_no_probation():
    # labelled training batches, unlabelled check_data: the checks cannot measure accuracy, so no probation
    pol = fxdrop.LearnAndDrop(total_steps=100, check_data=_held_out(labels=False))
    net, x = _net(pol)
    _hold(net, x)
    assert pol.probe.labelled and not pol.checks_on.labelled and not pol._on_trial()


@pytest.mark.parametrize("data, error, match", [
    ("val", ValueError, "check_data must be None or an iterable of batches"),
    ([], ValueError, "check_data gave no batches"),
    ([{"x": torch.randn(2, 3, 32, 32)}], TypeError, "check_data: batch 0 is a dict"),
    ([(torch.randn(3, 3, 32, 32), torch.arange(2))], ValueError, "batch 0 has 3 inputs but 2 labels"),
])
def test_check_data_errors_name_the_batch(data, error, match):
    with pytest.raises(error, match=match):
        pol = fxdrop.LearnAndDrop(total_steps=100, check_data=data)
        net, x = _net(pol)
        _hold(net, x)


@pytest.mark.parametrize("follow", [True, False])
def test_shock_bound_follows_training_churn(monkeypatch, follow):
    # follow_churn: the churn rows' predictions at boundaries 1, 2, 3 are scripted; churn = share changed
    # between consecutive boundaries of one graph: 1 of 4 at step 2 and at step 3, so the bound is
    # max(0.05, 0.25) and a screen of 0.2 passes (it does not with the plain 5% bound); after the drop at
    # step 3 the graph changed, so step 4's measurement keeps the value and only re-baselines; the drop's
    # lasting cost at step 6 (0.5) restores it, and from then on the bound is 0.05 and churn is not measured
    preds = iter([torch.tensor([0, 0, 0, 0]), torch.tensor([0, 1, 0, 0]), torch.tensor([1, 1, 0, 0]),
                  torch.tensor([2, 2, 2, 2]), torch.tensor([3, 2, 2, 2]), torch.tensor([3, 3, 2, 2])])
    monkeypatch.setattr(fxdrop.policy, "predictions", lambda model, graph, batch, seed=0: next(preds))
    _scripted_costs(monkeypatch, [[0.2], [0.2], [0.5]])
    pol = Scripted(_table([0.9, 0.9, 0.9, 0.9, 0.9]), interval=1, warmup=0, window=2, check_budget=1e9,
                   total_steps=100, follow_churn=follow)
    net, x = _net(pol)
    _hold(net, x)
    net.steps = 0
    assert net.step() == [] and net.step() == []
    pol.table = _table([0.2, 0.9, 0.9, 0.9, 0.9])
    got = net.step()
    if not follow:
        assert got == [] and pol.shock_bound() == 0.05 and pol.churns == [] and pol.checks[0]["accepted"] is False
        return
    assert pol.churns == [(2, 0.25), (3, 0.25)] and pol.shock_bound() == 0.25 and got == ["layer1.0"]
    pol.table = _table([0.9, 0.9, 0.9, 0.9, 0.9])
    assert net.step() == [] and pol.churns == [(2, 0.25), (3, 0.25)] and pol._churn_at["graph"] == ["layer1.0"]
    # the churn rows: the first 32 rows of the first held batch (here all 4), kept for the run
    assert torch.equal(pol._churn_at["batch"][0][0], x) and pol.check_rows > 0
    assert net.step() == [] and net.step() == [] and pol.restored == [(6, ["layer1.0"])]
    assert pol.churns[-2:] == [(5, 0.25), (6, 0.25)] and pol.churn == 0.25 and pol.shock_bound() == 0.05
    rows = pol.check_rows
    assert net.step() == [] and net.step() == [] and len(pol.churns) == 4 and pol.check_rows == rows


@pytest.mark.parametrize("order, sets", [
    # cheapest shock per FLOP first, the three having the same FLOPs: layer2.1 (0.001), layer1.1 (0.02), then
    # layer1.0 (0.04), the reverse of the graph's order
    ("cost", [["layer2.1"], ["layer2.1", "layer1.1"], ["layer2.1", "layer1.1", "layer1.0"]]),
    # earliest in the graph first, whatever the shock: {layer1.0}, {layer1.0, layer1.1}, then all three
    ("position", [["layer1.0"], ["layer1.0", "layer1.1"], ["layer1.0", "layer1.1", "layer2.1"]]),
])
def test_order_ranks_the_screened_units_into_sets(monkeypatch, order, sets):
    screen = [0.04, 0.02, 0.001]  # layer1.0, layer1.1, layer2.1: all pass the 5% shock bound
    _scripted_costs(monkeypatch, [screen, [0.01, 0.02, 0.03]])
    pol = Scripted(_table([0.2, 0.2, 0.2, 0.9, 0.9]), interval=1, warmup=0, check_budget=1e9, total_steps=100,
                   order=order)
    net, x = _net(pol)
    _hold(net, x)
    flops = {u.name: u.flops for u in net.units}
    assert flops["layer1.0"] == flops["layer1.1"] == flops["layer2.1"]  # what the cost order's sets assume
    assert pol.decide(1) == sets[-1]  # every set passes the shock bound: the largest is dropped
    assert [c["units"] for c in pol.checks[3:]] == sets


def test_order_is_validated():
    with pytest.raises(ValueError, match="order must be one of"):
        fxdrop.LearnAndDrop(order="earliest")


@pytest.mark.parametrize("order, screened", [("cost", 5), ("position", 3)])
def test_position_order_screens_only_the_units_a_set_could_hold(monkeypatch, order, screened):
    # five units of 10.7% of the FLOPs each, all candidates under a target: 1.3x by FLOPs from step 1 of 100
    # needs three of them (two predict 1.27x). By position the sets are the earliest passing units, so only
    # layer1.0, layer1.1 and layer2.1 are screened; by cost every candidate is, to be ranked
    calls = []

    def scripted(model, current, candidates, probe, seed=0):
        calls.append(len(candidates))
        return [_Cost(0.0) for _ in candidates]

    monkeypatch.setattr(fxdrop.policy, "drop_cost", scripted)
    pol = Scripted(_table([0.2] * 5), interval=1, warmup=0, check_budget=1e9, total_steps=100, order=order,
                   target_speedup=1.3, target_measure="flops")
    net, x = _net(pol)
    _hold(net, x)
    assert pol.predicted_speedup(1, 2 * net.units[0].flops) < 1.3 <= pol.predicted_speedup(1, 3 * net.units[0].flops)
    chosen = pol.decide(1)
    assert calls[0] == screened and len(chosen) == 3
    if order == "position":
        assert chosen == ["layer1.0", "layer1.1", "layer2.1"]


@pytest.mark.parametrize("order, first, knob", [("cost", 4, "target_speedup"), ("position", 1, "target_speedup"),
                                                ("cost", 1, "min_speedup")])
def test_position_order_with_a_target_drops_without_waiting_for_scores(order, first, knob):
    # with a target, by cost the candidates wait for `window` (4) scores, the first of which comes at the
    # first boundary; by position the scores rank nothing, so the earliest units may go from that boundary;
    # below min_speedup units go as by position, whatever `order`
    pol = fxdrop.LearnAndDrop(interval=1, window=4, target_measure="flops", total_steps=100, check=False,
                              order=order, **{"min_speedup": None, knob: 1.3})
    net, x = _net(pol)
    net.train()
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    drops = []
    for step in range(1, 6):
        opt.zero_grad()
        net(x).sum().backward()
        opt.step()
        drops += [(step, n) for n in net.step()]
    if knob == "min_speedup":  # past it, the scored rule: layer3.1 and layer4.1 stopped learning by step 4
        assert drops[3:] == [(4, "layer3.1"), (4, "layer4.1")]
        drops = drops[:3]
    assert drops[0][0] == first and len(drops) == 3
    if first == 1:
        assert [n for _, n in drops] == ["layer1.0", "layer1.1", "layer2.1"]


def test_min_speedup_drops_the_earliest_units_up_to_it_then_what_stopped_learning():
    # scores: only layer3.1 stopped learning (plateau 0.2 <= 0.5). Below min_speedup=1.05 (FLOPs, over the
    # 100-step run) the earliest units go, as many as reach it, whatever their scores; from then on only
    # units that stopped learning, cheapest first, with no cap; a target alone stops at it instead
    def run(**kw):
        pol = Scripted(_table([1.0, 1.0, 1.0, 0.2, 1.0]), interval=1, warmup=0, total_steps=100, check=False,
                       target_measure="flops", **kw)
        net, _ = _net(pol)
        got = []
        for step in (1, 2):
            got.append(pol.decide(step))
            net.drop(*got[-1])
        return pol, got

    pol, got = run(min_speedup=1.05)
    assert got == [["layer1.0"], ["layer3.1"]] and not pol._below_floor(2)
    assert run(target_speedup=1.05, order="position")[1] == [["layer1.0"], []]
    # with a target (1.3) the floor picks the earliest units, the target sizes the cohort: as by position
    assert run(min_speedup=1.05, target_speedup=1.3)[1] == run(target_speedup=1.3, order="position")[1] == [
        ["layer1.0", "layer1.1", "layer2.1"], []]
    assert run()[1] == [["layer3.1"], []]
    assert fxdrop.LearnAndDrop(min_speedup=2.0, target_speedup=1.5).min_speedup == 1.5  # a floor above the cap
    assert fxdrop.LearnAndDrop(action="freeze").min_speedup is None  # freezing runs every forward: no floor
    with pytest.raises(ValueError, match="min_speedup must be None or a number >= 1, got 0.5"):
        fxdrop.LearnAndDrop(min_speedup=0.5)


@pytest.mark.parametrize("floor, now, bound", [(True, 8, 0.9), (True, 12, 0.05), (False, 8, 0.05)])
def test_below_the_floor_the_bound_is_a_churn_measured_at_most_one_interval_ago(floor, now, bound):
    # interval 4, churn 0.9 measured at step 4 (the first interval's): below the floor at step 8 (one interval
    # later, e.g. the boundary after a drop, whose rows are predicted afresh) the bound is 0.9; at step 12 it
    # is stale and the bound is shock (0.05); above the floor, without follow_churn, shock
    pol = fxdrop.LearnAndDrop(interval=4, total_steps=100, min_speedup=1.5)
    net, _ = _net(pol)
    pol.churns, pol._floor, net.steps = [(4, 0.9)], floor, now
    assert pol.shock_bound() == bound


@pytest.mark.parametrize("order", ["position", "cost"])
def test_position_order_with_a_target_bounds_the_first_boundary_by_the_first_interval_churn(monkeypatch, order):
    # by position with a target, candidates may go at the first boundary (step 4): the churn rows are predicted
    # after step 1 and at step 4, outside a budget that could pay for neither, and 2 of 4 moved: the bound is
    # max(0.05, 0.5), so a screen of 0.3 passes. By cost nothing is measured before step (window - 1) * 4
    preds = iter([torch.tensor([0, 0, 0, 0]), torch.tensor([1, 1, 0, 0])])
    monkeypatch.setattr(fxdrop.policy, "predictions", lambda model, graph, batch, seed=0: next(preds))
    _scripted_costs(monkeypatch, [[0.3] * 5, [0.3], [0.3]])
    pol = Scripted(_table([0.2] * 5), interval=4, warmup=0, check_budget=1e-9, total_steps=400, follow_churn=True,
                   target_speedup=1.05, target_measure="flops", order=order)
    net, x = _net(pol)
    _hold(net, x)
    net.steps = 0
    got = [net.step() for _ in range(4)]
    if order == "cost":
        assert pol.churns == [] and got == [[]] * 4  # the screen (0.3) runs, against 0.05
        return
    assert pol.churns == [(4, 0.5)] and pol.shock_bound() == 0.5
    assert pol.free_rows == 8.0 and pol.check_rows > pol.free_rows  # 4 rows, twice; then the screen and sets
    assert got == [[], [], [], ["layer1.0"]]


@pytest.mark.parametrize("order, target", [("position", 2.0), ("position", None), ("cost", 2.0)])
def test_position_order_with_a_target_has_the_whole_runs_budget_from_the_start(order, target):
    # 10 steps of 4 rows out of 100: check_budget 2.5% of 3 forward rows per training row is 3 rows so far,
    # 30 for the whole run; by position with a target the whole run's is there from the start
    pol = fxdrop.LearnAndDrop(min_speedup=None, total_steps=100, order=order, target_speedup=target, target_measure="flops")
    net, x = _net(pol)
    net.train()
    for _ in range(10):
        net(x)
        net.step()
    assert pol.train_rows == 40 and pol.saved_rows == 0.0
    expected = 30.0 if order == "position" and target else 3.0
    assert pol.check_allowance(10) == pytest.approx(expected)


def test_first_interval_churn_waits_for_the_first_held_batch():
    # interval 8 holds a batch every 2 steps (4 held batches per interval): none at step 1, so the first
    # interval's churn rows are predicted at step 2, and the first boundary has a churn to bound its drops by
    pol = fxdrop.LearnAndDrop(min_speedup=None, interval=8, total_steps=200, target_speedup=1.2, target_measure="flops",
                              follow_churn=True, order="position")
    net, x = _net(pol)
    net.train()
    y = torch.arange(len(x)) % 10
    opt = torch.optim.SGD(net.parameters(), lr=0.05)
    for _ in range(8):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
        net.step(targets=y)
    assert pol.probe.steps[0] == 2 and [s for s, _ in pol.churns] == [8] and pol.free_rows > 0
