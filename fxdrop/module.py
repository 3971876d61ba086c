"""``DropNet``: the user's model as a droppable torch.fx graph, and :func:`wrap` which builds it.

``DropNet`` is put together by concern; this module holds what makes it (tracing the model, finding
the units, the one training flag) and runs it (``forward``). Each other concern is a mixin in its own
module:

- ``fxdrop.dropping``: the units and their states (drop, restore, fade, freeze), the graphs that
  follow from them (the rewrite) and the compile cache: what happens when a unit is dropped;
- ``fxdrop.stepping``: the training surface (``step``, ``attach``, ``on_drop``) and the policy;
- ``fxdrop.persistence``: the drop state (``drop_state_dict``, ``load_drop_state_dict``), ``export``
  and ``plan`` (:func:`apply_plan`, here beside :func:`wrap`, replays a plan);
- ``fxdrop.reports``: ``flops``, ``full_flops`` and ``summary``;
- ``fxdrop.faithful``: the checks that keep the net faithful to the model, at wrap time and per call.

Every attribute of a ``DropNet`` is set in ``DropNet.__init__``.
"""

from __future__ import annotations

import inspect
import logging
import warnings
from typing import Any, Callable, Iterable, Sequence

import torch
import torch.fx as fx
from torch import nn

from .dropping import MODES, _Dropping
from .errors import DropStateError, TraceError
from .faithful import _Faithfulness, _none_defaults
from .persistence import DROP_STATE_FORMAT, _Persistence  # noqa: F401  (re-exported)
from .reports import _Reports
from .shapes import propagate
from .stepping import _Stepping, resolve_policy
from .trace import ModelSnapshot, TraceResult, trace
from .units import Unit, find_units, level_depth

__all__ = ["DropNet", "wrap", "apply_plan"]

log = logging.getLogger(__name__)


def share_module_state(wrapper: nn.Module, model: nn.Module) -> None:
    """Make ``wrapper`` expose ``model``'s children, parameters and buffers through the very same dicts,
    so ``.to()``, ``.train()``, ``state_dict()`` keys and optimizers all see the same tensors."""
    for key in ("_modules", "_parameters", "_buffers", "_non_persistent_buffers_set"):
        wrapper.__dict__[key] = getattr(model, key)


class DropNet(_Persistence, _Reports, _Stepping, _Faithfulness, _Dropping, nn.Module):
    """A model whose droppable units can be bypassed and restored while it trains.

    It shares the user's modules, parameters and buffers (same objects, same ``state_dict`` keys), so
    an optimizer built on ``model.parameters()`` or ``net.parameters()`` drives both. Its forward runs
    the current torch.fx graph of the mode it is in (train or eval). Build it with :func:`wrap`.

    This class makes the net (``__init__``, ``_initialize``: trace, check, find the units) and runs it
    (``forward``); the rest comes from one mixin per concern: ``_Dropping`` (units, drop/restore/fade/
    freeze, the rewrite), ``_Stepping`` (``step``, ``attach``, ``on_drop``), ``_Persistence`` (drop
    state, ``export``, ``plan``), ``_Reports`` (FLOPs, ``summary``) and ``_Faithfulness`` (the checks).
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
        self._level = level  # the wrap options that decide which units exist
        self._projections = projections
        self.__dict__["_model"] = model  # from here on ``training`` is the model's own flag
        self._verify = verify
        # the compile cache (fxdrop.dropping): one compiled callable per graph state
        self._compile_options: dict[str, Any] | None = (
            dict(compile) if isinstance(compile, dict) else ({} if compile else None)
        )
        self._compiled: dict[tuple[Any, ...], Callable[..., Any]] = {}
        self._flops_cache: dict[str, tuple[fx.GraphModule, int]] = {}  # fxdrop.reports
        self.compile_count = 0
        # faithfulness (fxdrop.faithful): baked arguments, hooks, modes
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
        # the graph state (fxdrop.dropping): graphs per mode, units and their states
        self._user_requires_grad: dict[str, bool] = {}  # parameter -> the user's flag, while fxdrop froze it
        self._full: dict[str, fx.GraphModule] = {}
        self._current: dict[str, fx.GraphModule] = {}
        self._build_graph_modules()
        self._units: list[Unit] | None = None
        self._by_name: dict[str, Unit] = {}
        self._fades: dict[str, float] = {}  # unit -> weight of its output while it fades out (1 = whole unit)
        # the training surface (fxdrop.stepping)
        self._drop_listeners: list[Callable[..., None]] = []
        self.policy = resolve_policy(policy)
        self.steps = 0
        self._optimizer: torch.optim.Optimizer | None = None
        if example_inputs is not None or example_kwargs:
            if example_inputs is not None and not isinstance(example_inputs, (tuple, list)):
                raise TypeError(
                    "example_inputs must be a tuple of positional inputs, e.g. example_inputs=(x,); "
                    f"got {type(example_inputs).__name__}"
                )
            self._initialize(tuple(example_inputs or ()), dict(example_kwargs or {}))

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
    def auto_leaves(self) -> list[str]:
        """Submodules that could not be traced through and were made leaves automatically."""
        return list(self._traced.auto_leaves)

    @property
    def projections(self) -> bool:
        """Whether downsampling blocks' residual branches are units (``wrap(..., projections=True)``)."""
        return self._projections

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

    # ------------------------------------------------------------------ forward
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
