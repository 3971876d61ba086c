"""End-to-end: the CLI trains full and Learn&Drop on real (bundled) MNIST."""

import json

import pytest

from fxdrop import data
from fxdrop.cli import main


def test_bundled_data_is_real_mnist():
    d = data.load("mnist-small")
    assert d.train_x.shape == (12000, 1, 28, 28) and d.test_x.shape == (2000, 1, 28, 28)
    assert d.train_y.bincount().min() > 1000  # every digit is there
    assert d.train_x.float().mean() / 255 == pytest.approx(0.1307, abs=0.01)  # MNIST's known mean


def test_missing_local_datasets_say_how_to_get_them(tmp_path):
    with pytest.raises(FileNotFoundError, match="--data-dir.*cifar-10-batches-py.*never downloads"):
        data.load("cifar10", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="--data-dir"):
        data.load("imagenette", None)
    with pytest.raises(ValueError, match="unknown dataset"):
        data.load("imagenet")


def test_idx_loader_reads_torchvision_layout(tmp_path):
    import gzip

    import numpy as np

    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    imgs = np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28)
    for split, n in (("train", 2), ("t10k", 2)):
        header = (2051).to_bytes(4, "big") + n.to_bytes(4, "big") + (28).to_bytes(4, "big") * 2
        with gzip.open(raw / f"{split}-images-idx3-ubyte.gz", "wb") as f:
            f.write(header + imgs.tobytes())
        with open(raw / f"{split}-labels-idx1-ubyte", "wb") as f:
            f.write((2049).to_bytes(4, "big") + n.to_bytes(4, "big") + bytes([3, 7]))
    d = data.load("mnist", str(tmp_path))
    assert d.train_x.shape == (2, 1, 28, 28) and d.train_y.tolist() == [3, 7]
    assert (d.train_x[1, 0] == imgs[1]).all()


@pytest.mark.slow
def test_cli_run_end_to_end_resnet18(capsys):
    rc = main(["run", "--model", "resnet18", "--epochs", "2", "--train-limit", "2000", "--test-limit", "1000",
               "--batch-size", "64", "--json", "--no-progress", "--policy", "learn-and-drop",
               "--tolerance", "0.99"])  # accept nearly every candidate: this test is about the run, not the check
    # (the random replay of the same schedule is asserted on the tiny run, test_cli_run_tiny_end_to_end)
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    runs = {r["policy"]: r for r in out["runs"]}
    assert set(runs) == {"none", "learn-and-drop"}
    ld = runs["learn-and-drop"]
    assert ld["dropped"], "Learn&Drop dropped nothing"
    assert ld["flops_ratio"] < 1.0
    assert runs["none"]["test_acc"] >= 0.85 and ld["test_acc"] >= 0.85  # stated floor for 2 epochs on 2k images


def test_cli_units_and_errors(capsys):
    # (the 32-px VGG-11 of fxdrop.models: torchvision's builds its 133M weights in 4 s)
    assert main(["units", "--model", "cifar_vgg11", "--input-size", "32", "--num-classes", "10"]) == 0
    assert "features.11" in capsys.readouterr().out
    assert main(["run", "--model", "nonexistent_net", "--no-progress"]) == 2
    assert "unknown model" in capsys.readouterr().err


