"""A plain training loop around :class:`fxdrop.DropNet`, used by the CLI and the experiments.

The loop is what a user writes: ``loss.backward(); optimizer.step(); net.step()`` — the one fxdrop line.

A run is a :class:`TrainRun` object that advances one epoch (or ``n`` steps) at a time and keeps its own
random state (torch's global RNG state is swapped in and out around every chunk, and the data order has
its own generator). Several runs can therefore be trained *interleaved* — one epoch of each in turn, see
:func:`train_interleaved` — with exactly the results of separate runs, so that load from other processes
falls on every arm alike instead of on whichever arm happened to be running.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .baselines import ProgressiveLayerDrop, apply_stochastic_depth
from .data import ImageData
from .models import build_model
from .module import wrap
from .policies import FixedDrop, LayerFreezing, LearnAndDrop, NoDrop, Policy, PositionDrop, RandomDrop

__all__ = ["TrainConfig", "RunResult", "TrainRun", "build_model", "make_policy", "train_run", "train_interleaved",
           "POLICIES", "REPLAYS", "DEPENDENT", "LOOPS"]

log = logging.getLogger(__name__)

POLICIES = ("none", "learn-and-drop", "full-matched", "random", "position", "thin", "stochastic-depth", "freeze",
            "pld")
REPLAYS = ("random", "position", "thin")  # ablations that replay a Learn&Drop run
# arms that need a finished Learn&Drop run: the replays, and the full network trained for as many steps
# as Learn&Drop's forward FLOPs buy (its step budget is known only when Learn&Drop has finished)
DEPENDENT = REPLAYS + ("full-matched",)
LOOPS = ("attach", "step", "plain")
SCHEDULES = ("onecycle", "cosine", "constant")


@dataclass
class TrainConfig:
    epochs: int = 3
    batch_size: int = 128
    lr: float = 0.05
    schedule: str = "onecycle"  # "onecycle" (peak ``lr``), "cosine" (from ``lr`` to 0) or "constant"
    optimizer: str = "sgd"  # "sgd" (momentum, Nesterov) or "adamw"
    momentum: float = 0.9
    weight_decay: float = 5e-4
    seed: int = 0
    input_size: int = 32
    interval: int | None = None  # LearnAndDrop interval; default: LearnAndDrop's own
    # how the loop calls fxdrop: "step" net.step(opt, targets=y); "attach" net.attach(opt) once; "plain"
    # net.step() alone (no optimizer, no labels: the run's length unknown to the policy)
    loop: str = "attach"
    stochastic_depth_p: float = 0.5
    ld_options: dict = field(default_factory=dict)  # extra LearnAndDrop keyword arguments
    projections: bool = False  # ``wrap(..., projections=True)``: downsampling blocks' branches are units too
    checks_on: str = "train"  # Learn&Drop's checks on held training batches, or on the data's "validation" split
    max_steps: int | None = None  # stop early (the CLI's untimed warm-up run)
    progress: bool = True
    evaluate: bool = True  # test accuracy at every epoch end (False: only when asked for a result)
    # test hook: called as ``step_hook(policy, step)`` after every training step, inside the timed region
    # (tests inject a sleep into one arm to play "load from another process")
    step_hook: Callable[[str, int], None] | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        # checked here, not when a run starts: a bad value must fail before a model is built and traced
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if self.optimizer not in ("sgd", "adamw"):
            raise ValueError(f"optimizer must be 'sgd' or 'adamw', got {self.optimizer!r}")
        if self.loop not in LOOPS:
            raise ValueError(f"loop must be one of {LOOPS}, got {self.loop!r}")
        if self.checks_on not in ("train", "validation"):
            raise ValueError(f"checks_on must be 'train' or 'validation', got {self.checks_on!r}")


@dataclass
class RunResult:
    policy: str
    wall_s: float  # wall-clock time of the training steps (evaluation excluded)
    test_acc: float
    flops_ratio: float  # mean forward FLOPs per training step / full forward FLOPs
    units: int
    dropped: list[str]
    events: list[tuple[int, list[str]]]
    steps: int
    scores: dict[str, list[dict[str, float]]] = field(default_factory=dict)
    epoch_acc: list[float] = field(default_factory=list)
    cpu_s: float = 0.0  # process CPU time (all threads) of the training steps
    epoch_time: list[float] = field(default_factory=list)  # training wall time at each evaluation in epoch_acc
    epoch_step: list[int] = field(default_factory=list)  # step at each evaluation in epoch_acc
    step_time: list[float] = field(default_factory=list)  # training wall time at the end of each step
    step_flops: list[float] = field(default_factory=list)  # forward FLOPs fraction of each step
    event_times: list[float] = field(default_factory=list)  # training wall time of each entry of events
    restores: list[tuple[int, list[str]]] = field(default_factory=list)  # (step, names) of every unit put back
    # with a second data set (``then``): test accuracy on the first one's test set at the end of its phase,
    # and at the end of the run (what training on the second kept of the first)
    first_acc_at_switch: float | None = None
    first_acc: float | None = None

    def predicted_speedup(self, base: "RunResult") -> float:
        """The speed-up the forward FLOPs predict over ``base``: base's forward FLOPs over this run's
        (``1 / flops_ratio`` for runs of the same length; the step count enters for ``full-matched``)."""
        mine = self.steps * self.flops_ratio
        return base.steps * base.flops_ratio / mine if mine > 0 else math.inf

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def make_policy(kind: str, total_steps: int, cfg: TrainConfig, steps_per_epoch: int,
                reference: Policy | None = None, check_data: Any = None) -> Policy:
    """The drop policy of arm ``kind`` for a run of ``total_steps`` steps (``check_data``: Learn&Drop's
    held-out batches for checks, with ``cfg.checks_on="validation"``). Learn&Drop is not told the run's
    length: it reads it from the LR scheduler, as in a user's loop (``loop="plain"``: it cannot)."""
    if kind == "learn-and-drop":
        return LearnAndDrop(**{"interval": cfg.interval, "check_data": check_data, **cfg.ld_options})
    if kind == "freeze":
        return LayerFreezing(total_steps)
    if kind in REPLAYS:
        if reference is None:
            raise ValueError(f"policy {kind!r} replays a Learn&Drop schedule: run learn-and-drop first")
        if kind == "thin":
            return FixedDrop.thin_like(reference)
        cls = RandomDrop if kind == "random" else PositionDrop
        return cls.like(reference, **({"seed": cfg.seed} if kind == "random" else {}))
    return NoDrop()


