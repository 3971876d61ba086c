"""The fixed schedule issue 8's user compared Learn&Drop with: every unit dropped after the first epoch,
against the full network, interleaved, on one protocol of bench/evidence.py (a ceiling: what the data
allow when nothing is checked).

    python bench/drop_all_after.py --seeds 0 1 2          # issue 8's plain loop on Fashion-MNIST
    python bench/drop_all_after.py --dataset mnist-small --seeds 0 1 2

Writes docs/measurements/explore/drop_all_after_<dataset>_s<seed>.json (test accuracy per epoch, CPU
time, the step of the drop).
"""
from __future__ import annotations

import argparse
import json
import subprocess
from pathlib import Path

import torch

from fxdrop import data as data_mod
from fxdrop.models import build_model
from fxdrop.policy import FixedDrop
from fxdrop.train import TrainConfig, TrainRun, train_interleaved


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="fashion-small")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--after-epochs", type=int, default=1)
    a = p.parse_args()
    torch.set_num_threads(1)
    data = data_mod.load(a.dataset).limit(1400, None)
    for seed in a.seeds:
        cfg = TrainConfig(epochs=15, seed=seed, batch_size=64, schedule="constant", interval=22, progress=False)
        spe = -(-len(data.train_y) // cfg.batch_size)
        units = ["layer1.0", "layer1.1", "layer2.1", "layer3.1", "layer4.1"]
        factory = lambda: build_model("resnet18", data.num_classes)  # noqa: E731
        warm = TrainRun(factory, data, TrainConfig(max_steps=20, progress=False, seed=seed), "none")
        train_interleaved([warm])
        runs = {"full": TrainRun(factory, data, cfg, "none"),
                f"all dropped after epoch {a.after_epochs}": TrainRun(
                    factory, data, cfg, "none", policy=FixedDrop({spe * a.after_epochs: units}))}
        train_interleaved(list(runs.values()))
        code = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
        doc = {"command": "python bench/drop_all_after.py " + f"--dataset {a.dataset} --seeds {seed} "
                          f"--after-epochs {a.after_epochs}", "code": code, "seed": seed,
               "runs": {k: {"test_acc": r.result().test_acc, "epoch_acc": r.result().epoch_acc,
                            "cpu_s": r.result().cpu_s, "events": r.result().events} for k, r in runs.items()}}
        out = Path(f"docs/measurements/explore/drop_all_after_{a.dataset}_s{seed}.json")
        out.write_text(json.dumps(doc, indent=1) + "\n")
        print("wrote", out, flush=True)


if __name__ == "__main__":
    main()
