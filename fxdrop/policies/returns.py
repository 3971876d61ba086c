"""Units coming back: what a :class:`~fxdrop.policies.LearnAndDrop` does once a boundary decided to put
units back (a cohort on trial after a data change, or a drop that failed its probation), applied alike on
every rank."""

from __future__ import annotations

import logging

from ..distributed import agree

__all__ = ["Returns"]

log = logging.getLogger("fxdrop.policies.learn_and_drop")

_FADE_IN_STEPS = (0.25, 0.5, 0.75, 1.0)  # the weight of a unit back on trial over the quarters of an interval
_FAILED_WAIT = 4  # boundaries a unit whose drop failed its probation waits before it may go again


class Returns:
    """Mixin of LearnAndDrop (its attributes are LearnAndDrop's): ``new_data``, putting the units of
    ``_returning`` back (rank 0's decision), their optimizer state, and the fade-in of a unit on trial."""

    def new_data(self) -> None:
        """The data changed: from the next boundary the dropped cohorts come back on trial, one at a time
        (without this call, they do when the training loss jumps above ``ln C / 2``)."""
        self._changed = True

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
