"""The evidence behind docs/results.md: the default Learn&Drop against the full network, on the
evaluation matrix of bench/matrix.json (fixed before the default was tuned; half its rows held out).

For one row, loop and seed, in one process, 1 torch thread: an untimed warm-up of both arms (10 steps),
then the full network and Learn&Drop from the same init and data order, **interleaved in turns of 5
steps** (load from other processes falls on both arms alike), then the full network trained for as many
steps as Learn&Drop's CPU time bought (``--matched``: "the same time, no dropping"). One JSON per run is
written as soon as it ends::

    python bench/evidence.py --row 0 --loop plain --seed 0          # a row of bench/matrix.json
    python bench/evidence.py --rows fitted --seeds 0 1 2            # every fitted row, both loops
    python bench/evidence.py --row 0 --loop attach --ld target_speedup=2   # the budget knob
    python bench/evidence_table.py docs/measurements/matrix         # the tables of docs/results.md
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from fxdrop import data as data_mod
from fxdrop.models import build_model
from fxdrop.train import TrainConfig, TrainRun, time_matched_steps, train_interleaved

MATRIX = Path(__file__).with_name("matrix.json")
OUT = Path(__file__).resolve().parents[1] / "docs" / "measurements" / "matrix"
LOOPS = {  # loop: TrainConfig options (bench/matrix.json's "about" says what each is)
    "plain": {"loop": "plain", "optimizer": "sgd", "lr": 0.05, "schedule": "constant"},
    "attach": {"loop": "attach", "optimizer": "adamw", "lr": 2e-3, "schedule": "cosine"},
}


def run(row: dict, loop: str, seed: int, epochs: int, batch_size: int, matched: bool, out: Path,
        options: dict | None = None) -> dict:
    data = data_mod.load(row["dataset"])
    classes = int(data.train_y.max()) + 1
    cfg = TrainConfig(epochs=epochs, batch_size=batch_size, seed=seed, progress=False, ld_options=options or {},
                      **LOOPS[loop])
    factory = lambda: build_model(row["model"], classes)  # noqa: E731
    warm = [TrainRun(factory, data, TrainConfig(**{**cfg.__dict__, "max_steps": 10, "evaluate": False}), k)
            for k in ("none", "learn-and-drop")]
    train_interleaved(warm, chunk_steps=5)
    runs = [TrainRun(factory, data, cfg, k) for k in ("none", "learn-and-drop")]
    train_interleaved(runs, chunk_steps=5)
    full, ld = (r.result() for r in runs)
    rec = {"row": row, "loop": loop, "seed": seed, "epochs": epochs, "batch_size": batch_size, "options": options or {},
           "full": full.to_dict(), "learn_and_drop": ld.to_dict(), "check_share": runs[1].policy.check_share,
           "checks": runs[1].policy.checks, "speedup_cpu": full.cpu_s / ld.cpu_s,
           "speedup_wall": full.wall_s / ld.wall_s, "speedup_flops": 1 / ld.flops_ratio,
           "delta_pt": 100 * (ld.test_acc - full.test_acc), "threads": torch.get_num_threads(),
           "finished": time.strftime("%Y-%m-%d %H:%M:%S")}
    if matched:
        steps = time_matched_steps(full, ld)
        m = TrainRun(factory, data, cfg, "full-matched", total_steps=steps)
        train_interleaved([m])
        rec["matched"] = {"steps": steps, "test_acc": m.result().test_acc}
    out.mkdir(parents=True, exist_ok=True)
    tag = "".join(f"_{k}={v}" for k, v in sorted((options or {}).items()))
    name = f"{row['model']}_{row['dataset']}_{loop}{tag}_s{seed}.json"
    (out / name).write_text(json.dumps(rec, indent=1))
    return rec


def main() -> None:
    spec = json.loads(MATRIX.read_text())
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--row", type=int, nargs="*", default=None, help="row indices of bench/matrix.json")
    p.add_argument("--rows", choices=["fitted", "held-out"], default=None, help="every fitted or held-out row")
    p.add_argument("--loop", nargs="*", default=spec["loops"], choices=sorted(LOOPS))
    p.add_argument("--seed", "--seeds", dest="seeds", type=int, nargs="*", default=spec["seeds"])
    p.add_argument("--epochs", type=int, default=spec["epochs"])
    p.add_argument("--matched", action="store_true", help="also the full network for Learn&Drop's CPU time")
    p.add_argument("--ld", nargs="*", default=[], metavar="KEY=VALUE",
                   help="LearnAndDrop options, e.g. target_speedup=2 (numbers parsed as floats)")
    p.add_argument("--out", type=Path, default=OUT)
    a = p.parse_args()
    options = {k: float(v) for k, v in (kv.split("=", 1) for kv in a.ld)}
    torch.set_num_threads(1)
    rows = [(i, r) for i, r in enumerate(spec["rows"]) if (a.row is None or i in a.row)
            and (a.rows is None or r["held_out"] == (a.rows == "held-out"))]
    for i, row in rows:
        for loop in [lp for lp in a.loop if lp in row.get("loops", spec["loops"])]:
            for seed in a.seeds:
                r = run(row, loop, seed, a.epochs, spec["batch_size"], a.matched, a.out, options)
                print(f"row {i} {row['model']}/{row['dataset']} {loop} s{seed}: {r['speedup_cpu']:.2f}x cpu "
                      f"{r['speedup_wall']:.2f}x wall {r['speedup_flops']:.2f}x flops, {r['delta_pt']:+.2f} pt, "
                      f"checks {100 * r['check_share']:.1f}%, drops {r['learn_and_drop']['events']} "
                      f"returns {r['learn_and_drop']['restores']}", flush=True)


if __name__ == "__main__":
    main()
