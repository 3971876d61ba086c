"""The evidence behind docs/results.md: Learn&Drop against what a user would pick instead.

For one model and data set and each seed, in one process (after an untimed warm-up):

* phase 1, interleaved epoch by epoch: the full network, Learn&Drop with its defaults, the same without
  ``total_steps`` (the policy does not know the run's length), with the budget knob
  ``target_speedup=2``, and without reinvesting saved compute in checks (``reinvest=0``: checks paid by
  the base ``check_budget`` only);
* phase 2, interleaved among themselves (they need the finished Learn&Drop run): the full network
  trained for as many steps as Learn&Drop's measured CPU time buys at the full network's pace in phase 1
  (time-matched: checks and every overhead count against Learn&Drop) and for 1/1.5 and
  1/2 of the steps (what the speed-up targets cost without dropping, ``--matched-at``), random and
  position drops at Learn&Drop's schedule, the statically thinner network, and the published anchors
  (progressive layer dropping, stochastic depth, freezing) and two ablations of Learn&Drop (no check;
  no BatchNorm re-estimation without ``total_steps``) with ``--anchors``.

``--validation N`` makes the first N test images a validation split (every arm is tested on the rest) and
the optional arm ``l&d, held-out checks`` checks its drops on them (``LearnAndDrop(check_data=...)``);
``--no-replays`` leaves out the time-matched and random arms; ``--replay-arm`` names the Learn&Drop arm
they follow (default ``learn-and-drop``; e.g. ``"l&d, churn shock"``).

``--arms`` runs only the named phase-1 arms (and the full network), among them the optional ones: the
budget knob measured in FLOPs beside the default measured in time, at 2x and 1.5x, and ``full, again``:
a second instance of the full network, an A/A control of how far two identical arms' times differ. Without
the ``--replay-arm`` among them, phase 2 has only the ``--matched-at`` arms.

Speed-ups are against phase 1's full network, by wall and by process CPU time (phase 2 shares no turn
with it: its ratios carry the machine's drift between the phases; CPU time is the steadier measure).
One JSON per seed is written as soon as it is done, so a long sweep can be stopped and resumed::

    python bench/evidence.py --model resnet18 --dataset mnist-small --epochs 3 --seeds 0 1 2
    python bench/evidence.py --model resnet20 --dataset fashion-small --epochs 5 --seeds 0 1 2
    python bench/evidence_table.py docs/measurements/evidence     # table and Pareto plot
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
import subprocess
import time
from pathlib import Path

import torch

from fxdrop import data as data_mod
from fxdrop.models import build_model
from fxdrop.train import TrainConfig, TrainRun, time_matched_steps, train_interleaved

PHASE1 = {  # label: (kind, LearnAndDrop options)
    "full": ("none", {}),
    "learn-and-drop": ("learn-and-drop", {}),
    "l&d, no total_steps": ("learn-and-drop", {"total_steps": None}),
    "l&d, target 2x": ("learn-and-drop", {"target_speedup": 2.0}),
    "l&d, reinvest 0": ("learn-and-drop", {"reinvest": 0.0}),
}
OPTIONAL = {  # phase-1 arms run only when named in --arms: the knob's two measures side by side, and an
    # A/A control (a second instance of the full network: how far two identical arms' times differ)
    "full, again": ("none", {}),
    "l&d, target 2x by FLOPs": ("learn-and-drop", {"target_speedup": 2.0, "target_measure": "flops"}),
    "l&d, target 1.5x": ("learn-and-drop", {"target_speedup": 1.5}),
    "l&d, target 1.5x by FLOPs": ("learn-and-drop", {"target_speedup": 1.5, "target_measure": "flops"}),
    "l&d, held-out checks": ("learn-and-drop", {}),  # checks on the --validation images (ARM_CFG)
    "l&d, churn shock": ("learn-and-drop", {"follow_churn": True}),  # the shock bound follows training's churn
    "l&d, target 2x, churn shock": ("learn-and-drop", {"target_speedup": 2.0, "follow_churn": True}),
    "l&d, target 1.5x, churn shock": ("learn-and-drop", {"target_speedup": 1.5, "follow_churn": True}),
    # the sets built earliest unit first instead of cheapest shock per FLOP first (LearnAndDrop(order=...))
    "l&d, target 1.5x, churn shock, position": ("learn-and-drop", {"target_speedup": 1.5, "follow_churn": True,
                                                                   "order": "position"}),
    "l&d, target 2x, churn shock, position": ("learn-and-drop", {"target_speedup": 2.0, "follow_churn": True,
                                                                 "order": "position"}),
    # the same with the target counted in FLOPs (independent of the machine's load), in either order, and
    # without a target
    "l&d, target 1.5x by FLOPs, churn shock": ("learn-and-drop", {
        "target_speedup": 1.5, "target_measure": "flops", "follow_churn": True}),
    "l&d, target 2x by FLOPs, churn shock": ("learn-and-drop", {
        "target_speedup": 2.0, "target_measure": "flops", "follow_churn": True}),
    "l&d, target 1.5x by FLOPs, churn shock, position": ("learn-and-drop", {
        "target_speedup": 1.5, "target_measure": "flops", "follow_churn": True, "order": "position"}),
    "l&d, target 2x by FLOPs, churn shock, position": ("learn-and-drop", {
        "target_speedup": 2.0, "target_measure": "flops", "follow_churn": True, "order": "position"}),
    "l&d, churn shock, position": ("learn-and-drop", {"follow_churn": True, "order": "position"}),
    # a floor instead of a cap: the earliest units up to 1.5x, then the scored rule (the default since v14,
    # so "learn-and-drop" is the same policy from then on; the label the v14 runs were made under)
    "l&d, floor 1.5x": ("learn-and-drop", {"min_speedup": 1.5}),
    "l&d, floor 1.5x by FLOPs": ("learn-and-drop", {"min_speedup": 1.5, "target_measure": "flops"}),
    "l&d, floor 1.5x, no total_steps": ("learn-and-drop", {"min_speedup": 1.5, "total_steps": None}),
    # the same 1.5x knob where the policy is not told the run's length (issue 8's plain loop)
    "l&d, target 1.5x by FLOPs, churn shock, position, no total_steps": ("learn-and-drop", {
        "target_speedup": 1.5, "target_measure": "flops", "follow_churn": True, "order": "position",
        "total_steps": None}),
}
ARM_CFG = {"l&d, held-out checks": {"checks_on": "validation"}}  # TrainConfig fields an arm changes
LD_ARMS = [k for k, (kind, _) in {**PHASE1, **OPTIONAL}.items() if kind == "learn-and-drop"]  # --replay-arm's
PHASE2 = ("full-matched", "random")
ANCHORS = ("thin", "position", "pld", "stochastic-depth", "freeze")
ABLATIONS = {  # what the check and the BatchNorm re-estimation are worth (with --anchors)
    "l&d, unchecked": ("learn-and-drop", {"check": False}),
    "l&d, no total_steps, no BN re-estimation": ("learn-and-drop", {"total_steps": None, "recalibrate": False}),
}


def _row(label: str, run: TrainRun, phase: int) -> dict:
    r = run.result().to_dict()
    for key in ("scores", "step_time", "step_flops"):
        r.pop(key, None)
    r["label"], r["phase"] = label, phase
    pol = run.policy
    r["check_s"] = getattr(pol, "check_seconds", 0.0)
    r["checks"] = getattr(pol, "checks", [])
    r["churns"] = getattr(pol, "churns", [])
    return r


def protocol(args: argparse.Namespace, seed: int) -> tuple:
    """``(data, model factory, TrainConfig)`` of one seed of the protocol ``args`` name (every arm's base)."""
    data = data_mod.load(args.dataset).limit(args.train_limit, None)
    if args.validation:
        data = data.hold_out(args.validation)
    factory = lambda: build_model(args.model, data.num_classes)  # noqa: E731
    cfg = TrainConfig(epochs=args.epochs, seed=seed, warmup_epochs=0.0, progress=False, batch_size=args.batch_size,
                      lr=args.lr, schedule=args.schedule, interval=args.interval, projections=args.projections)
    return data, factory, cfg


def phase1_run(label: str, data, factory, cfg: TrainConfig) -> TrainRun:
    """The phase-1 arm ``label`` (PHASE1 or OPTIONAL) of a protocol's ``cfg``."""
    kind, opts = {**PHASE1, **OPTIONAL}[label]
    return TrainRun(factory, data, dataclasses.replace(cfg, ld_options=opts, **ARM_CFG.get(label, {})), kind,
                    label=label)


def alone(args: argparse.Namespace, seed: int, label: str) -> TrainRun:
    """Phase-1 arm ``label`` of ``args``' protocol for ``seed``, to train alone and without test evaluations
    (its decisions and counts only: bench/replay_events.py, bench/check_rows.py), on ``args.threads``."""
    torch.set_num_threads(args.threads)
    data, factory, cfg = protocol(args, seed)
    return phase1_run(label, data, factory, dataclasses.replace(cfg, evaluate=False))


def run_seed(args: argparse.Namespace, seed: int, out: Path) -> None:
    data, factory, cfg = protocol(args, seed)
    warm = TrainRun(factory, data, dataclasses.replace(cfg, max_steps=20), "none")
    train_interleaved([warm])  # untimed: one-off start-up costs land here
    del warm
    runs = {label: phase1_run(label, data, factory, cfg)
            for label in {**PHASE1, **OPTIONAL} if label in (args.arms or PHASE1)}
    t0 = time.time()
    train_interleaved(list(runs.values()), progress=args.progress)
    rows = [_row(label, run, 1) for label, run in runs.items()]
    deps = {}
    extra = args.anchors
    if args.replay_arm in runs and not args.no_replays:  # the arms that follow Learn&Drop's run
        ld_run = runs[args.replay_arm]
        budget = time_matched_steps(runs["full"].result(), ld_run.result())
        kinds = list(PHASE2) + (list(ANCHORS) if extra else [])
        deps = {k: TrainRun(factory, data, cfg, k, reference=ld_run.policy,
                            total_steps=budget if k == "full-matched" else None) for k in kinds}
    steps = runs["full"].result().steps
    for x in args.matched_at:  # the full network at a fixed speed-up: what the target costs without dropping
        label = f"full, {x:g}x fewer steps"
        deps[label] = TrainRun(factory, data, cfg, "full-matched", label=label, total_steps=max(1, round(steps / x)))
    if extra:
        deps.update({label: TrainRun(factory, data, dataclasses.replace(cfg, ld_options=opts), kind, label=label)
                     for label, (kind, opts) in ABLATIONS.items()})
    train_interleaved(list(deps.values()), progress=args.progress)
    rows += [_row(k, run, 2) for k, run in deps.items()]
    doc = {"model": args.model, "dataset": args.dataset, "source": data.source, "epochs": args.epochs,
           "seed": seed, "train_images": len(data.train_y), "test_images": len(data.test_y),
           "validation_images": args.validation, "replay_arm": args.replay_arm, "torch": torch.__version__,
           "threads": torch.get_num_threads(), "cores": os.cpu_count(), "elapsed_s": time.time() - t0,
           "command": shlex.join(["python", "bench/evidence.py", *args.argv]), "code": args.code, "tag": args.tag,
           "protocol": {"batch_size": cfg.batch_size, "lr": cfg.lr, "schedule": cfg.schedule, "interval": cfg.interval,
                        "projections": cfg.projections},
           "runs": rows}
    path = out / f"{args.model}_{args.dataset}{args.tag}_s{seed}.json"
    path.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {path}", flush=True)


def code_version() -> str | None:
    """The commit of the fxdrop checkout this process runs, ``+dirty`` when tracked files differ from it
    (None outside a git checkout): taken when the process starts, as the code it imported."""
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("+dirty" if dirty else "")


def parser() -> argparse.ArgumentParser:
    """The command line of this script (bench/replay_events.py reads a JSON's ``command`` with it)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="resnet18")
    p.add_argument("--dataset", default="mnist-small")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--train-limit", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--schedule", choices=["onecycle", "constant"], default="onecycle")
    p.add_argument("--interval", type=int, default=None, help="Learn&Drop's interval (default: a tenth of an epoch)")
    p.add_argument("--projections", action="store_true",
                   help="wrap(..., projections=True): downsampling blocks' branches are units too")
    p.add_argument("--tag", default="", help="suffix of the JSON names (a protocol other than the default)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--anchors", action="store_true", help="also the thinner network, the published anchors and "
                   "two ablations (no check; no BatchNorm re-estimation) on every seed")
    p.add_argument("--replay-arm", default="learn-and-drop", choices=LD_ARMS, metavar="LABEL",
                   help="the phase-1 Learn&Drop arm the time-matched, random and anchor arms follow")
    p.add_argument("--matched-at", type=float, nargs="*", default=[1.5, 2.0], metavar="X",
                   help="also the full network trained for 1/X of the steps (its OneCycle over them), per X")
    p.add_argument("--arms", nargs="+", choices=list(PHASE1) + list(OPTIONAL), default=None, metavar="LABEL",
                   help="only these phase-1 arms (the full network always; the time-matched and random arms "
                        f"need 'learn-and-drop'); labels: {', '.join(map(repr, {**PHASE1, **OPTIONAL}))}")
    p.add_argument("--validation", type=int, default=0, metavar="N",
                   help="hold out the first N test images as a validation split (every arm is tested on the rest; "
                        "the 'l&d, held-out checks' arm checks its drops on them)")
    p.add_argument("--no-replays", action="store_true",
                   help="no time-matched or random arm after Learn&Drop (the --matched-at arms still run)")
    p.add_argument("--out", default="docs/measurements/evidence")
    p.add_argument("--progress", action="store_true")
    return p


def command_args(command: str) -> argparse.Namespace:
    """The protocol a JSON's recorded ``command`` ran, without its ``--arms`` (a replay names its own arm;
    JSONs before v10 joined arm labels unquoted, so their words are not the labels)."""
    words, kept, skipping = shlex.split(command)[2:], [], False  # past "python bench/evidence.py"
    for w in words:
        if w.startswith("--"):
            skipping = w == "--arms"
        if not skipping:
            kept.append(w)
    return parser().parse_args(kept)


def main(argv: list[str] | None = None) -> None:
    import sys

    args = parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    args.code = code_version()
    if args.arms is not None and "full" not in args.arms:
        args.arms.append("full")  # every speed-up and accuracy is paired with it
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for seed in args.seeds:
        if (out / f"{args.model}_{args.dataset}{args.tag}_s{seed}.json").exists():
            continue
        run_seed(args, seed, out)


if __name__ == "__main__":
    main()
