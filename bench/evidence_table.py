"""Aggregate bench/evidence.py's JSON: a markdown table (mean ± std over seeds, paired with each seed's
full network) and a Pareto plot of test accuracy against training time relative to the full network.

Phase-2 arms (marked ²) are timed against the time-matched full network of their own phase, scaled to
the full step count: the phases do not share turns, and load on this machine changed between them
(phase-2 arms read 2.4-4.2x by wall time against phase 1's full run in one seed). The time-matched
arm's own speed-up is therefore its step ratio, by construction.

    python bench/evidence_table.py docs/measurements/evidence [--plot docs/pareto.png]
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from pathlib import Path

from fxdrop.train import DEPENDENT  # the arms built from a Learn&Drop run: time-matched to it, or replaying it


def _ms(values: list[float], fmt: str) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return format(values[0], fmt)
    return f"{format(statistics.mean(values), fmt)} ± {format(statistics.stdev(values), fmt)}"


def restores(row: dict) -> list[tuple[int, list[str]]]:
    """``(step, units)`` of every cohort an arm's JSON row put back: a Learn&Drop arm's probation checks
    that refused their cohort, else the row's ``restores`` (recorded for every arm since v11; a replay runs
    no checks)."""
    refused = [(c["step"], list(c["units"])) for c in row.get("checks", [])
               if c.get("stage") == "probation" and not c["accepted"]]
    return refused or [(int(s), list(n)) for s, n in row.get("restores", [])]


def collect(folder: Path, pattern: str = "*.json") -> dict:
    """{(model, dataset, epochs): {label: [row with paired figures, one per seed]}}"""
    out: dict = defaultdict(lambda: defaultdict(list))
    docs = [{**json.loads(path.read_text()), "file": path.stem} for path in sorted(folder.glob(pattern))]
    for doc in sorted(docs, key=lambda d: bool(d.get("tag"))):  # the default protocol's tables first
        base = next(r for r in doc["runs"] if r["label"] == "full")
        matched = next((r for r in doc["runs"] if r["label"] == "full-matched"), None)
        for r in doc["runs"]:
            first = r["events"][0][0] if r["events"] else None
            back = restores(r)
            ref = base
            if r["phase"] == 2 and matched is not None:
                # phase 2 shares no turn with phase 1's full run: its reference is the time-matched full
                # network of the same phase, scaled to the full step count (same network, same step cost)
                scale = base["steps"] / matched["steps"]
                ref = {"wall_s": matched["wall_s"] * scale, "cpu_s": matched["cpu_s"] * scale}
            out[(doc["model"], doc["dataset"] + doc.get("tag", ""), doc["epochs"])][r["label"]].append({
                "seed": doc["seed"], "file": doc["file"], "phase": r["phase"], "events": r["events"],
                "wall": ref["wall_s"] / r["wall_s"], "cpu": ref["cpu_s"] / r["cpu_s"],
                "flops": (base["steps"] * base["flops_ratio"]) / (r["steps"] * r["flops_ratio"]),
                "rel_time": r["cpu_s"] / ref["cpu_s"],
                "acc": 100 * r["test_acc"], "dacc": 100 * (r["test_acc"] - base["test_acc"]),
                # test accuracy averaged over the last three epochs: under a constant learning rate one
                # epoch's reading moves by several points from the next (docs/results.md)
                "acc_last3": 100 * statistics.mean(r["epoch_acc"][-3:]) if len(r.get("epoch_acc", [])) >= 3 else None,
                "dropped": len(r["dropped"]), "units": r["units"],
                "first": first / r["steps"] if first else None,
                "check": 100 * r.get("check_s", 0.0) / r["wall_s"] if r["wall_s"] else 0.0,
                "restored": sum(len(n) for _, n in back), "restored_at": [step for step, _ in back],
                # which Learn&Drop arm a dependent arm was built from (bench/evidence.py --replay-arm)
                "follows": doc.get("replay_arm", "learn-and-drop") if r["label"] in DEPENDENT else None,
            })
    return out


def table(data: dict) -> str:
    lines = []
    for (model, dataset, epochs), arms in data.items():
        lines.append(f"\n**{model} / {dataset}, {epochs} epochs**\n")
        lines.append("| arm | seeds | speed-up (CPU) | speed-up (wall) | FLOPs predict | test acc % | Δ acc pt (paired) "
                     "| units dropped | restored | first drop (share of run) | checks % of time |")
        lines.append("|---|---|---|---|---|---|---|---|---|---|---|")
        for label, rows in arms.items():
            firsts = [r["first"] for r in rows if r["first"] is not None]
            lines.append(
                f"| {label}{' ²' if rows[0]['phase'] == 2 else ''} | {len(rows)} | {_ms([r['cpu'] for r in rows], '.2f')}x "
                f"| {_ms([r['wall'] for r in rows], '.2f')}x | {_ms([r['flops'] for r in rows], '.2f')}x "
                f"| {_ms([r['acc'] for r in rows], '.2f')} | {_ms([r['dacc'] for r in rows], '+.2f')} "
                f"| {_ms([float(r['dropped']) for r in rows], '.1f')} of {rows[0]['units']} "
                f"| {_ms([float(r['restored']) for r in rows], '.1f')} "
                f"| {_ms(firsts, '.2f') if firsts else '-'} | {_ms([r['check'] for r in rows], '.1f')} |")
        lines.append("")
        lines.extend(paired(arms))
        if "user" in dataset:  # issue 8's plain loop: a constant learning rate, readings that swing
            lines.extend(paired(arms, ("learn-and-drop",), "acc_last3", ("full", "full-matched", "random")))
            lines.extend(paired(arms, ("l&d, no total_steps",), "acc_last3", ("full",)))
        for mine in ("l&d, held-out checks", "l&d, churn shock"):  # v8's opt-in arms, beside the default
            if mine in arms:
                for key in ("acc", "acc_last3") if "user" in dataset else ("acc",):
                    # the replays (time-matched, random) follow it when run with --replay-arm
                    lines.extend(paired(arms, (mine,), key, ("full", "learn-and-drop", "full-matched", "random")))
    return "\n".join(lines)


def paired(arms: dict, mine: tuple[str, ...] = ("learn-and-drop", "l&d, target 2x"), key: str = "acc",
           others: tuple[str, ...] | None = None) -> list[str]:
    """Learn&Drop's accuracy minus each phase-2 arm's (or each of ``others``), seed by seed (the same data
    order and init); ``key="acc_last3"`` pairs the last three epochs' mean instead of the final reading."""
    out = []
    for label in mine:
        if label not in arms:
            continue
        acc = {r["seed"]: r[key] for r in arms[label] if r[key] is not None}
        for other, rows in arms.items():
            if (rows[0]["phase"] != 2) if others is None else (other not in others):
                continue
            # a replay is paired only with the arm it followed (time-matched to that arm's time)
            diffs = [(r["seed"], acc[r["seed"]] - r[key]) for r in sorted(rows, key=lambda r: r["seed"])
                     if r["seed"] in acc and r[key] is not None and r.get("follows") in (None, label)]
            if not diffs:
                continue
            wins = sum(d > 0 for _, d in diffs)
            mean = f"; mean {statistics.mean(d for _, d in diffs):+.2f}" + (
                f" ± {statistics.stdev(d for _, d in diffs):.2f}" if len(diffs) > 1 else "")
            what = "paired per seed" if key == "acc" else "last 3 epochs' mean, paired per seed"
            out.append(f"- {label} − {other}, {what} (pt): "
                       + ", ".join(f"s{seed} {d:+.2f}" for seed, d in diffs) + f" ({wins} of {len(diffs)} ahead{mean})")
    return out


