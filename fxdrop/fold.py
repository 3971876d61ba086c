"""Fold the ops a bypass made redundant, so a dropped graph runs what the thin network would.

Bypassing a torchvision ``Bottleneck`` leaves the block's trailing ``relu`` applied to the block's input,
which a ReLU already made non-negative: ResNet-152 with every unit dropped ran 46 such ``relu`` calls
that ``ResNet(Bottleneck, [1, 1, 1, 1])`` does not have (fx-notes item 10). :func:`fold_redundant` removes
them, node for node, and only where the result is exact:

* **a clamp on a clamped value**: ``g(f(y))`` where ``f`` and ``g`` are each ``relu`` (``torch.relu``,
  ``F.relu``, ``nn.ReLU``, ``x.relu()``, in-place or not) or ``hardtanh`` (``nn.ReLU6``, ``nn.Hardtanh``,
  ``F.relu6``, ``F.hardtanh``) and ``f``'s output range lies inside ``g``'s: ``g`` returns its input bit
  for bit there (``-0.0`` and NaN included), and its gradient mask is zero only at the ends of its range,
  where ``f``'s mask is zero too (``f`` outputs an end only for an input at or beyond it), so gradients
  are exact too;
* **an identity**: an ``nn.Identity`` module call.

Only the nodes the caller names (``candidates``: the former users of a bypassed unit, which
:func:`fxdrop.rewrite.bypass` reports as ``rewired``) are considered, so nothing the user wrote is
changed (a folded ``nn.ReLU`` or ``nn.Identity`` call no longer runs that module's hooks; a bypass's
former users are mostly ``torch.relu`` calls already, :func:`fxdrop.rewrite.make_out_of_place`). A node
is kept if folding it could let an in-place op mutate a tensor another node reads: any in-place op on
the folded value, its input or a tensor sharing their storage, after the input was computed (fx-notes items 3 and 4). Nothing is removed by dead-code elimination: the folded node's users
read its input and the node itself is erased.
"""

from __future__ import annotations

import copy
import math
import operator
from dataclasses import dataclass, field
from typing import Iterable

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from .units import is_inplace

__all__ = ["FoldResult", "fold_redundant", "clamp_range"]

_INF = math.inf
_RELU_FUNCTIONS = {torch.relu, torch.relu_, F.relu, F.relu_}
_HARDTANH_FUNCTIONS = {F.hardtanh, F.hardtanh_}
# ops whose result is a new tensor (never a view or the input itself): a search for aliases stops there
_FRESH_FUNCTIONS = {
    torch.relu, F.relu, F.hardtanh, F.relu6, torch.add, torch.sub, torch.mul, torch.cat, torch.lerp,
    operator.add, operator.sub, operator.mul, operator.truediv, torch.conv2d, F.conv2d, F.linear,
    F.batch_norm, F.adaptive_avg_pool2d, F.max_pool2d, F.avg_pool2d,
}
_FRESH_MODULES = (
    nn.modules.conv._ConvNd, nn.Linear, nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.ReLU,
    nn.Hardtanh, nn.modules.pooling._MaxPoolNd, nn.modules.pooling._AvgPoolNd,
    nn.modules.pooling._AdaptiveAvgPoolNd, nn.modules.pooling._AdaptiveMaxPoolNd,
)


@dataclass
class FoldResult:
    """What :func:`fold_redundant` changed: the module, whether anything was folded, the folded nodes'
    names, and for each the node that stands for it now."""

    graph_module: fx.GraphModule
    modified: bool
    folded: list[str] = field(default_factory=list)
    replaced: dict[str, str] = field(default_factory=dict)


def clamp_range(node: fx.Node, modules: dict[str, nn.Module]) -> tuple[float, float] | None:
    """``(low, high)`` if ``node`` clamps its first argument into that closed range (a ReLU or a
    hardtanh in any spelling), else ``None``."""
    if node.op == "call_module":
        m = modules.get(str(node.target))
        if type(m) is nn.ReLU:
            return (0.0, _INF)
        if type(m) in (nn.Hardtanh, nn.ReLU6) and m is not None:
            return (float(m.min_val), float(m.max_val))
        return None
    if node.op == "call_method":
        return (0.0, _INF) if node.target in ("relu", "relu_") else None
    if node.op != "call_function":
        return None
    if node.target in _RELU_FUNCTIONS:
        return (0.0, _INF)
    if node.target is F.relu6:
        return (0.0, 6.0)
    if node.target in _HARDTANH_FUNCTIONS:
        names = ("input", "min_val", "max_val")
        bound = dict(zip(names, node.args))
        bound.update((k, v) for k, v in node.kwargs.items() if k in names)
        lo, hi = bound.get("min_val", -1.0), bound.get("max_val", 1.0)
        if isinstance(lo, (int, float)) and isinstance(hi, (int, float)):
            return (float(lo), float(hi))
    return None


