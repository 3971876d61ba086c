"""Wrap one small model of every timm family (module) and record what fxdrop does with it.

    python scripts/timm_zoo.py --pick            # tests/timm_families.json: the smallest model per family
    python scripts/timm_zoo.py --out docs/measurements/timm_zoo.json   # the sweep itself

Per family: wrapped or the exception, units, share of forward FLOPs removable by dropping every unit,
whether eval outputs equal the model's, whether every parameter/buffer is bit-equal after wrap, and
whether a train step runs with every unit dropped. Random init, eval mode, batch 1, the model's
default input size capped at 256 (``img_size=`` passed where the model takes it).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import timm  # noqa: E402

from tests.timm_check import check  # noqa: E402

FAMILIES = ROOT / "tests" / "timm_families.json"
MAX_PARAMS = 400_000_000


def pick() -> dict[str, str]:
    """The smallest model (by parameters, counted on the meta device) of every timm module."""
    out = {}
    for mod in sorted(timm.list_modules()):
        best = None
        for name in timm.list_models(module=mod):
            try:
                with torch.device("meta"), warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    n = sum(p.numel() for p in timm.create_model(name).parameters())
            except Exception:
                continue
            if n <= MAX_PARAMS and (best is None or n < best[0]):
                best = (n, name)
        if best is not None:
            out[mod] = best[1]
    return out


def table(records: dict) -> str:
    """A markdown table: family, model, input, units, FLOPs removable by dropping every unit, outcome."""
    rows = ["| family | model | input | units | max FLOPs removable | wrap s | outcome |", "|---|---|---|---:|---:|---:|---|"]
    for fam, r in sorted(records.items()):
        if "error" in r:
            outcome = f"{r['error']}: {r['message'].splitlines()[0][:110]}"
            rows.append(f"| {fam} | {r['model']} | | | | | {outcome} |")
            continue
        outcome = "ok" if r["ok"] else f"equal={r['equal']} untouched={r['untouched']}"
        rows.append(f"| {fam} | {r['model']} | {r['input'][-1]} | {r['units']} | {100 * r['removable']:.1f}% | "
                    f"{r['wrap_s']:.2f} | {outcome} |")
    ok = sum(1 for r in records.values() if r.get("ok"))
    return "\n".join(rows) + f"\n\n{ok} of {len(records)} families wrapped with equal outputs and an untouched model."


def _timeout(signum, frame):
    raise TimeoutError("model took too long")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pick", action="store_true", help="write tests/timm_families.json and stop")
    ap.add_argument("--out", default="docs/measurements/timm_zoo.json", help="where the sweep's records go")
    ap.add_argument("--timeout", type=int, default=180, help="seconds allowed per model")
    ap.add_argument("--only", nargs="*", help="families to run (default: all)")
    ap.add_argument("--table", action="store_true", help="print the records of --out as a markdown table")
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    if args.table:
        print(table(json.loads((ROOT / args.out).read_text())))
        return
    if args.pick:
        FAMILIES.write_text(json.dumps(pick(), indent=1, sort_keys=True) + "\n")
        return
    families = json.loads(FAMILIES.read_text())
    out_path = ROOT / args.out
    records = json.loads(out_path.read_text()) if out_path.exists() else {}
    signal.signal(signal.SIGALRM, _timeout)
    for fam, name in families.items():
        if (args.only and fam not in args.only) or (not args.only and fam in records):
            continue
        signal.alarm(args.timeout)
        t = time.perf_counter()
        try:
            rec = check(name)
        except Exception as e:
            rec = {"model": name, "ok": False, "error": type(e).__name__, "message": str(e)[:300]}
        finally:
            signal.alarm(0)
        rec["seconds"] = round(time.perf_counter() - t, 1)
        records[fam] = rec
        print(fam, json.dumps(rec), flush=True)
        out_path.write_text(json.dumps(records, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
