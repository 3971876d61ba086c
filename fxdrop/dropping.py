"""The graph state of :class:`fxdrop.DropNet`: its units and what happens when one is dropped.

The traced graphs (``_full``: every unit in place, one per mode) never change; ``_current`` holds the
graphs that run, rebuilt by :meth:`_Dropping._rewrite` from the units' states whenever one changes:
dropped units are bypassed (:func:`fxdrop.rewrite.bypass`), fading ones blended
(:func:`fxdrop.rewrite.blend`), and what a bypass leaves redundant folded
(:func:`fxdrop.fold.fold_redundant`). With ``compile=``, each graph is compiled once and cached by state.
Freezing (the baseline that keeps the unit in the graph) is here too, beside dropping.
"""

from __future__ import annotations

import difflib
import warnings
from typing import Any, Callable, Iterable

import torch
import torch.fx as fx
from torch import nn

from .errors import NotInitializedError, UnitError
from .fold import fold_redundant
from .rewrite import blend, bypass
from .trace import TraceResult
from .units import Unit

__all__: list[str] = []

MODES = ("train", "eval")


class _Dropping:
    """Mixin of :class:`fxdrop.DropNet`: the units, their states (dropped, fading, frozen) and the graphs
    that follow from them.

    Relies on ``_model`` (the user's module), ``_traced`` (the :class:`fxdrop.trace.TraceResult`),
    ``training`` and ``_compile_options``; keeps ``_full``/``_current`` (graph per mode), ``_units``/
    ``_by_name`` (``None`` until the units are found), ``_fades``, ``_user_requires_grad``, ``_compiled``
    and ``compile_count``; calls the listeners in ``_drop_listeners`` (see ``on_drop``) after a change.
    """

    _model: nn.Module
    _traced: TraceResult
    _compile_options: dict[str, Any] | None
    _compiled: dict[tuple[Any, ...], Callable[..., Any]]
    compile_count: int
    _full: dict[str, fx.GraphModule]
    _current: dict[str, fx.GraphModule]
    _units: list[Unit] | None
    _by_name: dict[str, Unit]
    _fades: dict[str, float]
    _user_requires_grad: dict[str, bool]
    _drop_listeners: list[Callable[..., None]]
    training: bool

    # ------------------------------------------------------------------ graph modules
    def _build_graph_modules(self) -> None:
        model = self._model
        full_train = fx.GraphModule(model, self._traced.graphs["train"], class_name=type(model).__name__)
        full_eval = (
            full_train
            if self._traced.same_graph
            else fx.GraphModule(model, self._traced.graphs["eval"], class_name=type(model).__name__)
        )
        self._full = {"train": full_train, "eval": full_eval}
        self._current = dict(self._full)
        self._compiled.clear()
        # why a module the graph calls is kept whole, where fxdrop decided it (per-node facts in node.meta)
        why = {**{k: "hooks" for k in self._traced.hooked}, **self._traced.reasons}
        if why:
            for gm in {id(g): g for g in self._full.values()}.values():
                for node in gm.graph.nodes:
                    if node.op == "call_module" and node.target in why:
                        node.meta["fxdrop_kept_whole"] = why[node.target]

    def _replace_train_graph(self, graph: fx.Graph) -> None:
        """Swap in a rewritten train graph (a baseline such as stochastic depth); units are cleared since
        their sites belong to the old graph."""
        self._traced.graphs["train"] = graph
        self._build_graph_modules()
        self._units, self._by_name = [], {}

    def _apply(self, fn, recurse=True):  # .to(), .cuda(), .half(): re-bind get_attr tensors
        super()._apply(fn, recurse)
        if self._full:
            self._build_graph_modules()
            if self._units is not None:
                self._rewrite()
        return self

    @property
    def graph_module(self) -> fx.GraphModule:
        """The current ``torch.fx.GraphModule`` for the current mode (train or eval)."""
        return self._current["train" if self.training else "eval"]

    @property
    def full_graph_module(self) -> fx.GraphModule:
        """The traced graph with every unit in place, for the current mode."""
        return self._full["train" if self.training else "eval"]

    # ------------------------------------------------------------------ units
    def _require_units(self) -> list[Unit]:
        if self._units is None:
            raise NotInitializedError(
                "fxdrop does not know the units yet: pass example_inputs=(x,) to fxdrop.wrap or call the "
                "wrapped model once on a batch"
            )
        return self._units

    @property
    def units(self) -> list[Unit]:
        """The droppable units in graph order."""
        return list(self._require_units())

    @property
    def dropped(self) -> list[str]:
        """Names of the dropped units, in graph order."""
        return [u.name for u in self._require_units() if u.dropped]

    def unit(self, name: str) -> Unit:
        """The unit called ``name``; :class:`UnitError` (with close matches) if there is none."""
        self._require_units()
        if not isinstance(name, str):
            raise UnitError(f"unit names are strings, got {type(name).__name__} {name!r}")
        try:
            return self._by_name[name]
        except KeyError:
            close = difflib.get_close_matches(name, list(self._by_name), n=3)
            hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
            raise UnitError(
                f"{type(self._model).__name__} has no unit named {name!r}{hint} "
                f"(net.units lists the {len(self._by_name)} units)"
            ) from None

    def parameters_of(self, unit: Unit) -> list[nn.Parameter]:
        """The parameters ``unit`` owns (``unit.params`` resolved on the model)."""
        return [self._model.get_parameter(name) for name in unit.params]

    def drop(self, *names: str) -> list[str]:
        """Bypass the named units; returns the names dropped now (already dropped ones are skipped with a
        warning). Their parameters keep their values and get no more gradients."""
        units = [self.unit(n) for n in names]  # validate every name before changing anything
        changed = []
        for u in units:
            if u.dropped:
                warnings.warn(f"fxdrop: unit {u.name!r} is already dropped", stacklevel=2)
                continue
            u.dropped = True
            self._fades.pop(u.name, None)
            changed.append(u.name)
        if changed:
            self._rewrite()
            for name in changed:
                for p in self.parameters_of(self._by_name[name]):
                    p.grad = None  # optimizers skip parameters without a gradient
            for fn in self._drop_listeners:
                fn(self, changed, "drop")
        return changed

    def restore(self, *names: str) -> list[str]:
        """Put the named units back, exactly as traced and with their current weights; returns the names
        restored now (live units are skipped with a warning)."""
        units = [self.unit(n) for n in names]
        changed = []
        for u in units:
            if not u.dropped:
                warnings.warn(f"fxdrop: unit {u.name!r} is not dropped; nothing to restore", stacklevel=2)
                continue
            u.dropped = False
            changed.append(u.name)
        if changed:
            self._rewrite()
            for fn in self._drop_listeners:
                fn(self, changed, "restore")
        return changed

    def restore_all(self) -> list[str]:
        """Restore every dropped unit; returns their names."""
        return self.restore(*self.dropped)

    def fade(self, name: str, alpha: float) -> None:
        """Run unit ``name`` as ``entry + alpha * (unit(entry) - entry)``: 1 is the whole unit (the fade is
        removed), 0 its bypass (use :meth:`drop`, which saves the compute). Lowering ``alpha`` over a few
        steps before a drop lets the rest of the network take over the unit's work; the unit still runs and
        learns meanwhile. Each new ``alpha`` is a graph rewrite: change it at a few steps, not every step."""
        u = self.unit(name)
        if not isinstance(alpha, (int, float)) or isinstance(alpha, bool) or not 0 <= alpha <= 1:
            raise ValueError(f"fxdrop: fade weight for {name!r} must be a number in [0, 1], got {alpha!r}")
        if u.dropped:
            raise UnitError(f"unit {name!r} is dropped; restore it before fading it")
        if alpha >= 1:
            changed = self._fades.pop(u.name, None) is not None
        else:
            changed = self._fades.get(u.name) != float(alpha)
            self._fades[u.name] = float(alpha)
        if changed:
            self._rewrite()

    @property
    def fading(self) -> dict[str, float]:
        """The units being faded out and their current weight (see :meth:`fade`)."""
        return dict(self._fades)

    def candidate_graph(self, names: Iterable[str] = (), mode: str = "train",
                        fades: dict[str, float] | None = None, restore: Iterable[str] = ()) -> fx.GraphModule:
        """The ``mode`` graph with ``names`` bypassed besides the units dropped now, except those in
        ``restore`` (run again, with their weights as they are), and the current fades with ``fades`` laid
        over them (weight 1 removes a fade), without changing anything (a pure rewrite sharing this model's
        parameters): what a drop, a restore or a fade step would run, for checks."""
        names = {self.unit(n).name for n in names}  # unknown names raise UnitError
        back = {self.unit(n).name for n in restore}
        weights = dict(self._fades)
        for n, a in (fades or {}).items():
            weights[self.unit(n).name] = float(a)
        return self._graph(mode, (names | set(self.dropped)) - back, {k: a for k, a in weights.items() if a < 1})

    def _graph(self, mode: str, drop: set[str], fades: dict[str, float]) -> fx.GraphModule:
        """The full ``mode`` graph with ``drop`` bypassed and the other units in ``fades`` blended."""
        units = self._require_units()
        result = bypass(self._full[mode], [u.sites[mode] for u in units if u.name in drop])
        fading = [u for u in units if u.name in fades and u.name not in drop]
        gm = result.graph_module
        if fading:
            gm = blend(gm, [u.sites[mode] for u in fading], [fades[u.name] for u in fading], result.replaced).graph_module
        if result.modified:  # node for node the thin network: no relu of a relu left by a bypass
            gm = fold_redundant(gm, result.rewired, inplace=True).graph_module
        return gm

    def _rewrite(self) -> None:
        dropped = set(self.dropped)
        for mode in MODES:
            if mode == "eval" and self._traced.same_graph:
                self._current["eval"] = self._current["train"]
                continue
            self._current[mode] = self._graph(mode, dropped, self._fades)

    def freeze(self, *names: str) -> list[str]:
        """Freeze the named units instead of dropping them (the freezing baseline): their parameters
        stop requiring gradients; the forward still runs them. Returns the names frozen now."""
        units = [self.unit(n) for n in names]
        changed = []
        for u in units:
            if u.frozen or u.dropped:
                warnings.warn(f"fxdrop: unit {u.name!r} is already {'frozen' if u.frozen else 'dropped'}", stacklevel=2)
                continue
            u.frozen = True
            changed.append(u.name)
            for name, p in zip(u.params, self.parameters_of(u)):
                self._user_requires_grad.setdefault(name, p.requires_grad)  # what unfreeze gives back
                p.requires_grad_(False)
                p.grad = None
        if changed:
            for fn in self._drop_listeners:
                fn(self, changed, "freeze")
        return changed

    def unfreeze(self, *names: str) -> list[str]:
        """Undo :meth:`freeze`: each parameter gets back the ``requires_grad`` it had when frozen (one the
        user had frozen stays frozen); returns the names unfrozen now."""
        units = [self.unit(n) for n in names]
        changed = [u.name for u in units if u.frozen]
        for u in units:
            if u.frozen:
                u.frozen = False
                for name, p in zip(u.params, self.parameters_of(u)):
                    p.requires_grad_(self._user_requires_grad.pop(name, True))
        return changed

    # ------------------------------------------------------------------ what runs
    def _callable(self, mode: str) -> Callable[..., Any]:
        gm = self._current[mode]
        if self._compile_options is None:
            return gm
        key = (mode if not self._traced.same_graph else "train", tuple(self.dropped), tuple(sorted(self._fades.items())))
        fn = self._compiled.get(key)
        if fn is None:
            fn = torch.compile(gm, **self._compile_options)
            self._compiled[key] = fn
            self.compile_count += 1
        return fn