def test_cli_user_factory_and_ld_knobs(capsys, one_thread):
    rc = main(["run", "--model", "tests.models:tiny_resnet", "--epochs", "2", "--train-limit", "1024",
               "--test-limit", "256", "--json", "--no-progress", "--ld", "plateau=0.3", "interval=4", "--threads", "1",
               "--target-speedup", "1.5"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    # --tolerance and --target-speedup land in the same knobs when given
    assert out["config"]["ld_options"] == {"plateau": 0.3, "interval": 4, "target_speedup": 1.5}
    assert out["runs"][1]["units"] == 2
    assert main(["run", "--ld", "plateau=7", "--no-progress"]) == 2
    assert "plateau must be" in capsys.readouterr().err


def test_cli_projections(capsys, one_thread):
    assert main(["units", "--model", "resnet18", "--input-size", "32", "--num-classes", "10", "--projections"]) == 0
    assert "8 units, 0 dropped" in capsys.readouterr().out
    rc = main(["run", "--model", "tests.models:narrow_resnet18", "--epochs", "1", "--train-limit", "256",
               "--test-limit", "128", "--json", "--no-progress", "--threads", "1", "--projections"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["config"]["projections"] is True
    assert [r["units"] for r in out["runs"]] == [8, 8]


# --- interleaved training, timing, full-matched ----------------------------------------------------------

import dataclasses
import math
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from fxdrop.cli import TIMING_NOISE, build_parser
from fxdrop.policies import FixedDrop, NoDrop
from fxdrop.train import TrainConfig, TrainRun, train_interleaved, train_run
from tests.models import tiny_resnet

ROOT = Path(__file__).resolve().parents[1]
TINY = ["run", "--model", "tests.models:tiny_resnet", "--train-limit", "512", "--test-limit", "256", "--epochs", "2",
        "--batch-size", "64", "--no-progress", "--ld", "interval=2", "tolerance=0.99", "--threads", "1"]


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_interleaved_runs_equal_separate_runs(one_thread):
    """Each arm keeps its own RNG state (stochastic depth draws from torch's global RNG) and data order,
    so interleaving chunks of arms, even chunks that end mid-epoch, changes no weight and no result."""
    torch.set_num_threads(1)  # tiny ops: a second thread only spins when other processes load the machine
    d = data.load("mnist-small").limit(384, 128)
    cfg = TrainConfig(epochs=2, batch_size=64, progress=False, interval=2, ld_options={"tolerance": 0.99})
    kinds = ("none", "learn-and-drop", "stochastic-depth")
    alone = {k: TrainRun(tiny_resnet, d, cfg, k) for k in kinds}
    for r in alone.values():
        train_interleaved([r])
    for chunk in (None, 5):
        torch.manual_seed(123)  # whatever the caller's RNG does must not matter either
        mixed = {k: TrainRun(tiny_resnet, d, cfg, k) for k in kinds}
        train_interleaved(list(mixed.values()), chunk_steps=chunk)
        for k in kinds:
            a, b = alone[k].net.state_dict(), mixed[k].net.state_dict()
            assert all(torch.equal(a[n], b[n]) for n in a), (k, chunk)
            ra, rb = alone[k].result(), mixed[k].result()
            assert (ra.test_acc, ra.events, ra.epoch_acc, ra.step_flops) == (rb.test_acc, rb.events, rb.epoch_acc,
                                                                             rb.step_flops)
    assert alone["learn-and-drop"].result().events, "tolerance=0.99 should let a drop pass"
    # the thin wrapper gives the same run again
    r, _ = train_run(tiny_resnet, d, cfg, "learn-and-drop")
    assert r.test_acc == alone["learn-and-drop"].result().test_acc and r.events == alone["learn-and-drop"].result().events


def test_timeline_marks_drops_and_returns(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib", reason="the timeline needs the plot extra: pip install -e '.[plot]'")
    import matplotlib.pyplot as plt

    from fxdrop import run_report
    from fxdrop.train import RunResult

    r = RunResult("learn-and-drop", 4.0, 0.9, 0.7, 2, [], [(2, ["a", "b"])], 4, epoch_acc=[0.8, 0.9],
                  epoch_time=[2.0, 4.0], step_time=[1.0, 2.0, 3.0, 4.0], step_flops=[1.0, 0.5, 1.0, 1.0],
                  event_times=[2.0], restores=[(3, ["a", "b"])])
    texts = []
    monkeypatch.setattr(plt.Axes, "annotate", lambda self, text, *a, **k: texts.append(text))
    run_report.plot([r], str(tmp_path / "t.png"), "t")
    assert texts == ["step 2: a, b", "step 3: back a, b"] and (tmp_path / "t.png").stat().st_size > 0


def test_cli_run_tiny_end_to_end(capsys, tmp_path, one_thread):
    pytest.importorskip("matplotlib", reason="--plot needs the plot extra: pip install -e '.[plot]'")
    rc = main(TINY + ["--policy", "learn-and-drop", "random", "full-matched", "--json", str(tmp_path / "r.json"),
                      "--plot", str(tmp_path / "t.png")])
    assert rc == 0
    out = capsys.readouterr().out
    assert re.search(r"^learn-and-drop\s+16\s", out, re.M) and "CPU speed-up" in out and "FLOPs speed-up" in out
    res = json.loads((tmp_path / "r.json").read_text())
    runs = {r["policy"]: r for r in res["runs"]}
    assert list(runs) == ["none", "learn-and-drop", "random", "full-matched"]
    ld = runs["learn-and-drop"]
    assert ld["dropped"] and ld["flops_ratio"] < 1.0 and ld["cpu_s"] > 0 and len(ld["epoch_acc"]) == 2
    assert ld["speedup"]["flops"] == pytest.approx(1 / ld["flops_ratio"])
    assert [(s, len(n)) for s, n in runs["random"]["events"]] == [(s, len(n)) for s, n in ld["events"]]
    fm = runs["full-matched"]  # the full network for the steps Learn&Drop's measured CPU time buys
    assert fm["steps"] == max(1, min(16, round(16 * ld["cpu_s"] / runs["none"]["cpu_s"])))
    assert fm["flops_ratio"] == 1.0 and not fm["dropped"]
    assert fm["speedup"]["flops"] == pytest.approx(16 / fm["steps"])
    assert (tmp_path / "t.png").stat().st_size > 20_000


def test_slowed_arm_cannot_move_cpu_speedup(capsys, monkeypatch, one_thread):
    """Load from outside is played by a sleep after every step of the full arm: the wall-time speed-up
    jumps, the CPU-time one stays within the noise, and the output says the two disagree."""
    argv = TINY + ["--train-limit", "1024", "--interleave-steps", "4", "--json"]

    def speedup() -> tuple[dict, float, float, str]:
        assert main(argv) == 0
        cap = capsys.readouterr()
        full, ld = json.loads(cap.out)["runs"][:2]
        return ld["speedup"], full["wall_s"], full["wall_s"] / full["steps"], cap.err

    plain, full_wall, step_s, _ = speedup()
    # twice the full arm's own step time, so the sleep triples its wall time on a fast or a slow machine
    monkeypatch.setenv("FXDROP_TEST_SLOW_ARM", f"none:{2 * step_s:.4f}")
    slowed, slowed_full_wall, _, err = speedup()
    # the full arm's own wall time, not the speed-up: the other arm's wall time may vary between the two runs
    assert slowed_full_wall > 2 * full_wall, "the hook did not slow the full arm"
    assert slowed["wall"] > plain["wall"]
    # a 32-step tiny run measures about 1 s of CPU per arm, whose repeat noise reached 11% idle (1.05x vs
    # 1.17x) and can be larger beside other jobs: so rather than a fixed band, the CPU speed-up must move
    # by less than half as much as the wall one, in ratio. Were the sleep counted as CPU, it would move as
    # much as the wall one (both by > 2x)
    moved = {k: abs(math.log(slowed[k] / plain[k])) for k in ("cpu", "wall")}
    assert moved["cpu"] < moved["wall"] / 2, (plain, slowed)
    assert slowed["flops"] == plain["flops"]
    assert re.search(r"warning: learn-and-drop: wall-time speed-up .* and CPU-time speed-up .* differ by more than "
                     f"{TIMING_NOISE:.0%}", err)


# --- help and version ------------------------------------------------------------------------------------


def test_every_option_has_help_and_default(capsys):
    parser = build_parser()
    subs = next(a for a in parser._actions if isinstance(a, __import__("argparse")._SubParsersAction))
    for name, sub in subs.choices.items():
        text = sub.format_help()
        for action in sub._actions:
            if action.dest == "help":
                continue
            assert action.help, f"fxdrop {name} {action.option_strings} has no help"
            shown = sub._get_formatter()._get_help_string(action)
            assert "default" in shown and "(default: None)" not in shown, (name, action.option_strings, shown)
        assert "--epochs EPOCHS       training epochs of every arm (default: 3)" in text or name != "run"
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert re.fullmatch(r"fxdrop \d+\.\d+\.\d+\S*, torch \d+\.\d+\.\d+\S*\n", capsys.readouterr().out)


# --- every bad input: one line, exit 2, nothing written ------------------------------------------------

BAD = [  # (argv, regex the one stderr line must match)
    (["run", "--epochs", "0"], r"--epochs: must be >= 1, got 0"),
    (["run", "--epochs", "three"], r"--epochs: expected an integer >= 1, got 'three'"),
    (["run", "--batch-size", "-8"], r"--batch-size: must be >= 1, got -8"),
    (["run", "--lr", "0"], r"--lr: must be a finite number > 0, got 0"),
    (["run", "--model", "resnet5"], r"unknown model 'resnet5': did you mean resnet5[06]\?.*resnet50.*torchvision"),
    (["run", "--model", "nosuchpkg.nets:make"], r"cannot import module 'nosuchpkg.nets'.*PYTHONPATH"),
    (["run", "--model", "tests.models:tiny_resnt"], r"no callable 'tiny_resnt'; did you mean tiny_resnet\?"),
    (["run", "--data-dir", "no/such/dir"], r"--data-dir no/such/dir: no such directory"),
    (["run", "--dataset", "mnist", "--data-dir", "."], r"--data-dir \.: no mnist IDX files .*torchvision's layout"),
    (["run", "--dataset", "imagenet"], r"--dataset: invalid choice: 'imagenet' \(choose from .*mnist-small"),
    (["run", "--ld", "platau=0.2"], r"no knob 'platau'; did you mean plateau\?"),
    (["run", "--ld", "interval=ten"], r"--ld interval=ten: interval must be an integer or None, got 'ten'"),
    (["run", "--ld", "plateau=7"], r"--ld: LearnAndDrop: plateau must be a number in \(0, 1\], got 7"),
    (["run", "--ld", "stop"], r"--ld 'stop': expected KEY=VALUE"),
    (["run", "--plot", "no/such/dir/t.png"], r"--plot no/such/dir/t.png: directory no/such/dir does not exist"),
    (["run", "--plot", "t.txt"], r"--plot t.txt: unsupported file type '.txt'; use one of .png"),
    (["run", "--json", "no/such/dir/r.json"], r"--json no/such/dir/r.json: directory no/such/dir does not exist"),
    (["run", "--threads", "0"], r"--threads: must be >= 1, got 0"),
    (["run", "--test-limit", "64", "--validation", "64"],
     r"--validation 64: mnist-small: hold_out needs 0 < n < 64 test images, got 64"),
    (["run", "--train-limit", "0"], r"--train-limit: must be >= 1, got 0"),
    (["run", "--interval", "0"], r"--interval: must be >= 1, got 0"),
    (["run", "--interleave-steps", "0"], r"--interleave-steps: must be >= 1, got 0"),
    (["run", "--input-size", "16"], r"--input-size 16 is smaller than the mnist-small images \(28x28\); use "
                                     r"--input-size 28"),
    (["run", "--model", "tests.models:tiny_resnet", "--train-limit", "64", "--test-limit", "64", "--epochs", "5", "--threads", "1",
      "--ld", "never=layer9"],
     r"never= names unknown units \['layer9'\] \(net.units lists the 2 units\); `fxdrop units --model tests.models:tiny_resnet` lists"),
    (["run", "--dataset", "cifar10"], r"--dataset cifar10: CIFAR-10 is read from a local directory: pass --data-dir"),
    (["run", "--model", "tests.models"], r"unknown model 'tests.models'.*package.module:factory"),
    (["units", "--model", "resnet5"], r"fxdrop units: error: unknown model 'resnet5': did you mean resnet5[06]\?.*resnet50"),
    (["units", "--model", "cifar_vgg11", "--input-size", "8"], r"fxdrop units: error: --model cifar_vgg11 cannot run on 8x8 "
                                                          r"inputs .*larger --input-size"),
    (["units", "--level", "top"], r"--level: 'top' is not a level: give an int >= 0, 'inner' or 'outer'"),
    (["run", "--ld", "tolerance=1.5"], r"--ld: LearnAndDrop: tolerance must be a number in \[0, 1\), got 1.5"),
    (["run", "--ld", "returns=maybe"], r"--ld returns=maybe: returns must be True or False, got 'maybe'"),
]


def _run_cli(argv: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "FXDROP_TEST_THREADS": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "fxdrop", *argv], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=120)


try:
    import matplotlib  # noqa: F401

    HAS_MPL = True
except ImportError:  # the plot extra is optional
    HAS_MPL = False


def _cases(tmp_path: Path, which: list[int]) -> list[tuple[list[str], str, Path]]:
    cases = []
    for i in which:
        argv, pattern = BAD[i]
        cwd = tmp_path / f"case{i}"
        cwd.mkdir()
        if argv[0] == "run" and "--plot" not in argv:  # a valid output path that must stay unwritten
            argv = argv + (["--plot", "timeline.png"] if HAS_MPL else ["--json", "out.json"]) + ["--no-progress"]
        elif "--plot" in argv and not HAS_MPL:
            pytest.skip("--plot's checks need matplotlib (the plot extra): pip install -e '.[plot]'")
        cases.append((argv, pattern, cwd))
    return cases


def _check(argv: list[str], pattern: str, cwd: Path, code: int, out: str, err: str) -> None:
    what = f"fxdrop {' '.join(argv)}"
    assert code == 2, f"{what}: exit {code}\n{err}"
    assert "Traceback" not in err, f"{what}:\n{err}"
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"{what}: expected one line, got\n{err}"
    assert re.search(pattern, lines[0]), f"{what}: {lines[0]!r} does not match {pattern!r}"
    assert lines[0].startswith(f"fxdrop {argv[0]}: error: "), lines[0]
    assert not out, f"{what} printed {out!r}"
    assert not any(cwd.iterdir()), f"{what} wrote {list(cwd.iterdir())}"


# the real command costs a torch import (~3 s of CPU) per case: 2 cases in subprocesses (argparse's own
# error, a model name: the paths that exit before and after torch is imported), all of them in-process
SUBPROCESS_CASES = [0] + [
    i for i, (argv, _) in enumerate(BAD) if argv[:3] == ["units", "--model", "resnet5"]]


def test_bad_inputs_real_command_one_line_exit_2_nothing_written(tmp_path):
    cases = _cases(tmp_path, SUBPROCESS_CASES)
    with ThreadPoolExecutor(2) as pool:
        procs = list(pool.map(lambda c: _run_cli(c[0], c[2]), cases))
    for (argv, pattern, cwd), proc in zip(cases, procs):
        _check(argv, pattern, cwd, proc.returncode, proc.stdout, proc.stderr)


@pytest.mark.parametrize("i", range(len(BAD)), ids=[" ".join(a) for a, _ in BAD])
def test_bad_inputs_in_process(i, tmp_path, capsys, monkeypatch, one_thread):
    ((argv, pattern, cwd),) = _cases(tmp_path, [i])
    monkeypatch.chdir(cwd)
    monkeypatch.syspath_prepend(str(ROOT))
    try:
        code = main(argv)
    except SystemExit as e:  # argparse's own errors
        code = e.code
    cap = capsys.readouterr()
    _check(argv, pattern, cwd, code, cap.out, cap.err)


@pytest.mark.parametrize("schedule", ["onecycle", "constant"])
def test_train_run_learning_rate_schedule(one_thread, schedule):
    # the user's plain loop keeps the rate; the evidence runs use OneCycle (peak lr after 15% of the run)
    torch.set_num_threads(1)
    d = data.load("mnist-small").limit(1280, 64)
    cfg = TrainConfig(epochs=1, batch_size=64, lr=0.05, schedule=schedule, progress=False, evaluate=False)
    run = TrainRun(tiny_resnet, d, cfg, "none")
    lrs = []
    while not run.done:
        lrs.append(run.opt.param_groups[0]["lr"])
        run.advance(1)
    assert len(lrs) == 20
    if schedule == "constant":
        assert lrs == [0.05] * 20
    else:  # starts at lr / 25, peaks at lr, anneals far below the start
        assert lrs[0] == pytest.approx(0.002) and max(lrs) == pytest.approx(0.05) and lrs[-1] < 1e-3


def test_train_config_rejects_an_unknown_schedule():
    with pytest.raises(ValueError, match=r"schedule must be one of \('onecycle', 'cosine', 'constant'\), got 'linear'"):
        TrainConfig(schedule="linear", progress=False)
    with pytest.raises(ValueError, match="got 'linear'"):
        dataclasses.replace(TrainConfig(), schedule="linear")


def test_validation_split_feeds_learn_and_drop_checks(one_thread):
    # --validation N / TrainConfig(checks_on="validation"): the first N test images become the checks'
    # held-out data (in batches of 128 rows, prepared as training inputs) and leave the test split
    full = data.load("mnist-small")
    loaded = full.limit(256, 400)
    assert len(full.train_y) > 256 and len(full.test_y) > 400  # a copy, as is hold_out's
    d = loaded.hold_out(300)
    assert (len(d.val_y), len(d.test_y)) == (300, 100)
    assert loaded.val_y is None and len(loaded.test_y) == 400  # a copy: the loaded data set is unchanged
    with pytest.raises(ValueError, match="already has a validation split"):
        d.hold_out(50)
    cfg = TrainConfig(epochs=1, batch_size=64, progress=False, evaluate=False, checks_on="validation")
    run = TrainRun(tiny_resnet, d, cfg, "learn-and-drop")
    batches = run.policy.check_data
    assert [len(y) for _, y in batches] == [128, 128, 44]
    assert torch.equal(batches[0][0], d.prepare(d.val_x[:128], 3, 32)) and torch.equal(batches[2][1], d.val_y[256:])
    assert TrainRun(tiny_resnet, d, dataclasses.replace(cfg, checks_on="train"), "learn-and-drop").policy.check_data is None
    with pytest.raises(ValueError, match="no 'val' split"):
        TrainRun(tiny_resnet, data.load("mnist-small").limit(256, 400), cfg, "learn-and-drop")
    with pytest.raises(ValueError, match="checks_on must be 'train' or 'validation', got 'test'"):
        TrainConfig(checks_on="test", progress=False)


def test_train_run_takes_an_explicit_policy(one_thread):
    # bench/drop_all_after.py's fixed schedule: a FixedDrop plan passed as the arm's policy, with the recipe
    # of plain training around it, drops exactly at the planned step
    torch.set_num_threads(1)
    d = data.load("mnist-small").limit(256, 64)
    cfg = TrainConfig(epochs=1, batch_size=64, progress=False, evaluate=False)
    run = TrainRun(tiny_resnet, d, cfg, "none", label="all after step 2", policy=FixedDrop({2: ["3", "4"]}))
    train_interleaved([run])
    assert run.result().events == [(2, ["3", "4"])] and run.label == "all after step 2"
    assert isinstance(TrainRun(tiny_resnet, d, cfg, "none").policy, NoDrop)  # kind's, when none given


def test_cli_sequence_then_a_second_data_set(capsys, one_thread):
    # --then: every arm continues on the second data set; accuracy on both test sets is reported
    rc = main(["run", "--model", "tests.models:tiny_resnet", "--train-limit", "256", "--test-limit", "128",
               "--epochs", "1", "--then", "fashion-small", "--batch-size", "64", "--no-progress", "--threads", "1",
               "--json"])
    assert rc == 0
    runs = json.loads(capsys.readouterr().out)["runs"]
    assert all(r["steps"] == 8 and r["first_acc_at_switch"] is not None and r["first_acc"] is not None for r in runs)
    assert main(["run", "--then", "cifar10", "--no-progress"]) == 2


def test_console_script_imports_a_factory_from_the_current_directory(tmp_path):
    # `fxdrop run --model mypkg.models:make_net` from the folder holding mypkg/, as with `python -m fxdrop`
    import shutil

    exe = shutil.which("fxdrop")
    if exe is None:
        pytest.skip("the fxdrop console script is not installed (pip install -e .)")
    (tmp_path / "mypkg").mkdir()
    (tmp_path / "mypkg" / "__init__.py").write_text("")
    (tmp_path / "mypkg" / "models.py").write_text("from tests.models import tiny_resnet as make_net\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([exe, "units", "--model", "mypkg.models:make_net", "--input-size", "28"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "units" in proc.stdout
