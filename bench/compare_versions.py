"""Two versions of Learn&Drop on the same protocol and seeds, paired: per seed, each version's arm against
its own run's full network (speed-up by CPU time, Δ accuracy), the drop events and restores, and
whether the two runs' full networks agree (same seed, same code path: they must, to the last digit of
accuracy; a mismatch means the runs are not comparable).

    python bench/compare_versions.py docs/measurements/evidence/v4 docs/measurements/evidence \\
        --pattern 'resnet18_mnist-small-user_s*.json' --arm learn-and-drop
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path



def _arm(doc: dict, label: str) -> dict | None:
    return next((r for r in doc["runs"] if r["label"] == label), None)


def compare(old: Path, new: Path, pattern: str, arm: str) -> list[str]:
    """Markdown lines: one row per seed found in both folders, then the means of the paired differences."""
    lines = [f"| run | full acc old / new | {arm} old: speed-up, Δ acc, events | new: speed-up, Δ acc, events |",
             "|---|---|---|---|"]
    diffs: list[tuple[float, float]] = []
    for path in sorted(new.glob(pattern)):
        if not (old / path.name).exists():
            continue
        pair = [json.loads((d / path.name).read_text()) for d in (old, new)]
        if 100 * _arm(pair[0], "full")["test_acc"] != 100 * _arm(pair[1], "full")["test_acc"]:
            lines.append(f"| {path.stem} | full networks differ: not comparable | | |")
            continue
        cells = []
        figures = []
        for doc in pair:
            full, mine = _arm(doc, "full"), _arm(doc, arm)
            if mine is None:
                break
            speed, dacc = full["cpu_s"] / mine["cpu_s"], 100 * (mine["test_acc"] - full["test_acc"])
            restored = [c["step"] for c in mine.get("checks", []) if c.get("stage") == "probation" and not c["accepted"]]
            events = ", ".join(f"{s}: {len(n)}" for s, n in mine["events"]) or "none"
            cells.append(f"{speed:.2f}x, {dacc:+.2f}, [{events}]" + (f" restored at {restored}" if restored else ""))
            figures.append((speed, dacc))
        if len(cells) < 2:
            continue
        accs = " / ".join(f"{100 * _arm(d, 'full')['test_acc']:.2f}" for d in pair)
        lines.append(f"| {path.stem} | {accs} | {cells[0]} | {cells[1]} |")
        diffs.append((figures[1][0] - figures[0][0], figures[1][1] - figures[0][1]))
    if diffs:
        mean = lambda xs: statistics.mean(xs) if xs else 0.0  # noqa: E731
        lines.append(f"\nnew − old over {len(diffs)} seeds: speed-up {mean([d[0] for d in diffs]):+.2f}x, "
                     f"Δ acc {mean([d[1] for d in diffs]):+.2f} pt")
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("old", type=Path)
    p.add_argument("new", type=Path)
    p.add_argument("--pattern", default="*.json")
    p.add_argument("--arm", default="learn-and-drop")
    args = p.parse_args()
    print("\n".join(compare(args.old, args.new, args.pattern, args.arm)))


if __name__ == "__main__":
    main()
