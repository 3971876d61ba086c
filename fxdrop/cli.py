"""``fxdrop`` command line: ``fxdrop run`` trains the same initialisation with and without dropping and
prints the comparison; ``fxdrop units`` prints a model's unit table.

Every mistake in the command line ends in one line on stderr that names the bad value and the way out,
and exit status 2 (no traceback)."""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import importlib
import inspect
import json
import logging
import math
import os
import re
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from . import __version__
from . import data as data_mod
from .errors import FxdropError
from .policies import LearnAndDrop
from .run_report import TIMING_NOISE, disagrees, plot, speedups, table, warnings_for
from .train import (DEPENDENT, POLICIES, REPLAYS, TrainConfig, TrainRun, build_model,
                    time_matched_steps, train_interleaved)

__all__ = ["main", "build_parser", "UsageError", "TIMING_NOISE"]

log = logging.getLogger(__name__)

WARMUP_STEPS = 20  # untimed steps before the timed arms: allocator and kernel start-up costs
SLOW_ARM_ENV = "FXDROP_TEST_SLOW_ARM"  # test hook: "POLICY:SECONDS" sleeps that long after each step of POLICY


class UsageError(Exception):
    """A bad command-line value; the message names it and the way out."""


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line (not usage + message) and exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}; see '{self.prog} --help'\n")


class _Formatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows every option's default; an option whose help already says what ``None`` means keeps that."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default is None and "default:" in (action.help or ""):
            return action.help or ""
        return super()._get_help_string(action) or ""


