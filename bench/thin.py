"""Drop-all ResNet-152 against the network built without those blocks (issue 36): the same convolutions
node for node, so the forward should take the same time.

    python bench/thin.py --size 224 --batch 4 --turns 30          # interleaved eager forwards, medians

Each turn times a few forwards of one arm, then of the other (A/B alternating, order flipped every turn),
after a warm-up; the machine may be shared, so the ratio is of the medians over turns.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torchvision
from torchvision.models.resnet import Bottleneck, ResNet

import fxdrop


def arms(size: int, batch: int, compiled: bool = False, name: str = "resnet152"):
    """``(native, dropped, x)``: the thin ``ResNet(Bottleneck, [1, 1, 1, 1])`` holding the kept blocks'
    weights, and ``fxdrop.wrap(name)`` with every unit dropped (both in train mode, as in training)."""
    torch.manual_seed(0)
    model = torchvision.models.get_model(name, num_classes=10)
    x = torch.randn(batch, 3, size, size)
    net = fxdrop.wrap(model, example_inputs=(x[:1],), compile=compiled)
    net.drop(*[u.name for u in net.units])
    native = ResNet(Bottleneck, [1, 1, 1, 1], num_classes=10)
    native.load_state_dict({k: v for k, v in model.state_dict().items() if k.split(".")[0] not in
                            {f"layer{i}" for i in range(1, 5)} or k.split(".")[1] == "0"})
    native = torch.compile(native) if compiled else native
    return native.train(), net.train(), x


def measure(native, dropped, x, turns: int, per_turn: int) -> dict[str, float]:
    """Median seconds per forward of each arm over interleaved turns, and their ratio."""
    times: dict[str, list[float]] = {"native": [], "dropped": []}
    with torch.no_grad():
        for f in (native, dropped, native, dropped):  # warm-up
            f(x)
        for turn in range(turns):
            order = [("native", native), ("dropped", dropped)]
            for key, f in order if turn % 2 == 0 else order[::-1]:
                t0 = time.perf_counter()
                for _ in range(per_turn):
                    f(x)
                times[key].append((time.perf_counter() - t0) / per_turn)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {**med, "ratio": med["dropped"] / med["native"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="resnet152")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--turns", type=int, default=30)
    p.add_argument("--per-turn", type=int, default=2)
    p.add_argument("--compiled", action="store_true")
    p.add_argument("--threads", type=int, default=None)
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    r = measure(*arms(a.size, a.batch, a.compiled, a.model), a.turns, a.per_turn)
    print(f"{a.model} drop-all vs ResNet(Bottleneck, [1, 1, 1, 1]), {a.size}px batch {a.batch}, "
          f"{'compiled' if a.compiled else 'eager'}, {a.turns} turns: native {r['native'] * 1e3:.2f} ms, "
          f"dropped {r['dropped'] * 1e3:.2f} ms, ratio {r['ratio']:.3f}x")


if __name__ == "__main__":
    main()
