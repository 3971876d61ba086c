"""Learn&Drop: drop the units the network no longer needs, earliest and stalled first, judge each drop
again later, and put units back when the data changes. docs/method.md has the definitions. The rule:

    every k optimizer steps (a boundary; k from the run's length, else 16):
        score each live unit: its layer change per learning rate over the interval (the paper's scores)
        if the training or (at a check) the held loss jumped (> 1.5 x its last, and by > 0.1) to above ln C / 2, or
            new_data(): the dropped cohorts queue to come back, the last dropped first
        a cohort on trial stays if its drop would raise the held loss by more than B, else it goes; the next queued
            comes back on trial (as dropped, fresh optimizer state, faded in over k steps) unless a known end is nearer; stop
        judge the cohorts dropped 3 boundaries ago: on the rows held at their drop, the held loss must be
            back within the bound that drop passed; else they return (weights as when dropped); stop
        if checks would pass 5% of training's compute (known length: 2% + what drops save), or no probation fits: stop
        candidates: live units, stalled (plateau ratio <= `plateau`) first, in graph order, to 1/`target_speedup` FLOPs
        L = held loss now (the last 2 training batches held; labels given, or read off the gradient)
        B = tolerance * min(L, ln C); bound = max(B, min(gain since ln C / 3, gain over 3 boundaries [/ 3: length unknown])); B after a jump
        binary-search the sets of the first n, n/2, ..., 1 candidates for the largest with held loss <= L + bound
            and drop it; none passed: checks pause 2, 4, 8, ... boundaries till one passes, the first candidate 1, 2, 4 more
        after a drop or a return: BatchNorm statistics re-estimated on the held batches

Every quantity is counted (steps, rows, FLOPs, losses): no clock, so the same seed and data make the
same drops on an idle or a loaded machine.
"""

from __future__ import annotations

import math
import warnings
from typing import TYPE_CHECKING, Any, Iterable

import torch

from ..probe import Probe, leading_rows, recalibrate_batchnorm
from ..scores import ScoreTracker
from ..shapes import node_flops
from .base import Policy
from .checks import held_losses, read_grad, rise
from .run_length import run_length
from .returns import Returns
from .saved_state import LearnAndDropState

if TYPE_CHECKING:
    from ..module import DropNet

__all__ = ["LearnAndDrop", "drop_bound"]

_UNKNOWN_LENGTH_INTERVAL = 16  # steps between boundaries when the run's length is not known
_HELD_BATCHES, _HELD_ROWS = 2, 64  # batches held for checks, rows of each
_CHECK_SHARE = 0.05  # checks may run this share of the training compute (forward + backward)
_UNPAID_SHARE = 0.02  # ... and at most this share more than the drops save: checks that find nothing cost little
_PROBATION = 3  # boundaries after which a drop is judged: has the held loss recovered?
_MAX_WAIT = 16  # boundaries a refused unit waits at most


