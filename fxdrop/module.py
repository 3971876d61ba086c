"""``DropNet``: the user's model as a droppable torch.fx graph, and :func:`wrap` which builds it."""

from __future__ import annotations

import copy
import difflib
import inspect
import logging
import warnings
from typing import Any, Callable, Iterable, Sequence

import torch
import torch.fx as fx
from torch import nn
from torch.utils._pytree import tree_flatten
from torch.utils.hooks import RemovableHandle

from .errors import DropStateError, NotInitializedError, TraceError, UnitError
from .fold import fold_redundant
from .rewrite import blend, bypass
from .shapes import node_flops, propagate
from .trace import ModelSnapshot, TraceResult, has_hooks, trace
from .units import Unit, find_units, level_depth

__all__ = ["DropNet", "wrap", "apply_plan"]

log = logging.getLogger(__name__)

MODES = ("train", "eval")
DROP_STATE_FORMAT = 1


def share_module_state(wrapper: nn.Module, model: nn.Module) -> None:
    """Make ``wrapper`` expose ``model``'s children, parameters and buffers through the very same dicts,
    so ``.to()``, ``.train()``, ``state_dict()`` keys and optimizers all see the same tensors."""
    for key in ("_modules", "_parameters", "_buffers", "_non_persistent_buffers_set"):
        wrapper.__dict__[key] = getattr(model, key)


