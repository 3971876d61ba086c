"""Print the benchmark report from pytest-benchmark JSON.

    python -m pytest bench --benchmark-enable --bench-set quick --benchmark-json runs/bench.json
    python bench/report.py runs/bench.json

Per model, input size and mode: median time of each variant, its time ratio to the original model, the
FLOPs ratio, and their quotient (time ratio / FLOPs ratio: 1.0 means the saving is exactly what the FLOPs
allow; the issue's target is <= 1.15 in eager mode). Then compiled vs eager, scoring overhead and
rewrite cost.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict

from tabulate import tabulate

ORDER = ["original", "wrapped", "25%", "50%", "all"]


def load(path: str) -> list[dict]:
    with open(path) as f:
        doc = json.load(f)
    return [b for b in doc["benchmarks"] if b.get("stats")]


def report(benchmarks: list[dict]) -> str:
    out = []
    cases = defaultdict(dict)
    for b in benchmarks:
        e = b["extra_info"]
        if e.get("kind") in ("forward", "train_step"):
            cases[(e["kind"], e["model"], e["size"], e["mode"])][e["variant"]] = b
    rows = []
    for (kind, model, size, mode), vs in sorted(cases.items()):
        base = vs.get("original") or vs.get("wrapped")
        for v in ORDER:
            if v not in vs or base is None:
                continue
            b = vs[v]
            t_ratio = b["stats"]["median"] / base["stats"]["median"]
            f_ratio = b["extra_info"]["flops_ratio"]
            rows.append([kind, model, size, mode, v, f"{b['extra_info']['units_dropped']}/{b['extra_info']['units']}",
                         f"{1000 * b['stats']['median']:.2f}", f"{t_ratio:.3f}", f"{f_ratio:.3f}",
                         f"{t_ratio / f_ratio:.2f}" if v not in ("original",) else "-"])
    out.append(tabulate(rows, headers=["suite", "model", "size", "mode", "variant", "dropped", "median ms",
                                       "time / original", "FLOPs ratio", "time/FLOPs"], tablefmt="github", disable_numparse=True))
    comp = []
    for (kind, model, size, mode), vs in sorted(cases.items()):
        if mode != "compiled":
            continue
        eager = cases.get((kind, model, size, "eager"), {})
        for v in ORDER:
            if v in vs and v in eager:
                comp.append([kind, model, size, v, f"{vs[v]['stats']['median'] / eager[v]['stats']['median']:.3f}"])
    if comp:
        out.append("\nCompiled vs eager (median time ratio, < 1 means compiled is faster):")
        out.append(tabulate(comp, headers=["suite", "model", "size", "variant", "compiled / eager"], tablefmt="github", disable_numparse=True))
    extra = []
    for b in benchmarks:
        e = b["extra_info"]
        if e.get("kind") == "scoring":
            per_step = b["stats"]["mean"] / e["interval"]
            step = cases.get(("train_step", e["model"], e["size"], "eager"), {}).get("wrapped")
            rel = f"{100 * per_step / step['stats']['median']:.3f}% of a train step" if step else "(no train-step case for this model)"
            extra.append(["scoring per step", e["model"], f"{1000 * per_step:.4f} ms", rel])
        elif e.get("kind") == "rewrite":
            extra.append([f"rewrite per drop event ({e['mode']})", e["model"], f"{1000 * b['stats']['median']:.1f} ms",
                          f"{e['units']} units"])
    if extra:
        out.append("\nOverheads:")
        out.append(tabulate(extra, headers=["what", "model", "time", "note"], tablefmt="github", disable_numparse=True))
    return "\n".join(out)


if __name__ == "__main__":
    print(report(load(sys.argv[1] if len(sys.argv) > 1 else "runs/bench.json")))
