"""Replay one Learn&Drop arm of a bench/evidence.py JSON with the code checked out, and say whether its
drop and restore events are the JSON's (training is deterministic: the same events mean the row stands for
this code; different ones, that the code changed its decisions there).

    python bench/replay_events.py docs/measurements/evidence/v9/resnet20_fashion-small-churn_s0.json "l&d, churn shock"

The protocol is read from the JSON's ``command`` with bench/evidence.py's own parser, so the replay trains
exactly the arm that file measured (alone and without test evaluations, which draw no random numbers).
Exit status 1 when the events differ.
"""
from __future__ import annotations

import argparse
import json
import sys

from evidence import alone, command_args  # bench/ is on sys.path when run as a script
from fxdrop.train import train_interleaved


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("json", help="a JSON bench/evidence.py wrote")
    p.add_argument("arm", nargs="?", default="learn-and-drop", help="the label of a phase-1 Learn&Drop arm in it")
    a = p.parse_args(argv)
    with open(a.json) as f:
        doc = json.load(f)
    rows = {r["label"]: r for r in doc["runs"]}
    if a.arm not in rows:
        p.error(f"{a.json} has no arm {a.arm!r}; it has {sorted(rows)}")
    run = alone(command_args(doc["command"]), doc["seed"], a.arm)
    train_interleaved([run])
    old, new = rows[a.arm]["events"], [[s, list(n)] for s, n in run.policy.events]
    same = old == new
    print(f"{a.json} [{a.arm}] seed {doc['seed']}: " + ("same events" if same else f"DIFFERENT: was {old}, now {new}")
          + f"; checks {len(rows[a.arm]['checks'])} then, {len(getattr(run.policy, 'checks', []))} now", flush=True)
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
