"""evidence_table and compare_versions read bench/evidence.py's JSON (a hand-made sample) and pair each
arm with the same seed's full network."""

import json

import pytest

from .compare_versions import compare
from .evidence import command_args
from .evidence_table import collect, paired, probation_summary


def _run(label, acc, epochs, cpu, phase=1, events=(), steps=100, checks=()):
    return {"label": label, "phase": phase, "test_acc": acc, "epoch_acc": epochs, "cpu_s": cpu, "wall_s": cpu,
            "steps": steps, "flops_ratio": 1.0, "units": 5, "dropped": [n for _, ns in events for n in ns],
            "events": [list(e) for e in events], "checks": list(checks), "check_s": 0.0}


def _doc(seed, full_acc, ld_acc, ld_epochs, tag="-user"):
    return {"model": "m", "dataset": "d", "epochs": 3, "seed": seed, "tag": tag, "runs": [
        _run("full", full_acc, [0.5, 0.6, 0.7], 10.0),
        _run("learn-and-drop", ld_acc, ld_epochs, 8.0, events=[(30, ["a"])],
             checks=[{"step": 50, "stage": "probation", "accepted": False, "units": ["a"]}]),
        _run("full-matched", 0.6, [0.4, 0.5, 0.6], 8.0, phase=2, steps=80)]}


def _write(folder, docs):
    folder.mkdir()
    for d in docs:
        (folder / f"m_d{d['tag']}_s{d['seed']}.json").write_text(json.dumps(d))


def test_pairs_final_readings_and_the_last_three_epochs(tmp_path):
    _write(tmp_path / "e", [_doc(0, 0.7, 0.65, [0.6, 0.8, 0.65]), _doc(1, 0.7, 0.75, [0.5, 0.6, 0.75])])
    arms = collect(tmp_path / "e")[("m", "d-user", 3)]
    assert [r["dacc"] for r in arms["learn-and-drop"]] == pytest.approx([-5.0, 5.0])
    assert [r["restored"] for r in arms["learn-and-drop"]] == [1, 1]
    # timed in its own phase, scaled to the full step count: its speed-up is its step ratio, 100 / 80
    assert arms["full-matched"][0]["cpu"] == pytest.approx(1.25)
    final = paired(arms, ("learn-and-drop",))
    assert final == ["- learn-and-drop − full-matched, paired per seed (pt): s0 +5.00, s1 +15.00 "
                     "(2 of 2 ahead; mean +10.00 ± 7.07)"]
    last3 = paired(arms, ("learn-and-drop",), "acc_last3", ("full",))
    # means of the last three epochs: 68.33 and 61.67 against the full network's 60.00
    assert last3 == ["- learn-and-drop − full, last 3 epochs' mean, paired per seed (pt): s0 +8.33, s1 +1.67 "
                     "(2 of 2 ahead; mean +5.00 ± 4.71)"]


def test_replays_pair_only_with_the_arm_they_followed(tmp_path):
    # with --replay-arm the time-matched network is matched to that arm's time: pairing another arm with
    # it would compare runs of different lengths
    doc = _doc(0, 0.7, 0.65, [0.6, 0.8, 0.65])
    doc["replay_arm"] = "l&d, churn shock"
    doc["runs"].insert(2, {**doc["runs"][1], "label": "l&d, churn shock", "test_acc": 0.66})
    _write(tmp_path / "e", [doc])
    arms = collect(tmp_path / "e")[("m", "d-user", 3)]
    assert paired(arms, ("learn-and-drop",)) == []
    assert paired(arms, ("l&d, churn shock",)) == [
        "- l&d, churn shock − full-matched, paired per seed (pt): s0 +6.00 (1 of 1 ahead; mean +6.00)"]


def test_compare_versions_pairs_seeds_and_refuses_runs_whose_full_networks_differ(tmp_path):
    _write(tmp_path / "old", [_doc(0, 0.7, 0.65, [0.6, 0.6, 0.65]), _doc(1, 0.7, 0.7, [0.6, 0.6, 0.7])])
    _write(tmp_path / "new", [_doc(0, 0.7, 0.70, [0.6, 0.6, 0.7]), _doc(1, 0.71, 0.7, [0.6, 0.6, 0.7])])
    lines = compare(tmp_path / "old", tmp_path / "new", "*.json", "learn-and-drop")
    assert lines[2] == ("| m_d-user_s0 | 70.00 / 70.00 | 1.25x, -5.00, [30: 1] restored at [50] "
                        "| 1.25x, +0.00, [30: 1] restored at [50] |")
    assert lines[3] == "| m_d-user_s1 | full networks differ: not comparable | | |"
    assert lines[-1].endswith("over 1 seeds: speed-up +0.00x, Δ acc +5.00 pt")


def test_compare_versions_pairs_another_tag_by_seed(tmp_path):
    _write(tmp_path / "e", [_doc(0, 0.7, 0.65, [0.6, 0.6, 0.65]), _doc(0, 0.7, 0.69, [0.6, 0.6, 0.69], tag="-proj"),
                            _doc(1, 0.7, 0.7, [0.6, 0.6, 0.7], tag="-proj")])
    lines = compare(tmp_path / "e", tmp_path / "e", "*-user_s*.json", "learn-and-drop", new_pattern="*-proj_s*.json")
    assert lines[2:] == ["| s0 | 70.00 / 70.00 | 1.25x, -5.00, [30: 1] restored at [50] "
                         "| 1.25x, -1.00, [30: 1] restored at [50] |",  # seed 1 has no old run: left out
                         "\nnew − old over 1 seeds: speed-up +0.00x, Δ acc +4.00 pt"]


def test_probation_summary_splits_accuracy_lost_and_standard_error(tmp_path):
    checks = [{"step": 50, "stage": "probation", "accepted": True, "units": ["a"], "accuracy_drop": -0.02, "cost": -0.01},
              {"step": 60, "stage": "probation", "accepted": False, "units": ["b"], "accuracy_drop": 0.01, "cost": 0.02},
              {"step": 20, "stage": 1, "accepted": True, "units": ["b"], "accuracy_drop": 0.5, "cost": 0.5}]
    doc = _doc(0, 0.7, 0.65, [0.6, 0.8, 0.65])
    doc["runs"][1]["checks"] = checks
    _write(tmp_path / "e", [doc])
    assert probation_summary(tmp_path / "e") == [
        "- m / d-user, learn-and-drop: 2 lasting-cost checks, accuracy lost a -0.50 pt, standard error added "
        "1.00 pt (means), 1 restored; a of the kept -2.00 to -2.00 pt"]


@pytest.mark.parametrize("command", [
    # v10 on: shlex-quoted; before: arm labels joined unquoted (their words are not labels)
    "python bench/evidence.py --model resnet56 --dataset fashion-small --epochs 5 --arms 'l&d, churn shock' full "
    "--tag=-heldout --seeds 1",
    "python bench/evidence.py --model resnet56 --arms full learn-and-drop l&d, churn shock --dataset fashion-small "
    "--epochs 5 --tag=-heldout --seeds 0 1 2",
])
def test_command_args_reads_the_protocol_a_json_ran(command):
    args = command_args(command)
    assert (args.model, args.dataset, args.epochs, args.tag, args.arms) == ("resnet56", "fashion-small", 5,
                                                                            "-heldout", None)
    assert (args.batch_size, args.schedule, args.interval) == (128, "onecycle", None)  # evidence.py's defaults
