"""Baselines users compare Learn&Drop with, as small policies.

``RandomDrop`` and ``PositionDrop`` replay another run's drop schedule (the same number of units at the
same steps, restores included) with random or earliest-first units; ``FixedDrop`` drops given units at
given steps (from step 1: the statically thinner network); ``LayerFreezing`` freezes the earliest units
progressively, as Composer's layer freezing does (no forward saving, backward saving).
Stochastic depth and progressive layer dropping are graph rewrites: :mod:`fxdrop.baselines`.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Callable, Iterable, Sequence

from .base import Policy

if TYPE_CHECKING:
    from ..module import DropNet

__all__ = ["RandomDrop", "PositionDrop", "FixedDrop", "LayerFreezing", "final_dropped"]


class _Schedule(Policy):
    def __init__(self, schedule: Sequence[tuple[int, int]], action: str = "drop", never: Iterable[str] = (),
                 restores: Sequence[tuple[int, int]] = ()):
        super().__init__(action, never)
        who = type(self).__name__
        self.schedule: dict[int, int] = {}
        for step, count in _pairs(schedule, f"{who}: schedule", "(step, count)", lambda step, count: count >= 0):
            self.schedule[step] = self.schedule.get(step, 0) + count
        # step -> the steps whose drops are put back then (a replayed restore: the same cohort-for-cohort
        # history as the run replayed, so both carry as many units dropped at every step)
        self.restores: dict[int, list[int]] = {}
        for step, at in _pairs(restores, f"{who}: restores", "(step, drop step)", lambda step, at: 1 <= at < step):
            self.restores.setdefault(step, []).append(at)

    @classmethod
    def like(cls, policy: Policy, **kw):
        """Replay ``policy``'s drop events: the same number of units at the same steps. Where ``policy``
        restored a cohort (:class:`LearnAndDrop` after a probation), the units this policy dropped at that
        cohort's drop step are put back at the same step, so the two runs carry as many units dropped at
        every step."""
        return cls([(s, len(names)) for s, names in policy.events], restores=_restore_steps(policy), **kw)

    def _pick(self, live: list, count: int) -> list:
        raise NotImplementedError

    def may_decide(self, step: int) -> bool:
        return step in self.schedule or step in self.restores

    def _decide(self, step: int) -> list[str]:
        assert self.net is not None
        if step in self.restores:
            at = self.restores[step]
            back = [n for s, names in self.events if s in at for n in names if self.net.unit(n).dropped]
            if back:
                self.net.restore(*back)
                self.restored.append((step, back))
        count = self.schedule.get(step, 0)
        if not count:
            return []
        live = [u for u in self.live() if u.name not in self.never]
        return [u.name for u in self._pick(live, min(count, len(live)))]



def _pairs(items: Sequence, what: str, shape: str, valid: Callable[[int, int], bool]) -> list[tuple[int, int]]:
    """The ``(step, value)`` pairs of a replay schedule as ints, each checked by ``valid``."""
    out = []
    for item in items:
        try:
            step, value = int(item[0]), int(item[1])
        except (TypeError, ValueError, IndexError):
            raise ValueError(f"{what} entries are {shape}, got {item!r}") from None
        if step < 1 or not valid(step, value):
            raise ValueError(f"{what}: {item!r} is not a valid {shape} entry")
        out.append((step, value))
    return out


def _restore_steps(policy: Policy) -> list[tuple[int, int]]:
    """``(step, drop step)`` of every cohort ``policy`` put back: the step of the latest drop event before
    the restore that dropped its units."""
    out = []
    for step, names in getattr(policy, "restored", []):
        at = max((s for s, dropped in policy.events if s < step and set(names) & set(dropped)), default=None)
        if at is not None:
            out.append((step, at))
    return out


def final_dropped(policy: Policy) -> list[str]:
    """The units ``policy``'s run had dropped at its end: its drop events less the units it restored
    after them, in the order they were dropped."""
    back = getattr(policy, "restored", [])
    history = sorted([(s, 1, n) for s, n in policy.events] + [(s, 0, n) for s, n in back], key=lambda e: e[:2])
    gone: dict[str, None] = {}
    for _, dropped, names in history:  # a step's restore before its drops, as policies act
        for n in names:
            if dropped:
                gone[n] = None
            else:
                gone.pop(n, None)
    return list(gone)


class RandomDrop(_Schedule):
    """At each scheduled step, drop ``count`` live units chosen uniformly at random (seeded); at each step
    of ``restores``, ``(step, drop_step)``, first put back the units it dropped at ``drop_step``."""

    def __init__(self, schedule: Sequence[tuple[int, int]], seed: int = 0, action: str = "drop",
                 never: Iterable[str] = (), restores: Sequence[tuple[int, int]] = ()):
        super().__init__(schedule, action, never, restores)
        self.seed = seed
        self.rng = random.Random(seed)

    def _pick(self, live, count):
        return self.rng.sample(live, count)

    def state_dict(self) -> dict:
        return {**super().state_dict(), "rng": self.rng.getstate()}

    def load_state_dict(self, sd: dict) -> None:
        super().load_state_dict(sd)
        if "rng" in sd:
            state = sd["rng"]
            self.rng.setstate((state[0], tuple(state[1]), state[2]))


class PositionDrop(_Schedule):
    """At each scheduled step, drop the ``count`` earliest live units (closest to the input); restores as
    :class:`RandomDrop`'s."""

    def _pick(self, live, count):
        return live[:count]


