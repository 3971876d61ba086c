"""Aggregate ``fxdrop run --json`` outputs into the docs/results.md table (mean ± std over seeds).

Usage: python bench/results_table.py runs/results
Speed-up and accuracy delta are computed per seed against that seed's full run (same process, same
initialisation, measured side by side), then averaged.
"""

from __future__ import annotations

import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

from tabulate import tabulate


def _ms(values: list[float], fmt: str) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return format(values[0], fmt)
    return f"{format(statistics.mean(values), fmt)} ± {format(statistics.stdev(values), fmt.lstrip('+'))}"


def main(folder: str) -> None:
    rows: dict[tuple[str, str, str], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    seeds: dict[str, set[int]] = defaultdict(set)
    for path in sorted(Path(folder).glob("*.json")):
        if path.stat().st_size == 0:  # a run still in progress
            continue
        doc = json.loads(path.read_text())
        if "runs" not in doc:  # e.g. a pytest-benchmark JSON in the same folder
            continue
        runs = doc["runs"]
        base = next(r for r in runs if r["policy"] == "none")
        seeds[doc["model"]].add(doc["config"]["seed"])
        ld = doc["config"].get("ld_options") or {}
        setting = ", ".join(f"{k}={v}" for k, v in sorted(ld.items())) or "default"
        for r in runs:
            cell = rows[(doc["model"], setting if r["policy"] != "none" else "-", r["policy"])]
            cell["speedup"].append(base["wall_s"] / r["wall_s"])
            cell["acc"].append(100 * r["test_acc"])
            cell["dacc"].append(100 * (r["test_acc"] - base["test_acc"]))
            cell["flops"].append(100 * (1 - r["flops_ratio"]))
            cell["dropped"].append(len(r["dropped"]))
            cell["units"].append(r["units"])
    table = []
    for (model, setting, policy), c in rows.items():
        table.append([model, setting, policy, len(c["acc"]), _ms(c["speedup"], ".2f"), _ms(c["acc"], ".2f"), _ms(c["dacc"], "+.2f"),
                      _ms(c["flops"], ".1f"), f"{_ms(c['dropped'], '.1f')} of {int(c['units'][0])}" if c["units"][0] else "-"])
    print(tabulate(table, headers=["model", "L&D setting", "policy", "runs", "speed-up", "test acc %", "Δ acc pt",
                                   "fwd FLOPs saved %", "units dropped"], tablefmt="github", disable_numparse=True))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "runs/results")
