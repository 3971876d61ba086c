"""Side-by-side step time of two wrapped ResNet-18 instances in one process (docs/benchmarks.md).

Each arm is built in the order given, warmed up for 10 steps, then the arms train in alternating order
for ``--rounds`` rounds of ``--steps`` steps (batch 32, 32 px, 2 threads); prints the median ms per step
of each and the second arm's over the first's. ``nodrop nodrop`` is the A/A control::

    python bench/instance_timing.py nodrop scoring
    python bench/instance_timing.py scoring nodrop
    python bench/instance_timing.py nodrop nodrop
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F
import torchvision

import fxdrop

POLICIES = {"nodrop": fxdrop.NoDrop, "scoring": lambda: fxdrop.LearnAndDrop(interval=50, warmup=10**9)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("arms", nargs=2, choices=list(POLICIES))
    p.add_argument("--rounds", type=int, default=8)
    p.add_argument("--steps", type=int, default=50)
    args = p.parse_args()
    torch.set_num_threads(2)
    x, y = torch.randn(32, 3, 32, 32), torch.randint(0, 10, (32,))
    arms = []
    for kind in args.arms:
        torch.manual_seed(0)
        net = fxdrop.wrap(torchvision.models.resnet18(num_classes=10), example_inputs=(torch.randn(1, 3, 32, 32),),
                          policy=POLICIES[kind]())
        arms.append((net, torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)))

    def steps(net, opt, n):
        net.train()
        for _ in range(n):
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(net(x), y).backward()
            opt.step()
            net.step(opt, targets=y)

    for net, opt in arms:
        steps(net, opt, 10)
    times: list[list[float]] = [[], []]
    for r in range(args.rounds):
        for i in (0, 1) if r % 2 == 0 else (1, 0):
            t = time.perf_counter()
            steps(*arms[i], args.steps)
            times[i].append((time.perf_counter() - t) / args.steps * 1e3)
    med = [statistics.median(t) for t in times]
    print(json.dumps({"arms": args.arms, "ms_per_step": med, "second_over_first": med[1] / med[0]}))


if __name__ == "__main__":
    main()
