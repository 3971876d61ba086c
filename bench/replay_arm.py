"""Train one replay arm (random or position drops, or the thinner network) of a bench/evidence.py JSON again
with the code checked out, from the drop *and restore* events its Learn&Drop arm recorded, and print its
test accuracy paired with that arm's. Replays before v11 did not put back what the replayed run restored,
so where it restored a cohort they ended with more units dropped: this reruns such a pair like for like.

    python bench/replay_arm.py docs/measurements/evidence/v10/resnet56_fashion-small-heldout_s1.json random \\
        --out docs/measurements/evidence/v11/replay_arm

``--pairs 'docs/measurements/evidence/resnet18_fashion-small-user_s*.json' [ARM] --out FOLDER`` prints, seed by seed,
the Learn&Drop arm minus the replay arm: from FOLDER's rerun where there is one, else the JSON's own pair
(a run that restored nothing is replayed exactly as it ran).

The protocol is read from the JSON's ``command`` (bench/evidence.py's parser), the replayed arm from its
``replay_arm``. The arm trains alone, with the test evaluations of the protocol; its times are not
comparable with the JSON's interleaved ones and are not reported. Where the replayed run restored nothing,
the arm is the JSON's own and its accuracy must come out the same (printed as a check of the replay).
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from types import SimpleNamespace

import torch

from evidence import _row, command_args, protocol  # bench/ is on sys.path when run as a script
from evidence_table import restores
from fxdrop.train import REPLAYS, TrainRun, train_interleaved


def lead_history(row: dict) -> SimpleNamespace:
    """The drop events and restores of a Learn&Drop arm's JSON row, as the replays read them from a policy
    (:func:`evidence_table.restores`)."""
    return SimpleNamespace(events=[(s, list(n)) for s, n in row["events"]], restored=restores(row))


def pairs(pattern: str, folder: str, arm: str) -> str:
    """One line per JSON matching ``pattern``: Learn&Drop minus ``arm`` in points, rerun (``folder``) or not."""
    import glob
    import statistics

    def last3(row: dict) -> float | None:  # the mean of the last three epochs' test accuracy (docs/results.md)
        acc = row.get("epoch_acc", [])
        return 100 * statistics.mean(acc[-3:]) if len(acc) >= 3 else None

    def summary(name: str, diffs: list[float]) -> str:
        spread = f" ± {statistics.stdev(diffs):.2f}" if len(diffs) > 1 else ""
        return (f"{name}: Learn&Drop ahead of {arm} on {sum(d > 0 for d in diffs)} of {len(diffs)}; "
                f"mean {statistics.mean(diffs):+.2f}{spread} pt")

    out, diffs, diffs3 = [], [], []
    for path in sorted(glob.glob(pattern)):
        doc = json.loads(Path(path).read_text())
        rows = {r["label"]: r for r in doc["runs"]}
        lead = rows[doc.get("replay_arm", "learn-and-drop")]
        restored = bool(restores(lead))
        rerun = Path(folder) / f"{Path(path).stem}_{arm}.json"
        if rerun.exists():
            other, how = json.loads(rerun.read_text())["run"], "rerun, restores replayed" if restored else "rerun"
        elif arm in rows:
            other = rows[arm]
            how = "NOT like for like: the replayed run restored units" if restored else "as it ran"
        else:
            continue
        diffs.append(100 * (lead["test_acc"] - other["test_acc"]))
        line = f"seed {doc['seed']}: {diffs[-1]:+.2f} pt"
        a, b = last3(lead), last3(other)
        if a is not None and b is not None:
            diffs3.append(a - b)
            line += f", last 3 epochs {diffs3[-1]:+.2f}"
        out.append(f"{line} ({how})")
    if diffs:
        out.append(summary("final", diffs))
    if len(diffs3) == len(diffs) and diffs3:
        out.append(summary("last 3 epochs' mean", diffs3))
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("json", nargs="?", help="a JSON bench/evidence.py wrote")
    p.add_argument("--pairs", metavar="GLOB", help="print the pairs of the JSONs matching GLOB instead (with --out)")
    p.add_argument("arm", nargs="?", default="random", choices=REPLAYS, help="the replay arm to train again")
    p.add_argument("--out", default=None, help="folder for the result's JSON (named as the source)")
    a = p.parse_args(argv)
    if a.pairs:  # --pairs GLOB [ARM]: the one positional names the arm
        arm = a.json if a.json is not None else a.arm
        if arm not in REPLAYS:
            p.error(f"--pairs: the arm must be one of {REPLAYS}, got {arm!r}")
        print(pairs(a.pairs, a.out or ".", arm))
        return 0
    if a.json is None:
        p.error("name a JSON, or --pairs GLOB")
    doc = json.loads(Path(a.json).read_text())
    lead_label = doc.get("replay_arm", "learn-and-drop")
    rows = {r["label"]: r for r in doc["runs"]}
    if lead_label not in rows:
        p.error(f"{a.json} has no Learn&Drop arm {lead_label!r} to replay")
    lead = rows[lead_label]
    history = lead_history(lead)
    args = command_args(doc["command"])
    torch.set_num_threads(args.threads)
    data, factory, cfg = protocol(args, doc["seed"])
    run = TrainRun(factory, data, cfg, a.arm, reference=history)
    train_interleaved([run])
    row = _row(a.arm, run, 2)
    for key in ("wall_s", "cpu_s", "epoch_time", "event_times", "check_s"):  # alone: not comparable, not kept
        row.pop(key, None)
    diff = 100 * (lead["test_acc"] - row["test_acc"])
    print(f"{a.json} seed {doc['seed']}: {lead_label} {100 * lead['test_acc']:.2f}% ({len(lead['dropped'])} dropped, "
          f"restores {history.restored}) − {a.arm} {100 * row['test_acc']:.2f}% ({len(row['dropped'])} dropped, "
          f"restores {row['restores']}) = {diff:+.2f} pt", flush=True)
    status = 0
    if not history.restored and a.arm in rows:
        same = (rows[a.arm]["test_acc"] == row["test_acc"]
                and rows[a.arm]["events"] == json.loads(json.dumps(row["events"])))  # tuples as the JSON's lists
        print("  nothing restored: the JSON's own arm " + ("reproduced" if same else
              f"NOT reproduced (was {100 * rows[a.arm]['test_acc']:.2f}%, events {rows[a.arm]['events']})"))
        status = 0 if same else 1
    if a.out:
        out = Path(a.out)
        out.mkdir(parents=True, exist_ok=True)
        target = out / f"{Path(a.json).stem}_{a.arm}.json"
        target.write_text(json.dumps({
            "command": shlex.join(["python", "bench/replay_arm.py", *(argv if argv is not None else sys.argv[1:])]),
            "source": a.json, "seed": doc["seed"], "replay_arm": lead_label,
            "lead": {"test_acc": lead["test_acc"], "dropped": lead["dropped"], "events": lead["events"],
                     "restored": history.restored},
            "run": row, "lead_minus_arm_pt": diff}, indent=1))
        print(f"  wrote {target}")
    return status


if __name__ == "__main__":
    sys.exit(main())
