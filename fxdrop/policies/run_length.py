"""The length of a training run, in optimizer steps, where the loop states it: the LR schedulers
attached to the optimizer (``OneCycleLR.total_steps``, ``CosineAnnealingLR.T_max``, ``LinearLR`` and
``PolynomialLR``'s ``total_iters`` when they decay, ``SequentialLR`` whose last scheduler states one).
Schedulers stepped once per epoch are recognised by their step count against the optimizer's.
"""

from __future__ import annotations

import gc
from typing import Any

import torch

__all__ = ["schedulers_of", "stated_length", "run_length"]

_LRScheduler = torch.optim.lr_scheduler.LRScheduler


def schedulers_of(optimizer: Any) -> list[Any]:
    """The LR schedulers driving ``optimizer`` (those alive that refer to it; a scheduler keeps its
    optimizer, not the other way round). Inner schedulers of a ``SequentialLR`` are left out."""
    found = []
    for r in gc.get_referrers(optimizer):
        if isinstance(r, _LRScheduler):
            found.append(r)
        elif isinstance(r, dict) and r.get("optimizer") is optimizer:  # a scheduler's __dict__
            found += [o for o in gc.get_referrers(r) if isinstance(o, _LRScheduler) and o.__dict__ is r]
    inner = {id(s) for r in found for s in getattr(r, "_schedulers", [])}
    return [s for s in found if id(s) not in inner]


def stated_length(sched: Any) -> int | None:
    """How many scheduler steps ``sched`` states it spans, or ``None`` (constant, step, exponential,
    warm restarts, lambda: no end stated)."""
    S = torch.optim.lr_scheduler
    if isinstance(sched, S.OneCycleLR):
        return int(sched.total_steps)
    if isinstance(sched, S.CosineAnnealingLR):
        return int(sched.T_max)
    if isinstance(sched, S.LinearLR):
        return int(sched.total_iters) if sched.end_factor < sched.start_factor else None
    if isinstance(sched, S.PolynomialLR):
        return int(sched.total_iters)
    if isinstance(sched, S.SequentialLR):
        last = stated_length(sched._schedulers[-1])
        return None if last is None else int(sched._milestones[-1]) + last
    return None


def run_length(optimizer: Any, steps: int) -> int | None:
    """The run's length in optimizer steps as its schedulers state it, seen after ``steps`` optimizer
    steps; ``None`` while no scheduler states one, or while a scheduler stepped per epoch has not yet
    stepped (its steps per epoch are unknown until then). The longest stated length wins."""
    best = None
    for sched in schedulers_of(optimizer):
        length = stated_length(sched)
        done = int(getattr(sched, "last_epoch", 0))
        if length is None or done < 1:
            continue
        per = 1 if abs(done - steps) <= 1 else max(1, round(steps / done))
        best = max(best or 0, length * per)
    return best
