"""The tables of docs/results.md from bench/evidence.py's JSON: per row of bench/matrix.json and loop,
the mean ± standard deviation over seeds of the speed-ups (CPU and wall time, measured interleaved;
forward FLOPs, predicted), the accuracy difference to the full network, the checks' share of the compute,
and when the drops came::

    python bench/evidence_table.py docs/measurements/matrix
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path


def _ms(values: list[float], fmt: str) -> str:
    if len(values) < 2:
        return format(values[0], fmt) if values else "-"
    return f"{format(statistics.mean(values), fmt)} ± {format(statistics.stdev(values), fmt.lstrip('+'))}"


def table(runs: list[dict]) -> str:
    head = ("| model / data | loop | seeds | CPU speed-up | wall speed-up | FLOPs speed-up | Δ acc pt | full acc % "
            "| checks % | drops (step: units) | returns |\n|---|---|---|---|---|---|---|---|---|---|---|")
    groups: dict[tuple, list[dict]] = {}
    for r in runs:
        groups.setdefault((r["row"]["model"], r["row"]["dataset"], r["loop"]), []).append(r)
    lines = [head]
    for (model, data, loop), rs in sorted(groups.items()):
        rs.sort(key=lambda r: r["seed"])
        drops = "; ".join("s{}: {}".format(r["seed"], ", ".join(f"{s}: {len(n)}" for s, n in r["learn_and_drop"]["events"])
                                           or "none") for r in rs)
        returns = sum(len(r["learn_and_drop"]["restores"]) for r in rs)
        lines.append(f"| {model} / {data} | {loop} | {len(rs)} | {_ms([r['speedup_cpu'] for r in rs], '.2f')}x "
                     f"| {_ms([r['speedup_wall'] for r in rs], '.2f')}x | {_ms([r['speedup_flops'] for r in rs], '.2f')}x "
                     f"| {_ms([r['delta_pt'] for r in rs], '+.2f')} | {_ms([100 * r['full']['test_acc'] for r in rs], '.2f')} "
                     f"| {_ms([100 * r['check_share'] for r in rs], '.1f')} | {drops} | {returns} |")
    return "\n".join(lines)


def main() -> None:
    root = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/measurements/matrix")
    runs = [json.loads(p.read_text()) for p in sorted(root.glob("*.json"))]
    for held in (False, True):
        print(f"\n{'Held-out rows (run once, after the default was fixed)' if held else 'Fitted rows'}\n")
        print(table([r for r in runs if r["row"]["held_out"] == held]))


if __name__ == "__main__":
    main()
