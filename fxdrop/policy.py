"""Drop policies: which units to drop, and when. All decide at step boundaries only.

``LearnAndDrop`` is the method (scores in :mod:`fxdrop.scores`, rule in docs/method.md);
``RandomDrop`` and ``PositionDrop`` replay another run's drop schedule (same number of drops at the same
steps) with random or earliest-first units, for the ablations; ``NoDrop`` never drops.
A policy with ``action="freeze"`` freezes the chosen units instead of bypassing them (the freezing
baseline: no forward saving, backward saving).
"""

from __future__ import annotations

import math
import random
import warnings
from typing import TYPE_CHECKING, Iterable, Sequence

from .distributed import agree
from .scores import ScoreTracker

if TYPE_CHECKING:
    from .module import DropNet

__all__ = ["Policy", "NoDrop", "LearnAndDrop", "RandomDrop", "PositionDrop", "FixedDrop"]

_ACTIONS = ("drop", "freeze")


class Policy:
    """Base class. ``decide(step)`` returns the unit names to drop (or freeze) after optimizer step
    ``step`` (1-based); ``events`` records ``(step, names)`` of every decision made."""

    def __init__(self, action: str = "drop", never: Iterable[str] = ()):
        if action not in _ACTIONS:
            raise ValueError(f"{type(self).__name__}: action must be one of {_ACTIONS}, got {action!r}")
        self.action = action
        self.never = set(never)
        self.events: list[tuple[int, list[str]]] = []
        self.net: DropNet | None = None

    def bind(self, net: "DropNet") -> None:
        """Called by the wrapper once its units are known."""
        unknown = self.never - {u.name for u in net.units}
        if unknown:
            raise ValueError(f"{type(self).__name__}: never= names unknown units {sorted(unknown)}")
        self.net = net

    def live(self) -> list:
        assert self.net is not None
        return [u for u in self.net.units if not u.dropped and not u.frozen]

    def observe_lr(self, lr: float) -> None:
        """Told the optimizer's learning rate after every step (when the wrapper knows the optimizer)."""

    def decide(self, step: int) -> list[str]:
        """The names to act on after ``step``. Under torch.distributed every rank computes its scores
        (keeping its state in step) and rank 0's decision is broadcast, so all ranks drop the same units."""
        names = self._decide(step)
        if self.may_decide(step):  # a collective only where a decision can happen, not every step
            names = agree(names)
        if names:
            self.events.append((step, list(names)))
        return names

    def _decide(self, step: int) -> list[str]:
        return []

    def may_decide(self, step: int) -> bool:
        """Whether ``step`` can bring a decision (the same answer on every rank). The default, for
        policies written by users, is every step."""
        return True

    def state_dict(self) -> dict:
        return {"events": [(s, list(n)) for s, n in self.events]}

    def load_state_dict(self, sd: dict) -> None:
        self.events = [(int(s), list(n)) for s, n in sd.get("events", [])]


class NoDrop(Policy):
    """Never drops anything: the full-network baseline."""

    def may_decide(self, step: int) -> bool:
        return False


