"""Tracing arbitrary models into torch.fx graphs, falling back to leaf modules where needed.

``trace(model)`` returns a :class:`TraceResult` with one graph per training mode (a model such as
GoogLeNet traces differently in train and eval mode; most models share one graph) and the list of
submodules that had to be made leaves. A submodule whose ``forward`` cannot be traced symbolically
(data-dependent ``if``, ``len()`` of a proxy, iteration over a proxy, ...) is made a leaf and the trace
is retried, so one awkward block does not stop the rest of the model from being droppable.

Kept whole as well, so that ``Module.__call__`` runs them: normalisation layers with running statistics
(every BatchNorm subclass, InstanceNorm, any module holding a ``running_var``), whose forward reads
``self.training``, ``momentum`` and ``num_batches_tracked`` at call time, and submodules that have hooks
when traced (so their hooks fire). :class:`TraceResult` lists the submodules traced through.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import torch
import torch.fx as fx
from torch import nn

from .errors import TraceError

__all__ = ["FxdropTracer", "TraceResult", "trace", "DEFAULT_LEAF_TYPES", "ModelSnapshot", "has_hooks", "HOOK_DICTS",
           "keeps_running_stats"]

log = logging.getLogger(__name__)


_STATEFUL_NORMS: tuple[type, ...] = (nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm)


def _default_leaf_types() -> tuple[type, ...]:
    # Modules whose forward reads their own state (``self.training``, ``momentum``,
    # ``num_batches_tracked``, ``track_running_stats``) stay leaves, so ``Module.__call__`` runs them and
    # that state is read at call time, not frozen into the graph at trace time (fx-notes item 14):
    # every BatchNorm subclass (timm's ``BatchNormAct2d`` included) and every InstanceNorm.
    types: list[type] = list(_STATEFUL_NORMS)
    try:  # torchvision's StochasticDepth bakes ``self.training`` into the graph when traced through
        from torchvision.ops import StochasticDepth

        types.append(StochasticDepth)
    except Exception:  # pragma: no cover - torchvision is a dependency, but keep trace usable alone
        pass
    return tuple(types)


DEFAULT_LEAF_TYPES: tuple[type, ...] = _default_leaf_types()


def keeps_running_stats(m: nn.Module) -> bool:
    """Whether ``m`` is a normalisation layer with running statistics of its own (any BatchNorm or
    InstanceNorm, or a module holding a ``running_var``/``running_mean`` buffer itself, such as timm's
    EvoNorm or InplaceAbn): its forward reads ``self.training`` and updates buffers, so it is kept whole."""
    return isinstance(m, _STATEFUL_NORMS) or "running_var" in m._buffers or "running_mean" in m._buffers


# the per-module hook dicts ``Module.__call__`` runs: a module traced through never runs them
HOOK_DICTS = ("_forward_pre_hooks", "_forward_hooks", "_backward_pre_hooks", "_backward_hooks")


def has_hooks(m: nn.Module) -> bool:
    """Whether ``m`` has forward, pre-forward or backward hooks of its own (``Module.__call__`` runs them)."""
    return any(getattr(m, d, None) for d in HOOK_DICTS)


class ModelSnapshot:
    """A bitwise copy of every buffer (and, unless ``parameters=False``, every parameter) of a model and
    of every module's training flag; :meth:`restore` puts back exactly what was there.

    Buffers are always copied back: version counters are no guide for them (a native ``batch_norm``
    updates running statistics without bumping them). A parameter is copied back only if its version
    counter moved, which any in-place change to it does.
    """

    def __init__(self, model: nn.Module, parameters: bool = True):
        self.modes = [(m, m.training) for m in model.modules()]
        # which tensor object each module holds, in case a forward rebinds a buffer instead of updating it
        self.slots = [(m, d, k, v) for m in model.modules() for d in (m._parameters, m._buffers) for k, v in d.items()]
        buffers = {id(t): t for t in model.buffers()}
        params = {id(t): t for t in model.parameters() if id(t) not in buffers} if parameters else {}
        with torch.no_grad():
            self.buffers = [(t, t.detach().clone()) for t in buffers.values()]
            self.params = [(t, t._version, t.detach().clone()) for t in params.values()]

    def restore(self) -> None:
        """Put every saved tensor and training flag back."""
        for m, d, k, v in self.slots:
            if d.get(k) is not v:
                d[k] = v
        with torch.no_grad():
            for t, saved in self.buffers:
                if t.shape != saved.shape:  # a module replaced its buffer's data: put the old data back
                    t.data = saved
                else:
                    t.copy_(saved)
            for t, version, saved in self.params:
                if t.shape != saved.shape:
                    t.data = saved
                elif t._version != version:
                    t.copy_(saved)
        for m, mode in self.modes:
            m.training = mode


class _Untraceable(Exception):
    """Raised inside the tracer to carry the innermost failing submodule path up to ``trace``."""

    def __init__(self, path: str, module: nn.Module, cause: BaseException):
        super().__init__(path)
        self.path, self.module, self.cause = path, module, cause


class FxdropTracer(fx.Tracer):
    """A ``torch.fx.Tracer`` with user-given and automatically found leaf modules.

    ``leaf_modules`` holds module types or qualified names to keep opaque. Failures inside a non-leaf
    submodule are reported with that submodule's path so :func:`trace` can make it a leaf and retry.
    """

    def __init__(
        self,
        leaf_modules: Iterable[type | str] = (),
        autowrap_functions: Sequence[Callable[..., Any]] = (),
    ):
        super().__init__(autowrap_functions=tuple(autowrap_functions))
        self.leaf_types = tuple(t for t in leaf_modules if isinstance(t, type)) + DEFAULT_LEAF_TYPES
        self.leaf_names = {n for n in leaf_modules if isinstance(n, str)}
        self.traced_through: dict[str, nn.Module] = {}  # non-leaf submodules whose forward was inlined
        self.hooked: dict[str, nn.Module] = {}  # submodules kept whole only because they have hooks

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        if module_qualified_name in self.leaf_names or isinstance(m, self.leaf_types) or keeps_running_stats(m):
            return True
        leaf = super().is_leaf_module(m, module_qualified_name)
        if not leaf and module_qualified_name and has_hooks(m):
            self.hooked.setdefault(module_qualified_name, m)
            return True  # kept whole so that its hooks fire when the graph calls it
        return leaf

    def call_module(self, m, forward, args, kwargs):
        path = self.path_of_module(m)
        if not self.is_leaf_module(m, path):
            self.traced_through.setdefault(path, m)
        try:
            return super().call_module(m, forward, args, kwargs)
        except _Untraceable:
            raise
        except Exception as e:
            if self.is_leaf_module(m, path):
                raise
            raise _Untraceable(path, m, e) from e


@dataclass
class TraceResult:
    """Graphs of one model: ``graphs["train"]`` and ``graphs["eval"]`` (the same object when equal)."""

    graphs: dict[str, fx.Graph]
    auto_leaves: list[str] = field(default_factory=list)
    reasons: dict[str, str] = field(default_factory=dict)
    # submodules (qualified name -> module) whose forward was inlined into a graph: their hooks and
    # any state their forward reads are not seen at run time
    traced_through: dict[str, nn.Module] = field(default_factory=dict)
    # submodules kept whole because they had hooks when traced
    hooked: list[str] = field(default_factory=list)

    @property
    def same_graph(self) -> bool:
        return self.graphs["train"] is self.graphs["eval"]


def _trace_once(
    model: nn.Module,
    leaf_modules: Iterable[type | str],
    autowrap_functions: Sequence[Callable[..., Any]],
    concrete_args: dict[str, Any] | None,
    auto: list[str],
    reasons: dict[str, str],
    fallback: bool = True,
    tracers: list[FxdropTracer] | None = None,
) -> fx.Graph:
    max_retries = sum(1 for _ in model.modules())
    for _ in range(max_retries + 1):
        tracer = FxdropTracer(list(leaf_modules) + auto, autowrap_functions)
        try:
            graph = tracer.trace(model, concrete_args=concrete_args)
            if tracers is not None:
                tracers.append(tracer)
            return graph
        except _Untraceable as e:
            if e.path in auto:  # pragma: no cover - a leaf never raises _Untraceable
                raise
            log.info("fxdrop: %s (%s) is untraceable, made a leaf: %s", e.path, type(e.module).__name__, e.cause)
            auto.append(e.path)
            reasons[e.path] = f"{type(e.cause).__name__}: {e.cause}"
        except Exception as e:
            if not fallback:
                raise
            child = largest_traceable_child(model, leaf_modules, autowrap_functions)
            way = (
                f"The largest submodule that traces is {child!r} ({type(model.get_submodule(child)).__name__}): "
                f"wrap it in place, without editing the model, with `model.{_attr_path(child)} = "
                f"fxdrop.wrap(model.get_submodule({child!r}))` (its units are found at the first forward), "
                "then train `model` as before; or"
                if child
                else "No submodule traces either;"
            )
            raise TraceError(
                f"cannot trace the forward of the root module {type(model).__name__} itself: "
                f"{type(e).__name__}: {e}. Only submodules can be made leaves automatically. {way} move the "
                "untraceable code into a submodule, or pass concrete_args=/autowrap_functions= to fxdrop.wrap"
            ) from e
    raise TraceError(f"gave up tracing {type(model).__name__} after {max_retries} leaf retries")  # pragma: no cover


def _attr_path(path: str) -> str:
    """``blocks.0.mlp`` -> ``blocks[0].mlp``: the Python expression that reaches a submodule."""
    return "".join(f"[{p}]" if p.isdigit() else f".{p}" for p in path.split(".")).lstrip(".")


def largest_traceable_child(
    model: nn.Module,
    leaf_modules: Iterable[type | str] = (),
    autowrap_functions: Sequence[Callable[..., Any]] = (),
    max_tries: int = 8,
) -> str | None:
    """The qualified name of the submodule holding the most parameters whose own ``forward`` traces
    (with the usual leaf fallback inside it), or ``None``; at most ``max_tries`` are tried, largest
    first. Containers without a ``forward`` (``ModuleList``, ``ModuleDict``) are skipped."""
    sizes = []
    for name, m in model.named_modules():
        if not name or type(m).forward is nn.Module.forward:
            continue
        sizes.append((sum(p.numel() for p in m.parameters()), name, m))
    sizes.sort(key=lambda t: (-t[0], t[1].count(".")))
    names = [n for n in leaf_modules if isinstance(n, str)]
    types = [t for t in leaf_modules if isinstance(t, type)]
    for _, name, m in sizes[:max_tries]:
        prefix = name + "."
        inner = types + [n[len(prefix):] for n in names if n.startswith(prefix)]
        snapshot = ModelSnapshot(m)
        try:
            _trace_once(m, inner, autowrap_functions, None, [], {}, fallback=False)
            return name
        except Exception:
            continue
        finally:
            snapshot.restore()
    return None


def trace(
    model: nn.Module,
    leaf_modules: Iterable[type | str] = (),
    autowrap_functions: Sequence[Callable[..., Any]] = (),
    concrete_args: dict[str, Any] | None = None,
) -> TraceResult:
    """Trace ``model`` in train and in eval mode; the model's modes, parameters and buffers are restored
    afterwards (bit for bit).

    Raises :class:`TraceError` if the root module's own ``forward`` cannot be traced.
    """
    leaf_modules = list(leaf_modules)
    auto: list[str] = []
    reasons: dict[str, str] = {}
    tracers: list[FxdropTracer] = []
    # tracing runs Python code of the model on real buffers (timm's BatchNormAct2d does
    # ``self.num_batches_tracked.add_(1)`` while traced in train mode): put them back afterwards;
    # parameters are proxies while tracing, never touched
    snapshot = ModelSnapshot(model, parameters=False)
    try:
        model.train()
        train_tracers: list[FxdropTracer] = []
        g_train = _trace_once(model, leaf_modules, autowrap_functions, concrete_args, auto, reasons,
                              tracers=train_tracers)
        model.eval()
        n_leaves = len(auto)
        g_eval = _trace_once(model, leaf_modules, autowrap_functions, concrete_args, auto, reasons, tracers=tracers)
        if len(auto) > n_leaves:
            # a leaf found in the eval trace must be a leaf in the train graph too (one module view)
            model.train()
            train_tracers = []
            g_train = _trace_once(model, leaf_modules, autowrap_functions, concrete_args, auto, reasons,
                                  tracers=train_tracers)
        tracers += train_tracers
    finally:
        snapshot.restore()
    if _graph_signature(g_train) == _graph_signature(g_eval):
        g_eval = g_train
    through = {k: v for t in tracers for k, v in t.traced_through.items() if k}  # the root is not a submodule
    hooked = sorted({k for t in tracers for k in t.hooked})
    return TraceResult({"train": g_train, "eval": g_eval}, auto, reasons, through, hooked)


def _graph_signature(g: fx.Graph) -> str:
    return str(g)