def probation_summary(folder: Path, pattern: str = "*.json") -> list[str]:
    """Per model, data set and arm: the lasting-cost checks at the end of probations (``stage ==
    "probation"``), split into the accuracy lost ``a`` and the standard error the cost adds to it (cost −
    a), as means over every check of every seed, how many restored their cohort, and the range of ``a``
    over the cohorts kept (where the two kinds of model overlap)."""
    groups: dict = defaultdict(list)
    for path in sorted(folder.glob(pattern)):
        doc = json.loads(path.read_text())
        for r in doc["runs"]:
            for c in r.get("checks", []):
                if c.get("stage") == "probation" and c.get("accuracy_drop") is not None:
                    groups[(doc["model"], doc["dataset"] + doc.get("tag", ""), r["label"])].append(c)
    out = []
    for (model, dataset, label), checks in groups.items():
        a = [100 * c["accuracy_drop"] for c in checks]
        se = [100 * (c["cost"] - c["accuracy_drop"]) for c in checks]
        kept = [100 * c["accuracy_drop"] for c in checks if c["accepted"]]
        span = f"; a of the kept {min(kept):+.2f} to {max(kept):+.2f} pt" if kept else ""
        out.append(f"- {model} / {dataset}, {label}: {len(checks)} lasting-cost checks, accuracy lost a "
                   f"{statistics.mean(a):+.2f} pt, standard error added {statistics.mean(se):.2f} pt (means), "
                   f"{sum(not c['accepted'] for c in checks)} restored{span}")
    return out


