"""A plain training loop around :class:`fxdrop.DropNet`, used by the CLI and the experiments.

The loop is what a user writes: ``loss.backward(); optimizer.step(); net.step()`` — the one fxdrop line.
"""

from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from .baselines import apply_stochastic_depth
from .data import ImageData
from .models import build_model
from .module import wrap
from .policy import FixedDrop, LearnAndDrop, NoDrop, Policy, PositionDrop, RandomDrop

__all__ = ["TrainConfig", "RunResult", "build_model", "make_policy", "train_run", "POLICIES", "REPLAYS"]

POLICIES = ("none", "learn-and-drop", "random", "position", "thin", "stochastic-depth", "freeze")
REPLAYS = ("random", "position", "thin")  # ablations that replay a Learn&Drop run


@dataclass
class TrainConfig:
    epochs: int = 3
    batch_size: int = 128
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    seed: int = 0
    input_size: int = 32
    interval: int | None = None  # LearnAndDrop interval; default: about 10 per epoch
    warmup_epochs: float = 1.0
    stochastic_depth_p: float = 0.5
    ld_options: dict = field(default_factory=dict)  # extra LearnAndDrop keyword arguments
    max_steps: int | None = None  # stop early (the CLI's untimed warm-up run)
    progress: bool = True


@dataclass
class RunResult:
    policy: str
    wall_s: float
    test_acc: float
    flops_ratio: float  # mean forward FLOPs per training step / full forward FLOPs
    units: int
    dropped: list[str]
    events: list[tuple[int, list[str]]]
    steps: int
    scores: dict[str, list[dict[str, float]]] = field(default_factory=dict)
    epoch_acc: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def make_policy(kind: str, total_steps: int, cfg: TrainConfig, steps_per_epoch: int,
                reference: Policy | None = None) -> Policy:
    interval = cfg.interval or max(1, steps_per_epoch // 10)
    warmup = int(cfg.warmup_epochs * steps_per_epoch)
    if kind in ("learn-and-drop", "freeze"):
        return LearnAndDrop(**{"interval": interval, "warmup": warmup, "total_steps": total_steps,
                                "action": "freeze" if kind == "freeze" else "drop", **cfg.ld_options})
    if kind in REPLAYS:
        if reference is None:
            raise ValueError(f"policy {kind!r} replays a Learn&Drop schedule: run learn-and-drop first")
        if kind == "thin":
            return FixedDrop.thin_like(reference)
        cls = RandomDrop if kind == "random" else PositionDrop
        return cls.like(reference, **({"seed": cfg.seed} if kind == "random" else {}))
    return NoDrop()


def _evaluate(net: nn.Module, data: ImageData, cfg: TrainConfig) -> float:
    net.eval()
    correct = 0
    with torch.no_grad():
        for xb, yb in data.batches("test", 512):
            correct += (net(data.prepare(xb, 3, cfg.input_size)).argmax(1) == yb).sum().item()
    net.train()
    return correct / len(data.test_y)


def train_run(
    model_factory: Callable[[], nn.Module],
    data: ImageData,
    cfg: TrainConfig,
    kind: str,
    reference: Policy | None = None,
    label: str | None = None,
) -> tuple[RunResult, Policy]:
    """Train ``model_factory()`` with policy ``kind`` and return what happened. The wall time covers
    the training loop only (not the final evaluation)."""
    from tqdm.auto import tqdm

    if kind not in POLICIES:
        raise ValueError(f"unknown policy {kind!r}; choose one of {POLICIES}")
    torch.manual_seed(cfg.seed)
    model = model_factory()
    steps_per_epoch = -(-len(data.train_y) // cfg.batch_size)
    total = steps_per_epoch * cfg.epochs
    policy = make_policy(kind, total, cfg, steps_per_epoch, reference)
    example = data.prepare(data.train_x[:2], 3, cfg.input_size)
    net = wrap(model, example_inputs=(example,), policy=policy)
    if kind == "stochastic-depth":
        apply_stochastic_depth(net, cfg.stochastic_depth_p)
    net.train()
    opt = torch.optim.SGD(net.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                          nesterov=True)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=total, pct_start=0.15)
    full = max(net.full_flops("train"), 1)
    gen = torch.Generator().manual_seed(cfg.seed)
    flops_sum = 0.0
    epoch_acc = []
    bar = tqdm(total=total, desc=label or kind, disable=not cfg.progress, leave=False)
    elapsed = 0.0
    for _ in range(cfg.epochs):
        t0 = time.perf_counter()
        for xb, yb in data.batches("train", cfg.batch_size, gen):
            x = data.prepare(xb, 3, cfg.input_size)
            flops_sum += (net.flops("train") if net.units else full) / full
            loss = F.cross_entropy(net(x), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            dropped_now = net.step(opt, targets=yb)
            bar.update(1)
            if cfg.max_steps is not None and net.steps >= cfg.max_steps:
                break
            if dropped_now:
                bar.set_postfix_str(f"dropped {','.join(dropped_now)}")
        elapsed += time.perf_counter() - t0
        if cfg.max_steps is not None and net.steps >= cfg.max_steps:
            break
        if cfg.progress:
            epoch_acc.append(_evaluate(net, data, cfg))
            bar.set_postfix_str(f"test acc {epoch_acc[-1]:.4f}")
    bar.close()
    acc = epoch_acc[-1] if epoch_acc else _evaluate(net, data, cfg)
    frozen_or_dropped = [u.name for u in net.units if u.dropped or u.frozen]
    result = RunResult(
        policy=kind, wall_s=elapsed, test_acc=acc, flops_ratio=flops_sum / total, units=len(net.units),
        dropped=frozen_or_dropped, events=list(policy.events), steps=total,
        scores={u.name: list(u.scores) for u in net.units}, epoch_acc=epoch_acc,
    )
    return result, policy
