"""Time ``fxdrop.wrap`` (trace, shape and FLOPs propagation, verification, unit search) on torchvision
models, 1 thread, after one untimed wrap; writes the JSON named by --out.

    python bench/wrap_time.py --out docs/measurements/wrap_time.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import torch
import torchvision

import fxdrop


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["resnet50", "resnet152", "vit_b_16"])
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", default=None)
    args = p.parse_args()
    torch.set_num_threads(1)
    fxdrop.wrap(torchvision.models.resnet18(), example_inputs=(torch.randn(1, 3, 64, 64),))  # one-off costs
    rows = []
    for name in args.models:
        times = []
        for _ in range(args.repeats):
            model = torchvision.models.get_model(name, weights=None)
            x = torch.randn(1, 3, args.size, args.size)
            t0 = time.perf_counter()
            net = fxdrop.wrap(model, example_inputs=(x,))
            times.append(time.perf_counter() - t0)
        rows.append({"model": name, "input": args.size, "units": len(net.units), "seconds": times,
                     "median_s": statistics.median(times)})
        print(f"{name:12s} {args.size}px  {len(net.units):3d} units  median {statistics.median(times):.2f} s "
              f"(min {min(times):.2f}, max {max(times):.2f}, {args.repeats} repeats)", flush=True)
    if args.out:
        doc = {"command": "python bench/wrap_time.py " + " ".join(sys.argv[1:]), "torch": torch.__version__,
               "threads": 1, "cores": os.cpu_count(), "rows": rows}
        with open(args.out, "w") as f:
            json.dump(doc, f, indent=1)


if __name__ == "__main__":
    main()
