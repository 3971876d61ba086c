"""What a :class:`~fxdrop.policies.LearnAndDrop` saves and loads with the wrapped model's checkpoint: its
scores, held batches, cohorts, probations and check accounting, so a resumed run makes the drops and returns
an uninterrupted one would."""

from __future__ import annotations

from ..probe import Probe

__all__ = ["LearnAndDropState"]


class LearnAndDropState:
    """``state_dict`` / ``load_state_dict`` of LearnAndDrop (a mixin: the attributes are LearnAndDrop's)."""

    def state_dict(self) -> dict:
        sd = super().state_dict()
        sd.update(tracker=self.tracker.state_dict() if self.tracker is not None else None,
                  lr=(self._lr_sum, self._lr_n), wait={k: list(v) for k, v in self.wait.items()},
                  pause=list(self.pause),
                  probe=self.probe.state_dict(), held_out=self.held_out.state_dict() if self.held_out else None,
                  checks=[dict(c) for c in self.checks], work=(self.train_work, self.check_work, self._last_work, self.full_work),
                  cohorts=[[s, list(n)] for s, n in self.cohorts], history=[list(h) for h in self.history], rows=self._rows,
                  changed_at=self.changed_at,
                  train_loss=(self.train_loss, float(self._loss_sum), int(self._loss_n)),
                  changed=self._changed, fading_in=dict(self.fading_in),
                  returns_queue=[list(c) for c in self._queue], trying=list(self._trying),
                  on_trial=[{**t, "held": t["held"].state_dict()} for t in self.on_trial],
                  held_ref=None if self._held_ref is None else [sorted(self._held_ref[0]), self._held_ref[1]],
                  schedule={"interval": self.interval, "total_steps": self.total_steps})
        return sd

    def load_state_dict(self, sd: dict) -> None:
        super().load_state_dict(sd)
        if sd.get("tracker") is not None and self.tracker is not None:
            self.tracker.load_state_dict(sd["tracker"])
        self._lr_sum, self._lr_n = sd.get("lr", (0.0, 0))
        self.wait = {k: (int(v[0]), int(v[1])) for k, v in sd.get("wait", {}).items()}
        self.pause = tuple(int(v) for v in sd.get("pause", (0, 2)))
        sched = sd.get("schedule") or {}
        if not self.total_steps_given:
            self.total_steps = sched.get("total_steps", self.total_steps)
        if self.interval_given is None:
            self._set_interval(int(sched.get("interval", self.interval)))
        self.probe.load_state_dict(sd.get("probe") or {})
        if sd.get("held_out") is not None:
            self.held_out = Probe(self.probe.batches, 2 * self.probe.samples)
            self.held_out.load_state_dict(sd["held_out"])
        self.checks = [dict(c) for c in sd.get("checks", [])]
        work = [float(v) for v in sd.get("work", (0.0, 0.0, 0.0))]
        self.train_work, self.check_work, self._last_work = work[:3]
        self.full_work = work[3] if len(work) > 3 else self.train_work
        self.cohorts = [(int(s), list(n)) for s, n in sd.get("cohorts", [])]
        self.train_loss, self._loss_sum, self._loss_n = sd.get("train_loss", (None, 0.0, 0))
        self.history = [(int(h[0]), float(h[1])) for h in sd.get("history", []) if isinstance(h, (list, tuple))]
        self.changed_at = sd.get("changed_at")
        self._rows = int(sd.get("rows", 0))
        self._changed = bool(sd.get("changed", False))
        self.fading_in = {k: int(v) for k, v in sd.get("fading_in", {}).items()}
        self._queue = [list(c) for c in sd.get("returns_queue", [])]
        self._trying = list(sd.get("trying", []))
        ref = sd.get("held_ref")
        self._held_ref = None if ref is None else (set(ref[0]), float(ref[1]))
        self.on_trial = []
        for t in sd.get("on_trial", []):
            held = Probe(self.probe.batches, self.probe.samples)
            held.load_state_dict(t["held"])
            self.on_trial.append({**t, "held": held})