def _int_at_least(lo: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer >= {lo}, got {text!r}") from None
        if value < lo:
            raise argparse.ArgumentTypeError(f"must be >= {lo}, got {value}")
        return value

    parse.__name__ = f"int>={lo}"
    return parse


def _float_in(lo: float, strict: bool) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not math.isfinite(value) or value < lo or (strict and value == lo):
            raise argparse.ArgumentTypeError(f"must be a finite number {'>' if strict else '>='} {lo:g}, got {text}")
        return value

    parse.__name__ = "float"
    return parse


def _did_you_mean(name: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, list(choices), n=3, cutoff=0.6)
    if not close:
        return ""
    return f"did you mean {close[0]}?" + (f" (also close: {', '.join(close[1:])})" if close[1:] else "")


# --- validation of values argparse cannot check ------------------------------------------------------


def _model_factory(name: str, num_classes: int) -> Callable[[], torch.nn.Module]:
    """Check ``--model`` and return a factory for it; raise :class:`UsageError` naming what is wrong."""
    if ":" in name:
        mod_name, _, attr = name.partition(":")
        if not mod_name or not attr or ":" in attr:
            raise UsageError(f"--model {name!r}: expected package.module:factory, e.g. mypkg.models:make_net")
        if "" not in sys.path and os.getcwd() not in sys.path:
            # the console script's sys.path starts at its own directory, `python -m fxdrop`'s at the current
            # one: both import the user's package from the current directory, as the README says
            sys.path.insert(0, os.getcwd())
        try:
            module = importlib.import_module(mod_name)
        except Exception as e:  # ImportError, or anything the module raises while importing
            raise UsageError(f"--model {name}: cannot import module {mod_name!r} ({type(e).__name__}: {e}); "
                             "make it importable from the current directory or PYTHONPATH") from None
        if not callable(getattr(module, attr, None)):
            public = [n for n in dir(module) if not n.startswith("_") and callable(getattr(module, n))]
            hint = _did_you_mean(attr, public)
            raise UsageError(f"--model {name}: module {mod_name!r} has no callable {attr!r}"
                             + (f"; {hint}" if hint else "; give package.module:factory of a function returning an nn.Module"))
    else:
        import torchvision

        from .models import CIFAR_MODELS

        names = list(CIFAR_MODELS) + torchvision.models.list_models(module=torchvision.models)
        if name not in names:
            hint = _did_you_mean(name, names)
            raise UsageError(f"unknown model {name!r}: {hint + ' ' if hint else ''}give resnet20/32/56 (CIFAR "
                             "ResNets), a torchvision model name "
                             "(`python -c \"import torchvision; print(torchvision.models.list_models())\"`) "
                             "or package.module:factory")

    def factory() -> torch.nn.Module:
        model = build_model(name, num_classes)
        if not isinstance(model, torch.nn.Module):
            raise UsageError(f"--model {name}: the factory returned {type(model).__name__}, not a torch.nn.Module")
        return model

    return factory


def _model_error(args: argparse.Namespace, what: str, e: BaseException, way_out: str) -> UsageError:
    """One line for a model that fails on the chosen input: the model, the input, the error's first line."""
    msg = str(e).splitlines()[0] if str(e) else ""
    return UsageError(f"--model {args.model} cannot {what} {args.input_size}x{args.input_size} inputs "
                      f"({type(e).__name__}: {msg}); {way_out}")


def _check_output(option: str, path: str, suffixes: Sequence[str] = ()) -> None:
    """Fail before any training if ``path`` cannot be written (nothing is created here)."""
    p = Path(path)
    if p.is_dir():
        raise UsageError(f"{option} {path}: is a directory; give a file name, e.g. {p / 'out'}{suffixes[0] if suffixes else ''}")
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise UsageError(f"{option} {path}: directory {parent} does not exist; create it first or choose another path")
    if not os.access(parent, os.W_OK) or (p.exists() and not os.access(p, os.W_OK)):
        raise UsageError(f"{option} {path}: not writable; choose a path in a directory you can write to")
    if suffixes and p.suffix.lower() not in suffixes:
        raise UsageError(f"{option} {path}: unsupported file type {p.suffix or '(none)'!r}; use one of "
                         f"{', '.join(suffixes)}")


def _parse_ld(items: Sequence[str]) -> dict[str, Any]:
    """``["plateau=0.3", "returns=False"]`` -> LearnAndDrop keyword arguments, each checked against
    ``LearnAndDrop``'s signature (name and type) and then its own range checks."""
    params = inspect.signature(LearnAndDrop).parameters
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--ld {item!r}: expected KEY=VALUE, e.g. --ld plateau=0.3")
        if key not in params:
            hint = _did_you_mean(key, list(params))
            raise UsageError(f"--ld {item}: LearnAndDrop has no knob {key!r}; {hint + ' ' if hint else ''}"
                             f"knobs: {', '.join(params)} (docs/method.md)")
        ann = str(params[key].annotation)
        try:
            if value == "None" and "None" in ann:
                out[key] = None
            elif re.search(r"\bbool\b", ann):
                if value.lower() not in ("true", "false"):
                    raise ValueError
                out[key] = value.lower() == "true"
            elif re.search(r"\bint\b", ann):
                out[key] = int(value)
            elif re.search(r"\bfloat\b", ann):
                out[key] = float(value)
                if not math.isfinite(out[key]):
                    raise ValueError
            elif ann.startswith("Iterable"):
                out[key] = [v for v in value.split(",") if v]
            else:
                out[key] = value
        except ValueError:
            what = "True or False" if "bool" in ann else "an integer" if "int" in ann else "a number"
            raise UsageError(f"--ld {item}: {key} must be {what}{' or None' if 'None' in ann else ''}, "
                             f"got {value!r}") from None
    try:
        LearnAndDrop(**out)
    except (ValueError, TypeError) as e:
        raise UsageError(f"--ld: {e}; see docs/method.md for each knob's range") from None
    return out


def _load_data(args: argparse.Namespace) -> data_mod.ImageData:
    d = args.data_dir
    if d is not None:
        if not Path(d).is_dir():
            raise UsageError(f"--data-dir {d}: no such directory; give the directory holding the data set "
                             "(docs/data.md lists the layouts)")
        if args.dataset == "mnist-small":
            print(f"fxdrop run: warning: --data-dir {d} is ignored by --dataset mnist-small (bundled); "
                  "use --dataset mnist to read it", file=sys.stderr)
        sub = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}.get(args.dataset)
        if sub and data_mod._raw_dir(d, sub) is None:
            raise UsageError(f"--data-dir {d}: no {args.dataset} IDX files (train-images-idx3-ubyte[.gz] and the "
                             f"three others) in {d}, {d}/{sub}/raw or {d}/raw; use torchvision's layout")
    try:
        data = data_mod.load(args.dataset, d)
    except (FileNotFoundError, ValueError, OSError, RuntimeError) as e:
        raise UsageError(f"--dataset {args.dataset}: {e}") from None
    if min(data.shape[-2:]) > args.input_size:
        raise UsageError(f"--input-size {args.input_size} is smaller than the {args.dataset} images "
                         f"({data.shape[-2]}x{data.shape[-1]}); use --input-size {max(data.shape[-2:])} or more")
    data = data.limit(args.train_limit, args.test_limit)
    if args.validation:
        try:
            data = data.hold_out(args.validation)
        except ValueError as e:
            raise UsageError(f"--validation {args.validation}: {e}") from None
    return data


