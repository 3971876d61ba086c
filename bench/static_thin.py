"""Can dropping pay at all on a model? Fixed thinner networks against the full one, on a protocol of
bench/evidence.py: no scores, no checks, a ceiling for any drop policy.

For each ``--at X`` the units to drop are chosen before training, spread evenly over the network (in
graph order) until their share of the forward FLOPs reaches ``1 − 1/X`` (a speed-up of X by FLOPs), and
dropped from the first step (``thin``: a statically thinner network, as a user would design one) and, with
``--late S``, the same units at step S (what a policy could do at best once it has scores to read).
All arms and the full network are trained interleaved after an untimed warm-up; speed-ups are CPU-time
ratios to the full network of the same process. One JSON per seed::

    python bench/static_thin.py --model resnet56 --dataset fashion-small --epochs 5 --at 1.5 2 --late 32 \\
        --out docs/measurements/evidence/v12/static_thin --seeds 0 1 2
    python bench/static_thin.py table docs/measurements/evidence/v12/static_thin/*.json \
        --against docs/measurements/evidence/resnet20_fashion-small_s*.json     # with the shorter full runs
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch

from fxdrop import wrap
from fxdrop.policy import FixedDrop
from fxdrop.train import TrainRun, train_interleaved

try:  # run as a script (python bench/static_thin.py) or imported as bench.static_thin
    from evidence import code_version, protocol
    from evidence import parser as evidence_parser
except ImportError:  # pragma: no cover
    from bench.evidence import code_version, protocol
    from bench.evidence import parser as evidence_parser


def _fewest(flops: list[int], full: int, share: float, pick) -> list[int]:
    """The smallest ``k`` whose ``pick(n, k)`` (indices into ``flops``) makes at least ``share`` of ``full``:
    those indices. Raises ValueError when even every unit falls short."""
    n = len(flops)
    for k in range(1, n + 1):
        picked = pick(n, k)
        if sum(flops[i] for i in picked) >= share * full:
            return picked
    raise ValueError(f"every unit together makes {sum(flops) / full:.1%} of the FLOPs, short of {share:.1%}")


def spread(flops: list[int], full: int, share: float) -> list[int]:
    """Indices of the fewest units, spread evenly over ``flops`` (graph order), whose FLOPs make at least
    ``share`` of ``full``: for k units, the middles of k equal slices of the list."""
    return _fewest(flops, full, share, lambda n, k: sorted({min(n - 1, int((i + 0.5) * n / k)) for i in range(k)}))


def earliest(flops: list[int], full: int, share: float) -> list[int]:
    """Indices of the first units in graph order whose FLOPs make at least ``share`` of ``full``."""
    return _fewest(flops, full, share, lambda n, k: list(range(k)))


ORDERS = {"spread": ("", spread), "earliest": (", earliest", earliest)}


def plans(factory, at: list[float], late: int | None, orders: list[str] = ("spread",)) -> dict[str, dict]:
    """``label: {"plan": FixedDrop plan, "units": [...], "flops_share": ...}`` for each speed-up in ``at`` and
    each way of choosing the units in ``orders`` (:data:`ORDERS`)."""
    net = wrap(factory(), example_inputs=(torch.randn(2, 3, 32, 32),))
    units, full = net.units, net.full_flops("train")
    out = {}
    for x in at:
        for order in orders:
            suffix, choose = ORDERS[order]
            idx = choose([u.flops for u in units], full, 1 - 1 / x)
            names = [units[i].name for i in idx]
            share = sum(units[i].flops for i in idx) / full
            out[f"thin {x:g}x{suffix}"] = {"plan": {1: names}, "at": x, "units": names, "flops_share": share}
            if late:
                out[f"thin {x:g}x{suffix} from step {late}"] = {"plan": {late: names}, "at": x, "units": names,
                                                                "flops_share": share}
    return out


def table(paths: list[Path], against: list[Path] = ()) -> str:
    """A markdown table of static_thin JSONs (``paths``): per arm, the CPU speed-up and the accuracy against
    the seed's full network (mean ± std, and per seed), and, where an evidence JSON in ``against`` has the
    same model, data, epochs and seed, the full network trained X times shorter (``full, Xx fewer steps``)
    and the thin arm's lead over it at the same X, paired by seed."""
    docs = [json.loads(p.read_text()) for p in paths]
    shorter: dict = {}
    for p in against:
        d = json.loads(p.read_text())
        full = next(r for r in d["runs"] if r["label"] == "full")
        for r in d["runs"]:
            if r["label"].startswith("full, ") and r["label"].endswith("x fewer steps"):
                x = float(r["label"][len("full, "):-len("x fewer steps")])
                key = (d["model"], d["dataset"], d["epochs"], d["seed"], x)
                shorter[key] = 100 * (r["test_acc"] - full["test_acc"])
    rows: dict = {}
    for d in sorted(docs, key=lambda d: (d["model"], d["seed"])):
        for r in d["runs"]:
            if r["label"] == "full":
                continue
            rows.setdefault((d["model"], d["dataset"], d["epochs"], r["label"]), []).append((d["seed"], r))

    def ms(v: list[float], fmt: str) -> str:
        return format(v[0], fmt) if len(v) == 1 else f"{statistics.mean(v):{fmt}} ± {statistics.stdev(v):{fmt.lstrip('+')}}"

    out = ["| model / data | arm | FLOPs cut | speed-up (CPU) | Δ acc pt | per seed (pt) | full, X shorter (pt) "
           "| thin − shorter (pt) |", "|---|---|---|---|---|---|---|---|"]
    for (model, data, epochs, label), seeds in rows.items():
        # the JSONs before v13 do not record the speed-up asked for: their labels name it ("thin 1.5x, ...")
        x = seeds[0][1].get("at") or float(label.split()[1].rstrip("x,"))
        deltas = [r["delta_pt"] for _, r in seeds]
        base = [shorter.get((model, data, epochs, s, x)) for s, _ in seeds]
        lead = [dv - b for dv, b in zip(deltas, base) if b is not None]
        late = " from step" in label
        out.append(f"| {model} / {data}, {epochs} ep | {label} | {seeds[0][1]['flops_share']:.0%} | "
                   f"{ms([r['speedup_cpu'] for _, r in seeds], '.2f')}x | {ms(deltas, '+.2f')} | "
                   f"{', '.join(f'{v:+.2f}' for v in deltas)} | "
                   f"{ms([b for b in base if b is not None], '+.2f') if any(b is not None for b in base) else '-'} | "
                   f"{'-' if late or not lead else ms(lead, '+.2f') + f' ({sum(v > 0 for v in lead)} of {len(lead)})'} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    words = sys.argv[1:] if argv is None else list(argv)
    if words[:1] == ["table"]:
        t = argparse.ArgumentParser(prog="static_thin.py table")
        t.add_argument("json", nargs="+", type=Path)
        t.add_argument("--against", nargs="*", type=Path, default=[],
                       help="evidence.py JSONs holding 'full, Xx fewer steps' rows of the same seeds")
        ta = t.parse_args(words[1:])
        print(table(ta.json, ta.against))
        return
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="resnet20")
    p.add_argument("--dataset", default="fashion-small")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--at", type=float, nargs="+", default=[1.5, 2.0], metavar="X")
    p.add_argument("--late", type=int, default=None, metavar="S", help="also drop the same units at step S")
    p.add_argument("--order", nargs="+", choices=list(ORDERS), default=["spread"],
                   help="how the units are chosen: spread evenly over the network, or the earliest ones")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="docs/measurements/evidence/static_thin")
    a = p.parse_args(words)
    # the protocol of bench/evidence.py with its own defaults (batch, learning rate, schedule, ...)
    proto = evidence_parser().parse_args(["--model", a.model, "--dataset", a.dataset, "--epochs", str(a.epochs)])
    torch.set_num_threads(a.threads)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    code = code_version()
    for seed in a.seeds:
        path = out / f"{a.model}_{a.dataset}_s{seed}.json"
        if path.exists():
            continue
        data, factory, cfg = protocol(proto, seed)
        arms = plans(factory, a.at, a.late, a.order)
        train_interleaved([TrainRun(factory, data, dataclasses.replace(cfg, max_steps=20), "none")])  # warm-up
        runs = {"full": TrainRun(factory, data, cfg, "none", label="full")}
        runs.update({k: TrainRun(factory, data, cfg, "none", label=k, policy=FixedDrop(v["plan"]))
                     for k, v in arms.items()})
        t0 = time.time()
        train_interleaved(list(runs.values()))
        base = runs["full"].result()
        rows = []
        for k, r in runs.items():
            res = r.result()
            rows.append({"label": k, "test_acc": res.test_acc, "epoch_acc": res.epoch_acc, "steps": res.steps,
                         "cpu_s": res.cpu_s, "wall_s": res.wall_s, "speedup_cpu": base.cpu_s / res.cpu_s,
                         "delta_pt": 100 * (res.test_acc - base.test_acc),
                         **({k2: v for k2, v in arms[k].items() if k2 != "plan"} if k in arms else {})})
        doc = {"model": a.model, "dataset": a.dataset, "epochs": a.epochs, "seed": seed, "code": code,
               "command": shlex.join(["python", "bench/static_thin.py", *words]),
               "torch": torch.__version__, "threads": torch.get_num_threads(), "cores": os.cpu_count(),
               "elapsed_s": time.time() - t0, "train_images": len(data.train_y), "test_images": len(data.test_y),
               "runs": rows}
        path.write_text(json.dumps(doc, indent=1) + "\n")
        print(f"wrote {path}: " + ", ".join(f"{r['label']} {r['speedup_cpu']:.2f}x {r['delta_pt']:+.2f}"
                                             for r in rows), flush=True)


if __name__ == "__main__":
    main()
