"""bench/static_thin.py chooses fixed sets of units to a FLOPs speed-up (spread evenly or earliest first)
and tabulates its JSON against the full network trained as many times shorter."""

import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))  # static_thin is a script: it imports its neighbours by name

import static_thin  # noqa: E402
from fxdrop.models import build_model  # noqa: E402


def test_spread_takes_the_middles_of_equal_slices_until_the_share_is_reached():
    flops = [10] * 8  # full = 100: the units make 80%
    assert static_thin.spread(flops, 100, 0.10) == [4]  # one unit: the middle
    assert static_thin.spread(flops, 100, 0.25) == [1, 4, 6]  # 3 units: middles of 8/3-long slices
    assert static_thin.spread(flops, 100, 0.40) == [1, 3, 5, 7]
    with pytest.raises(ValueError, match="short of 90.0%"):
        static_thin.spread(flops, 100, 0.9)


def test_earliest_takes_the_first_units_in_graph_order():
    assert static_thin.earliest([5, 20, 20, 30], 100, 0.25) == [0, 1]
    assert static_thin.earliest([5, 20, 20, 30], 100, 0.26) == [0, 1, 2]
    with pytest.raises(ValueError):
        static_thin.earliest([5, 20], 100, 0.5)


def test_plans_reach_the_speedup_by_flops_on_a_real_model():
    arms = static_thin.plans(lambda: build_model("resnet20", 10), [1.5, 2.0], 32, ["spread", "earliest"])
    assert set(arms) == {"thin 1.5x", "thin 1.5x from step 32", "thin 1.5x, earliest", "thin 1.5x, earliest from step 32",
                         "thin 2x", "thin 2x from step 32", "thin 2x, earliest", "thin 2x, earliest from step 32"}
    # ResNet-20's 7 units (the blocks that keep their shape) have equal FLOPs, 11.6% each of the network's
    assert arms["thin 1.5x"]["units"] == ["layer1.1", "layer2.1", "layer3.1"]
    assert arms["thin 1.5x, earliest"]["units"] == ["layer1.0", "layer1.1", "layer1.2"]
    assert arms["thin 1.5x"]["flops_share"] >= 1 - 1 / 1.5 and arms["thin 2x"]["flops_share"] >= 0.5
    assert arms["thin 2x, earliest from step 32"]["plan"] == {32: arms["thin 2x, earliest"]["units"]}
    assert arms["thin 2x"]["plan"] == {1: arms["thin 2x"]["units"]}
    assert arms["thin 1.5x, earliest from step 32"]["at"] == 1.5 and arms["thin 2x"]["at"] == 2.0
    torch.testing.assert_close(arms["thin 1.5x"]["flops_share"], arms["thin 1.5x, earliest"]["flops_share"])


def test_table_pairs_each_seed_with_the_full_network_trained_as_many_times_shorter(tmp_path):
    def thin(seed, d15, d2):
        return {"model": "m", "dataset": "d", "epochs": 5, "seed": seed, "runs": [
            {"label": "full", "delta_pt": 0.0, "speedup_cpu": 1.0},
            {"label": "thin 1.5x", "delta_pt": d15, "speedup_cpu": 1.5, "flops_share": 0.35},
            {"label": "thin 2x from step 32", "delta_pt": d2, "speedup_cpu": 1.9, "flops_share": 0.55}]}

    def evidence(seed, shorter):
        return {"model": "m", "dataset": "d", "epochs": 5, "seed": seed, "runs": [
            {"label": "full", "test_acc": 0.9}, {"label": "full, 1.5x fewer steps", "test_acc": 0.9 + shorter / 100}]}

    paths, against = [], []
    for seed, (d15, d2, sh) in enumerate([(-1.0, -3.0, -3.0), (-2.0, -4.0, -1.0)]):
        paths.append(tmp_path / f"thin_s{seed}.json")
        paths[-1].write_text(json.dumps(thin(seed, d15, d2)))
        against.append(tmp_path / f"ev_s{seed}.json")
        against[-1].write_text(json.dumps(evidence(seed, sh)))
    rows = static_thin.table(paths, against).splitlines()
    assert rows[2] == ("| m / d, 5 ep | thin 1.5x | 35% | 1.50 ± 0.00x | -1.50 ± 0.71 | -1.00, -2.00 | -2.00 ± 1.41 "
                       "| +0.50 ± 2.12 (1 of 2) |")
    # a late drop is not the same speed-up as the shorter run: no lead is claimed for it
    assert rows[3].endswith("| -3.50 ± 0.71 | -3.00, -4.00 | - | - |")
    assert len(rows) == 4
