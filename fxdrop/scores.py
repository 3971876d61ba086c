"""Per-unit learning scores, computed from parameter snapshots at interval boundaries.

Definitions (docs/method.md gives the reasoning). For a unit ``u`` with parameters ``W`` (all its
parameters, flattened together), at the end of interval ``t`` (every ``interval`` optimizer steps):

* layer-change score   ``c_t = ||W_t - W_{t-1}|| / (||W_{t-1}|| * lr_t)``: relative movement over the
  interval per unit of learning rate (``lr_t`` = mean learning rate over the interval when the optimizer
  is known, else 1), so a learning-rate schedule does not by itself look like units stopping
* smoothed change      ``s_t = beta * s_{t-1} + (1 - beta) * c_t``   (``s_1 = c_1``)
* plateau ratio        ``p_t = s_t / max_{k<=t} s_k``   (share of its own peak learning pace left, in (0, 1])
* trend                ``b_t`` = least-squares slope of ``log c`` over the last ``window`` intervals
* continuation score   ``k_t = (p_t / median_v p_t(v)) * S(b_t - median_v b_t(v), H)``, with
  ``S(b, H) = mean_{j=1..H} exp(b * j)``: the unit's remaining pace relative to the network's typical
  live unit, extrapolated over the ``H`` intervals of training that are left (``H`` capped by
  ``horizon``) with its trend *relative* to the typical unit's, since a decay every unit shares (the
  loss flattening, a learning-rate schedule) says nothing about one unit.

Memory: one snapshot of the parameters of the units still alive. Cost: one pass over those
parameters per interval (``torch._foreach`` kernels), nothing on the other steps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

__all__ = ["ScoreTracker", "trend_slope", "extrapolation_factor", "relative_change"]


def relative_change(new: list[torch.Tensor], old: list[torch.Tensor]) -> float:
    """``||new - old|| / ||old||`` over several tensors taken as one vector (0 if ``old`` is zero)."""
    diffs = torch._foreach_sub(new, old)
    num = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(diffs))).item()
    den = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(old))).item()
    return num / den if den > 0 else (0.0 if num == 0 else math.inf)


def trend_slope(values: list[float]) -> float:
    """Least-squares slope of ``log(values)`` against their index (0 for fewer than two values)."""
    ys = [math.log(max(v, 1e-30)) for v in values]
    n = len(ys)
    if n < 2:
        return 0.0
    mx = (n - 1) / 2
    my = sum(ys) / n
    sxx = sum((i - mx) ** 2 for i in range(n))
    return sum((i - mx) * (y - my) for i, y in enumerate(ys)) / sxx


def extrapolation_factor(slope: float, horizon: int) -> float:
    """``mean_{j=1..H} exp(slope * j)``: the average future pace relative to now if the trend holds."""
    if horizon <= 0:
        return 1.0
    slope = max(min(slope, 1.0), -10.0)  # keep exp() finite; a steeper decay changes nothing
    return sum(math.exp(slope * j) for j in range(1, horizon + 1)) / horizon


@dataclass
class _State:
    snapshot: list[torch.Tensor]
    smoothed: float | None = None
    peak: float = 0.0


class ScoreTracker:
    """Keeps one snapshot per live unit and turns parameter movement into scores.

    ``update(step, names)`` closes an interval: returns ``{unit: {"change", "smoothed", "plateau",
    "trend"}}`` for the given live units, with ``math.nan`` entries for non-finite movement (such a
    unit is never dropped on it; the policy warns). ``continuation`` is added by :meth:`continuation`.
    """

    def __init__(self, params_of: dict[str, list[torch.Tensor]], beta: float = 0.5, window: int = 4):
        self.params_of = params_of
        self.beta, self.window = beta, window
        self.state: dict[str, _State] = {}
        self.changes: dict[str, list[float]] = {name: [] for name in params_of}
        for name in params_of:
            self._snapshot(name)

    def _snapshot(self, name: str) -> None:
        with torch.no_grad():
            params = [p.detach() for p in self.params_of[name]]
            st = self.state.get(name)
            if st is None:
                self.state[name] = _State([p.clone() for p in params])
            else:
                torch._foreach_copy_(st.snapshot, params)

    def forget(self, name: str) -> None:
        """Free the snapshot of a dropped unit (memory stays at one copy of the live units)."""
        self.state.pop(name, None)

    def update(self, names: list[str], lr: float = 1.0) -> dict[str, dict[str, float]]:
        out: dict[str, dict[str, float]] = {}
        with torch.no_grad():
            for name in names:
                st = self.state.get(name)
                if st is None:  # restored after a drop: start a fresh history
                    self._snapshot(name)
                    continue
                params = [p.detach() for p in self.params_of[name]]
                c = relative_change(params, st.snapshot) / lr if lr > 0 else math.nan
                torch._foreach_copy_(st.snapshot, params)
                if not math.isfinite(c):
                    out[name] = {"change": math.nan, "smoothed": math.nan, "plateau": math.nan, "trend": math.nan}
                    continue
                self.changes[name].append(c)
                st.smoothed = c if st.smoothed is None else self.beta * st.smoothed + (1 - self.beta) * c
                st.peak = max(st.peak, st.smoothed)
                out[name] = {
                    "change": c,
                    "smoothed": st.smoothed,
                    "plateau": st.smoothed / st.peak if st.peak > 0 else 1.0,
                    "trend": trend_slope(self.changes[name][-self.window :]),
                }
        return out

    @staticmethod
    def continuation(scores: dict[str, dict[str, float]], horizon: int) -> None:
        """Add ``continuation`` to every finite score: plateau ratio and trend relative to the medians
        over the scored (live) units."""
        finite = [s for s in scores.values() if math.isfinite(s["plateau"]) and math.isfinite(s["trend"])]
        if not finite:
            return
        p_med = _median([s["plateau"] for s in finite])
        b_med = _median([s["trend"] for s in finite])
        finite_ids = {id(s) for s in finite}
        for s in scores.values():
            if id(s) in finite_ids and p_med > 0:
                s["continuation"] = s["plateau"] / p_med * extrapolation_factor(s["trend"] - b_med, horizon)
            else:
                s["continuation"] = math.nan


    def state_dict(self) -> dict:
        return {
            "changes": {k: list(v) for k, v in self.changes.items()},
            "state": {k: {"snapshot": [t.clone() for t in st.snapshot], "smoothed": st.smoothed, "peak": st.peak}
                      for k, st in self.state.items()},
        }

    def load_state_dict(self, sd: dict) -> None:
        self.changes = {k: list(v) for k, v in sd["changes"].items()}
        self.state = {}
        for k, st in sd["state"].items():
            device = self.params_of[k][0].device if self.params_of.get(k) else None
            self.state[k] = _State([t.to(device) for t in st["snapshot"]], st["smoothed"], st["peak"])


def _median(values: list[float]) -> float:
    v = sorted(values)
    mid = len(v) // 2
    return v[mid] if len(v) % 2 else (v[mid - 1] + v[mid]) / 2
