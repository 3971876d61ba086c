"""Data changes and units coming back: how a :class:`~fxdrop.policies.LearnAndDrop` tells that the data
changed, and what it does once a boundary decided to put units back (a cohort on trial after a data change,
or a drop that failed its probation), applied alike on every rank."""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING

from ..distributed import agree

if TYPE_CHECKING:
    from ..probe import Probe

__all__ = ["Returns"]

log = logging.getLogger("fxdrop.policies.learn_and_drop")

_FADE_IN_STEPS = (0.25, 0.5, 0.75, 1.0)  # the weight of a unit back on trial over the quarters of an interval
_FAILED_WAIT = 4  # boundaries a unit whose drop failed its probation waits before it may go again
_JUMP_RATIO, _JUMP_MIN = 1.5, 0.1  # a loss that rose more than this much (both): the data changed


class Returns:
    """Mixin of LearnAndDrop (its attributes are LearnAndDrop's): ``new_data``, the judgement of drops
    whose probation ended, the trials of cohorts coming back after a data change, putting the units of
    ``_returning`` back (rank 0's decision), their optimizer state, and the fade-in of a unit on trial."""

    def new_data(self) -> None:
        """The data changed: from the next boundary the dropped cohorts come back on trial, one at a time
        (without this call, they do when the training or the held loss jumps above ``ln C / 2``)."""
        self._changed = True

    def _jumped(self, step: int) -> bool:
        """Did the data change? new_data() was called, or the training loss's mean over this interval is
        more than 1.5 x the last one's, and by more than 0.1 (no training loss read: only new_data())."""
        n = int(self._loss_n)
        now = float(self._loss_sum) / n if n else None
        before, self.train_loss = self.train_loss, now
        self._loss_sum, self._loss_n = 0.0, 0
        self._told, self._changed = self._changed, False
        changed = self._told or (before is not None and now is not None and _rose(before, now))
        if changed:
            self._data_changed(step, math.nan if before is None else before, math.nan if now is None else now)
        return changed

    def _held_jumped(self, step: int, res) -> bool:
        """Did the data change without the training loss showing it (a drop resets its baseline; a network
        may relearn within an interval)? The held loss of the graph training runs now rose 1.5 x and by 0.1
        over what the same graph scored at the last check, both on labelled rows (``_held_ref`` is kept for
        labelled checks only, and cleared at every data change)."""
        assert self.net is not None
        ref = self._held_ref
        if ref is None or not res.labelled or ref[0] != set(self.net.dropped) or not _rose(ref[1], res.now):
            return False
        self._data_changed(step, ref[1], res.now)
        return True

    def _data_changed(self, step: int, before: float, now: float) -> None:
        """Record a data change (``changed_at``; a "data change" check with the losses before and now): from
        here on a drop may raise the held loss by ``tolerance`` only."""
        self.changed_at, self._held_ref = step, None
        self._record(step, "data change", [], before, now, True, True)

    def _relearning(self, loss: float | None) -> bool:
        """Do the dropped units return at this data change? The user said so (new_data()), or the loss rose
        above half the untrained network's (ln C / 2): the network relearns, and needs its units; a smaller
        jump is data it still mostly fits, without them."""
        return bool(self.cohorts) and self.returns and (self._told or (
            loss is not None and self._classes > 1 and loss > math.log(self._classes) / 2))

    def _queue_returns(self) -> None:
        """The dropped cohorts come back on trial one at a time, the last dropped first: a stale unit raises
        the loss at first (checked at once, each would be refused), and many at once can upset the network;
        the probations of their drops were on the old data."""
        self._queue, self.on_trial = [list(names) for _, names in reversed(self.cohorts)], []

    def _agree(self) -> None:
        """Rank 0's returns, queue, waits and pause on every rank; the units returning are restored with the
        weights they had, a fresh optimizer state, a wait before they may go again, and (back on trial) a
        fade-in, to be judged at the next boundary."""
        assert self.net is not None
        back, self._queue, self.wait, self.pause, self._back_on_trial = agree(
            (list(self._returning), list(self._queue), dict(self.wait), tuple(self.pause), self._back_on_trial))
        self._returning = []
        if not back:
            return
        if self._back_on_trial:
            self._trying = list(back)
        self.net.restore(*back)
        self.restored.append((self.net.steps, list(back)))
        self.cohorts = [(s, [n for n in names if n not in back]) for s, names in self.cohorts]
        self.cohorts = [(s, names) for s, names in self.cohorts if names]
        self.on_trial = [t for t in self.on_trial if not set(t["names"]) & set(back)]
        for n in back:
            self._fresh_optimizer_state(n)
            # on trial: it may go again from the next boundary, faded in meanwhile; after a failed probation
            # it waits as long as a probation lasts, and more
            self._refuse(n, self.net.steps, at_least=1 if self._back_on_trial else _FAILED_WAIT)
            if self._back_on_trial:
                self.fading_in[n] = self.net.steps
                self.net.fade(n, _FADE_IN_STEPS[0])
        self._new_baseline()
        log.info("fxdrop: step %d: %s returned", self.net.steps, back)

    def _judge(self, due: list[dict], step: int) -> list[str]:
        """Cohorts whose probation ended: on the rows held when they were dropped, the network now must be
        back to the loss it had there before the drop, within the bound the drop passed; else they return
        (their weights as when dropped)."""
        back = []
        for t in due:
            self.on_trial.remove(t)
            now = self._losses(t["held"], []).now
            ok = now - t["before"] <= t["bound"]
            self._record(step, "probation", t["names"], t["before"], now, ok, True)
            back += [] if ok else t["names"]
        return back

    def _next_trial(self, step: int, held: "Probe") -> list[str]:
        """Judge the cohort back on trial, faded in over the last interval: it stays if dropping it again
        raises the held loss by more than ``tolerance`` of it (the drop bound after a data change), else it
        goes again (returned, to be dropped). Then the next queued cohort comes back on trial, unless the
        run ends within an interval, where its trial could not be judged."""
        assert self.net is not None
        again = []
        if self._trying:
            res = self._losses(held, [self.net.candidate_graph(self._trying, "train")])
            stays = res.candidates[0] - res.now > self._strict_bound(res)
            self._record(step, "return", self._trying, res.now, res.candidates[0], stays, res.labelled)
            again, self._trying = ([] if stays else self._trying), []
        if self.total_steps is not None and step + self.interval > self.total_steps:
            self._queue = []
        while self._queue and not self._returning:  # (units the user restored meanwhile are skipped)
            self._returning = [n for n in self._queue.pop(0) if self.net.unit(n).dropped]
            self._back_on_trial = True
        return again

    def _fresh_optimizer_state(self, name: str) -> None:
        """A returning unit starts its optimizer state afresh (momentum and Adam moments from before its
        drop describe another network), as a newly added layer would."""
        if self.optimizer is None or self.net is None:
            return
        for p in self.net.parameters_of(self.net.unit(name)):
            self.optimizer.state.pop(p, None)

    def _fade_in(self, step: int) -> None:
        """A unit back on trial runs at weight 1/4, 1/2, 3/4 then 1 over the interval after its return: the
        rest of the network, which learned without it, takes it in gradually."""
        assert self.net is not None
        for n, start in list(self.fading_in.items()):
            if self.net.unit(n).dropped:
                del self.fading_in[n]
                continue
            alpha = _FADE_IN_STEPS[min(3, (step - start) * 4 // self.interval)]
            self.net.fade(n, alpha)
            if alpha >= 1:
                del self.fading_in[n]


def _rose(before: float, now: float) -> bool:
    return now > _JUMP_RATIO * before and now - before > _JUMP_MIN
