"""What sharing the current graph's prefix saves a check (fxdrop/reuse.py): the CPU time of one screen
(every live unit bypassed alone) and of the sets a choice measures, with the reuse and with the same
graphs run in full (hidden from it as plain callables), interleaved, on one thread; the costs must be
equal. Writes JSON::

    python bench/check_reuse.py --model resnet18 --projections --out docs/measurements/check_reuse.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
import torchvision

import fxdrop
from fxdrop.probe import Probe, drop_cost


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="resnet18")
    p.add_argument("--projections", action="store_true")
    p.add_argument("--size", type=int, default=32, help="input side")
    p.add_argument("--rows", type=int, default=128, help="rows of the held batch")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--out", default=None)
    args = p.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = torchvision.models.get_model(args.model, weights=None, num_classes=10)
    x = torch.randn(args.rows, 3, args.size, args.size)
    net = fxdrop.wrap(model, example_inputs=(x[:2],), projections=args.projections).train()
    probe = Probe(1, args.rows)
    probe.offer(1, (x,), {})
    names = [u.name for u in net.units]
    arms = {"screen": [net.candidate_graph([n]) for n in names],
            "sets 1, 2, 4, all": [net.candidate_graph(names[:k]) for k in sorted({1, 2, 4, len(names)})]}
    current = net.graph_module

    def opaque(g):
        return lambda *a, **k: g(*a, **k)

    rows = {}
    for label, cands in arms.items():
        times = {"reuse": [], "full": []}
        for _ in range(args.repeats):  # interleaved, the first pair a warm-up
            for how in ("reuse", "full"):
                t = time.process_time()
                if how == "reuse":
                    a = drop_cost(model, current, cands, probe)
                else:
                    b = drop_cost(model, opaque(current), [opaque(g) for g in cands], probe)
                times[how].append(time.process_time() - t)
        same = [(c.disagreement, c.kl) for c in a] == [(c.disagreement, c.kl) for c in b]
        full, reuse = statistics.median(times["full"][1:]), statistics.median(times["reuse"][1:])
        rows[label] = {"candidates": len(cands), "cpu_s_full": full, "cpu_s_reuse": reuse, "ratio": full / reuse,
                       "same_costs": same}
        print(f"{label}: {len(cands)} candidates, full {full:.3f} s, reused {reuse:.3f} s CPU: "
              f"{full / reuse:.2f}x less; costs equal: {same}")
    if args.out:
        doc = {"model": args.model, "projections": args.projections, "input": [args.rows, 3, args.size, args.size],
               "units": names, "threads": 1, "torch": torch.__version__, "command": "python bench/check_reuse.py "
               + " ".join(f"--{k.replace('_', '-')} {v}" if not isinstance(v, bool) else f"--{k}"
                          for k, v in vars(args).items() if v not in (None, False)), "rows": rows}
        Path(args.out).write_text(json.dumps(doc, indent=1) + "\n")


if __name__ == "__main__":
    main()
