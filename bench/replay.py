"""Which stored runs the drop bound as it is would decide differently: replays each JSON's check log
(bench/evidence.py's and bench/sequences.py's) through :func:`fxdrop.policies.learn_and_drop.drop_bound`
and the probation rule, and prints the first check whose decision would change. A run with no such
check made exactly the decisions the current bound makes, so it is a run of the current rule as far as
the bound goes (other parts of the rule are not replayed). A data change ends the replay: from there
the strict bound applies, which no bound change so far has touched::

    python bench/replay.py docs/measurements/matrix/*.json docs/measurements/sequences/*.json
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

from fxdrop import LearnAndDrop
from fxdrop.policies.learn_and_drop import drop_bound


def first_change(record: dict, classes: int = 10) -> str | None:
    """The first check of ``record`` the current bound decides otherwise, or ``None``."""
    checks = record["checks"]
    if not checks:
        return None
    interval = math.gcd(*{c["step"] for c in checks})
    known = record.get("loop") == "attach"  # bench/evidence.py's attach loop states its length; the rest do not
    pol = LearnAndDrop()  # for the history of held losses the gain over 3 boundaries is read from
    bounds: dict[tuple, float] = {}  # a cohort -> the bound its drop passed
    for step in sorted({c["step"] for c in checks}):
        at = [c for c in checks if c["step"] == step]
        if any(c["kind"] not in ("drop", "probation") for c in at):
            return None
        for c in at:
            if c["kind"] == "probation" and tuple(c["units"]) in bounds:
                if (c["loss_with"] - c["loss"] <= bounds[tuple(c["units"])]) != c["accepted"]:
                    return f"probation at step {step} of {c['units']} would {'fail' if c['accepted'] else 'pass'}"
        drops = [c for c in at if c["kind"] == "drop"]
        if not drops:
            continue
        recent = pol._recent_gain(step // interval, drops[0]["loss"])
        bound = drop_bound(drops[0]["loss"], classes, recent, pol.tolerance, length_known=known,
                           strict=not drops[0]["labelled"])
        for c in drops:
            rise = c["loss_with"] - c["loss"]
            if (rise <= bound) != c["accepted"]:
                return (f"step {step}: {len(c['units'])} units, a rise of {rise:.3f} against a bound of {bound:.3f}, "
                        f"would be {'refused' if c['accepted'] else 'passed'}")
            if c["accepted"]:
                bounds[tuple(c["units"])] = bound  # the binary search keeps the last set that passed
    return None


def main() -> None:
    for path in sys.argv[1:]:
        record = json.loads(Path(path).read_text())
        change = first_change(record)
        print(f"{Path(path).name}: {change or 'the same decisions'}")


if __name__ == "__main__":
    main()
