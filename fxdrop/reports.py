"""Reports of :class:`fxdrop.DropNet`: forward FLOPs (current and full graph) and the units' table."""

from __future__ import annotations

import torch.fx as fx

from .shapes import node_flops

__all__: list[str] = []


class _Reports:
    """Mixin of :class:`fxdrop.DropNet`: what the net costs now and what its units are.

    Relies on ``_full``/``_current`` (the graphs per mode), ``training``, ``_flops_cache`` (graph key ->
    (graph, FLOPs), kept here) and on ``_require_units``/``dropped`` (``fxdrop.dropping``).
    """

    _full: dict[str, fx.GraphModule]
    _current: dict[str, fx.GraphModule]
    _flops_cache: dict[str, tuple[fx.GraphModule, int]]
    training: bool

    def flops(self, mode: str | None = None) -> int:
        """Forward FLOPs of the current graph for the example input (train graph unless in eval mode)."""
        self._require_units()
        mode = mode or ("train" if self.training else "eval")
        return self._graph_flops(mode, self._current[mode])

    def full_flops(self, mode: str | None = None) -> int:
        """Forward FLOPs with every unit in place."""
        self._require_units()
        mode = mode or ("train" if self.training else "eval")
        return self._graph_flops("full " + mode, self._full[mode])

    def _graph_flops(self, key: str, gm: fx.GraphModule) -> int:
        # training loops and policies ask every step: sum once per graph
        cached = self._flops_cache.get(key)
        if cached is None or cached[0] is not gm:
            cached = (gm, node_flops(gm.graph.nodes))
            self._flops_cache[key] = cached
        return cached[1]

    def summary(self, tablefmt: str = "simple") -> str:
        """A table of the units (name, kind, parameters, FLOPs share, state), made with tabulate."""
        from tabulate import tabulate

        units = self._require_units()
        total = max(self.full_flops("train"), 1)
        back = {n: st for st, names in getattr(self.policy, "restored", []) for n in names}  # last return
        rows = [
            [u.name, u.kind, u.n_params, f"{u.flops / 1e6:.1f}", f"{100 * u.flops / total:.1f}",
             "dropped" if u.dropped else f"live (back at step {back[u.name]})" if u.name in back else "live"]
            for u in units
        ]
        table = tabulate(rows, headers=["unit", "kind", "params", "MFLOPs", "% FLOPs", "state"], tablefmt=tablefmt)
        return (
            f"{table}\n{len(units)} units, {len(self.dropped)} dropped, {len(back)} put back; forward FLOPs "
            f"{self.flops('train') / 1e6:.1f}M of {total / 1e6:.1f}M ({100 * self.flops('train') / total:.1f}%)"
        )