def _slow_arm_hook() -> Callable[[str, int], None] | None:
    spec = os.environ.get(SLOW_ARM_ENV)
    if not spec:
        return None
    kind, _, secs = spec.partition(":")
    try:
        delay = float(secs)
    except ValueError:
        raise UsageError(f"{SLOW_ARM_ENV}={spec!r}: expected POLICY:SECONDS, e.g. none:0.05") from None

    def hook(policy: str, step: int) -> None:
        if policy == kind:
            time.sleep(delay)

    return hook


# --- commands -----------------------------------------------------------------------------------------


def _cmd_run(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise UsageError("--plot needs matplotlib: pip install 'fxdrop[plot]'") from None
        _check_output("--plot", args.plot, (".png", ".pdf", ".svg"))
    if args.json not in (None, "-"):
        _check_output("--json", args.json)
    hook = _slow_arm_hook()
    ld_options = _parse_ld(args.ld)
    for key, value in (("tolerance", args.tolerance), ("target_speedup", args.target_speedup)):
        if value is not None:
            ld_options.setdefault(key, value)  # --ld wins over the dedicated options
    try:
        LearnAndDrop(**ld_options)
    except (ValueError, TypeError) as e:
        raise UsageError(f"--tolerance/--target-speedup: {e}") from None
    data = _load_data(args)
    seq: dict[str, Any] = {}
    if args.then is not None:
        then = _load_data(argparse.Namespace(**{**vars(args), "dataset": args.then}))
        if then.shape != data.shape or then.num_classes != data.num_classes:
            raise UsageError(f"--then {args.then}: its images ({then.shape}, {then.num_classes} classes) differ from "
                             f"--dataset {args.dataset}'s ({data.shape}, {data.num_classes} classes); pick data sets of "
                             "one shape and class count, e.g. mnist-small then fashion-small")
        seq = {"then": then, "then_epochs": args.then_epochs}
    factory = _model_factory(args.model, data.num_classes)
    cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, schedule=args.schedule,
                      seed=args.seed, input_size=args.input_size, interval=args.interval,
                      loop=args.loop, projections=args.projections,
                      checks_on="validation" if args.validation else "train", ld_options=ld_options,
                      progress=not args.no_progress, step_hook=hook)
    kinds = list(dict.fromkeys(args.policy))
    try:  # untimed warm-up; also checks that the model traces and runs on this input size
        warm = TrainRun(factory, data, dataclasses.replace(cfg, max_steps=WARMUP_STEPS, step_hook=None, evaluate=False),
                        "none")
        train_interleaved([warm])
    except UsageError:
        raise
    except (FxdropError, RuntimeError, ValueError, TypeError) as e:
        raise _model_error(args, "be trained on", e, "try a larger --input-size or another --model") from None
    del warm
    # phase 1: the full network, Learn&Drop and the arms that need nothing else, interleaved epoch by
    # epoch; phase 2: the arms that need a finished Learn&Drop run (replays, time-matched full network)
    phase1 = ["none"] + [k for k in kinds if k not in DEPENDENT]
    if any(k in DEPENDENT for k in kinds) and "learn-and-drop" not in phase1:
        phase1.insert(1, "learn-and-drop")
    try:
        runs = {k: TrainRun(factory, data, cfg, k, label="full" if k == "none" else k, **seq) for k in phase1}
    except ValueError as e:  # e.g. --ld never= naming a unit the model does not have
        raise UsageError(f"{e}; `fxdrop units --model {args.model}` lists the units") from None
    train_interleaved(list(runs.values()), chunk_steps=args.interleave_steps, progress=cfg.progress)
    results = {k: r.result() for k, r in runs.items()}
    if any(k in DEPENDENT for k in kinds):
        ld = results["learn-and-drop"]
        ref = runs["learn-and-drop"].policy
        budget = time_matched_steps(results["none"], ld)
        deps = {k: TrainRun(factory, data, cfg, k, reference=ref, total_steps=budget if k == "full-matched" else None,
                            **seq)
                for k in kinds if k in DEPENDENT}
        train_interleaved(list(deps.values()), chunk_steps=args.interleave_steps, progress=cfg.progress)
        results.update({k: r.result() for k, r in deps.items()})
    ordered = [results["none"]] + [results[k] for k in dict.fromkeys(phase1[1:] + kinds)]
    then = f", then {args.then} for {args.then_epochs or args.epochs} epochs" if args.then else ""
    header = (f"{args.model} on {args.dataset} ({data.source}), {args.epochs} epochs{then}, seed {args.seed}, "
              f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} cores")
    notes = warnings_for(ordered)
    if args.json is not None:
        out = {"model": args.model, "dataset": args.dataset, "source": data.source,
               "config": {k: v for k, v in vars(cfg).items() if k != "step_hook"},
               "torch": torch.__version__, "fxdrop": __version__, "threads": torch.get_num_threads(),
               "cores": os.cpu_count(), "timing_noise": TIMING_NOISE, "warnings": notes, "runs": []}
        for r in ordered:
            d = r.to_dict()
            d["speedup"] = speedups(r, ordered[0])
            if not args.scores:
                for key in ("scores", "step_time", "step_flops"):
                    d.pop(key)
            out["runs"].append(d)
        text = json.dumps(out, indent=1)
        if args.json == "-":
            print(text)
        else:
            Path(args.json).write_text(text + "\n")
    if args.json != "-":
        print(header)
        turn = f"{args.interleave_steps} steps"
        print(f"arms trained interleaved ({turn} of each in turn) after an untimed {WARMUP_STEPS}-step warm-up; "
              "speed-up = full's time / the arm's; '!' = wall and CPU disagree")
        later = [k for k in kinds if k in DEPENDENT]
        if later:
            print(f"{', '.join(later)} need a finished Learn&Drop run: interleaved among themselves after it, so "
                  "their wall time shares no turn with full's")
        print(table(ordered))
        for k, r in runs.items():
            share = getattr(r.policy, "check_share", None)
            if share is not None:
                print(f"{k}: checks and BatchNorm re-estimation ran {100 * share:.1f}% of the training compute "
                      "(forward FLOPs counted)")
    for line in notes:
        print(line, file=sys.stderr)
    if args.plot:
        ld = next((r for r in ordered if r.policy == "learn-and-drop"), ordered[-1])
        s = speedups(ld, ordered[0])
        measured = (f"wall {s['wall']:.2f}x vs CPU {s['cpu']:.2f}x (disagree)" if disagrees(s)
                    else f"{s['cpu']:.2f}x by CPU time ({s['wall']:.2f}x wall)")
        title = (f"{args.model} on {args.dataset} ({len(data.train_y)} train images), {args.epochs} epochs, "
                 f"seed {args.seed}\n{ld.policy}: measured {measured}; forward FLOPs predict {s['flops']:.2f}x")
        plot(ordered, args.plot, title)
    return 0


