"""The time-matched full network of a constant-learning-rate protocol, read off the full run itself.

Under a constant learning rate the full network trained for fewer epochs is the full run stopped early
(same initialisation, data order and rate), so its accuracy at the step budget an arm's measured CPU
time buys is the full run's reading at that epoch; this takes the first epoch at or after the budget
(``ceil(epochs / speed-up)``: the full network gets at least its time) and pairs an arm's final reading
and its last three epochs' mean with the full run's at that epoch and the two before it.

    python bench/truncated_match.py docs/measurements/evidence/v8 'resnet18_fashion-small-user-churn_s*.json' \\
        --arm "l&d, churn shock"
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
from pathlib import Path


def match(doc: dict, arm: str) -> tuple[int, float, int, float, float]:
    """``(seed, CPU speed-up, matched epoch, final − matched, last-3 mean − matched last-3 mean)`` in pt."""
    runs = {r["label"]: r for r in doc["runs"]}
    full, mine = runs["full"], runs[arm]
    if doc.get("protocol", {}).get("schedule") != "constant":
        raise ValueError(f"seed {doc['seed']}: a truncated full run equals a shorter one only under a constant rate")
    speed = full["cpu_s"] / mine["cpu_s"]
    epochs = len(full["epoch_acc"])
    e = max(3, min(epochs, math.ceil(epochs / speed - 1e-9)))
    acc = full["epoch_acc"]
    return (doc["seed"], speed, e, 100 * (mine["test_acc"] - acc[e - 1]),
            100 * (statistics.mean(mine["epoch_acc"][-3:]) - statistics.mean(acc[e - 3:e])))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folder")
    p.add_argument("pattern")
    p.add_argument("--arm", default="learn-and-drop")
    a = p.parse_args()
    rows = [match(json.loads(f.read_text()), a.arm) for f in sorted(Path(a.folder).glob(a.pattern))]
    for seed, speed, e, d, d3 in rows:
        print(f"s{seed}: {speed:.2f}x, full stopped at epoch {e}: final {d:+.2f} pt, last 3 epochs {d3:+.2f} pt")
    for i, what in ((3, "final"), (4, "last 3 epochs")):
        ds = [r[i] for r in rows]
        sd = f" ± {statistics.stdev(ds):.2f}" if len(ds) > 1 else ""
        print(f"{a.arm} − time-matched full ({what}): mean {statistics.mean(ds):+.2f}{sd} pt, "
              f"ahead on {sum(d > 0 for d in ds)} of {len(ds)}")


if __name__ == "__main__":
    main()
