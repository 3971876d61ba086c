"""Replay the payoff rule (``LearnAndDrop._pays``, docs/method.md) on the check records of evidence JSON.

For every choice the default Learn&Drop arm made (its single-unit screen records), ask the real policy,
set to that run's step, rows and held batches, whether the event would still run (before the screen,
with every screened unit) and whether the units that passed would still be taken (after it). Prints the
events the rule changes, with the rows those units could save against the checks ahead
(``LearnAndDrop.payoff``)::

    python bench/replay_payoff.py docs/measurements/evidence/*.json
"""

from __future__ import annotations

import argparse
import json

import torch

import fxdrop
from fxdrop.models import build_model


def _policy(model: str, protocol: dict, steps: int, held: int = 4, samples: int = 128) -> fxdrop.LearnAndDrop:
    """A default Learn&Drop on ``model`` told of a ``steps``-step run, holding ``held`` labelled batches of
    the run's size (what its probe held at a choice)."""
    pol = fxdrop.LearnAndDrop(total_steps=steps)
    fxdrop.wrap(build_model(model, 10), example_inputs=(torch.randn(2, 3, 32, 32),), policy=pol)
    rows = min(protocol["batch_size"], samples)
    for i in range(held):
        pol.probe.offer(i * pol.probe.stride, (torch.zeros(rows, 1),), {})
        pol.probe.offer_targets(i * pol.probe.stride, torch.zeros(rows, dtype=torch.long))
    return pol


def replay(doc: dict) -> list[tuple]:
    run = next(r for r in doc["runs"] if r["label"] == "learn-and-drop")
    pol = _policy(doc["model"], doc["protocol"], run["steps"])
    net = pol.net
    changed = []
    for step in sorted({c["step"] for c in run["checks"] if c["stage"] == 1}):
        screen: list[dict] = []
        for c in (c for c in run["checks"] if c["step"] == step and c["stage"] == 1):
            if len(c["units"]) != 1 or any(c["units"] == s["units"] for s in screen):
                break  # the sets follow the screen
            screen.append(c)
        net.steps, pol.train_rows = step, step * doc["protocol"]["batch_size"]
        cands = [net.unit(c["units"][0]) for c in screen]
        passed = [net.unit(c["units"][0]) for c in screen if c["accepted"]]
        before = pol._pays(cands, step, screened=False)
        after = not passed or pol._pays(passed, step, screened=True)
        if not (before and after):
            saves, cost = pol.payoff(cands if not before else passed, step, screened=before)
            changed.append((step, [u.name for u in cands], [u.name for u in passed], before, saves, cost))
    return changed


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("files", nargs="+")
    for path in p.parse_args().files:
        doc = json.load(open(path))
        if not any(r["label"] == "learn-and-drop" for r in doc["runs"]):
            continue
        changes = replay(doc)
        print(f"{path}: {'no choice changes' if not changes else ''}")
        for step, cands, passed, before, saves, cost in changes:
            print(f"  step {step}: screened {cands}, passed {passed}: "
                  f"{'event not run' if not before else 'passed units not taken'} "
                  f"(could save {saves:,.0f} forward rows, checks ahead {cost:,.0f})")


if __name__ == "__main__":
    main()