def _cmd_units(args: argparse.Namespace) -> int:
    import fxdrop

    factory = _model_factory(args.model, args.num_classes)
    try:
        model = factory()
        net = fxdrop.wrap(model, example_inputs=(torch.randn(1, 3, args.input_size, args.input_size),),
                          level=args.level, projections=args.projections)
    except UsageError:
        raise
    except (FxdropError, RuntimeError, ValueError, TypeError) as e:
        raise _model_error(args, "run on", e, "try a larger --input-size, e.g. 224") from None
    print(net.summary())
    return 0


def _level(text: str) -> int | str:
    if text in ("inner", "outer"):
        return text
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a level: give an int >= 0, 'inner' or 'outer'")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The ``fxdrop`` argument parser (every option has help and shows its default)."""
    p = _Parser(prog="fxdrop", description=__doc__, formatter_class=_Formatter)
    p.add_argument("--version", action="version", version=f"fxdrop {__version__}, torch {torch.__version__}",
                   help="print fxdrop's and torch's versions and exit")
    sub = p.add_subparsers(dest="cmd", required=True, parser_class=_Parser)
    r = sub.add_parser("run", help="train full vs. dropped from the same initialisation and compare",
                       description="Train the full network and each --policy arm from the same initialisation and "
                       "data order, interleaved one epoch at a time, and report wall and CPU time, the speed-up "
                       "the FLOPs predict and the measured ones, test accuracy and the drops.",
                       formatter_class=_Formatter)
    r.add_argument("--model", default="resnet18",
                   help="resnet20/32/56 or cifar_vgg11 (CIFAR models), a torchvision model name, or "
                        "package.module:factory")
    r.add_argument("--dataset", default="mnist-small", choices=sorted(data_mod.DATASETS),
                   help="data set; all but mnist-small are read from --data-dir (docs/data.md)")
    r.add_argument("--data-dir", default=None, help="directory with the data set (torchvision layouts); "
                   "default: $FXDROP_DATA")
    r.add_argument("--epochs", type=_int_at_least(1), default=3, help="training epochs of every arm")
    r.add_argument("--batch-size", type=_int_at_least(1), default=128, help="training batch size")
    r.add_argument("--lr", type=_float_in(0, strict=True), default=0.05,
                   help="learning rate: the peak of OneCycle, or the constant rate with --schedule constant")
    r.add_argument("--schedule", choices=["onecycle", "cosine", "constant"], default="onecycle",
                   help="learning-rate schedule of every arm")
    r.add_argument("--loop", choices=["attach", "step", "plain"], default="attach",
                   help="how the training loop calls fxdrop: net.attach(opt) once; net.step(opt, targets=y) "
                   "after every optimizer step; or net.step() alone (the run's length unknown to fxdrop)")
    r.add_argument("--seed", type=_int_at_least(0), default=0, help="seed of initialisation and data order")
    r.add_argument("--input-size", type=_int_at_least(1), default=32,
                   help="images are padded up to this size (at least the data set's image size)")
    r.add_argument("--interval", type=_int_at_least(1), default=None,
                   help="Learn&Drop's steps between decisions; default: the run's length / 20 (8 to 50)")
    r.add_argument("--target-speedup", type=_float_in(1, strict=True), default=None, metavar="X",
                   help="budget knob: Learn&Drop stops dropping once the forward FLOPs are cut X-fold; "
                   "default: as far as its checks allow")
    r.add_argument("--then", default=None, choices=sorted(data_mod.DATASETS), metavar="DATASET",
                   help="after --epochs on --dataset, continue every arm on this data set (a sequence: data that "
                   "changes); test accuracy is then printed on both test sets")
    r.add_argument("--then-epochs", type=_int_at_least(1), default=None, metavar="N",
                   help="epochs on the --then data set (default: --epochs)")
    r.add_argument("--projections", action="store_true",
                   help="also drop downsampling blocks' residual branches (their projection shortcut stays): "
                   "fxdrop.wrap(..., projections=True)")
    r.add_argument("--tolerance", type=_float_in(0, strict=False), default=None, metavar="T",
                   help="Learn&Drop's tolerance: the relative held-loss change that counts (default: 0.05)")
    r.add_argument("--policy", nargs="+", default=["learn-and-drop"], choices=[k for k in POLICIES if k != "none"],
                   help="arms to compare with the full network (always trained); full-matched = the full "
                   "network trained for as many steps as Learn&Drop's measured CPU time buys; pld = progressive "
                   "layer dropping (Zhang & He 2020)")
    r.add_argument("--interleave-steps", type=_int_at_least(1), default=5, metavar="N",
                   help="train the arms in turns of N steps, so outside load falls on every arm alike")
    r.add_argument("--ld", nargs="*", default=[], metavar="KEY=VALUE",
                   help="LearnAndDrop knobs (docs/method.md), e.g. --ld plateau=0.3 returns=False")
    r.add_argument("--train-limit", type=_int_at_least(1), default=None,
                   help="use only the first N training images; default: all")
    r.add_argument("--test-limit", type=_int_at_least(1), default=None,
                   help="use only the first N test images; default: all")
    r.add_argument("--validation", type=_int_at_least(1), default=None, metavar="N",
                   help="hold out the first N test images as a validation split: Learn&Drop checks its drops on "
                        "them instead of on held training batches; every arm is tested on the rest")
    r.add_argument("--threads", type=_int_at_least(1), default=None, help="torch threads; default: torch's choice")
    r.add_argument("--json", nargs="?", const="-", default=None, metavar="PATH",
                   help="machine-readable results: to stdout (no PATH) or to the file PATH")
    r.add_argument("--scores", action="store_true",
                   help="include per-unit score histories and per-step timelines in --json")
    r.add_argument("--plot", default=None, metavar="PATH",
                   help="write the report figure (accuracy and FLOPs against time, drops labelled) to PATH "
                   "(.png, .pdf or .svg; needs matplotlib)")
    r.add_argument("--no-progress", action="store_true", help="no progress bar")
    r.set_defaults(func=_cmd_run)
    u = sub.add_parser("units", help="print the droppable units of a model", formatter_class=_Formatter,
                       description="Trace a model and print its droppable units with parameters and FLOPs.")
    u.add_argument("--model", default="resnet18", help="torchvision model name or package.module:factory")
    u.add_argument("--num-classes", type=_int_at_least(1), default=1000, help="classes of the model's head")
    u.add_argument("--input-size", type=_int_at_least(1), default=224, help="side of the square example input")
    u.add_argument("--level", type=_level, default=0,
                   help="how coarse units are where they nest: 0 innermost (blocks; a transformer layer's attention "
                   "and MLP), 1 one up (whole transformer layers, ResNet stages that keep their shape), 'outer'")
    u.add_argument("--projections", action="store_true",
                   help="also list downsampling blocks' residual branches (their projection shortcut stays)")
    u.set_defaults(func=_cmd_units)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``fxdrop`` command line; returns the exit status (2 for a bad command line)."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except UsageError as e:
        print(f"fxdrop {args.cmd}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
