"""Drop policies: which units to drop, and when. All decide at step boundaries only.

``LearnAndDrop`` is the method (scores in :mod:`fxdrop.scores`, rule in docs/method.md);
``RandomDrop`` and ``PositionDrop`` replay another run's drop schedule (same number of drops at the same
steps) with random or earliest-first units, for the ablations; ``NoDrop`` never drops.
A policy with ``action="freeze"`` freezes the chosen units instead of bypassing them (the freezing
baseline: no forward saving, backward saving).
"""

from __future__ import annotations

import logging
import math
import random
import time
import warnings
from statistics import median
from typing import TYPE_CHECKING, Callable, Iterable, Sequence

import torch
from torch.utils._pytree import tree_map

from .distributed import agree
from .probe import Probe, copy_rows, drop_cost, leading_rows, predictions, recalibrate_batchnorm
from .scores import ScoreTracker
from .shapes import node_flops

if TYPE_CHECKING:
    import torch.fx as fx

    from .module import DropNet

log = logging.getLogger(__name__)

__all__ = ["Policy", "NoDrop", "LearnAndDrop", "RandomDrop", "PositionDrop", "FixedDrop"]

_ACTIONS = ("drop", "freeze")
_MEASURES = ("time", "flops")
_ORDERS = ("cost", "position")  # how screened units are ranked into the sets tried (LearnAndDrop.order)
_TIMES_KEPT = 64  # step times kept per graph (the most recent): a median over them
_TIMES_NEEDED = 8  # step times a graph needs before its median counts
# rows whose predictions measure training's churn (follow_churn): one forward of them per interval, a
# fraction of a percent of the training compute; 1/32 granularity, below the 5% shock floor
_CHURN_ROWS = 32


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
        """Called by the wrapper once its units are known. A policy keeps one run's state: it serves one
        wrapped model."""
        if self.net is not None and self.net is not net:
            raise ValueError(f"{type(self).__name__}: this policy already drives another wrapped model "
                             "(it keeps that run's scores and decisions); pass a new policy to each fxdrop.wrap")
        unknown = self.never - {u.name for u in net.units}
        if unknown:
            raise ValueError(f"{type(self).__name__}: never= names unknown units {sorted(unknown)}")
        self.net = net

    def live(self) -> list:
        assert self.net is not None
        return [u for u in self.net.units if not u.dropped and not u.frozen]

    def observe_lr(self, lr: float) -> None:
        """Told the optimizer's learning rate after every step (when the wrapper knows the optimizer)."""

    def observe_inputs(self, step: int, args: tuple, kwargs: dict) -> None:
        """Told the inputs of every training forward (``step`` is the step it belongs to, 1-based)."""

    def observe_targets(self, step: int, targets) -> None:
        """Told the class labels of step ``step`` when the training loop passes them to ``net.step``."""

    def committed(self, names: list[str]) -> None:
        """Told after the wrapper dropped (or froze) ``names`` on this policy's decision."""

    def decide(self, step: int) -> list[str]:
        """The names to act on after ``step``. Under torch.distributed every rank computes its scores
        (keeping its state in step) and rank 0's decision is broadcast, so all ranks drop the same units."""
        names = self._decide(step)
        if self.may_decide(step):  # a collective only where a decision can happen, not every step
            names = agree(names)
            self._agree()
        if names:
            self.events.append((step, list(names)))
        return names

    def _decide(self, step: int) -> list[str]:
        return []

    def _agree(self) -> None:
        """Make any other decision state rank 0's (called where :meth:`decide` broadcasts its names)."""

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
    """Drop units that have stopped learning, after checking that dropping them is safe
    (docs/method.md has every definition and default).

    By default (``min_speedup=1.5``) the earliest units go first, from the first boundary, checked and on
    probation, until the run's predicted speed-up reaches 1.5x; from then on, the units that stopped
    learning (the scored rule below). ``min_speedup=None`` is the scored rule alone (v7-v13's default).

    Every ``interval`` optimizer steps (default: ``total_steps // 30`` capped at 50, or 50 when the length
    of the run is unknown) the learning scores of the live units are updated. From
    ``warmup`` on, a unit with at least ``window`` scores whose plateau ratio is at most ``plateau``
    (it lost that share of its own peak learning pace) *and*, if ``threshold`` is set, whose
    continuation score is at most ``threshold`` is a candidate; with ``stop`` set, a plateau ratio at
    most ``stop`` alone makes a candidate. With ``target_speedup`` set, every live unit with ``window``
    scores is a candidate until the speed-up predicted for the run reaches the target (the budget
    knob): in measured step time by default (``target_measure="time"``: the share of a step that
    dropping does not shrink is fitted from the run's own step times), or in forward FLOPs
    (``"flops"``, independent of the machine). A target beyond :meth:`reachable_speedup` (every unit that
    may go, gone from the first step) is warned about when the policy is bound.

    Candidates are then **checked** on a few held training batches (:mod:`fxdrop.probe`), or, given
    ``check_data`` (an iterable of ``(inputs, labels)`` batches, e.g. a validation DataLoader), on its first
    ``probe_batches`` batches of at most ``probe_samples`` rows, taken once at the first training step: a
    drop is then judged on data the network is not fitted to (BatchNorm re-estimation keeps training
    batches). With
    ``probation`` (the default, 3 intervals) and ``total_steps`` known, a drop passes when it changes at
    most ``shock`` of the held predictions at once; the largest passing set, cheapest per FLOP first, is
    dropped at once and put on probation: ``probation`` intervals later, its *lasting* cost (the network
    as it is against the same network with the set put back) must be within ``tolerance``, or the set is
    restored; other units may be chosen meanwhile. Without ``total_steps`` any step may be the last, so a
    drop must cost at most ``tolerance`` at once, and one set at a time is on probation. With
    ``probation=0`` a drop must cost at most ``tolerance`` at once. Refused units are not tried again for
    1, 2, 4, ... intervals, restored ones for at least ``probation`` intervals; the dropped FLOPs stay
    within ``max_drop_fraction`` and at most ``max_drops_per_event`` go at once. After a drop or a restore,
    BatchNorm running statistics are
    re-estimated on the held batches (``recalibrate``). Checks at a choice wait while they have used
    ``check_budget`` of the training compute plus ``reinvest`` of the compute the drops saved. With
    ``total_steps`` known, nothing is dropped in the last ``final_fraction`` of the run (too late to recover) and the budget counts the whole run;
    ``check=False`` gives the unchecked rule. Units named in ``never`` are kept. A run whose length is
    known only once training starts tells it with :meth:`set_total_steps` (the Lightning callback does).
    ``follow_churn=True`` (opt-in, docs/method.md) raises the shock bound to the share of predictions one
    interval of training itself moved on 32 held rows, when that is larger, until the run's first restore:
    measured, much faster where the network has units to spare, and a point or two lost where every block
    matters. ``order`` ranks the units that passed the screen into the sets tried: ``"cost"`` (default)
    cheapest measured shock per FLOP first, ``"position"`` (opt-in, exploratory) earliest in the graph first,
    and then only the earliest candidates that a set could hold (the target, the caps) are screened; with a
    target they need no scores, so units may go from the first boundary, whose bound with ``follow_churn``
    is the share of predictions the first interval of training moved. ``min_speedup`` (default 1.5; above
    ``target_speedup`` it is ``target_speedup``; none with ``action="freeze"``) is a floor rather than a cap:
    until the run's predicted speed-up reaches it, units are chosen as by position with that target (from
    the first boundary, with the first interval's churn as the bound, checked and on probation), and from
    then on by the scored rule above, so units that stopped learning still go beyond it.
    """

    def __init__(
        self,
        interval: int | None = None,
        warmup: int = 0,
        window: int = 4,
        beta: float = 0.5,
        plateau: float = 0.5,
        threshold: float | None = None,
        horizon: int = 20,
        total_steps: int | None = None,
        max_drop_fraction: float = 0.8,
        max_drops_per_event: int | None = None,
        stop: float | None = None,
        tolerance: float = 0.01,
        target_speedup: float | None = None,
        min_speedup: float | None = 1.5,
        check: bool = True,
        probe_batches: int = 4,
        probe_samples: int = 128,
        recalibrate: bool = True,
        final_fraction: float = 0.1,
        check_budget: float = 0.025,
        reinvest: float = 0.5,
        probation: int = 3,
        shock: float = 0.05,
        target_measure: str = "time",
        never: Iterable[str] = (),
        action: str = "drop",
        check_data: Iterable | None = None,
        follow_churn: bool = False,
        order: str = "cost",
    ):
        super().__init__(action, never)
        checks = [
            ("interval", interval, interval is None or (isinstance(interval, int) and interval >= 1),
             "None or an int >= 1"),
            ("warmup", warmup, isinstance(warmup, int) and warmup >= 0, "an int >= 0"),
            ("window", window, isinstance(window, int) and window >= 2, "an int >= 2"),
            ("beta", beta, _num(beta) and 0 <= beta < 1, "in [0, 1)"),
            ("plateau", plateau, _num(plateau) and 0 < plateau <= 1, "in (0, 1]"),
            ("threshold", threshold, threshold is None or (_num(threshold) and threshold > 0), "None or > 0"),
            ("horizon", horizon, isinstance(horizon, int) and horizon >= 1, "an int >= 1"),
            ("total_steps", total_steps, total_steps is None or (isinstance(total_steps, int) and total_steps > 0),
             "None or an int > 0"),
            ("max_drop_fraction", max_drop_fraction, _num(max_drop_fraction) and 0 <= max_drop_fraction <= 1,
             "in [0, 1]"),
            ("stop", stop, stop is None or (_num(stop) and 0 < stop <= 1), "None or in (0, 1]"),
            ("max_drops_per_event", max_drops_per_event,
             max_drops_per_event is None or (isinstance(max_drops_per_event, int) and max_drops_per_event >= 1),
             "None or an int >= 1"),
            ("tolerance", tolerance, _num(tolerance) and 0 <= tolerance <= 1, "in [0, 1]"),
            ("target_speedup", target_speedup, target_speedup is None or (_num(target_speedup) and target_speedup >= 1),
             "None or a number >= 1"),
            ("min_speedup", min_speedup, min_speedup is None or (_num(min_speedup) and min_speedup >= 1),
             "None or a number >= 1"),
            ("check", check, isinstance(check, bool), "True or False"),
            ("probe_batches", probe_batches, isinstance(probe_batches, int) and probe_batches >= 1, "an int >= 1"),
            ("probe_samples", probe_samples, isinstance(probe_samples, int) and probe_samples >= 1, "an int >= 1"),
            ("recalibrate", recalibrate, isinstance(recalibrate, bool), "True or False"),
            ("final_fraction", final_fraction, _num(final_fraction) and 0 <= final_fraction < 1, "in [0, 1)"),
            ("check_budget", check_budget, _num(check_budget) and check_budget > 0, "> 0"),
            ("reinvest", reinvest, _num(reinvest) and 0 <= reinvest <= 1, "in [0, 1]"),
            ("probation", probation, isinstance(probation, int) and not isinstance(probation, bool) and probation >= 0,
             "an int >= 0"),
            ("shock", shock, _num(shock) and 0 <= shock <= 1, "in [0, 1]"),
            ("target_measure", target_measure, target_measure in _MEASURES, f"one of {_MEASURES}"),
            ("follow_churn", follow_churn, isinstance(follow_churn, bool), "True or False"),
            ("order", order, order in _ORDERS, f"one of {_ORDERS}"),
            ("check_data", type(check_data).__name__,
             check_data is None or (hasattr(check_data, "__iter__") and not isinstance(check_data, (str, dict))),
             "None or an iterable of batches (e.g. a DataLoader)"),
        ]
        for name, value, ok, what in checks:
            if not ok:
                raise ValueError(f"LearnAndDrop: {name} must be {what}, got {value!r}")
        # what the user gave, as against what was derived or told later (:meth:`set_total_steps`)
        self.interval_given, self.total_steps_given = interval is not None, total_steps is not None
        if interval is None:
            interval = _default_interval(total_steps)
        self.interval, self.warmup, self.window, self.beta = interval, warmup, window, beta
        self.plateau, self.threshold, self.horizon, self.total_steps = plateau, threshold, horizon, total_steps
        self.max_drop_fraction, self.max_drops_per_event = max_drop_fraction, max_drops_per_event
        self.stop, self.tolerance, self.target_speedup = stop, tolerance, target_speedup
        # a floor above the cap is the cap: drop up to target_speedup, earliest first, then nothing more. A
        # frozen unit's forward still runs, so no floor of forward speed-up is met by freezing: the freezing
        # baseline freezes what stopped learning, as before the floor
        if action != "drop":
            min_speedup = None
        elif min_speedup is not None and target_speedup is not None:
            min_speedup = min(min_speedup, target_speedup)
        self.min_speedup = min_speedup
        self.check, self.recalibrate, self.final_fraction = check, recalibrate, final_fraction
        self.check_budget, self.reinvest = check_budget, reinvest
        self.probation = probation if action == "drop" else 0  # a frozen unit still runs: nothing to recover
        self.shock, self.target_measure, self.order = shock, target_measure, order
        self.on_probation: dict[str, int] = {}  # units dropped on probation -> step of their lasting-cost check
        self.restored: list[tuple[int, list[str]]] = []  # (step, names) of every cohort put back after probation
        self._restored_now: list[str] = []
        # compute spent on checks vs training, in rows through the full network (a training row costs about
        # three forward rows: forward and backward; a check's forward counts at the share of the full
        # network's FLOPs it ran, a candidate's only its suffix after the prefix it shares with the current
        # graph): counted from the graphs' FLOPs, not timed, so resumed runs decide alike
        self.train_rows, self.check_rows = 0, 0.0
        # forward rows the drops saved so far (3 per training row times the share of FLOPs not run):
        # ``reinvest`` of them may pay for more checks, so a run that drops early can afford to check more
        self.saved_rows, self._rows_since = 0.0, 0
        self.free_rows = 0.0  # check rows run outside the budget (counted in check_rows too)
        self.probe = Probe(probe_batches, probe_samples)
        self._set_interval(interval)  # and the held batches' stride
        # held-out batches the checks run on instead of held training batches (taken from check_data at the
        # first training step, on its inputs' device); BatchNorm re-estimation keeps the training batches
        self.check_data, self.held_out = check_data, None
        # training's own churn: the share of predictions on fixed held rows that one interval of training
        # moved (measured at boundaries between which the graph did not change); with follow_churn the
        # shock bound is at least that (a drop may move as much as training moves anyway)
        self.follow_churn = follow_churn
        self._floor = False  # whether the choice being made is below min_speedup (:meth:`_below_floor`)
        self.churns: list[tuple[int, float]] = []  # (step, churn) of every measurement
        self._churn_at: dict | None = None  # {"batch", "pred", "graph", "step"} of the last measurement
        self.tracker: ScoreTracker | None = None
        self._lr_sum, self._lr_n = 0.0, 0
        self._frac_sum = 0.0  # forward-FLOPs fraction summed over the steps so far
        self.backoff: dict[str, tuple[int, int]] = {}  # unit -> (retry at step, intervals to wait next)
        self.checks: list[dict] = []  # every check: step, units, cost, disagreement, kl, accepted
        self.check_seconds = 0.0  # wall time spent in checks and BatchNorm re-estimation
        # wall time of recent training steps per forward-FLOPs fraction of the graph that ran them (checks
        # left out): what the time-measured speed-up target learns the fixed cost of a step from
        self.step_times: dict[str, list[float]] = {}
        self._clock: tuple[float, float] | None = None  # (perf_counter, check_seconds) at the last step

    def set_total_steps(self, total_steps: int) -> None:
        """Tell the policy the run's length in optimizer steps once it is known, e.g. from Lightning's
        ``trainer.estimated_stepping_batches`` (:class:`fxdrop.integrations.lightning.FxdropCallback`
        does). With the length known a drop may cost up to ``shock`` at once and be judged after its
        probation, and the check budget counts the whole run. Before the first training step, an
        ``interval`` not given at construction is re-derived from it (as the constructor would) with the
        held batches' stride; later the interval stays, so the scores keep their spacing (a resumed run
        told a longer length keeps its own)."""
        if isinstance(total_steps, bool) or not isinstance(total_steps, int) or total_steps <= 0:
            raise ValueError(f"LearnAndDrop.set_total_steps: total_steps must be an int > 0, got {total_steps!r}")
        self.total_steps = total_steps
        if not self.interval_given and (self.net is None or not self.net.steps):
            self._set_interval(_default_interval(total_steps))

    def _set_interval(self, interval: int) -> None:
        self.interval = interval
        self.probe.stride = max(1, interval // self.probe.batches)

    @property
    def churn(self) -> float | None:
        """The churn last measured (:meth:`_measure_churn`), ``None`` before the first."""
        return self.churns[-1][1] if self.churns else None

    def shock_bound(self) -> float:
        """The share of held predictions a drop may move at once where the shock bound applies: ``shock``,
        or with ``follow_churn`` the share one interval of training last moved, if larger, until a cohort
        has been restored: a restore is the run's own evidence that its units are not spare (a lasting cost
        above the tolerance), and trials as large as training's churn then cost more than they can save
        (ResNet-20 / Fashion-MNIST, docs/results.md), so from then on ``shock`` alone. Below ``min_speedup``
        (:meth:`_below_floor`) the same holds without ``follow_churn``, with a churn measured at most one
        interval ago: the floor's churn is measured only while the run is below it, and one from an earlier
        stretch below it (the first interval's, where an untrained network's predictions all move) says
        nothing of training now."""
        if self.restored:
            return self.shock
        if self.follow_churn:
            return max(self.shock, self.churn or 0.0)
        fresh = self.churns and self.net is not None and self.net.steps - self.churns[-1][0] <= self.interval
        if self._floor and fresh:
            return max(self.shock, self.churns[-1][1])
        return self.shock

    def _measure_churn(self, step: int, budgeted: bool = True) -> None:
        """Predict the fixed churn rows (the first ``_CHURN_ROWS`` rows of the first held batch, kept for
        the run) with the current graph; where the graph is the one of the previous boundary, :attr:`churn` becomes the share of rows whose
        prediction changed since (a drop or restore in between would count its own shock as churn: the
        previous value stays, the rows are predicted afresh). The forward counts as a check and runs only
        where it fits the check budget (unless not ``budgeted``), so it never keeps a check from running; a
        churn is measured only between consecutive boundaries, or from the first step with a labelled held
        batch to the first boundary (after a skipped one the rows are predicted afresh), so where the budget
        cannot pay for it the bound stays ``shock``."""
        assert self.net is not None
        held = self.checks_on
        if not len(held):
            return
        last = self._churn_at
        if last is not None:
            batch = last["batch"]
        else:  # a copy of the first _CHURN_ROWS rows of the first held batch, kept for the run
            args, kwargs = held.held[0]
            batch = tree_map(lambda v: copy_rows(v, _CHURN_ROWS), (args, kwargs))
        graph = self._train_graph()
        cost = leading_rows(*batch) * self._fraction(graph)
        if budgeted and self.check_rows + cost > self.check_allowance(step):
            return
        pred = predictions(self.net.model, graph, batch)
        self.check_rows += cost
        if not budgeted:
            self.free_rows += cost
        if pred is None:
            return
        dropped = sorted(u.name for u in self.net.units if u.dropped)
        if (last is not None and last["graph"] == dropped and step - self.interval <= last.get("step", -1) < step
                and len(last["pred"]) == len(pred)):
            self.churns.append((step, float((pred != last["pred"]).float().mean())))
        self._churn_at = {"batch": batch, "pred": pred, "graph": dropped, "step": step}

    def observe_lr(self, lr: float) -> None:
        self._lr_sum += lr
        self._lr_n += 1

    def observe_inputs(self, step: int, args: tuple, kwargs: dict) -> None:
        rows = leading_rows(args, kwargs)
        self.train_rows += rows
        self._rows_since += rows
        if self.check or self.recalibrate:
            self.probe.offer(step, args, kwargs)
        if self.check and self.check_data is not None and self.held_out is None:
            first = next((a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)), None)
            self.held_out = Probe.fixed(self.check_data, self.probe.batches, self.probe.samples,
                                        first.device if first is not None else None, what="LearnAndDrop: check_data")

    @property
    def checks_on(self) -> Probe:
        """The held batches checks run on: ``check_data``'s once taken, else held training batches."""
        return self.held_out if self.held_out is not None else self.probe

    def check_allowed(self, step: int | None = None) -> bool:
        """Whether checks so far stay within ``check_budget`` of the training compute plus ``reinvest``
        of the compute the drops saved: so far, and, with ``total_steps`` known, what the units that are
        dropped for good (past their probation) will save from ``step`` to the end of the run."""
        return self.check_rows <= self.check_allowance(step)

    def check_allowance(self, step: int | None = None) -> float:
        """The forward rows checks may have run by ``step`` (:meth:`check_allowed`; docs/method.md), besides
        the ones run outside the budget (``free_rows``: the first interval's churn, :meth:`_decide`); where
        units may go from the first boundary (:meth:`_early`) and ``total_steps`` is known, the base budget
        counts the whole run from step 1."""
        rows = self.train_rows
        if self._early() and self.total_steps is not None and self.net is not None and self.net.steps:
            # where units may go from the first boundary (by position with a target, or below the floor), where a
            # drop saves the most, the whole run's base budget is there from the start (else a refused first
            # screen, which costs more than the first steps' 2.5%, keeps every check waiting for dozens of steps)
            rows = max(rows, self.train_rows / self.net.steps * self.total_steps)
        return (self.check_budget * 3 * rows + self.reinvest * (self.saved_rows + self.future_savings(step))
                + self.free_rows)

    def future_savings(self, step: int | None) -> float:
        """Forward rows the units dropped for good will save from ``step`` to ``total_steps`` (0 when the
        length of the run is unknown): 3 per training row, at the mean rows per step so far."""
        if self.total_steps is None or step is None or self.net is None or not self.net.steps:
            return 0.0
        kept = self._share(u for u in self.net.units if u.dropped and u.name not in self.on_probation)
        return 3 * (self.train_rows / self.net.steps) * kept * max(0, self.total_steps - step)

    def observe_targets(self, step: int, targets) -> None:
        self.probe.offer_targets(step, targets)

    def bind(self, net: "DropNet") -> None:
        super().bind(net)
        self.tracker = ScoreTracker({u.name: net.parameters_of(u) for u in net.units}, self.beta, self.window)
        self._position = {u.name: i for i, u in enumerate(net.units)}  # graph order, for order="position"
        for u in net.units:
            if u.dropped or u.frozen:
                self.tracker.forget(u.name)
        if self.target_speedup is not None and net.units:  # a floor is sought as far as it can go, unwarned
            reach = self.reachable_speedup()
            if reach < self.target_speedup:
                hint = ("; wrap(..., projections=True) makes downsampling blocks' branches units too"
                        if not net.projections else "")
                warnings.warn(f"fxdrop: target_speedup={self.target_speedup:g} is out of reach: the units that may go "
                              f"make {1 - 1 / reach:.0%} of the forward FLOPs, at most {reach:.2f}x even if all were "
                              f"dropped at the first step (max_drop_fraction={self.max_drop_fraction:g}){hint}",
                              stacklevel=3)

    def reachable_speedup(self) -> float:
        """The forward-FLOPs speed-up if every unit that may go (not in ``never``, within
        ``max_drop_fraction``) were dropped from the first step: a bound on what ``target_speedup`` can get."""
        assert self.net is not None
        share = min(self._share(u for u in self.net.units if u.name not in self.never), self.max_drop_fraction)
        return 1.0 / max(1.0 - share, 1e-9)

    def may_decide(self, step: int) -> bool:
        return step % self.interval == 0 and step >= self.warmup

    def horizon_at(self, step: int) -> int:
        if self.total_steps is None:
            return self.horizon
        return max(0, min(self.horizon, (self.total_steps - step) // self.interval))

    def predicted_speedup(self, step: int, extra_flops: int = 0) -> float:
        """The speed-up predicted if ``extra_flops`` more were dropped now: over the whole run when
        ``total_steps`` is known (the steps so far as they ran), else from now on. With
        ``target_measure="flops"`` it is the forward FLOPs' (``1 / mean fraction``); with ``"time"`` a step
        is modelled as taking ``t_full · (c + (1 − c) · fraction)``, the fixed share ``c`` (stem, head,
        optimizer, data) measured from the run's own step times (:meth:`time_model`), and the time spent
        in checks so far counts against it (docs/method.md)."""
        assert self.net is not None
        frac = max(1.0 - self._share(self._gone(), extra_flops), 1e-9)
        t_full, c = self.time_model() if self.target_measure == "time" else (None, 0.0)
        if self.total_steps is None or step >= self.total_steps:
            return 1.0 / (c + (1 - c) * frac)
        checks = self.check_seconds / t_full if t_full else 0.0  # in full steps' time
        T = self.total_steps
        mean = (c * T + (1 - c) * (self._frac_sum + frac * (T - step)) + checks) / T
        return 1.0 / mean

    def time_model(self) -> tuple[float | None, float]:
        """``(t_full, c)``: the median wall time of a training step with nothing dropped, and the share of
        it that dropping does not shrink, fitted to the median step time of every graph run since
        (least squares of ``t / t_full − fraction = c · (1 − fraction)``, weighted by the steps timed;
        clipped to [0, 0.95]). ``(None, 0.0)`` until the full graph has :data:`_TIMES_NEEDED` steps timed;
        ``c`` is 0 (the FLOPs' model) until a graph with units dropped has as many."""
        full = self.step_times.get(_frac_key(1.0), [])
        if len(full) < _TIMES_NEEDED:
            return None, 0.0
        t_full = median(full)
        num = den = 0.0
        for key, times in self.step_times.items():
            frac = float(key)
            if frac < 1.0 and len(times) >= _TIMES_NEEDED:
                w, r = len(times), median(times) / t_full
                num += w * (1 - frac) * (r - frac)
                den += w * (1 - frac) ** 2
        return t_full, (min(max(num / den, 0.0), 0.95) if den else 0.0)

    def _time_step(self, frac: float) -> None:
        """Record the wall time since the previous training step under the FLOPs fraction that ran it,
        less the time checks and BatchNorm re-estimation took in between."""
        now = time.perf_counter()
        if self._clock is not None:
            times = self.step_times.setdefault(_frac_key(frac), [])
            times.append(max(now - self._clock[0] - (self.check_seconds - self._clock[1]), 0.0))
            del times[:-_TIMES_KEPT]
        self._clock = (now, self.check_seconds)

    def _decide(self, step: int) -> list[str]:
        if self.net is None or self.tracker is None:
            return []
        full = max(self.net.full_flops("train"), 1)
        frac = (self.net.flops("train") if self.action == "drop" else full) / full
        self._frac_sum += frac
        self._time_step(frac)
        self.saved_rows += 3 * self._rows_since * (1.0 - frac)
        self._rows_since = 0
        # the floor's prediction only where it is used: the first interval's churn and the boundaries (it runs
        # the time model, which need not run on every training step)
        floor = self._floor = (step <= self.interval or not step % self.interval) and self._below_floor(step)
        unscored = floor or self._unscored()
        first = unscored and step <= self.interval
        follow = self.follow_churn or floor
        if (first and step < self.interval and self._churn_at is None and self.check and follow
                and not self.restored and self._shock_allowed()):
            # candidates may go at the first boundary, before two boundaries could measure a churn: their
            # bound is then what the first interval of training moved, from the predictions at the first step
            # with a labelled batch held (step 1, or the held batches' stride) (this forward of the churn rows
            # and the boundary's are counted, outside the budget, which is near nothing yet)
            self._measure_churn(step, budgeted=False)
        if step % self.interval:
            return []
        self._restored_now = []
        # from the boundary before the first candidates can have their window of scores on (or from the first
        # where they need none), until a restore makes the bound ``shock`` for good (:meth:`shock_bound`)
        if (self.check and follow and not self.restored and self._shock_allowed()
                and step >= (1 if unscored else self.window - 1) * self.interval):
            self._measure_churn(step, budgeted=not first)
        live = self.live()
        lr = self._lr_sum / self._lr_n if self._lr_n else 1.0
        self._lr_sum, self._lr_n = 0.0, 0
        scores = self.tracker.update([u.name for u in live], lr)
        self.tracker.continuation(scores, self.horizon_at(step))
        for u in live:
            if u.name in scores:
                u.scores.append({"step": step, **scores[u.name]})
        # each cohort is judged when its own probation ends; with total_steps known, others may be chosen
        # meanwhile: the lasting-cost check puts back only the cohort judged, so cohorts dropped later do
        # not blur its verdict
        for end in sorted({e for e in self.on_probation.values() if e <= step}):
            self._end_probation(step, [n for n, e in self.on_probation.items() if e == end])
        if self._restored_now:
            return []  # the network just changed back: choose from the next boundary's scores
        if self.on_probation and self.total_steps is None:
            # the end unknown, no probation is sure to end before the run does: one unconfirmed cohort at
            # a time, so a run that stops early stops with at most one (with total_steps known, the
            # final-fraction rule below makes every probation end in time)
            return []
        if step < self.warmup:
            return []
        if self.total_steps is not None and step > (1 - self.final_fraction) * self.total_steps:
            return []
        if (self.total_steps is not None and self.check and self._on_trial()
                and step + self.probation * self.interval > (1 - self.final_fraction) * self.total_steps):
            return []  # its probation would end in the final tenth: too late to recover, or to restore in time
        if self.target_speedup is not None and self.predicted_speedup(step) >= self.target_speedup:
            return []
        bad = [n for n, s in scores.items() if not math.isfinite(s.get("continuation", math.nan))]
        if bad:
            warnings.warn(f"fxdrop: non-finite scores for units {bad} at step {step}; they are kept", stacklevel=3)
        cands = [
            u for u in live
            if u.name not in self.never and u.name in scores and u.name not in bad
            and (unscored or len(self.tracker.changes[u.name]) >= self.window)
            and self.backoff.get(u.name, (0, 1))[0] <= step
            and (self._aim() is not None or self._stopped_learning(scores[u.name]))
        ]
        if self._by_position():
            # the sets are then the earliest passing units, as many as fit (the target, the caps): a unit no
            # set could hold is not screened, since its check would only spend the budget later choices need
            cands.sort(key=lambda u: self._position[u.name])
            cands = cands[:self._longest_fit(cands, step)]
        else:
            cands.sort(key=lambda u: scores[u.name]["continuation"])
        if self.check and cands and not self.check_allowed(step):
            # checks used their share of the compute: the candidates wait for a later boundary
            log.info("fxdrop: step %d: checks ran %.0f forward rows, over their budget of %.0f; %s wait",
                     step, self.check_rows, self.check_allowance(step), [u.name for u in cands])
            return []
        if self.check and len(self.checks_on) and cands and not self._pays(cands, step, screened=False):
            # too late for these units to save what checking them would cost; it only gets later
            log.info("fxdrop: step %d: %s could not save what checking them costs before step %d; not tried",
                     step, [u.name for u in cands], self.total_steps)
            return []
        if self.check and len(self.checks_on) and cands:
            t0 = time.perf_counter()
            chosen = self._checked(cands, step)
            self.check_seconds += time.perf_counter() - t0
        else:
            chosen = self._within_budget(cands, step)
        for name in chosen:
            self.backoff.pop(name, None)
            if self.check and self._on_trial():
                self.on_probation[name] = step + self.probation * self.interval
            else:
                self.tracker.forget(name)
        return chosen

    def _below_floor(self, step: int) -> bool:
        """Whether the run's predicted speed-up (:meth:`predicted_speedup`) is below ``min_speedup``: units
        are then chosen as by position with that target (earliest first, no scores needed, from the first
        boundary, the shock bound at least training's churn) until it is reached; past it, by the scored
        rule and ``order``."""
        return self.min_speedup is not None and self.predicted_speedup(step) < self.min_speedup

    def _by_position(self) -> bool:
        """Whether the choice being made ranks its sets by position: below the floor, or with that ``order``."""
        return self._floor or self.order == "position"

    def _aim(self) -> float | None:
        """The speed-up the choice being made sizes its cohort to: ``target_speedup`` (in both stretches: sized
        to the floor, v13's knob by position split its first cohort in two and lost 0.4 pt more, v14), else
        ``min_speedup`` below it, else none."""
        if self.target_speedup is not None:
            return self.target_speedup
        return self.min_speedup if self._floor else None

    def _early(self) -> bool:
        """Whether units may go from the first boundary, needing no scores (:meth:`_unscored`, or
        ``min_speedup`` set): the check budget then counts the whole run from the start."""
        return self._unscored() or self.min_speedup is not None

    def _unscored(self) -> bool:
        """Whether candidates need no scores: with a target the scores only order them, and by position not
        even that (the earlier a unit goes, the longer the rest of the network adapts to its absence). By
        cost they wait for ``window`` scores: at the first boundaries every unit's drop moves many
        predictions, and a refused check spends the budget the later ones need (docs/method.md, the knob)."""
        return self.target_speedup is not None and self.order == "position"

    def _pays(self, units: Sequence, step: int, screened: bool) -> bool:
        """Whether dropping ``units`` now could save more forward rows to the end of the run than the
        checks still ahead would cost (always, when the run's length is unknown; :meth:`payoff`)."""
        if self.total_steps is None or self.net is None or not self.net.steps:
            return True
        saves, cost = self.payoff(units, step, screened)
        return saves > cost

    def payoff(self, units: Sequence, step: int, screened: bool) -> tuple[float, float]:
        """``(saves, cost)`` in forward rows, with ``total_steps`` known: ``3 · rows per step · the units'
        FLOPs share (within max_drop_fraction) · (total_steps − step)`` against, before the screen
        (``screened=False``), the whole check event (screen, sets, BatchNorm re-estimation, probation
        check), after it the rest, each forward counted at its share of the full network's FLOPs and a
        candidate at :meth:`_suffix_shares`' (docs/method.md): the most :meth:`_checked` can count."""
        assert self.net is not None and self.total_steps is not None and self.net.steps
        share = min(self._share(units), self.max_drop_fraction)
        saves = 3 * (self.train_rows / self.net.steps) * share * max(0, self.total_steps - step)
        on_trial, screen, wide = self._check_probes()
        graph = self._train_graph()
        now = self._fraction(graph)
        alone = self._suffix_shares(units, graph)
        top = max(alone, default=1.0)  # a set's suffix starts at its earliest unit: at most that unit's alone
        sets = len(_set_sizes(len(units))) - _screened_alone(screen, wide)
        cost = wide.rows * now * (1 + sets * top) if sets else 0.0
        cost += self.probe.half().rows * now if self.recalibrate else 0.0
        cost += self.checks_on.rows * now * (1 + top) if on_trial else 0.0
        if not screened:
            cost += screen.rows * now * (1 + sum(alone))
        return saves, cost

    def _fraction(self, gm: "fx.GraphModule") -> float:
        """``gm``'s forward FLOPs as a share of the full training graph's."""
        assert self.net is not None
        return node_flops(gm.graph.nodes) / max(self.net.full_flops("train"), 1)

    def _suffix_shares(self, units: Sequence, graph: "fx.GraphModule | None" = None) -> list[float]:
        """What checking each unit alone runs after the prefix it shares with the current training graph
        (``graph``, built if not given; :class:`fxdrop.reuse.SharedPrefix`), as a share of that graph's
        forward FLOPs: the nodes from the unit's first one on, less its own. At least what the check runs
        (a node after the unit that does not read it runs in the prefix); exactly that on a chain of blocks."""
        assert self.net is not None
        nodes = list((graph if graph is not None else self._train_graph()).graph.nodes)
        whole = max(node_flops(nodes), 1)
        where = {n.name: i for i, n in enumerate(nodes)}
        tail = [0] * (len(nodes) + 1)
        for i in range(len(nodes) - 1, -1, -1):
            tail[i] = tail[i + 1] + node_flops([nodes[i]])
        out = []
        for u in units:
            site = u.sites["train"]
            first = min((where[n] for n in site.nodes if n in where), default=0)
            out.append(max(tail[first] - u.flops, 0) / whole)
        return out

    def _check_probes(self) -> tuple[bool, Probe, Probe]:
        """``(on_trial, screen, wide)``: whether drops go on probation, and the held batches a choice's
        single-unit screen and its sets run on (what :meth:`_checked` runs and :meth:`_pays` prices). The
        shock bound needs less precision than a cost against the tolerance (5% against 1%): where it
        applies (:meth:`_shock_allowed`) the screen runs on one held batch and the sets on half of them,
        elsewhere both on all; the lasting-cost check always on all."""
        on_trial, held = self._on_trial(), self.checks_on
        if not self._shock_allowed():
            return on_trial, held, held
        return True, held.head(1), held.half()

    def _shock_allowed(self) -> bool:
        """Whether a drop may cost up to ``shock`` at once, its lasting cost checked ``probation`` intervals
        later: on trial and with ``total_steps`` known, since then no probation ends in the final tenth
        (:meth:`_decide`). With the end unknown, any step may be the last before the model is used, so a
        drop must cost at most ``tolerance`` at once, and is then on probation all the same."""
        return self._on_trial() and self.total_steps is not None

    def _on_trial(self) -> bool:
        """Whether drops go on probation now: only with labels on every held batch. Without them the later
        check could only count changed predictions, which two equally good networks also differ in, so
        every drop would be restored; a drop must then pass the tolerance at once."""
        return bool(self.probation) and len(self.checks_on) > 0 and self.checks_on.labelled

    def _end_probation(self, step: int, names: list[str]) -> None:
        """Judge the cohort ``names``, dropped ``probation`` intervals ago, now that the rest of the network
        has trained without it: its *lasting* cost is that of the network as it is against the same
        network with the cohort put back (current weights, the cohort's as they were when dropped; units
        dropped since stay dropped in both). Within ``tolerance`` the drop stands; above it the cohort is
        restored (the check measured the network to be better with it) and waits like a refused unit."""
        assert self.net is not None
        net = self.net
        for n in names:
            del self.on_probation[n]
        held = self.checks_on
        if not len(held):
            return
        t0 = time.perf_counter()
        back = net.candidate_graph([], "train", restore=names)
        (c,) = drop_cost(net.model, back, [self._train_graph()], held, step)
        self.check_rows += held.rows * self._fraction(back) * (1 + c.share)
        accepted = c.cost <= self.tolerance
        self._record(step, [net.unit(n) for n in names], c, accepted, stage="probation")
        if accepted:
            for n in names:
                self.tracker.forget(n)
        else:
            net.restore(*names)
            self._restored_now += names
            for n in names:
                # the lasting cost took `probation` intervals to measure; a screen one interval later only
                # sees the shock, which these units had passed: not tried again until as long has passed
                self._reject(n, step, at_least=max(self.probation, 1))
            self.restored.append((step, names))
            if self.recalibrate:
                self._recalibrate()
            log.warning("fxdrop: step %d: %s still cost %.3f > tolerance %.3f after %d intervals without them; "
                        "restored", step, names, c.cost, self.tolerance, self.probation)
        self.check_seconds += time.perf_counter() - t0

    def _train_graph(self) -> "fx.GraphModule":
        """The training graph as it is now: the wrapper's own in training mode (no rewrite), else built."""
        assert self.net is not None
        return self.net.graph_module if self.net.training else self.net.candidate_graph([], "train")

    def _agree(self) -> None:
        # a restore after probation is decided from this rank's held batches: make rank 0's decision the
        # decision of every rank, like the drops, with the state that follows from it (probations, back-offs)
        assert self.net is not None and self.tracker is not None
        mine = self._restored_now
        kept, back, self.backoff = agree((dict(self.on_probation), list(mine), dict(self.backoff)))
        self.on_probation = kept
        if set(back) != set(mine):
            undo = [n for n in mine if n not in back]
            if undo:  # kept on rank 0: dropped for good, as its accepted cohorts are
                self.net.drop(*undo)
                for n in undo:
                    self.tracker.forget(n)
            self.net.restore(*[n for n in back if self.net.unit(n).dropped])
            if self.recalibrate:  # BatchNorm follows the graph rank 0 chose, not the one this rank had
                self._recalibrate()
            # the log of restores is rank 0's too: with follow_churn the first one ends the churn bound
            step = self.net.steps
            self.restored = [(s, n) for s, n in self.restored if s != step] + ([(step, list(back))] if back else [])
            self._restored_now = list(back)

    def _stopped_learning(self, s: dict[str, float]) -> bool:
        if self.stop is not None and s["plateau"] <= self.stop:
            return True
        return s["plateau"] <= self.plateau and (self.threshold is None or s["continuation"] <= self.threshold)

    def _fits(self, units: Sequence, step: int) -> bool:
        """Whether dropping ``units`` (besides what is gone) respects the caps and does not overshoot
        the speed-up the choice aims at (``target_speedup``, or ``min_speedup`` below it) already met without
        the last of them."""
        assert self.net is not None
        if self._share([*self._gone(), *units]) > self.max_drop_fraction + 1e-12:
            return False
        if self.max_drops_per_event is not None and len(units) > self.max_drops_per_event:
            return False
        aim = self._aim()
        if aim is not None and len(units) > 1:
            return self.predicted_speedup(step, sum(u.flops for u in units[:-1])) < aim
        return True

    def _longest_fit(self, units: Sequence, step: int) -> int:
        """How many of ``units``, taken from the first, :meth:`_fits` can drop together."""
        n = 0
        while n < len(units) and self._fits(units[:n + 1], step):
            n += 1
        return n

    def _gone(self) -> list:
        """Units whose forward no longer runs or whose weights no longer train (dropped or frozen)."""
        assert self.net is not None
        return [u for u in self.net.units if u.dropped or u.frozen]

    def _share(self, units: Iterable, extra_flops: int = 0) -> float:
        """The share of the full training graph's forward FLOPs that ``units`` (plus ``extra_flops``) make."""
        assert self.net is not None
        return (sum(u.flops for u in units) + extra_flops) / max(self.net.full_flops("train"), 1)

    def _within_budget(self, cands: Sequence, step: int) -> list[str]:
        chosen: list = []
        for u in cands:
            if self._fits(chosen + [u], step):
                chosen.append(u)
        return [u.name for u in chosen]

    def _reject(self, name: str, step: int, at_least: int = 1) -> None:
        """Back ``name`` off: it is not a candidate for the next 1, 2, 4, ... (at most 64) intervals, each
        refusal doubling the wait, which is at least ``at_least`` intervals."""
        wait = max(self.backoff.get(name, (0, 1))[1], at_least)
        self.backoff[name] = (step + wait * self.interval, min(2 * wait, 64))

    def _checked(self, cands: Sequence, step: int) -> list[str]:
        """Check the candidates on the probe and return the ones to drop now (docs/method.md): each alone
        (where the shock bound applies, on one held batch: a screen), then the sets of the cheapest 1, 2,
        4, ... per FLOP of those that passed and the set of all of them, measured in one pass over the held
        batches; the largest set that passes is dropped. Where the shock bound applies (probation, labels
        held, ``total_steps`` known: :meth:`_shock_allowed`) a drop passes when it changes at most
        ``shock`` of the predictions, its lasting cost being checked later; otherwise when its cost is
        within ``tolerance``."""
        assert self.net is not None
        net = self.net
        current = self._train_graph()
        now = self._fraction(current)

        def measure(sets: Sequence[Sequence], probe: Probe) -> list:
            costs = drop_cost(net.model, current, [net.candidate_graph([v.name for v in us], "train") for us in sets],
                              probe, step)
            # what ran, in full-network forward rows: the current graph, then each candidate's suffix
            self.check_rows += probe.rows * now * (1 + sum(c.share for c in costs))
            return costs

        def passes(c) -> bool:
            return c.disagreement <= max(bound, self.tolerance) if lenient else c.cost <= self.tolerance

        def price(c) -> float:
            return c.disagreement if lenient else c.cost

        _, screen, wide = self._check_probes()
        lenient, bound = self._shock_allowed(), self.shock_bound()
        ok = []
        for u, c in zip(cands, measure([[u] for u in cands], screen)):
            if u.scores and u.scores[-1].get("step") == step:
                u.scores[-1].update(drop_cost=c.cost, drop_disagreement=c.disagreement, drop_kl=c.kl)
            self._record(step, [u], c, passes(c))
            if passes(c):
                ok.append((u, c))
            else:
                self._reject(u.name, step)
        if ok and not self._pays([u for u, _ in ok], step, screened=True):
            for u, _ in ok:  # they passed, but could not save what the rest of the checks would cost
                self._reject(u.name, step)
            log.info("fxdrop: step %d: %s passed the screen but could not save what the rest of their checks "
                     "costs before step %d; kept", step, [u.name for u, _ in ok], self.total_steps)
            return []
        if not self._by_position():  # cheapest per FLOP first; by position they came in graph order (_decide)
            ok.sort(key=lambda uc: (max(price(uc[1]), 0.0) + 1e-6) / max(uc[0].flops, 1))
        sets: list[list] = []
        for u, _ in ok:
            trial = (sets[-1] if sets else []) + [u]
            if self._fits(trial, step):
                sets.append(trial)
        sets = [sets[i - 1] for i in _set_sizes(len(sets))]
        known = _screened_alone(screen, wide)
        chosen: list = sets[0] if known and sets else []
        if len(sets) > known:
            for trial, c in zip(sets[known:], measure(sets[known:], wide)):
                self._record(step, trial, c, passes(c))
                if passes(c):
                    chosen = trial  # the largest passing set; a set's cost need not grow with it
        return [u.name for u in chosen]

    def _record(self, step: int, units: Sequence, c, accepted: bool, stage: int = 1) -> None:
        self.checks.append({"step": step, "units": [u.name for u in units], "cost": c.cost,
                            "disagreement": c.disagreement, "accuracy_drop": c.accuracy_drop, "kl": c.kl,
                            "accepted": accepted, "stage": stage})

    def committed(self, names: list[str]) -> None:
        """Told by the wrapper after it dropped ``names``: let BatchNorm statistics follow the new graph."""
        if self.recalibrate and self.action == "drop" and names and self.net is not None and len(self.probe):
            t0 = time.perf_counter()
            n = self._recalibrate()
            self.check_seconds += time.perf_counter() - t0
            log.info("fxdrop: dropped %s; re-estimated %d BatchNorm layers", names, n)

    def _recalibrate(self) -> int:
        """Re-estimate BatchNorm running statistics on the current graph, over half of the held batches
        (a channel's mean and variance over a few hundred images are estimated well; the rest of the
        held rows would only add check compute)."""
        assert self.net is not None
        half = self.probe.half()
        graph = self._train_graph()
        self.check_rows += half.rows * self._fraction(graph)
        return recalibrate_batchnorm(self.net.model, graph, half)

    def state_dict(self) -> dict:
        sd = super().state_dict()
        sd["tracker"] = self.tracker.state_dict() if self.tracker is not None else None
        sd["lr"] = (self._lr_sum, self._lr_n)
        sd["flops"] = self._frac_sum
        sd["backoff"] = {k: list(v) for k, v in self.backoff.items()}
        sd["probe"] = self.probe.state_dict()
        sd["held_out"] = self.held_out.state_dict() if self.held_out is not None else None
        sd["checks"] = [dict(c) for c in self.checks]
        sd["check_seconds"] = self.check_seconds
        sd["rows"] = (self.train_rows, self.check_rows)
        sd["saved_rows"] = (self.saved_rows, self._rows_since)
        sd["free_rows"] = self.free_rows
        sd["probation"] = dict(self.on_probation)
        sd["restored"] = [[s, list(n)] for s, n in self.restored]
        sd["step_times"] = {k: list(v) for k, v in self.step_times.items()}
        sd["schedule"] = {"interval": self.interval, "total_steps": self.total_steps}
        sd["churn"] = {"log": [list(c) for c in self.churns], "at": self._churn_at}
        return sd

    def load_state_dict(self, sd: dict) -> None:
        super().load_state_dict(sd)
        if sd.get("tracker") is not None and self.tracker is not None:
            self.tracker.load_state_dict(sd["tracker"])
        self._lr_sum, self._lr_n = sd.get("lr", (0.0, 0))
        self._frac_sum = float(sd.get("flops", 0.0))
        self.backoff = {k: (int(v[0]), int(v[1])) for k, v in sd.get("backoff", {}).items()}
        self.probe.load_state_dict(sd.get("probe") or {})
        if sd.get("held_out") is not None:  # the same held-out rows as before the resume, not check_data's next
            self.held_out = Probe(self.probe.batches, self.probe.samples)
            self.held_out.load_state_dict(sd["held_out"])
        self.checks = [dict(c) for c in sd.get("checks", [])]
        self.check_seconds = float(sd.get("check_seconds", 0.0))
        rows, checks = sd.get("rows", (0, 0))
        self.train_rows, self.check_rows = int(rows), float(checks)
        saved, since = sd.get("saved_rows", (0.0, 0))
        self.saved_rows, self._rows_since = float(saved), int(since)
        self.free_rows = float(sd.get("free_rows", 0.0))
        self.on_probation = {k: int(v) for k, v in sd.get("probation", {}).items()}
        self.restored = [(int(s), list(n)) for s, n in sd.get("restored", [])]
        self.step_times = {k: [float(t) for t in v] for k, v in sd.get("step_times", {}).items()}
        self._clock = None  # the first step after a resume is not timed (the gap spans the restart)
        churn = sd.get("churn") or {}
        self.churns = [(int(s), float(c)) for s, c in churn.get("log", [])]
        self._churn_at = churn.get("at")
        # a length told during the run (set_total_steps) and the interval derived from it come back with
        # it, unless this policy was given its own: the scores so far are spaced by the saved interval
        sched = sd.get("schedule") or {}
        if sched.get("total_steps") is not None and not self.total_steps_given:
            self.total_steps = int(sched["total_steps"])
        if sched.get("interval") is not None and not self.interval_given:
            self._set_interval(int(sched["interval"]))


def _default_interval(total_steps: int | None) -> int:
    """About 30 boundaries over a known run, every 50 steps over a long or unknown one."""
    return min(50, max(1, total_steps // 30)) if total_steps is not None else 50


def _set_sizes(n: int) -> list[int]:
    """The sizes of the sets a choice measures among ``n`` ordered units that passed the screen: 1, 2, 4,
    ... and ``n`` (a few forwards of the held batches whatever the number of candidates)."""
    return [i for i in range(1, n + 1) if i & (i - 1) == 0 or i == n]


def _screened_alone(screen, wide) -> int:
    """1 when the screen ran on the sets' held batches (no probation): the set of one unit is then
    already measured, and neither run nor priced again; else 0."""
    return int(screen is wide)


def _frac_key(frac: float) -> str:
    return f"{frac:.6f}"


def _num(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


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
        self.restored: list[tuple[int, list[str]]] = []  # (step, names) of every restore, like LearnAndDrop's

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

    def state_dict(self) -> dict:
        return {**super().state_dict(), "restored": [[s, list(n)] for s, n in self.restored]}

    def load_state_dict(self, sd: dict) -> None:
        super().load_state_dict(sd)
        self.restored = [(int(s), list(n)) for s, n in sd.get("restored", [])]


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


def _final_dropped(policy: Policy) -> list[str]:
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
        return cls({1: _final_dropped(policy)})

    def may_decide(self, step: int) -> bool:
        return step in self.plan

    def _decide(self, step: int) -> list[str]:
        live = {u.name for u in self.live()}
        return [n for n in self.plan.get(step, []) if n in live]