class FixedDrop(Policy):
    """Drop given units at given steps: ``FixedDrop({1: ["layer3.1"]})``. With the final set of another
    run at step 1 it is the *statically thinner network* ablation (same final size, thin from the start)."""

    def __init__(self, plan: dict[int, Sequence[str]], action: str = "drop"):
        super().__init__(action)
        if not isinstance(plan, dict) or not all(isinstance(k, int) and k >= 1 for k in plan):
            raise ValueError(f"FixedDrop: plan maps steps >= 1 to unit names, got {plan!r}")
        self.plan = {k: list(v) for k, v in plan.items()}

    def bind(self, net: "DropNet") -> None:
        super().bind(net)
        unknown = {n for names in self.plan.values() for n in names} - {u.name for u in net.units}
        if unknown:
            raise ValueError(f"FixedDrop: unknown units {sorted(unknown)}")

    @classmethod
    def thin_like(cls, policy: Policy) -> "FixedDrop":
        """Drop, from the first step, every unit ``policy`` had dropped by the end of its run (units it
        restored and did not drop again are kept)."""
        return cls({1: final_dropped(policy)})

    def may_decide(self, step: int) -> bool:
        return step in self.plan

    def _decide(self, step: int) -> list[str]:
        live = {u.name for u in self.live()}
        return [n for n in self.plan.get(step, []) if n in live]


class LayerFreezing(Policy):
    """Freeze the earliest units progressively, as Composer's ``LayerFreezing``: none until
    ``start`` of the ``total_steps``, then linearly more until ``level`` of them are frozen at the end.
    A frozen unit's parameters stop training (backward saving); its forward still runs."""

    def __init__(self, total_steps: int, start: float = 0.5, level: float = 1.0, never: Iterable[str] = ()):
        super().__init__("freeze", never)
        if isinstance(total_steps, bool) or not isinstance(total_steps, int) or total_steps < 1:
            raise ValueError(f"LayerFreezing: total_steps must be an int >= 1, got {total_steps!r}")
        if not (0 <= start < 1 and 0 <= level <= 1):
            raise ValueError(f"LayerFreezing: start must be in [0, 1) and level in [0, 1], got {start!r}, {level!r}")
        self.total_steps, self.start, self.level = total_steps, start, level

    def frozen_count(self, step: int) -> int:
        """How many units are frozen after ``step``."""
        assert self.net is not None
        progress = (step / self.total_steps - self.start) / (1 - self.start)
        n = len([u for u in self.net.units if u.name not in self.never])
        return int(min(max(progress, 0.0), 1.0) * self.level * n)

    def _decide(self, step: int) -> list[str]:
        assert self.net is not None
        eligible = [u for u in self.net.units if u.name not in self.never]
        want = eligible[:self.frozen_count(step)]
        return [u.name for u in want if not u.frozen and not u.dropped]