class DropNet(nn.Module):
    """A model whose droppable units can be bypassed and restored while it trains.

    It shares the user's modules, parameters and buffers (same objects, same ``state_dict`` keys), so
    an optimizer built on ``model.parameters()`` or ``net.parameters()`` drives both. Its forward runs
    the current torch.fx graph of the mode it is in (train or eval). Build it with :func:`wrap`.
    """

    def __init__(
        self,
        model: nn.Module,
        example_inputs: Sequence[Any] | None = None,
        *,
        example_kwargs: dict[str, Any] | None = None,
        leaf_modules: Iterable[type | str] = (),
        autowrap_functions: Sequence[Callable[..., Any]] = (),
        concrete_args: dict[str, Any] | None = None,
        compile: bool | dict[str, Any] = False,
        policy: Any = "default",
        verify: bool = True,
        level: int | str = 0,
        projections: bool = False,
    ):
        if not isinstance(model, nn.Module):
            raise TypeError(f"fxdrop.wrap expects a torch.nn.Module, got {type(model).__name__}")
        if isinstance(model, DropNet):
            raise TypeError("this model is already wrapped by fxdrop; use it directly")
        if isinstance(model, fx.GraphModule) and not list(model.graph.nodes):
            raise TraceError("the GraphModule given to fxdrop.wrap has an empty graph")
        try:
            level_depth(level)  # refused before tracing, not at the first forward
        except ValueError as e:
            raise ValueError(f"fxdrop.wrap: {e}") from None
        if not isinstance(projections, bool):
            raise TypeError(f"fxdrop.wrap: projections must be True or False, got {projections!r}")
        super().__init__()
        share_module_state(self, model)
        self._level = level
        self._projections = projections
        self.__dict__["_model"] = model  # from here on ``training`` is the model's own flag
        self._verify = verify
        self._compile_options: dict[str, Any] | None = (
            dict(compile) if isinstance(compile, dict) else ({} if compile else None)
        )
        self._compiled: dict[tuple[Any, ...], Callable[..., Any]] = {}
        self._flops_cache: dict[str, tuple[fx.GraphModule, int]] = {}
        self.compile_count = 0
        self._baked: dict[str, tuple[int, Any]] = {}  # auto-concrete arguments: name -> (position, value)
        if concrete_args is None and not isinstance(model, fx.GraphModule):
            n_pos = len(example_inputs) if isinstance(example_inputs, (tuple, list)) else 0
            concrete_args = _none_defaults(model, n_pos, set(example_kwargs or ())) or None
            if concrete_args:
                names = list(inspect.signature(model.forward).parameters)
                self._baked = {k: (names.index(k), v) for k, v in concrete_args.items()}
        self._traced: TraceResult = trace(model, leaf_modules, autowrap_functions, concrete_args)
        self._warn_hooked()
        # hooks registered on a traced-through module after wrap would never run: every hook handle
        # torch makes takes the next id, so an unchanged id means no hook was added anywhere since the
        # last look (one integer compare per forward); otherwise the traced-through modules are looked at
        self._hook_id = -1
        self._mode_readers = self._modules_reading_training()
        self._user_requires_grad: dict[str, bool] = {}  # parameter -> the user's flag, while fxdrop froze it
        self._full: dict[str, fx.GraphModule] = {}
        self._current: dict[str, fx.GraphModule] = {}
        self._build_graph_modules()
        self._units: list[Unit] | None = None
        self._by_name: dict[str, Unit] = {}
        self._fades: dict[str, float] = {}  # unit -> weight of its output while it fades out (1 = whole unit)
        self._drop_listeners: list[Callable[..., None]] = []
        if isinstance(policy, str) and policy == "default":
            from .policies import LearnAndDrop  # the policies know the wrapper only by type

            policy = LearnAndDrop()
        self.policy = policy
        self.steps = 0
        self._optimizer: torch.optim.Optimizer | None = None
        if example_inputs is not None or example_kwargs:
            if example_inputs is not None and not isinstance(example_inputs, (tuple, list)):
                raise TypeError(
                    "example_inputs must be a tuple of positional inputs, e.g. example_inputs=(x,); "
                    f"got {type(example_inputs).__name__}"
                )
            self._initialize(tuple(example_inputs or ()), dict(example_kwargs or {}))

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

    # one training flag: the model's. ``net.train()``/``net.eval()`` and ``model.train()``/``model.eval()``
    # are the same thing, and the graph run is the one of the model's mode (each module kept whole, a
    # BatchNorm above all, reads its own flag when called)
    @property
    def training(self) -> bool:  # type: ignore[override]
        model = self.__dict__.get("_model")
        return model.training if model is not None else self.__dict__.get("_own_training", True)

    @training.setter
    def training(self, mode: bool) -> None:
        model = self.__dict__.get("_model")
        if model is None:  # nn.Module.__init__, before the model is known
            self.__dict__["_own_training"] = mode
        else:
            model.training = mode

    def train(self, mode: bool = True) -> "DropNet":
        """``model.train(mode)``: the model (the root and every submodule) and this wrapper share one flag."""
        super().train(mode)
        return self

    @property
    def model(self) -> nn.Module:
        """The user's original module (its ``forward`` is never called by fxdrop)."""
        return self._model

    @property
    def graph_module(self) -> fx.GraphModule:
        """The current ``torch.fx.GraphModule`` for the current mode (train or eval)."""
        return self._current["train" if self.training else "eval"]

    @property
    def full_graph_module(self) -> fx.GraphModule:
        """The traced graph with every unit in place, for the current mode."""
        return self._full["train" if self.training else "eval"]

    @property
    def auto_leaves(self) -> list[str]:
        """Submodules that could not be traced through and were made leaves automatically."""
        return list(self._traced.auto_leaves)

    # ------------------------------------------------------------------ initialisation
    def _bind(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
        sig = inspect.signature(self._full["eval"].forward)
        try:
            bound = sig.bind(*args, **kwargs)
        except TypeError as e:
            raise TypeError(f"example inputs do not fit {type(self._model).__name__}.forward{sig}: {e}") from e
        bound.apply_defaults()
        return tuple(bound.arguments.values())

    def _initialize(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        inputs = self._bind(args, kwargs)
        model_name = type(self._model).__name__
        # the reference output is computed before anything runs the graphs, and every parameter, buffer
        # and training flag of the model is put back bit for bit afterwards: a train graph that traced
        # through a BatchNorm holds ``training=True`` as a constant and updates running statistics
        snapshot = ModelSnapshot(self._model)
        try:
            try:
                out_model = self._reference_output(args, kwargs) if self._verify else None
            except Exception as e:
                raise TraceError(
                    f"running {model_name} itself on the example inputs failed: {type(e).__name__}: {e}. "
                    "Check that the example inputs have the shape and dtype the model expects"
                ) from e
            try:
                out_eval = propagate(self._full["eval"], inputs)
                if not self._traced.same_graph:
                    propagate(self._full["train"], inputs)
            except Exception as e:
                raise TraceError(
                    f"running {model_name}'s traced graph on the example inputs failed: {type(e).__name__}: {e}. "
                    "Check that the example inputs have the shape and dtype the model expects"
                ) from e
            if self._verify:
                self._check_against_model(out_model, out_eval)
        finally:
            snapshot.restore()
        param_names: dict[int, str] = {}
        numel: dict[int, int] = {}
        for name, p in self._model.named_parameters():
            param_names.setdefault(id(p), name)
            numel[id(p)] = p.numel()
        cands = {mode: find_units(self._full[mode], self._level, self._projections) for mode in MODES}
        eval_by_name = {c.name_hint: c for c in cands["eval"]}
        units = []
        for c in cands["train"]:
            twin = eval_by_name.get(c.name_hint)
            if twin is None or twin.kind != c.kind or twin.param_ids != c.param_ids:
                log.info("fxdrop: unit %s exists only in the train graph; not droppable", c.name_hint)
                continue
            units.append(
                Unit(
                    name=c.name_hint,
                    kind=c.kind,
                    params=tuple(sorted((param_names[i] for i in c.param_ids), key=_param_order(param_names))),
                    flops=c.flops,
                    module=c.module,
                    sites={"train": c.site, "eval": twin.site},
                    weights=sum(numel[i] for i in c.param_ids),
                )
            )
        self._units = units
        self._by_name = {u.name: u for u in units}
        for u in units:
            for mode in MODES:
                node = next(n for n in self._full[mode].graph.nodes if n.name == u.sites[mode].exit)
                node.meta["fxdrop_unit"] = u.name
                node.meta["fxdrop_scores"] = u.scores  # the same list: one history, two views
        if not units:
            warnings.warn(
                f"fxdrop: {model_name} has no droppable unit: no residual add whose skip is an identity "
                f"{'or a projection ' if self._projections else ''}of the block input and no shape-preserving "
                "layer owning parameters was found, so nothing will be dropped and training runs as usual",
                stacklevel=3,
            )
        if self.policy is not None:
            self.policy.bind(self)

    def _reference_output(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """The model's own eval-mode output on the example inputs (modes restored afterwards)."""
        modes = [(m, m.training) for m in self._model.modules()]
        self._model.eval()
        try:
            with torch.no_grad():
                return self._model(*args, **kwargs)
        finally:
            for m, mode in modes:
                m.training = mode

    def _check_against_model(self, out_model: Any, out_graph: Any) -> None:
        flat_g, spec_g = tree_flatten(_plain(out_graph))
        flat_m, spec_m = tree_flatten(_plain(out_model))
        if spec_g != spec_m or len(flat_g) != len(flat_m):
            raise TraceError(
                f"the traced graph of {type(self._model).__name__} returns another output structure than the model "
                f"on the example inputs (eval mode): {spec_g} against the model's {spec_m}. A Python-level branch "
                "probably chose the structure at trace time: pass leaf_modules=['path.of.submodule'] for the "
                "submodule that builds it, or concrete_args=, to fxdrop.wrap (or verify=False to skip this check)"
            )
        bad = False
        for a, b in zip(flat_g, flat_m):
            if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
                bad = bad or a.shape != b.shape or not torch.allclose(a, b, rtol=1e-4, atol=1e-5, equal_nan=True)
        if bad:
            raise TraceError(
                f"the traced graph of {type(self._model).__name__} does not reproduce the model's output on the "
                "example inputs (eval mode): a Python-level branch or value was probably baked into the graph. "
                "Pass leaf_modules=['path.of.submodule'] for the submodule with data-dependent behaviour, "
                "or concrete_args=, to fxdrop.wrap"
            )

    def _require_units(self) -> list[Unit]:
        if self._units is None:
            raise NotInitializedError(
                "fxdrop does not know the units yet: pass example_inputs=(x,) to fxdrop.wrap or call the "
                "wrapped model once on a batch"
            )
        return self._units

    # ------------------------------------------------------------------ units
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

    def on_drop(self, fn: Callable[["DropNet", list[str], str], None]) -> Callable[..., None]:
        """Call ``fn(net, names, event)`` after every drop (``event="drop"``) or restore; returns ``fn``."""
        self._drop_listeners.append(fn)
        return fn

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

    # ------------------------------------------------------------------ training loop integration
    def step(self, optimizer: torch.optim.Optimizer | None = None, *, targets: torch.Tensor | None = None) -> list[str]:
        """Call once after every ``optimizer.step()``: advances the step count, lets the policy score
        the units at interval boundaries and drops (or freezes) what it decides. Returns those names.

        Passing the ``optimizer`` (or using :meth:`attach`) lets the scores discount the learning rate;
        passing the step's class labels ``targets`` lets drop checks measure accuracy on held batches
        (without them they bound it by the share of predictions that change)."""
        self._require_units()
        self.steps += 1
        if self.policy is None:
            return []
        if targets is not None:
            self.policy.observe_targets(self.steps, targets)
        if self.policy.net is not self:
            self.policy.bind(self)
        optimizer = optimizer or self._optimizer
        if optimizer is not None and optimizer is not getattr(self.policy, "optimizer", None):
            self.policy.observe_optimizer(optimizer)
        if optimizer is not None:
            lrs = [float(g["lr"]) for g in optimizer.param_groups]
            self.policy.observe_lr(sum(lrs) / len(lrs))
        names = self.policy.decide(self.steps)
        if not names:
            return []
        done = self.freeze(*names) if self.policy.action == "freeze" else self.drop(*names)
        self.policy.committed(done)
        return done

    def attach(self, optimizer: torch.optim.Optimizer) -> Any:
        """Call :meth:`step` after every ``optimizer.step()`` through a step post-hook; returns the hook
        handle (``handle.remove()`` detaches)."""
        self._optimizer = optimizer
        if self.policy is not None:
            self.policy.observe_optimizer(optimizer)
        return optimizer.register_step_post_hook(lambda opt, args, kwargs: self.step())

    # ------------------------------------------------------------------ checkpoints and export
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

    # ------------------------------------------------------------------ FLOPs and reports
    def flops(self, mode: str | None = None) -> int:
        """Forward FLOPs of the current graph for the example input (train graph unless in eval mode)."""
        self._require_units()
        mode = mode or ("train" if self.training else "eval")
        return self._graph_flops(mode, self._current[mode])

    def _unit_options(self) -> dict[str, Any]:
        """The ``wrap`` options that decide which units exist (a drop state names units)."""
        return {"level": self._level, "projections": self._projections}

    @property
    def projections(self) -> bool:
        """Whether downsampling blocks' residual branches are units (``wrap(..., projections=True)``)."""
        return self._projections

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
        rows = [
            [u.name, u.kind, u.n_params, f"{u.flops / 1e6:.1f}", f"{100 * u.flops / total:.1f}",
             "dropped" if u.dropped else "live"]
            for u in units
        ]
        table = tabulate(rows, headers=["unit", "kind", "params", "MFLOPs", "% FLOPs", "state"], tablefmt=tablefmt)
        return (
            f"{table}\n{len(units)} units, {len(self.dropped)} dropped; forward FLOPs "
            f"{self.flops('train') / 1e6:.1f}M of {total / 1e6:.1f}M ({100 * self.flops('train') / total:.1f}%)"
        )

    # ------------------------------------------------------------------ forward
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

    def _check_baked(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """Refuse a call that passes another value for an argument traced at its default (silently
        ignoring it would run the wrong computation)."""
        for name, (pos, value) in self._baked.items():
            if name in kwargs:
                given = kwargs[name]
            elif pos < len(args):
                given = args[pos]
            else:
                continue
            if given is not value and not (isinstance(value, bool) and isinstance(given, bool) and given == value):
                raise TraceError(
                    f"{type(self._model).__name__}.forward was traced with {name}={value!r} (its default, not given "
                    f"in the example inputs), so a call with {name}={'a ' + type(given).__name__ if value is None else repr(given)} "
                    f"cannot be honoured; wrap with concrete_args={{{name!r}: <the value you use>}} to trace that "
                    f"value instead, or example_kwargs={{{name!r}: ...}} if forward only computes with it"
                )

    def _warn_hooked(self) -> None:
        hooked = self._traced.hooked
        if hooked:
            warnings.warn(
                f"fxdrop: {', '.join(hooked[:6])}{' ...' if len(hooked) > 6 else ''} of {type(self._model).__name__} "
                "have hooks, so they are kept whole (their hooks fire when the net calls them) and no unit inside "
                "them can be dropped; register hooks after fxdrop.wrap on modules it keeps whole (leaves such as "
                "convolutions and BatchNorms) to keep those units",
                stacklevel=4,
            )

    def _modules_reading_training(self) -> list[tuple[str, nn.Module]]:
        """Traced-through modules whose code mentions ``training``, when the train and eval graphs differ
        (when they are the same graph, no module's flag changed what was traced): their flag was read at
        trace time, so it must equal the model's when the net runs."""
        if self._traced.same_graph:
            return []
        readers = []
        for name, m in self._traced.traced_through.items():
            if _reads_training(type(m)):
                readers.append((name, m))
        return readers

    def _check_runtime(self) -> None:
        """What the graph cannot honour, refused by name: a hook added after wrap to a module the graph
        traced through, and a module whose traced code read ``self.training`` left in another mode than
        the model. Costs one integer compare per call (plus a flag per such module, when any)."""
        if RemovableHandle.next_id != self._hook_id:
            hooked = [(n, m) for n, m in self._traced.traced_through.items() if has_hooks(m)]
            if hooked:
                name, m = hooked[0]
                raise TraceError(
                    f"{name} ({type(m).__name__}) of {type(self._model).__name__} got a hook after fxdrop.wrap traced "
                    "through it: its forward is part of the net's graph, so the hook would never run. Register the "
                    f"hook before fxdrop.wrap (or pass leaf_modules=[{name!r}]): {name} is then kept whole and its "
                    "hooks fire, but no unit inside it can be dropped; or hook a module the graph keeps whole "
                    "(net.graph_module's call_module targets)"
                )
            self._hook_id = RemovableHandle.next_id
        if self._mode_readers:
            mode = self._model.training
            for name, m in self._mode_readers:
                if m.training != mode:
                    raise TraceError(
                        f"{name} ({type(m).__name__}) is in {'train' if m.training else 'eval'} mode while "
                        f"{type(self._model).__name__} is in {'train' if mode else 'eval'} mode: its forward reads "
                        "self.training and was traced into the graph of each mode, so its own mode cannot be "
                        f"honoured. Put it in the model's mode, or pass leaf_modules=[{name!r}] to fxdrop.wrap so "
                        "that it reads its own flag when called"
                    )

    def _call(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """``fn(*args, **kwargs)`` with the model's own forward and pre-forward hooks run around it, as
        ``model(*args, **kwargs)`` runs them (the graph stands in for ``model.forward``)."""
        model = self._model
        if not (model._forward_pre_hooks or model._forward_hooks):
            return fn(*args, **kwargs)
        for hook_id, hook in list(model._forward_pre_hooks.items()):
            if hook_id in model._forward_pre_hooks_with_kwargs:
                res = hook(model, args, kwargs)
                if res is not None:
                    if not (isinstance(res, tuple) and len(res) == 2):
                        raise RuntimeError(
                            "forward pre-hook must return None or a tuple of (new_args, new_kwargs), "
                            f"but got {res}."
                        )
                    args, kwargs = res
            else:
                res = hook(model, args)
                if res is not None:
                    args = res if isinstance(res, tuple) else (res,)
        result = fn(*args, **kwargs)
        for hook_id, hook in list(model._forward_hooks.items()):
            if hook_id in model._forward_hooks_with_kwargs:
                res = hook(model, args, kwargs, result)
            else:
                res = hook(model, args, result)
            if res is not None:
                result = res
        return result

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if self._baked:
            self._check_baked(args, kwargs)
            # equal to the traced default: the graph's own default stands in (its placeholders are renamed)
            kwargs = {k: v for k, v in kwargs.items() if k not in self._baked}
        if self._units is None:
            self._initialize(tuple(args), dict(kwargs))
        self._check_runtime()
        training = self._model.training
        watched = training and self.policy is not None and torch.is_grad_enabled()
        if watched:
            self.policy.observe_inputs(self.steps + 1, args, kwargs)  # held batches for drop checks
        out = self._call(self._callable("train" if training else "eval"), args, kwargs)
        if watched:
            self.policy.observe_output(self.steps + 1, out)  # labels read off the loss's gradient
        return out

    def extra_repr(self) -> str:
        if self._units is None:
            return "units=unknown until the first forward"
        return f"units={len(self._units)}, dropped={len(self.dropped)}"


_READS_TRAINING: dict[type, bool] = {}


def _reads_training(cls: type) -> bool:
    """Whether the code of ``cls`` (or a base class below ``nn.Module``) mentions ``training``; a class
    whose source cannot be read counts as reading it."""
    if cls not in _READS_TRAINING:
        found = False
        for c in cls.__mro__:
            if c in (nn.Module, object) or c.__module__.startswith("torch.nn"):
                continue
            try:
                src = inspect.getsource(c)
            except (OSError, TypeError):
                found = True
                break
            if "training" in src:
                found = True
                break
        _READS_TRAINING[cls] = found
    return _READS_TRAINING[cls]


def _plain(x: Any) -> Any:
    """``x`` with fx's ``immutable_dict``/``immutable_list`` (what ``fx.Interpreter`` returns) and
    ``OrderedDict`` as plain ``dict``/``list``, named tuples kept: structures compare as the model's."""
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_plain(v) for v in x]
    if isinstance(x, tuple):
        items = [_plain(v) for v in x]
        return type(x)(*items) if hasattr(x, "_fields") else tuple(items)
    return x


def _none_defaults(model: nn.Module, n_positional: int, given: set[str]) -> dict[str, Any]:
    """The optional ``forward`` arguments that default to ``None`` or to a flag (``True``/``False``) and
    that the example inputs leave out (Hiera's ``mask``, timm's ``attn_mask`` and ``is_causal``): they
    are traced at their default (torch.fx guards ``None`` at run time), so code such as ``if mask is not
    None or is_causal`` is not traced with a proxy in place of the value. Pass ``concrete_args=`` to
    choose otherwise."""
    try:
        params = list(inspect.signature(model.forward).parameters.values())
    except (TypeError, ValueError):  # pragma: no cover - builtin or odd forward
        return {}
    out = {}
    for i, p in enumerate(params):
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) or not (p.default is None or isinstance(p.default, bool)):
            continue
        if (i < n_positional and p.kind != p.KEYWORD_ONLY) or p.name in given:
            continue
        out[p.name] = p.default
    return out


def _param_order(names: dict[int, str]) -> Callable[[str], int]:
    order = {n: i for i, n in enumerate(names.values())}
    return order.__getitem__


def wrap(
    model: nn.Module,
    example_inputs: Sequence[Any] | None = None,
    *,
    example_kwargs: dict[str, Any] | None = None,
    leaf_modules: Iterable[type | str] = (),
    autowrap_functions: Sequence[Callable[..., Any]] = (),
    concrete_args: dict[str, Any] | None = None,
    compile: bool | dict[str, Any] = False,
    policy: Any = "default",
    verify: bool = True,
    level: int | str = 0,
    projections: bool = False,
) -> DropNet:
    """Trace ``model`` into a droppable graph and return a :class:`DropNet` sharing its parameters.

    ``example_inputs`` (a tuple of positional inputs) lets fxdrop find units and FLOPs now; without it
    they are found at the first forward call. ``leaf_modules`` (types or qualified names) are kept
    opaque; submodules that cannot be traced are made leaves automatically. ``compile=True`` (or a dict
    of ``torch.compile`` options) runs every graph through ``torch.compile``, once per graph.
    ``policy`` decides the drops while ``net.step()`` (or :meth:`DropNet.attach`) is called: by default a
    :class:`fxdrop.LearnAndDrop` with its defaults; ``None`` (or :class:`fxdrop.NoDrop`) for none, when
    you drop and restore by hand. ``verify`` checks that the traced graph reproduces the model's eval output on the example inputs.
    ``level`` picks how coarse units are where they nest (:func:`fxdrop.units.find_units`): 0 the
    innermost (a block; a transformer layer's attention and MLP), 1 one up (a whole transformer layer,
    a ResNet stage that keeps its shape), ``"outer"`` the largest. ``projections=True`` also makes the
    residual branch of a downsampling block a unit: dropping it keeps the block's projection shortcut
    (``layer2.0`` of a ResNet becomes ``relu(downsample(x))``), so more of the network can go.

    >>> import torch, torchvision, fxdrop
    >>> net = fxdrop.wrap(torchvision.models.resnet18(), example_inputs=(torch.randn(1, 3, 64, 64),))
    >>> [u.name for u in net.units]
    ['layer1.0', 'layer1.1', 'layer2.1', 'layer3.1', 'layer4.1']
    """
    return DropNet(
        model,
        example_inputs,
        example_kwargs=example_kwargs,
        leaf_modules=leaf_modules,
        autowrap_functions=autowrap_functions,
        concrete_args=concrete_args,
        compile=compile,
        policy=policy,
        verify=verify,
        level=level,
        projections=projections,
    )


def apply_plan(model: nn.Module, plan: dict[str, Any], example_inputs: Sequence[Any], **wrap_kwargs: Any) -> fx.GraphModule:
    """Rebuild the slim inference model from the original ``model`` and a plan saved by
    :meth:`DropNet.plan` (load the trained ``state_dict`` into ``model`` first)."""
    if not isinstance(plan, dict) or "dropped" not in plan:
        raise DropStateError("a plan is the dict returned by DropNet.plan()")
    net = wrap(model, example_inputs, **wrap_kwargs)
    if plan.get("units") is not None and plan["units"] != [u.name for u in net.units]:
        raise DropStateError(f"this plan was made for a {plan.get('model')} with other units than this {type(model).__name__}")
    net.drop(*plan["dropped"])
    for name, alpha in (plan.get("fading") or {}).items():
        net.fade(name, float(alpha))
    return net.export()