def time_matched_steps(full: "RunResult", ld: "RunResult") -> int:
    """Steps of the time-matched full network: as many as Learn&Drop's measured training CPU time buys at
    the full network's pace, both measured in the same interleaved phase (so checks, graph rewrites and
    every other overhead count against Learn&Drop, not only its FLOPs). At most the full run's steps: a
    Learn&Drop run slower than the full network buys nothing more than the full network."""
    if full.cpu_s <= 0 or full.steps <= 0:
        raise ValueError("time_matched_steps: the full run has no measured CPU time")
    return max(1, min(full.steps, round(full.steps * ld.cpu_s / full.cpu_s)))


def _evaluate(net: nn.Module, data: ImageData, cfg: TrainConfig) -> float:
    net.eval()
    correct = 0
    with torch.no_grad():
        for xb, yb in data.batches("test", 512):
            correct += (net(data.prepare(xb, 3, cfg.input_size)).argmax(1) == yb).sum().item()
    net.train()
    return correct / len(data.test_y)


class TrainRun:
    """One training run (arm) that advances in chunks: :meth:`advance` trains to the end of the current
    epoch, or ``n`` steps. Each chunk swaps the run's own torch RNG state in and out, and the data order
    comes from the run's own generator, so interleaving chunks of several runs gives every run exactly
    the result it would have alone.

    ``total_steps`` shortens the run (the ``full-matched`` arm); its LR schedule spans that budget.
    ``policy`` trains with that drop policy (e.g. a :class:`~fxdrop.policies.FixedDrop` plan) instead of the
    one ``kind`` builds; ``kind`` still names the recipe around it (``"none"``: plain training).
    Wall time (``time.perf_counter``) and process CPU time (``time.process_time``) are accumulated over
    the training steps only; the evaluation at each epoch end is not timed.
    """

    def __init__(self, model_factory: Callable[[], nn.Module], data: ImageData, cfg: TrainConfig, kind: str,
                 reference: Policy | None = None, label: str | None = None, total_steps: int | None = None,
                 policy: Policy | None = None, then: ImageData | None = None, then_epochs: int | None = None):
        if kind not in POLICIES:
            raise ValueError(f"unknown policy {kind!r}; choose one of {POLICIES}")
        self.kind, self.label, self.data, self.cfg = kind, label or kind, data, cfg
        self.steps_per_epoch = -(-len(data.train_y) // cfg.batch_size)
        # a sequence: the first data set for cfg.epochs, then ``then`` for then_epochs (default the same)
        self.first, self.then, self.switch_at, self._epoch0 = data, then, self.steps_per_epoch * cfg.epochs, 0
        self.first_acc_at_switch: float | None = None
        then_steps = -(-len(then.train_y) // cfg.batch_size) * (then_epochs or cfg.epochs) if then is not None else 0
        self.full_steps = self.switch_at + then_steps
        self.total = total_steps if total_steps is not None else self.full_steps
        if self.total < 1:
            raise ValueError(f"{kind}: a run needs at least one step, got total_steps={self.total}")
        self.limit = min(self.total, cfg.max_steps) if cfg.max_steps is not None else self.total
        outer = torch.get_rng_state()
        try:
            torch.manual_seed(cfg.seed)
            model = model_factory()
            check_data = None
            if cfg.checks_on == "validation" and kind in ("learn-and-drop", "freeze"):  # the policies that check:
                # every validation image, in batches of the probe's default rows
                check_data = [(data.prepare(x, 3, cfg.input_size), y) for x, y in data.batches("val", 128)]
            self.policy = policy if policy is not None else make_policy(
                "none" if kind == "full-matched" else kind, self.total, cfg, self.steps_per_epoch, reference,
                check_data)
            example = data.prepare(data.train_x[:2], 3, cfg.input_size)
            self.net = wrap(model, example_inputs=(example,), policy=self.policy, projections=cfg.projections)
            if kind == "stochastic-depth":
                apply_stochastic_depth(self.net, cfg.stochastic_depth_p)
            self.pld = ProgressiveLayerDrop(self.net, self.total, seed=cfg.seed) if kind == "pld" else None
            self.net.train()
            self._rng = torch.get_rng_state()
        finally:
            torch.set_rng_state(outer)
        if cfg.optimizer == "adamw":
            self.opt = torch.optim.AdamW(self.net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        else:
            self.opt = torch.optim.SGD(self.net.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                                       weight_decay=cfg.weight_decay, nesterov=True)
        S = torch.optim.lr_scheduler
        self.sched = (S.OneCycleLR(self.opt, max_lr=cfg.lr, total_steps=self.total, pct_start=0.15)
                      if cfg.schedule == "onecycle" else S.CosineAnnealingLR(self.opt, T_max=self.total)
                      if cfg.schedule == "cosine" else S.LambdaLR(self.opt, lambda _: 1.0))
        if cfg.loop == "attach":
            self.net.attach(self.opt)
        self._full = max(self.net.full_flops("train"), 1)
        self._gen = torch.Generator().manual_seed(cfg.seed)
        self._batches = None  # iterator over the current epoch's batches
        self.wall_s = self.cpu_s = 0.0
        self.step_time: list[float] = []
        self.step_flops: list[float] = []
        self.epoch_acc: list[float] = []
        self.epoch_time: list[float] = []
        self.epoch_step: list[int] = []
        self.event_times: list[float] = []

    @property
    def steps(self) -> int:
        return self.net.steps

    @property
    def done(self) -> bool:
        return self.net.steps >= self.limit

    def advance(self, n: int | None = None) -> int:
        """Train ``n`` more steps (default: to the end of the current epoch), stopping at the run's end;
        evaluate (untimed) at every epoch end and at the end of the run. Returns the number of steps taken."""
        taken, cfg_eval = 0, self.cfg.evaluate
        while not self.done and (n is None or taken < n):
            k, epoch_end = self._train(None if n is None else n - taken)
            taken += k
            if cfg_eval and (epoch_end or self.done) and (not self.epoch_step or self.epoch_step[-1] != self.net.steps):
                self.epoch_acc.append(_evaluate(self.net, self.data, self.cfg))
                self.epoch_time.append(self.wall_s)
                self.epoch_step.append(self.net.steps)
            if self.then is not None and self.data is self.first and self.net.steps >= self.switch_at:
                self._switch()
            if n is None:
                break
        return taken

    def _switch(self) -> None:
        """The first data set's phase is over: evaluate on it (untimed) and continue on the second."""
        self.first_acc_at_switch = _evaluate(self.net, self.first, self.cfg)
        self.data, self._batches, self._epoch0 = self.then, None, self.net.steps
        self.steps_per_epoch = -(-len(self.then.train_y) // self.cfg.batch_size)

    def _train(self, n: int | None) -> tuple[int, bool]:
        """Up to ``n`` steps, stopping at the end of the epoch; the timed part. Returns (steps, epoch ended)."""
        net, data, cfg = self.net, self.data, self.cfg
        outer = torch.get_rng_state()
        torch.set_rng_state(self._rng)
        taken, epoch_end = 0, False
        t0, c0 = time.perf_counter(), time.process_time()
        try:
            while not self.done and (n is None or taken < n):
                if self._batches is None:
                    self._batches = data.batches("train", cfg.batch_size, self._gen)
                xb, yb = next(self._batches)
                x = data.prepare(xb, 3, cfg.input_size)
                if self.pld is not None:  # progressive layer dropping: a graph drawn for this step
                    out = self.pld(x)
                    self.step_flops.append(self.pld.flops_fraction)
                else:
                    self.step_flops.append((net.flops("train") if net.units else self._full) / self._full)
                    out = net(x)
                loss = F.cross_entropy(out, yb)
                n_events = len(self.policy.events)
                self.opt.zero_grad(set_to_none=True)
                loss.backward()
                self.opt.step()
                self.sched.step()
                if self.pld is not None:
                    self.pld.step()
                if cfg.loop == "step":
                    dropped_now = net.step(self.opt, targets=yb)
                elif cfg.loop == "plain":
                    dropped_now = net.step()
                else:  # attached: the optimizer's step hook called net.step()
                    dropped_now = [n for _, names in self.policy.events[n_events:] for n in names]
                if cfg.step_hook is not None:
                    cfg.step_hook(self.kind, net.steps)
                now = self.wall_s + time.perf_counter() - t0
                self.step_time.append(now)
                if dropped_now:
                    self.event_times.append(now)
                    log.info("%s: step %d dropped %s", self.label, net.steps, ", ".join(dropped_now))
                taken += 1
                if (net.steps - self._epoch0) % self.steps_per_epoch == 0:  # the epoch's last batch
                    self._batches, epoch_end = None, True
                    break
        finally:
            self.wall_s += time.perf_counter() - t0
            self.cpu_s += time.process_time() - c0
            self._rng = torch.get_rng_state()
            torch.set_rng_state(outer)
        return taken, epoch_end

    def result(self) -> RunResult:
        """What happened so far (call when :attr:`done`)."""
        net = self.net
        acc = self.epoch_acc[-1] if self.epoch_acc else _evaluate(net, self.data, self.cfg)
        return RunResult(
            policy=self.kind, wall_s=self.wall_s, test_acc=acc,
            flops_ratio=sum(self.step_flops) / max(len(self.step_flops), 1), units=len(net.units),
            dropped=[u.name for u in net.units if u.dropped or u.frozen], events=list(self.policy.events),
            steps=net.steps, scores={u.name: list(u.scores) for u in net.units}, epoch_acc=list(self.epoch_acc),
            cpu_s=self.cpu_s, epoch_time=list(self.epoch_time), epoch_step=list(self.epoch_step),
            step_time=list(self.step_time), step_flops=list(self.step_flops), event_times=list(self.event_times),
            restores=[(s, list(n)) for s, n in getattr(self.policy, "restored", [])],
            first_acc_at_switch=self.first_acc_at_switch,
            first_acc=_evaluate(net, self.first, self.cfg) if self.then is not None else None,
        )


def train_interleaved(runs: Sequence[TrainRun], chunk_steps: int | None = None,
                      progress: bool = False) -> None:
    """Advance ``runs`` in turn, one epoch (or ``chunk_steps`` steps) each, until all are done."""
    from tqdm.auto import tqdm

    bar = tqdm(total=sum(r.limit - r.steps for r in runs), disable=not progress, leave=False)
    try:
        while not all(r.done for r in runs):
            for r in runs:
                if r.done:
                    continue
                bar.set_description(r.label)
                bar.update(r.advance(chunk_steps))
                if r.epoch_acc:
                    bar.set_postfix_str(f"{r.label} step {r.steps} test acc {r.epoch_acc[-1]:.4f}")
    finally:
        bar.close()


def train_run(
    model_factory: Callable[[], nn.Module],
    data: ImageData,
    cfg: TrainConfig,
    kind: str,
    reference: Policy | None = None,
    label: str | None = None,
    total_steps: int | None = None,
) -> tuple[RunResult, Policy]:
    """Train ``model_factory()`` with policy ``kind`` and return what happened. The wall time covers
    the training loop only (not the evaluations)."""
    run = TrainRun(model_factory, data, cfg, kind, reference=reference, label=label, total_steps=total_steps)
    train_interleaved([run], progress=cfg.progress)
    return run.result(), run.policy
