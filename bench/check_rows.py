"""What Learn&Drop's checks ran, step by step, against their budget: one arm of a bench/evidence.py
protocol trained alone (no test evaluations) for ``--steps`` steps, printing at every step where checks
ran the forward rows they counted, the allowance at that step and the base budget of the whole run
(docs/results.md, "New in v10"). Counts, not times: deterministic on any machine.

    python bench/check_rows.py --model resnet56 --dataset fashion-small --epochs 5 --seeds 2 --steps 48
"""
from __future__ import annotations

import argparse

from evidence import alone, parser  # bench/ is on sys.path when run as a script


def main(argv: list[str] | None = None) -> None:
    extra = argparse.ArgumentParser(add_help=False)
    extra.add_argument("--steps", type=int, required=True, help="train this many steps (at most the run's)")
    extra.add_argument("--arm", default="learn-and-drop", help="a phase-1 Learn&Drop arm of bench/evidence.py")
    mine, rest = extra.parse_known_args(argv)
    args = parser().parse_args(rest)  # the protocol, as bench/evidence.py reads it (first of --seeds)
    run = alone(args, args.seeds[0], mine.arm)
    pol = run.policy
    base = pol.check_budget * 3 * run.cfg.epochs * len(run.data.train_y)  # a training row counts 3 forward rows
    last = max(1, min(mine.steps, run.total))
    for step in range(1, last + 1):
        before = pol.check_rows
        run.advance(1)
        if pol.check_rows != before:
            print(f"step {step}: checks ran {pol.check_rows - before:,.0f} forward rows (so far {pol.check_rows:,.0f}); "
                  f"allowed by this step {pol.check_allowance(step):,.0f}; base budget of the whole run {base:,.0f}",
                  flush=True)
    print(f"after {last} steps: {pol.check_rows:,.0f} rows of checks, {pol.check_rows / base:.0%} of the run's base "
          f"budget; events {pol.events}")


if __name__ == "__main__":
    main()