def plot(data: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(data)
    cols = min(3, n)  # a grid: a row of nine panels is unreadable
    rows_ = -(-n // cols)
    fig, axes = plt.subplots(rows_, cols, figsize=(5.6 * cols + 3.2, 5.0 * rows_), squeeze=False)
    flat = [ax for row in axes for ax in row]
    for ax in flat[n:]:
        ax.axis("off")
    markers = "osD^v<>pP*XhH"
    labels = list(dict.fromkeys(label for arms in data.values() for label in arms))
    colors = {label: plt.cm.tab20(i % 20) for i, label in enumerate(labels)}  # one colour per arm
    for ax, ((model, dataset, epochs), arms) in zip(flat, data.items()):
        for label, rows in arms.items():
            i = labels.index(label)
            xs, ys = [r["rel_time"] for r in rows], [r["acc"] for r in rows]
            mx, my = statistics.mean(xs), statistics.mean(ys)
            ex = statistics.stdev(xs) if len(xs) > 1 else 0
            ey = statistics.stdev(ys) if len(ys) > 1 else 0
            ax.errorbar(mx, my, xerr=ex, yerr=ey, fmt=markers[i % len(markers)], capsize=3, markersize=8,
                        color=colors[label], label=label)
        ax.set_xlabel("training CPU time / full network's (lower is faster)", fontsize=10)
        ax.set_ylabel("test accuracy %", fontsize=10)
        ax.set_title(f"{model} on {dataset}, {epochs} epochs", fontsize=11)
        ax.grid(alpha=0.3)
    legend: dict = {}  # every arm of every panel, once
    for ax in flat[:n]:
        for handle, name in zip(*ax.get_legend_handles_labels()):
            legend.setdefault(name, handle)
    flat[cols - 1].legend(list(legend.values()), list(legend), fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    fig.suptitle("Accuracy against training time (mean ± std over seeds; up and left is better)", fontsize=12)
    fig.tight_layout(rect=(0, 0, 1, 0.97))  # room for the title above the first row
    fig.savefig(path, dpi=110)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("folder", nargs="?", default="docs/measurements/evidence")
    p.add_argument("--plot", default=None)
    p.add_argument("--pattern", default="*.json", help="only the JSON files the glob matches")
    p.add_argument("--probation", action="store_true",
                   help="also the lasting-cost checks' accuracy lost and standard error, per arm")
    args = p.parse_args()
    data = collect(Path(args.folder), args.pattern)
    print(table(data))
    if args.probation:
        print("\n" + "\n".join(probation_summary(Path(args.folder), args.pattern)))
    if args.plot:
        plot(data, args.plot)


if __name__ == "__main__":
    main()
