"""``fxdrop`` command line: ``fxdrop run`` trains the same initialisation with and without dropping and
prints the comparison; ``fxdrop units`` prints a model's unit table."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from typing import Sequence

import torch

from . import data as data_mod
from .policy import LearnAndDrop
from .train import POLICIES, REPLAYS, RunResult, TrainConfig, build_model, train_run

__all__ = ["main"]


def _table(results: list[RunResult]) -> str:
    from tabulate import tabulate

    base = results[0]
    rows = []
    for r in results:
        when = "; ".join(f"{s}:{len(n)}" for s, n in r.events) or "-"
        rows.append([
            r.policy, f"{r.wall_s:.1f}", f"{base.wall_s / r.wall_s:.2f}x", f"{100 * r.test_acc:.2f}",
            f"{100 * (r.test_acc - base.test_acc):+.2f}", f"{100 * r.flops_ratio:.1f}%",
            f"{len(r.dropped)}/{r.units}", when,
        ])
    return tabulate(rows, headers=["policy", "train s", "speed-up", "test acc %", "Δ acc pt", "fwd FLOPs/step",
                                   "units dropped", "drops (step:count)"])


def _plot(results: list[RunResult], path: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:  # optional extra
        raise SystemExit(f"--plot needs matplotlib: pip install 'fxdrop[plot]' ({e})")
    run = next((r for r in results if r.policy in ("learn-and-drop", "freeze")), results[-1])
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(9, 7), sharex=True)
    for name, hist in run.scores.items():
        if hist:
            ax1.semilogy([h["step"] for h in hist], [h["change"] for h in hist], label=name)
    ax1.set_ylabel("layer-change score")
    ax1.legend(fontsize=6, ncol=3)
    for r in results:
        steps, left = [0], [r.units]
        for s, names in r.events:
            steps.append(s)
            left.append(left[-1] - len(names))
        steps.append(r.steps)
        left.append(left[-1])
        ax2.step(steps, left, where="post", label=r.policy)
    ax2.set_xlabel("optimizer step")
    ax2.set_ylabel("live units")
    ax2.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _parse_ld(items: list[str]) -> dict:
    """``["stop=0.1", "max_drops_per_event=2"]`` -> LearnAndDrop keyword arguments (numbers parsed)."""
    out: dict = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"expected KEY=VALUE, got {item!r}")
        try:
            out[key] = int(value)
        except ValueError:
            try:
                out[key] = float(value)
            except ValueError:
                out[key] = None if value == "None" else value
    return out


def _cmd_run(args: argparse.Namespace) -> int:
    torch.set_num_threads(args.threads) if args.threads else None
    try:
        data = data_mod.load(args.dataset, args.data_dir).limit(args.train_limit, args.test_limit)
    except (FileNotFoundError, ValueError) as e:
        print(f"fxdrop run: {e}", file=sys.stderr)
        return 2
    try:
        ld_options = _parse_ld(args.ld)
        LearnAndDrop(**ld_options)  # validate the knobs before training anything
    except ValueError as e:
        print(f"fxdrop run: --ld: {e}", file=sys.stderr)
        return 2
    cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                      input_size=args.input_size, interval=args.interval, warmup_epochs=args.warmup_epochs,
                      ld_options=ld_options, progress=not args.no_progress)
    factory = lambda: build_model(args.model, data.num_classes)
    try:
        factory()
    except (ValueError, ImportError, AttributeError) as e:
        print(f"fxdrop run: {e}", file=sys.stderr)
        return 2
    # untimed warm-up: the first run in a process pays allocator and kernel start-up costs, which
    # would inflate every speed-up measured against the baseline that runs first
    train_run(factory, data, dataclasses.replace(cfg, max_steps=20, progress=False), "none")
    results = []
    base, _ = train_run(factory, data, cfg, "none", label="full")
    results.append(base)
    reference = None  # the Learn&Drop run that random/position/thin replay
    for kind in args.policy:
        if kind in REPLAYS and reference is None:
            r, reference = train_run(factory, data, cfg, "learn-and-drop")
            results.append(r)
        if any(x.policy == kind for x in results):
            continue
        r, pol = train_run(factory, data, cfg, kind, reference=reference)
        results.append(r)
        if kind == "learn-and-drop":
            reference = pol
    if args.json:
        out = {"model": args.model, "dataset": args.dataset, "source": data.source, "config": vars(cfg),
               "torch": torch.__version__, "runs": [r.to_dict() for r in results]}
        if not args.scores:
            for run in out["runs"]:
                run.pop("scores")
        print(json.dumps(out, indent=1))
    else:
        print(f"{args.model} on {args.dataset} ({data.source}), {args.epochs} epochs, seed {args.seed}, "
              f"torch {torch.__version__}, {torch.get_num_threads()} threads")
        print(_table(results))
    if args.plot:
        _plot(results, args.plot)
    return 0


def _cmd_units(args: argparse.Namespace) -> int:
    import fxdrop

    model = build_model(args.model, args.num_classes)
    net = fxdrop.wrap(model, example_inputs=(torch.randn(1, 3, args.input_size, args.input_size),))
    print(net.summary())
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="fxdrop", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="train full vs. dropped from the same initialisation and compare")
    r.add_argument("--model", default="resnet18",
                   help="resnet20/32/56 (CIFAR ResNets), a torchvision model name, or package.module:factory")
    r.add_argument("--dataset", default="mnist-small", choices=sorted(data_mod.DATASETS))
    r.add_argument("--data-dir", default=None, help="directory with the data set (torchvision layouts)")
    r.add_argument("--epochs", type=int, default=3)
    r.add_argument("--batch-size", type=int, default=128)
    r.add_argument("--lr", type=float, default=0.05)
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--input-size", type=int, default=32, help="images are padded up to this size")
    r.add_argument("--interval", type=int, default=None, help="score interval in steps (default: epoch/10)")
    r.add_argument("--warmup-epochs", type=float, default=1.0)
    r.add_argument("--policy", nargs="+", default=["learn-and-drop"], choices=[k for k in POLICIES if k != "none"])
    r.add_argument("--ld", nargs="*", default=[], metavar="KEY=VALUE",
                   help="LearnAndDrop knobs (docs/method.md), e.g. --ld stop=0.1 threshold=0.5")
    r.add_argument("--train-limit", type=int, default=None)
    r.add_argument("--test-limit", type=int, default=None)
    r.add_argument("--threads", type=int, default=None)
    r.add_argument("--json", action="store_true", help="print machine-readable results")
    r.add_argument("--scores", action="store_true", help="include per-unit score histories in --json")
    r.add_argument("--plot", default=None, help="write the drop timeline and change scores to this PNG")
    r.add_argument("--no-progress", action="store_true")
    r.set_defaults(func=_cmd_run)
    u = sub.add_parser("units", help="print the droppable units of a model")
    u.add_argument("--model", default="resnet18")
    u.add_argument("--num-classes", type=int, default=1000)
    u.add_argument("--input-size", type=int, default=224)
    u.set_defaults(func=_cmd_units)
    args = p.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
