"""Persistence of :class:`fxdrop.DropNet`: the drop state beside the model's ``state_dict`` (checkpoints
that resume), and the slim inference model (``export``) or the plan that rebuilds it
(``plan``; :func:`fxdrop.apply_plan`, beside :func:`fxdrop.wrap` in ``fxdrop.module``, replays one).
"""

from __future__ import annotations

import copy
from typing import Any

import torch.fx as fx
from torch import nn

from .errors import DropStateError

__all__: list[str] = []

DROP_STATE_FORMAT = 1


class _Persistence:
    """Mixin of :class:`fxdrop.DropNet`: save, resume and export what dropping changed.

    Relies on ``_model``, ``_level``, ``_projections``, ``_fades``, ``_current``, ``steps`` and ``policy``,
    and on the unit operations ``_require_units``/``dropped``/``freeze``/``unfreeze``/``parameters_of``/
    ``_rewrite`` (``fxdrop.dropping``).
    """

    _model: nn.Module
    _level: int | str
    _projections: bool
    _fades: dict[str, float]
    _current: dict[str, fx.GraphModule]
    steps: int
    policy: Any

    def drop_state_dict(self) -> dict[str, Any]:
        """Everything about dropping that ``state_dict()`` does not hold: dropped and frozen units, the
        step count, score histories and the policy's state. Save it beside the model's state_dict."""
        units = self._require_units()
        return {
            "format": DROP_STATE_FORMAT,
            "model": type(self._model).__name__,
            "units": [u.name for u in units],
            "found_with": self._unit_options(),
            "dropped": [u.name for u in units if u.dropped],
            "frozen": [u.name for u in units if u.frozen],
            "fading": dict(self._fades),
            "steps": self.steps,
            "scores": {u.name: [dict(s) for s in u.scores] for u in units},
            "policy": None if self.policy is None else {"type": type(self.policy).__name__,
                                                         "state": self.policy.state_dict()},
        }

    def load_drop_state_dict(self, state: dict[str, Any]) -> None:
        """Rebuild the graph and policy state saved by :meth:`drop_state_dict`. Raises
        :class:`DropStateError` (changing nothing) if it belongs to another model or policy."""
        units = self._require_units()
        if not isinstance(state, dict) or state.get("format") != DROP_STATE_FORMAT:
            raise DropStateError(f"not an fxdrop drop state (format {DROP_STATE_FORMAT} expected)")
        ours = [u.name for u in units]
        if state.get("units") != ours:
            missing = sorted(set(state.get("units") or []) ^ set(ours))
            saved = state.get("found_with") or {}
            ours_with = self._unit_options()
            way_out = {k: v for k, v in saved.items() if ours_with.get(k) != v}
            hint = (f"; its units were found with {', '.join(f'{k}={v!r}' for k, v in way_out.items())}: pass the "
                    "same to fxdrop.wrap") if way_out else f"; it does not belong to this {type(self._model).__name__}"
            raise DropStateError(
                f"this drop state was saved from {state.get('model')} with other units (differing: "
                f"{missing[:6]}){hint}"
            )
        pol = state.get("policy")
        if pol is not None and (self.policy is None or pol["type"] != type(self.policy).__name__):
            raise DropStateError(
                f"the drop state holds a {pol['type']} policy state but this wrapper has "
                f"{type(self.policy).__name__ if self.policy else 'no policy'}; pass the same policy to fxdrop.wrap"
            )
        stray = sorted(set(state.get("fading") or {}) - set(ours))
        if stray:
            raise DropStateError(f"this drop state fades units {stray} that this {type(self._model).__name__} does not have")
        self.unfreeze(*[u.name for u in units if u.frozen])
        for u in units:
            u.dropped = u.name in state["dropped"]
            u.scores[:] = [dict(s) for s in state["scores"].get(u.name, [])]  # keep node.meta's link
        self._fades = {k: float(v) for k, v in (state.get("fading") or {}).items()}
        self._rewrite()
        for u in units:
            if u.dropped:
                for p in self.parameters_of(u):
                    p.grad = None
        if state["frozen"]:
            self.freeze(*state["frozen"])
        self.steps = int(state["steps"])
        if pol is not None:
            self.policy.bind(self)
            self.policy.load_state_dict(pol["state"])

    def export(self) -> fx.GraphModule:
        """The slim model for inference: a standalone copy of the current eval graph without the dropped
        units (their modules are removed), independent of the training model."""
        self._require_units()
        gm = copy.deepcopy(self._current["eval"])  # copies graph, modules and weights in one go
        gm.delete_all_unused_submodules()
        gm.eval()
        return gm

    def plan(self) -> dict[str, Any]:
        """The drop plan (which units are dropped, which fade and by how much) that :func:`fxdrop.apply_plan`
        replays on a fresh model: the same function as :meth:`export`."""
        return {"format": DROP_STATE_FORMAT, "model": type(self._model).__name__,
                "units": [u.name for u in self._require_units()], "dropped": self.dropped,
                "fading": dict(self._fades)}

    def _unit_options(self) -> dict[str, Any]:
        """The ``wrap`` options that decide which units exist (a drop state names units)."""
        return {"level": self._level, "projections": self._projections}