class LearnAndDrop(Policy):
    """Drop units that have stopped learning (docs/method.md has every definition and default).

    Every ``interval`` optimizer steps the scores of the live units are updated; after ``warmup``
    steps a unit with at least ``window`` scores is dropped when its plateau ratio is at most
    ``plateau`` *and* its continuation score is at most ``threshold``, lowest continuation first, while
    the dropped units stay within ``max_drop_fraction`` of the full forward FLOPs and at most
    ``max_drops_per_event`` go at once. With ``stop`` set, a unit whose plateau ratio is at most ``stop``
    is a candidate whatever the others do (the aggressive setting: every unit that has lost that much
    of its own peak pace goes). ``total_steps`` (if known) sets the extrapolation horizon to
    the intervals left, capped at ``horizon``. Units named in ``never`` are kept.
    """

    def __init__(
        self,
        interval: int = 50,
        warmup: int = 200,
        window: int = 4,
        beta: float = 0.5,
        plateau: float = 0.3,
        threshold: float = 0.7,
        horizon: int = 20,
        total_steps: int | None = None,
        max_drop_fraction: float = 0.8,
        max_drops_per_event: int | None = None,
        stop: float | None = None,
        never: Iterable[str] = (),
        action: str = "drop",
    ):
        super().__init__(action, never)
        checks = [
            ("interval", interval, isinstance(interval, int) and interval >= 1, "an int >= 1"),
            ("warmup", warmup, isinstance(warmup, int) and warmup >= 0, "an int >= 0"),
            ("window", window, isinstance(window, int) and window >= 2, "an int >= 2"),
            ("beta", beta, 0 <= beta < 1, "in [0, 1)"),
            ("plateau", plateau, 0 < plateau <= 1, "in (0, 1]"),
            ("threshold", threshold, threshold > 0, "> 0"),
            ("horizon", horizon, isinstance(horizon, int) and horizon >= 1, "an int >= 1"),
            ("total_steps", total_steps, total_steps is None or (isinstance(total_steps, int) and total_steps > 0),
             "None or an int > 0"),
            ("max_drop_fraction", max_drop_fraction, 0 <= max_drop_fraction <= 1, "in [0, 1]"),
            ("stop", stop, stop is None or 0 < stop <= 1, "None or in (0, 1]"),
            ("max_drops_per_event", max_drops_per_event,
             max_drops_per_event is None or (isinstance(max_drops_per_event, int) and max_drops_per_event >= 1),
             "None or an int >= 1"),
        ]
        for name, value, ok, what in checks:
            if not ok:
                raise ValueError(f"LearnAndDrop: {name} must be {what}, got {value!r}")
        self.interval, self.warmup, self.window, self.beta = interval, warmup, window, beta
        self.plateau, self.threshold, self.horizon, self.total_steps = plateau, threshold, horizon, total_steps
        self.max_drop_fraction, self.max_drops_per_event = max_drop_fraction, max_drops_per_event
        self.stop = stop
        self.tracker: ScoreTracker | None = None
        self._lr_sum, self._lr_n = 0.0, 0

    def observe_lr(self, lr: float) -> None:
        self._lr_sum += lr
        self._lr_n += 1

    def bind(self, net: "DropNet") -> None:
        super().bind(net)
        self.tracker = ScoreTracker({u.name: net.parameters_of(u) for u in net.units}, self.beta, self.window)
        for u in net.units:
            if u.dropped or u.frozen:
                self.tracker.forget(u.name)

    def may_decide(self, step: int) -> bool:
        return step % self.interval == 0 and step >= self.warmup

    def horizon_at(self, step: int) -> int:
        if self.total_steps is None:
            return self.horizon
        return max(0, min(self.horizon, (self.total_steps - step) // self.interval))

    def _decide(self, step: int) -> list[str]:
        if step % self.interval or self.tracker is None or self.net is None:
            return []
        live = self.live()
        lr = self._lr_sum / self._lr_n if self._lr_n else 1.0
        self._lr_sum, self._lr_n = 0.0, 0
        scores = self.tracker.update([u.name for u in live], lr)
        self.tracker.continuation(scores, self.horizon_at(step))
        for u in live:
            if u.name in scores:
                u.scores.append({"step": step, **scores[u.name]})
        if step < self.warmup:
            return []
        bad = [n for n, s in scores.items() if not math.isfinite(s.get("continuation", math.nan))]
        if bad:
            warnings.warn(f"fxdrop: non-finite scores for units {bad} at step {step}; they are kept", stacklevel=3)
        cands = [
            u for u in live
            if u.name not in self.never and u.name in scores and u.name not in bad
            and len(self.tracker.changes[u.name]) >= self.window
            and (
                (scores[u.name]["plateau"] <= self.plateau and scores[u.name]["continuation"] <= self.threshold)
                or (self.stop is not None and scores[u.name]["plateau"] <= self.stop)
            )
        ]
        cands.sort(key=lambda u: scores[u.name]["continuation"])
        return self._within_budget(cands)

    def _within_budget(self, cands: Sequence) -> list[str]:
        assert self.net is not None
        total = max(self.net.full_flops("train"), 1)
        gone = sum(u.flops for u in self.net.units if u.dropped or u.frozen)
        chosen: list[str] = []
        for u in cands:
            if self.max_drops_per_event is not None and len(chosen) >= self.max_drops_per_event:
                break
            if (gone + u.flops) / total <= self.max_drop_fraction + 1e-12:
                chosen.append(u.name)
                gone += u.flops
        for name in chosen:
            self.tracker.forget(name)
        return chosen

    def state_dict(self) -> dict:
        sd = super().state_dict()
        sd["tracker"] = self.tracker.state_dict() if self.tracker is not None else None
        sd["lr"] = (self._lr_sum, self._lr_n)
        return sd

    def load_state_dict(self, sd: dict) -> None:
        super().load_state_dict(sd)
        if sd.get("tracker") is not None and self.tracker is not None:
            self.tracker.load_state_dict(sd["tracker"])
        self._lr_sum, self._lr_n = sd.get("lr", (0.0, 0))


class _Schedule(Policy):
    def __init__(self, schedule: Sequence[tuple[int, int]], action: str = "drop", never: Iterable[str] = ()):
        super().__init__(action, never)
        sched: dict[int, int] = {}
        for item in schedule:
            try:
                step, count = int(item[0]), int(item[1])
            except (TypeError, ValueError, IndexError):
                raise ValueError(f"{type(self).__name__}: schedule entries are (step, count), got {item!r}") from None
            if step < 1 or count < 0:
                raise ValueError(f"{type(self).__name__}: schedule needs step >= 1 and count >= 0, got {item!r}")
            sched[step] = sched.get(step, 0) + count
        self.schedule = sched

    @classmethod
    def like(cls, policy: Policy, **kw):
        """Replay ``policy``'s drop events: the same number of units at the same steps."""
        return cls([(s, len(names)) for s, names in policy.events], **kw)

    def _pick(self, live: list, count: int) -> list:
        raise NotImplementedError

    def may_decide(self, step: int) -> bool:
        return step in self.schedule

    def _decide(self, step: int) -> list[str]:
        count = self.schedule.get(step, 0)
        if not count:
            return []
        live = [u for u in self.live() if u.name not in self.never]
        return [u.name for u in self._pick(live, min(count, len(live)))]


class RandomDrop(_Schedule):
    """At each scheduled step, drop ``count`` live units chosen uniformly at random (seeded)."""

    def __init__(self, schedule: Sequence[tuple[int, int]], seed: int = 0, action: str = "drop",
                 never: Iterable[str] = ()):
        super().__init__(schedule, action, never)
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
    """At each scheduled step, drop the ``count`` earliest live units (closest to the input)."""

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
        """Drop, from the first step, every unit ``policy`` had dropped by the end of its run."""
        return cls({1: [n for _, names in policy.events for n in names]})

    def may_decide(self, step: int) -> bool:
        return step in self.plan

    def _decide(self, step: int) -> list[str]:
        live = {u.name for u in self.live()}
        return [n for n in self.plan.get(step, []) if n in live]
