"""Faithfulness: the wrapped net acts as the model it wraps, or says by name why it cannot.

At wrap time the traced graph is checked against the model's own output on the example inputs, optional
``forward`` arguments left out of the example inputs are traced at their default ("baked"), and modules
kept whole because they have hooks are named. At every call (:meth:`DropNet.forward`) a call that passes
another value for a baked argument is refused, so is a hook added after wrap to a module the graph traced
through, or a traced-through module that reads ``self.training`` left in another mode than the model; and
the model's own forward hooks run around the graph as ``model(...)`` runs them.
"""

from __future__ import annotations

import inspect
import warnings
from typing import Any, Callable

import torch
from torch import nn
from torch.utils._pytree import tree_flatten
from torch.utils.hooks import RemovableHandle

from .errors import TraceError
from .trace import TraceResult, has_hooks

__all__: list[str] = []


class _Faithfulness:
    """Mixin of :class:`fxdrop.DropNet`: the checks that keep the graph faithful to the model.

    Relies on ``_model`` (the user's module) and ``_traced`` (the :class:`fxdrop.trace.TraceResult`); keeps
    ``_baked`` (argument name -> (position, traced value)), ``_hook_id`` (the last hook id seen) and
    ``_mode_readers`` (traced-through modules reading ``training``), set up by ``DropNet.__init__``.
    """

    _model: nn.Module
    _traced: TraceResult
    _baked: dict[str, tuple[int, Any]]
    _hook_id: int
    _mode_readers: list[tuple[str, nn.Module]]

    # ------------------------------------------------------------------ at wrap time
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

    # ------------------------------------------------------------------ at every call
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
