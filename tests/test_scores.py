"""Score maths on hand-computed cases."""

import math

import pytest
import torch

from fxdrop.scores import ScoreTracker, extrapolation_factor, relative_change, trend_slope


def test_relative_change_hand_computed():
    old = [torch.tensor([3.0, 0.0]), torch.tensor([4.0])]  # ||old|| = 5
    new = [torch.tensor([3.0, 1.0]), torch.tensor([4.0])]  # ||new - old|| = 1
    assert relative_change(new, old) == pytest.approx(0.2)
    assert relative_change([torch.zeros(2)], [torch.zeros(2)]) == 0.0


def test_trend_slope_is_log_linear():
    assert trend_slope([1.0]) == 0.0
    vals = [math.exp(-0.5 * i) for i in range(5)]
    assert trend_slope(vals) == pytest.approx(-0.5)
    assert trend_slope([2.0, 2.0, 2.0]) == pytest.approx(0.0)


def test_extrapolation_factor():
    assert extrapolation_factor(0.0, 10) == pytest.approx(1.0)
    # b = log(1/2), H = 2: mean(1/2, 1/4) = 3/8
    assert extrapolation_factor(math.log(0.5), 2) == pytest.approx(0.375)
    assert extrapolation_factor(-1.0, 0) == 1.0
    assert math.isfinite(extrapolation_factor(1e6, 50))


def test_tracker_scores_hand_computed():
    w = torch.nn.Parameter(torch.tensor([4.0, 3.0]))  # norm 5
    tr = ScoreTracker({"u": [w]}, beta=0.5, window=3)
    with torch.no_grad():
        w.add_(torch.tensor([0.0, 1.0]))  # moved 1 -> c = 0.2 (lr 1)
    s1 = tr.update(["u"])["u"]
    assert s1["change"] == pytest.approx(0.2)
    assert s1["smoothed"] == pytest.approx(0.2) and s1["plateau"] == pytest.approx(1.0)
    with torch.no_grad():
        w.copy_(torch.tensor([4.0, 4.0]))  # no movement: c = 0
    s2 = tr.update(["u"], lr=0.1)["u"]
    assert s2["change"] == 0.0
    assert s2["smoothed"] == pytest.approx(0.1)  # 0.5 * 0.2 + 0.5 * 0
    assert s2["plateau"] == pytest.approx(0.5)
    with torch.no_grad():
        w.copy_(torch.tensor([4.0, 3.0]))  # moved 1 from norm sqrt(32), lr 0.5
    s3 = tr.update(["u"], lr=0.5)["u"]
    assert s3["change"] == pytest.approx(1 / math.sqrt(32) / 0.5)


def test_continuation_relative_to_median():
    # median plateau 0.4, median trend 0: a and b keep their plateau ratio, c decays faster than typical
    scores = {
        "a": {"plateau": 0.2, "trend": 0.0},
        "b": {"plateau": 0.4, "trend": 0.0},
        "c": {"plateau": 0.8, "trend": math.log(0.5)},
    }
    ScoreTracker.continuation(scores, horizon=2)
    assert scores["a"]["continuation"] == pytest.approx(0.5)
    assert scores["b"]["continuation"] == pytest.approx(1.0)
    assert scores["c"]["continuation"] == pytest.approx(2.0 * 0.375)


def test_shared_decay_does_not_count():
    # every unit decays at the same rate: the trend cancels out, only the plateau ratios matter
    scores = {n: {"plateau": p, "trend": -0.7} for n, p in (("a", 0.1), ("b", 0.2), ("c", 0.4))}
    ScoreTracker.continuation(scores, horizon=10)
    assert [scores[n]["continuation"] for n in "abc"] == pytest.approx([0.5, 1.0, 2.0])


def test_non_finite_movement_gives_nan():
    w = torch.nn.Parameter(torch.ones(3))
    tr = ScoreTracker({"u": [w]})
    with torch.no_grad():
        w.fill_(float("nan"))
    assert math.isnan(tr.update(["u"])["u"]["change"])


def test_snapshot_memory_is_freed_on_forget():
    w = torch.nn.Parameter(torch.ones(3))
    tr = ScoreTracker({"u": [w], "v": [torch.nn.Parameter(torch.ones(2))]})
    tr.forget("u")
    assert set(tr.state) == {"v"}
