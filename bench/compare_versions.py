"""Two versions of Learn&Drop on the same protocol and seeds, paired: per seed, each version's arm against
its own run's full network (speed-up by CPU time and Δ accuracy as in evidence_table's tables), the drop
events and restores, and whether the two runs' full networks agree (same seed, same code path: they must,
to the last digit of accuracy; a mismatch means the runs are not comparable).

    python bench/compare_versions.py docs/measurements/evidence/v4 docs/measurements/evidence \\
        --pattern 'resnet18_mnist-small-user_s*.json' --arm learn-and-drop

``--new-pattern`` picks the new version's runs by another pattern (another ``--tag``, e.g. the same
protocol with ``--projections``); runs are then paired by seed.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

if __package__:  # imported as bench.compare_versions (the tests)
    from .evidence_table import collect
else:  # run as a script: python bench/compare_versions.py
    from evidence_table import collect


def _by_run(folder: Path, pattern: str, by_seed: bool = False) -> dict:
    """{file stem (or its ``_s<seed>`` suffix): {label: row}} from evidence_table's rows."""
    out: dict = {}
    for arms in collect(folder, pattern).values():
        for label, rows in arms.items():
            for r in rows:
                key = "s" + r["file"].rsplit("_s", 1)[-1] if by_seed else r["file"]
                out.setdefault(key, {})[label] = r
    return out


def _cell(r: dict) -> str:
    events = ", ".join(f"{s}: {len(n)}" for s, n in r["events"]) or "none"
    restored = f" restored at {r['restored_at']}" if r["restored_at"] else ""
    return f"{r['cpu']:.2f}x, {r['dacc']:+.2f}, [{events}]{restored}"


def compare(old: Path, new: Path, pattern: str, arm: str, new_pattern: str | None = None,
            new_arm: str | None = None) -> list[str]:
    """Markdown lines: one row per run found in both folders, then the means of the paired differences.
    With ``new_pattern`` the new folder's runs are those it matches, paired with the old ones by seed;
    ``new_arm`` names the new version's arm when its label differs (an opt-in arm that became the default)."""
    new_arm = new_arm or arm
    lines = [f"| run | full acc old / new | {arm} old: speed-up, Δ acc, events | {new_arm} new: speed-up, Δ acc, events |",
             "|---|---|---|---|"]
    by_seed = new_pattern is not None
    before, after = _by_run(old, pattern, by_seed), _by_run(new, new_pattern or pattern, by_seed)
    diffs: list[tuple[float, float]] = []
    for name in sorted(set(before) & set(after)):
        pair = before[name], after[name]
        if pair[0]["full"]["acc"] != pair[1]["full"]["acc"]:
            lines.append(f"| {name} | full networks differ: not comparable | | |")
            continue
        if arm not in pair[0] or new_arm not in pair[1]:
            continue
        a, b = pair[0][arm], pair[1][new_arm]
        lines.append(f"| {name} | {pair[0]['full']['acc']:.2f} / {pair[1]['full']['acc']:.2f} | {_cell(a)} | {_cell(b)} |")
        diffs.append((b["cpu"] - a["cpu"], b["dacc"] - a["dacc"]))
    if diffs:
        lines.append(f"\nnew − old over {len(diffs)} seeds: speed-up {statistics.mean(d[0] for d in diffs):+.2f}x, "
                     f"Δ acc {statistics.mean(d[1] for d in diffs):+.2f} pt")
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("old", type=Path)
    p.add_argument("new", type=Path)
    p.add_argument("--pattern", default="*.json")
    p.add_argument("--new-pattern", default=None, help="the new version's runs, when named otherwise (paired by seed)")
    p.add_argument("--arm", default="learn-and-drop")
    p.add_argument("--new-arm", default=None, help="the new version's arm, when labelled otherwise")
    args = p.parse_args()
    print("\n".join(compare(args.old, args.new, args.pattern, args.arm, args.new_pattern, args.new_arm)))


if __name__ == "__main__":
    main()
