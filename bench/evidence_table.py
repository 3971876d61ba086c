"""The tables of docs/results.md from bench/evidence.py's JSON: per row of bench/matrix.json and loop,
the mean ± standard deviation over seeds of the speed-ups (CPU and wall time, measured interleaved;
forward FLOPs, predicted), the accuracy difference to the full network, the checks' share of the compute,
and when the drops came::

    python bench/evidence_table.py docs/measurements/matrix
    python bench/evidence_table.py --sequences docs/measurements/sequences   # bench/sequences.py's runs

A run whose stored decisions the drop bound as it is would change (bench/replay.py) is not a run of the
current rule: it is left out of the tables and listed below them, to be re-run.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from replay import first_change  # noqa: E402
from sequences import HELD_OUT  # noqa: E402  (the held-out sequence scenarios)


def _ms(values: list[float], fmt: str) -> str:
    if len(values) < 2:
        return format(values[0], fmt) if values else "-"
    return f"{format(statistics.mean(values), fmt)} ± {format(statistics.stdev(values), fmt.lstrip('+'))}"


def table(runs: list[dict]) -> str:
    head = ("| model / data | loop | seeds | CPU speed-up | wall speed-up | FLOPs speed-up | Δ acc pt | full acc % "
            "| Δ vs time-matched full pt | checks % | drops (step: units) | returns |\n"
            "|---|---|---|---|---|---|---|---|---|---|---|---|")
    groups: dict[tuple, list[dict]] = {}
    for r in runs:
        opts = "".join(f", {k}={v:g}" for k, v in sorted(r.get("options", {}).items()))
        groups.setdefault((r["row"]["model"], r["row"]["dataset"], r["loop"] + opts), []).append(r)
    lines = [head]
    for (model, data, loop), rs in sorted(groups.items()):
        rs.sort(key=lambda r: r["seed"])
        drops = "; ".join("s{}: {}".format(r["seed"], ", ".join(f"{s}: {len(n)}" for s, n in r["learn_and_drop"]["events"])
                                           or "none") for r in rs)
        returns = sum(len(r["learn_and_drop"]["restores"]) for r in rs)
        lines.append(f"| {model} / {data} | {loop} | {len(rs)} | {_ms([r['speedup_cpu'] for r in rs], '.2f')}x "
                     f"| {_ms([r['speedup_wall'] for r in rs], '.2f')}x | {_ms([r['speedup_flops'] for r in rs], '.2f')}x "
                     f"| {_ms([r['delta_pt'] for r in rs], '+.2f')} | {_ms([100 * r['full']['test_acc'] for r in rs], '.2f')} "
                     f"| {_ms([100 * (r['learn_and_drop']['test_acc'] - r['matched']['test_acc']) for r in rs if 'matched' in r], '+.2f')} "
                     f"| {_ms([100 * r['check_share'] for r in rs], '.1f')} | {drops} | {returns} |")
    return "\n".join(lines)


def sequences(runs: list[dict]) -> str:
    """bench/sequences.py's runs: per scenario and arm, the speed-ups and the accuracy differences to the
    full network (on the first data's test set at the switch, on the last data's at the end)."""
    out = []
    for name in sorted({r["scenario"] for r in runs}):
        rs = sorted((r for r in runs if r["scenario"] == name), key=lambda r: r["seed"])
        two = rs[0]["switch_step"] is not None
        held = " (held out: run once, after the rule was fixed)" if name in HELD_OUT else ""
        out.append(f"\n{rs[0]['about']}: {len(rs)} seeds{held}\n")
        out.append("| arm | CPU speed-up | " + ("phase-1 wall speed-up | Δ phase-1 acc at switch pt | " if two else "")
                   + "Δ end acc pt | end acc % | drops (step: units) | returns (step: units) |")
        out.append("|---|---|" + ("---|---|" if two else "") + "---|---|---|---|")
        short = [r["seed"] for r in rs if two and "matched" in r["arms"] and r["arms"]["matched"]["steps"] <= r["switch_step"]]
        for arm in (a for a in rs[0]["arms"] if all(a in r["arms"] for r in rs)):  # arms every seed ran
            # a time-matched run that ended before the switch never saw the second data: no end accuracy
            ok = [r for r in rs if arm != "matched" or r["seed"] not in short]

            def d(key: str, a: str = arm, ok: list = ok) -> str:
                return _ms([100 * (r["arms"][a][key] - r["arms"]["full"][key]) for r in ok], "+.2f")
            speed = _ms([r["speedup_cpu"][arm] for r in rs], ".2f") + "x" if arm in rs[0]["speedup_cpu"] else \
                "(full, time-matched: " + _ms([r["arms"][arm]["steps"] for r in rs], ".0f") + " steps" + \
                (f"; seed {', '.join(map(str, short))} ended before the switch: left out" if short else "") + ")"
            first = (f"{_ms([r['speedup_first_phase'][arm] for r in rs], '.2f')}x | {d('first_acc_at_switch')} | "
                     if two and arm in rs[0]["speedup_first_phase"] else "- | - | " if two else "")
            ev = lambda key: "; ".join("s{}: {}".format(r["seed"], ", ".join(  # noqa: E731
                f"{s}: {len(n)}" for s, n in r["arms"][arm][key]) or "none") for r in rs) \
                if any(r["arms"][arm][key] for r in rs) else "-"
            out.append(f"| {arm} | {speed} | {first}{d('test_acc')} | "
                       f"{_ms([100 * r['arms'][arm]['test_acc'] for r in ok], '.1f')} | {ev('events')} | {ev('restores')} |")
    return "\n".join(out)


def main() -> None:
    root = Path(sys.argv[-1] if len(sys.argv) > 1 else "docs/measurements/matrix")
    runs, stale = [], []
    for p in sorted(root.glob("*.json")):
        r = json.loads(p.read_text())
        change = first_change(r)
        if change:
            stale.append(f"- {p.name}: {change}")
        else:
            runs.append(r)
    if "--sequences" in sys.argv:
        print(sequences(runs))
    else:
        matrix(runs)
    if stale:
        print("\nLeft out: runs the current drop bound would decide otherwise (bench/replay.py), to be re-run\n")
        print("\n".join(stale))


def matrix(runs: list[dict]) -> None:
    # fitted or held out as bench/matrix.json says now (a run's JSON keeps what its version said)
    spec = json.loads((Path(__file__).with_name("matrix.json")).read_text())
    held_out = {(r["model"], r["dataset"]): r["held_out"] for r in spec["rows"]}
    for held in (False, True):
        title = "Held-out rows (run once, after the rule was fixed)" if held else \
            "Seen rows (fitted, or held out for an earlier rule)"
        print(f"\n{title}\n")
        print(table([r for r in runs if held_out.get((r["row"]["model"], r["row"]["dataset"])) == held]))


if __name__ == "__main__":
    main()