def _operand(node: fx.Node) -> fx.Node | None:
    """The tensor a one-input op reads (its first positional argument), if that is all it reads."""
    if not node.args or not isinstance(node.args[0], fx.Node):
        return None
    others = [a for a in node.all_input_nodes if a is not node.args[0]]
    return None if others else node.args[0]


def _is_identity(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    return node.op == "call_module" and type(modules.get(str(node.target))) is nn.Identity and len(node.args) == 1


def _fresh(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    """Whether ``node``'s result certainly shares no storage with its inputs."""
    if is_inplace(node, modules):
        return False
    if node.op == "call_module":
        return isinstance(modules.get(str(node.target)), _FRESH_MODULES)
    return node.op == "call_function" and node.target in _FRESH_FUNCTIONS


def _mutation_free(x: fx.Node, node: fx.Node, modules: dict[str, nn.Module], order: dict[fx.Node, int]) -> bool:
    """Whether no in-place op mutates ``x``, ``node`` or a tensor sharing their storage after ``x`` is
    computed (``node`` itself excepted: it then only rewrites ``x``'s values with themselves)."""
    roots = [x, node]
    cur = x
    while is_inplace(cur, modules) and cur.args and isinstance(cur.args[0], fx.Node):
        cur = cur.args[0]  # an in-place op's result is its input: the storage began there
        roots.append(cur)
    seen, stack = set(roots), list(roots)
    while stack:
        a = stack.pop()
        for u in a.users:
            if u in seen or u.op == "output":
                continue
            if is_inplace(u, modules):
                if u.args and u.args[0] is a:
                    if u is not node and order[u] > order[x]:
                        return False
                    seen.add(u)
                    stack.append(u)
                continue  # it mutates another tensor; its result is that one
            if not _fresh(u, modules):  # possibly a view: follow it
                seen.add(u)
                stack.append(u)
    return True


def _redundant(node: fx.Node, modules: dict[str, nn.Module]) -> fx.Node | None:
    """The node ``node`` can be replaced with (its input) if it is an exact no-op on it, else ``None``."""
    x = _operand(node)
    if x is None:
        return None
    if _is_identity(node, modules):
        return x
    outer = clamp_range(node, modules)
    inner = clamp_range(x, modules) if outer is not None else None
    if outer is None or inner is None or _operand(x) is None:
        return None
    return x if outer[0] <= inner[0] and inner[1] <= outer[1] else None


def fold_redundant(
    gm: fx.GraphModule,
    candidates: Iterable[str] | None = None,
    *,
    protect: Iterable[str] = (),
    inplace: bool = False,
) -> FoldResult:
    """Remove the nodes of ``gm`` that are exact no-ops on their input (a ReLU of a ReLU's output, an
    ``nn.Identity``): their users read the input instead. ``candidates`` limits the search to those node
    names (all nodes if ``None``); names in ``protect`` and nodes marked as a unit's exit
    (``meta["fxdrop_unit"]``) are never folded. With ``inplace=False`` (the default) ``gm`` is left
    untouched and a new ``GraphModule`` sharing its modules is returned when something was folded; with
    ``inplace=True`` ``gm`` itself is edited. Ends with ``graph.lint()`` and a recompile if it changed.

    >>> result = fold_redundant(net.graph_module)   # doctest: +SKIP
    >>> result.folded                                # ['relu_3', 'relu_6', ...]
    """
    wanted = None if candidates is None else set(candidates)
    keep = set(protect)
    modules = dict(gm.named_modules())

    def plan(graph: fx.Graph) -> list[fx.Node]:
        return [n for n in graph.nodes if (wanted is None or n.name in wanted) and n.name not in keep
                and "fxdrop_unit" not in n.meta and n.op in ("call_module", "call_function", "call_method")]

    if not any(_redundant(n, modules) is not None for n in plan(gm.graph)):
        return FoldResult(gm, False)
    graph = gm.graph if inplace else copy.deepcopy(gm.graph)
    order = {n: i for i, n in enumerate(graph.nodes)}
    result = FoldResult(gm, False)
    for node in plan(graph):  # graph order: a fold exposes the next one (relu(relu(relu(x))))
        x = _redundant(node, modules)
        if x is None or not _mutation_free(x, node, modules, order):
            continue
        node.replace_all_uses_with(x)
        graph.erase_node(node)
        result.folded.append(node.name)
        result.replaced[node.name] = x.name
    if not result.folded:
        return result
    graph.lint()
    result.modified = True
    if inplace:
        gm.recompile()
        result.graph_module = gm
    else:
        result.graph_module = fx.GraphModule(gm, graph, class_name=type(gm).__name__)
    return result