class LearnAndDrop(LearnAndDropState, Returns, Policy):
    """Learn&Drop's default policy: the rule of the module docstring (docs/method.md).

    >>> net = fxdrop.wrap(model, example_inputs=(x,), policy=fxdrop.LearnAndDrop(target_speedup=2.0))

    ``interval``: steps between boundaries (default: the run's length / 20, between 8 and 50, from
    ``total_steps``, the LR scheduler or Lightning; 16 when unknown). ``tolerance``: the relative rise of the
    held loss a drop may cause (0.05). ``target_speedup``: stop dropping once the forward FLOPs are cut
    that much (none: as far as the checks allow). ``plateau``: a unit whose smoothed layer change fell to
    this share of its peak has stalled and goes first. ``total_steps``: the run's length, if known.
    ``never``: units to keep. ``check_data``: held-out ``(inputs, labels)`` batches (e.g. a validation
    loader) to check on instead of held training batches. ``returns``: put dropped units back when the
    data changes (default True).
    """

    def __init__(self, interval: int | None = None, tolerance: float = 0.05, target_speedup: float | None = None,
                 plateau: float = 0.5, total_steps: int | None = None, never: Iterable[str] = (),
                 check_data: Iterable | None = None, returns: bool = True):
        super().__init__("drop", never)
        _validate(interval, tolerance, target_speedup, plateau, total_steps, check_data, returns)
        self.tolerance, self.target_speedup, self.plateau = float(tolerance), target_speedup, float(plateau)
        self.interval_given, self.total_steps = interval, total_steps
        self.total_steps_given = total_steps is not None
        self.interval = interval or _interval_for(total_steps)
        self.check_data, self.held_out, self.returns = check_data, None, returns
        self.probe = Probe(_HELD_BATCHES, _HELD_ROWS, max(1, self.interval // 2))
        self.tracker: ScoreTracker | None = None
        self.optimizer: Any = None
        self.cohorts: list[tuple[int, list[str]]] = []  # (step, names) of every drop still in force
        self.wait: dict[str, tuple[int, int]] = {}  # unit -> (boundary it may be tried again at, next wait)
        self.pause = (0, 2)  # (boundary the next drop check may run at, the pause after another check finds none)
        self.checks: list[dict] = []  # every check: step, kind, units, loss now, loss with, accepted
        self.train_work = self.check_work = 0.0  # rows through the full forward graph (a training row: 3)
        self.full_work = 0.0  # what training would have cost with no unit dropped
        self.history: list[tuple[int, float]] = []  # (boundary, held loss) of the checks of the last 3 boundaries,
        # and of the last check before them
        self.changed_at: int | None = None  # the step the data last changed at (a jump, or new_data())
        self.train_loss: float | None = None  # mean training loss over the last interval (read off gradients)
        self._loss_sum, self._loss_n = 0.0, 0
        self._rows = 0  # rows of the last training batch
        self._lr_sum, self._lr_n = 0.0, 0
        self._changed = self._told = False  # new_data() was called (before this boundary; at it)
        self._classes = 0  # columns of the training output's logits (0: not read)
        self._last_work = 0.0  # compute of the last check with candidates: what the next may cost
        self._returning: list[str] = []  # units this boundary puts back (applied once agreed across ranks)
        self._back_on_trial = False  # they come back on trial (a data change), not because their drop failed
        self.fading_in: dict[str, int] = {}  # unit back after a data change -> the step it came back at
        self.on_trial: list[dict] = []  # cohorts on probation: names, end step, rows held, loss there, bound
        self._queue: list[list[str]] = []  # cohorts to come back on trial after a data change, the next first
        self._trying: list[str] = []  # the cohort back on trial, judged at the next boundary
        self._trial: dict | None = None  # the probation of the cohort being dropped now
        self._held_ref: tuple | None = None  # (units dropped, held loss) of the graph after the last labelled check

    # ----------------------------------------------------------------- what the wrapper tells the policy
    def bind(self, net: "DropNet") -> None:
        super().bind(net)
        if self.target_speedup is not None and net.units and self.reachable_speedup() < self.target_speedup:
            hint = "; wrap(..., projections=True) makes downsampling blocks' branches units too" if not \
                net.projections else ""
            warnings.warn(f"fxdrop: target_speedup={self.target_speedup:g} is out of reach: the units that may go "
                          f"make {1 - 1 / self.reachable_speedup():.0%} of the forward FLOPs, at most "
                          f"{self.reachable_speedup():.2f}x with every one dropped{hint}", stacklevel=3)
        if self.tracker is None:
            self.tracker = ScoreTracker({u.name: net.parameters_of(u) for u in net.units})
            for u in net.units:
                if u.dropped or u.frozen:
                    self.tracker.forget(u.name)

    def set_total_steps(self, total_steps: int) -> None:
        """Tell the run's length once known (the Lightning callback does); before the first boundary it
        sets the interval, unless one was given."""
        if not _int(total_steps, 1):
            raise ValueError(f"LearnAndDrop.set_total_steps: total_steps must be an int >= 1, got {total_steps!r}")
        self.total_steps = total_steps
        if self.interval_given is None and (self.net is None or self.net.steps <= self.interval):
            self._set_interval(_interval_for(total_steps))

    def _set_interval(self, k: int) -> None:
        self.interval = k
        self.probe.stride = max(1, k // 2)

    def observe_optimizer(self, optimizer: Any) -> None:
        self.optimizer = optimizer

    def observe_lr(self, lr: float) -> None:
        self._lr_sum += lr
        self._lr_n += 1

    def observe_inputs(self, step: int, args: tuple, kwargs: dict) -> None:
        self._rows = leading_rows(args, kwargs)
        self.train_work += 3 * self._rows * self._fraction()
        self.full_work += 3 * self._rows
        self.probe.offer(step, args, kwargs)
        if self.check_data is not None and self.held_out is None:
            first = next((a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)), None)
            self.held_out = Probe.fixed(self.check_data, _HELD_BATCHES, 2 * _HELD_ROWS,
                                        first.device if first is not None else None, what="LearnAndDrop: check_data")

    def observe_output(self, step: int, output: Any) -> None:
        """Read the batch's labels off the gradient the loss sends to the logits: the training loss (for
        jumps) and, on a held step, the held batch's labels."""
        if not isinstance(output, torch.Tensor) or output.dim() != 2 or not output.requires_grad:
            return
        logits = output.detach()
        self._classes = logits.shape[1]

        def read(grad: torch.Tensor) -> None:
            read = read_grad(logits, grad)  # tensors: no host sync on the training step
            if read is None:
                return
            labels, loss, ok = read
            self._loss_sum = self._loss_sum + torch.where(ok, loss, 0.0)
            self._loss_n = self._loss_n + ok.int()
            if not step % self.probe.stride and bool(ok):  # a held step (one in k/2): its labels are held
                self.probe.offer_targets(step, labels)

        output.register_hook(read)

    def observe_targets(self, step: int, targets: Any) -> None:
        self.probe.offer_targets(step, targets)

    # ----------------------------------------------------------------- the decision
    def may_decide(self, step: int) -> bool:
        return step % self.interval == 0

    def _decide(self, step: int) -> list[str]:
        if self.fading_in:
            self._fade_in(step)
        if self.total_steps is None and self.optimizer is not None and step in (2, self.interval):
            length = run_length(self.optimizer, step)  # where the loop's LR scheduler states it
            if length is not None:
                self.set_total_steps(length)
        if self.net is None or self.tracker is None or step % self.interval:
            return []
        live = self.live()
        lr = self._lr_sum / self._lr_n if self._lr_n else 1.0
        self._lr_sum, self._lr_n = 0.0, 0
        scores = self.tracker.update([u.name for u in live], lr)
        for u in live:
            if u.name in scores:
                u.scores.append({"step": step, **scores[u.name]})
        if self._jumped(step) and self._relearning(self.train_loss):
            self._queue_returns()
        held = self.held_out if self.held_out is not None else self.probe
        if not len(held):
            return []
        if self._trying or self._queue:
            return self._next_trial(step, held)
        self._returning, self._back_on_trial = self._judge([t for t in self.on_trial if t["end"] <= step], step), False
        if self._returning:
            return []  # units are chosen from the next boundary on
        cands = [] if self._over_budget(step) or step // self.interval < self.pause[0] else \
            self._candidates(step, scores)
        if not cands:
            return []
        spent = self.check_work
        sizes = sorted({max(1, len(cands) >> i) for i in range(len(cands).bit_length())})  # 1, ..., n/2, n
        lo, hi = 0, len(sizes) - 1
        mid = hi // 2
        res = self._losses(held, [self.net.candidate_graph([u.name for u in cands[:sizes[mid]]], "train")])
        if self._held_jumped(step, res) and self._relearning(res.now):
            self._queue_returns()
            return self._next_trial(step, held)
        recent = self._recent_gain(step // self.interval, res.now)
        bound = drop_bound(res.now, res.classes, recent, self.tolerance, length_known=self.total_steps is not None,
                           strict=not res.labelled or self.changed_at is not None)
        chosen: list[str] = []
        loss = after = res.candidates[0]
        while True:  # binary search of the sizes for the largest set that passes
            names = [u.name for u in cands[:sizes[mid]]]
            ok = loss - res.now <= bound
            self._record(step, "drop", names, res.now, loss, ok, res.labelled)
            if ok:
                chosen, lo, after = names, mid + 1, loss
            else:
                hi = mid - 1
            if lo > hi:
                break
            mid = (lo + hi) // 2
            loss = self._losses(held, [], self.net.candidate_graph([u.name for u in cands[:sizes[mid]]], "train")).now
        self._last_work = self.check_work - spent
        self._held_ref = (set(self.net.dropped) | set(chosen), after if chosen else res.now) if res.labelled else None
        pause = self.pause[1]
        self.pause = (step // self.interval + pause, min(2 * pause, _MAX_WAIT)) if not chosen else (0, 2)
        if not chosen:  # the first candidate waits past the pause, so the next check tries others first
            self._refuse(cands[0].name, step, after=pause)
        elif res.labelled:
            self._trial = {"names": chosen, "end": step + _PROBATION * self.interval, "before": res.now,
                           "bound": bound, "held": held.head(len(held))}
        return chosen

    def _strict_bound(self, res) -> float:
        return drop_bound(res.now, res.classes, None, self.tolerance, length_known=True, strict=True)

    def _recent_gain(self, boundary: int, loss: float) -> float | None:
        """What the held loss fell over the last 3 boundaries: from the last check at least 3 boundaries ago
        to ``loss`` (now), scaled to 3 boundaries where checks paused longer; ``None`` before any such check."""
        self.history.append((boundary, loss))
        old = [h for h in self.history if h[0] <= boundary - _PROBATION]
        self.history = old[-1:] + [h for h in self.history if h[0] > boundary - _PROBATION]
        if not old:
            return None
        then, was = old[-1]
        return (was - loss) * _PROBATION / (boundary - then)

    def _over_budget(self, step: int) -> bool:
        """No drop now: the checks so far plus the next would pass ``_CHECK_SHARE`` of the training compute
        (of a run assumed to last twice its steps so far, when its length is not known); or, its length
        known, of the whole run at the current graph's cost per step, or ``_UNPAID_SHARE`` of that plus
        the compute the drops save; or the run ends before a drop made now would be judged."""
        spent = self.check_work + self._last_work
        if self.total_steps is None:
            return spent > _CHECK_SHARE * 2 * self.train_work
        if step + _PROBATION * self.interval > self.total_steps:
            return True
        left = 3 * self._rows * (self.total_steps - step)
        work, full = self.train_work + left * self._fraction(), self.full_work + left
        return spent > min(_CHECK_SHARE * work, _UNPAID_SHARE * work + full - work)

    def _candidates(self, step: int, scores: dict[str, dict[str, float]]) -> list:
        """Live units that may go now, stalled first, then in graph order, cut at ``target_speedup``."""
        assert self.net is not None
        boundary = step // self.interval
        cands = [u for u in self.live() if u.name not in self.never and self.wait.get(u.name, (0, 1))[0] <= boundary]
        cands.sort(key=lambda u: not self._stalled(scores.get(u.name)))  # stable: graph order within each
        if self.target_speedup is None:
            return cands
        full, left = max(self.net.full_flops("train"), 1), self.net.flops("train")
        out = []
        for u in cands:
            if left / full <= 1 / self.target_speedup:
                break
            out.append(u)
            left -= u.flops
        return out

    def reachable_speedup(self) -> float:
        """The forward-FLOPs speed-up with every unit not in ``never`` dropped: the most a target can get."""
        assert self.net is not None
        gone = sum(u.flops for u in self.net.units if u.name not in self.never)
        return 1.0 / max(1.0 - gone / max(self.net.full_flops("train"), 1), 1e-9)

    def _stalled(self, s: dict[str, float] | None) -> bool:
        return s is not None and math.isfinite(s.get("plateau", math.nan)) and s["plateau"] <= self.plateau

    def committed(self, names: list[str]) -> None:
        """Told after the wrapper dropped ``names``: a cohort, and BatchNorm statistics that follow it."""
        if not names or self.net is None or self.tracker is None:
            return
        self.cohorts.append((self.net.steps, list(names)))
        if self._trial is not None and self._trial["names"] == list(names):
            self.on_trial.append(self._trial)
        self._trial = None
        for n in names:
            self.tracker.forget(n)
            self.wait.pop(n, None)
        self._new_baseline()

    # ----------------------------------------------------------------- helpers
    def _refuse(self, name: str, step: int, at_least: int = 1, after: int = 0) -> None:
        """``name`` is not tried again for ``after`` plus 1, 2, 4, ... boundaries (at most ``_MAX_WAIT``)."""
        wait = max(self.wait.get(name, (0, 1))[1], at_least)
        self.wait[name] = (step // self.interval + after + wait, min(2 * wait, _MAX_WAIT))

    def _losses(self, held: Probe, graphs: list, current=None):
        """Held losses of ``current`` (default: the graph training runs now) and of ``graphs``."""
        assert self.net is not None
        current = self._train_graph() if current is None else current
        res = held_losses(self.net.model, current, graphs, held, self.net.steps)
        self.check_work += res.work * self._fraction(current)
        return res

    def _new_baseline(self) -> None:
        """The network changed (a drop or a return): BatchNorm statistics re-estimated, and the training
        loss from here on is the baseline later jumps are measured against."""
        self._recalibrate()
        self.train_loss, self._loss_sum, self._loss_n = None, 0.0, 0

    def _recalibrate(self) -> int:
        """Re-estimate BatchNorm statistics for the graph as it is now, on the held training batches."""
        assert self.net is not None
        if not len(self.probe):
            return 0
        graph = self._train_graph()
        self.check_work += self.probe.rows * self._fraction(graph)
        return recalibrate_batchnorm(self.net.model, graph, self.probe)

    def _train_graph(self):
        assert self.net is not None
        return self.net.graph_module if self.net.training else self.net.candidate_graph([], "train")

    def _fraction(self, gm=None) -> float:
        """The forward FLOPs of ``gm`` (default: the current training graph) as a share of the full one's."""
        if self.net is None or self.net._units is None:
            return 1.0
        full = max(self.net.full_flops("train"), 1)
        return (node_flops(gm.graph.nodes) if gm is not None else self.net.flops("train")) / full

    def _record(self, step: int, kind: str, names: list[str], now: float, other: float, ok: bool,
                labelled: bool) -> None:
        self.checks.append({"step": step, "kind": kind, "units": list(names), "loss": now, "loss_with": other,
                            "rise": rise(now, other), "accepted": ok, "labelled": labelled})

    @property
    def check_share(self) -> float:
        """The compute checks and BatchNorm re-estimation ran, as a share of training's (both counted in
        forward FLOPs, a training row as three forward rows)."""
        return self.check_work / self.train_work if self.train_work else 0.0


def _validate(interval, tolerance, target_speedup, plateau, total_steps, check_data, returns) -> None:
    """Refuse a knob out of its range, naming it, the range and the value."""
    _check_arg("interval", interval, interval is None or _int(interval, 1), "None or an int >= 1")
    _check_arg("tolerance", tolerance, _num(tolerance) and 0 <= tolerance < 1, "a number in [0, 1)")
    _check_arg("target_speedup", target_speedup, target_speedup is None or (_num(target_speedup)
               and target_speedup > 1), "None or a number > 1")
    _check_arg("plateau", plateau, _num(plateau) and 0 < plateau <= 1, "a number in (0, 1]")
    _check_arg("total_steps", total_steps, total_steps is None or _int(total_steps, 1), "None or an int >= 1")
    _check_arg("check_data", type(check_data).__name__, check_data is None or (
        hasattr(check_data, "__iter__") and not isinstance(check_data, (str, dict))),
        "None or an iterable of (inputs, labels) batches, e.g. a DataLoader")
    _check_arg("returns", returns, isinstance(returns, bool), "True or False")


def _interval_for(total_steps: int | None) -> int:
    """About 20 boundaries over a run of known length (8 to 50 steps apart), every 16 steps otherwise."""
    if total_steps is None:
        return _UNKNOWN_LENGTH_INTERVAL
    return min(50, max(8, total_steps // 20))


def _num(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _int(v: object, least: int) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= least


def _check_arg(name: str, value: object, ok: bool, what: str) -> None:
    if not ok:
        raise ValueError(f"LearnAndDrop: {name} must be {what}, got {value!r}")


def drop_bound(now: float, classes: int, recent: float | None, tolerance: float, length_known: bool,
               strict: bool) -> float:
    """The rule's ``bound``: how far a drop may raise the held loss ``now`` (``classes`` logits; ``recent``:
    what it fell over the last 3 boundaries, ``None`` before any check that far back).

    A drop may undo what training gained over the last 3 boundaries (the time its probation gives it to
    recover) or, the run's length unknown, a third of that (it may end at any boundary); at most a third of
    what it gained since the untrained network's loss (ln C): early a lot, late little; and always B,
    ``tolerance`` of the loss or of ln C if that is smaller (a loss above the untrained network's is no
    scale for a rise). ``strict`` (after a data change: the units came back because the data changed; or no
    labels): B alone."""
    strict_bound = tolerance * (min(now, math.log(classes)) if classes > 1 else now)
    if strict:
        return strict_bound
    gained = math.log(classes) - now
    recent = gained if recent is None else recent / (1 if length_known else _PROBATION)
    return max(strict_bound, min(gained / 3, recent))

