"""bench/replay_arm.py reads a Learn&Drop arm's drop and restore history from a JSON, and pairs it seed by
seed with a replay arm: rerun where a rerun exists, as it ran where nothing was restored, flagged otherwise."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))  # replay_arm is a script: it imports its neighbours by name

import replay_arm  # noqa: E402


def _doc(seed, ld_acc, random_acc, restored):
    checks = [{"step": 50, "stage": "probation", "accepted": False, "units": ["a", "b"]}] if restored else []
    checks.append({"step": 30, "stage": 1, "accepted": True, "units": ["a"]})
    return {"seed": seed, "replay_arm": "l&d, churn shock", "runs": [
        {"label": "full", "test_acc": 0.9, "events": []},
        {"label": "l&d, churn shock", "test_acc": ld_acc, "events": [[20, ["c"]], [30, ["a", "b"]]], "checks": checks},
        {"label": "random", "test_acc": random_acc, "events": [[20, ["x"]], [30, ["y", "z"]]]}]}


def test_lead_history_reads_restores_from_refused_probations():
    h = replay_arm.lead_history(_doc(0, 0.8, 0.7, restored=True)["runs"][1])
    assert h.events == [(20, ["c"]), (30, ["a", "b"])] and h.restored == [(50, ["a", "b"])]
    assert replay_arm.lead_history(_doc(0, 0.8, 0.7, restored=False)["runs"][1]).restored == []


def test_pairs_take_reruns_and_flag_pairs_that_are_not_like_for_like(tmp_path):
    src, out = tmp_path / "src", tmp_path / "out"
    src.mkdir(), out.mkdir()
    for seed, (ld, rnd, restored) in enumerate([(0.80, 0.70, True), (0.80, 0.75, False), (0.80, 0.82, True)]):
        (src / f"m_s{seed}.json").write_text(json.dumps(_doc(seed, ld, rnd, restored)))
    (out / "m_s0_random.json").write_text(json.dumps({"run": {"test_acc": 0.815}}))  # seed 0 rerun
    lines = replay_arm.pairs(str(src / "m_s*.json"), str(out), "random").splitlines()
    assert lines[0] == "seed 0: -1.50 pt (rerun, restores replayed)"
    assert lines[1] == "seed 1: +5.00 pt (as it ran)"
    assert lines[2] == "seed 2: -2.00 pt (NOT like for like: the replayed run restored units)"
    assert lines[3].startswith("final: Learn&Drop ahead of random on 1 of 3; mean +0.50 ± ")
    assert len(lines) == 4  # no epoch readings: no last-3 line


def test_pairs_command_takes_the_arm_after_the_glob(tmp_path, capsys):
    src, out = tmp_path / "src", tmp_path / "out"
    src.mkdir(), out.mkdir()
    (src / "m_s0.json").write_text(json.dumps(_doc(0, 0.80, 0.75, restored=False)))
    (out / "m_s0_position.json").write_text(json.dumps({"run": {"test_acc": 0.70}}))
    assert replay_arm.main(["--pairs", str(src / "m_s*.json"), "position", "--out", str(out)]) == 0
    assert capsys.readouterr().out.startswith("seed 0: +10.00 pt (rerun)\n")
