"""The graph-rewrite pass: bypass units, remove their nodes, keep in-place ops safe.

:func:`bypass` is a pure function: it takes a ``GraphModule`` and the sites of the units to drop and
returns a :class:`RewriteResult` holding a *new* ``GraphModule`` that shares every module, parameter and
buffer with the input (no copies, memory stays flat). Restoring units is a rewrite of the full graph
with fewer sites, so a restored unit is re-inserted exactly as traced.

In-place safety: once a unit is bypassed, the unit's former consumers read the unit's *input*. If one
of them mutates its input in place (torchvision's ``ReLU(inplace=True)`` after ``out += identity``),
it would now mutate a tensor that autograd saved or another node still reads, so it is turned into its
out-of-place twin (``torch.relu``, ``Tensor.add``, ...) or, failing a known twin, fed a clone.
"""

from __future__ import annotations

import copy
import operator
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from .units import UnitSite, is_inplace

__all__ = ["RewriteResult", "bypass", "blend", "make_out_of_place", "insert_stochastic_depth", "scale_branches"]


@dataclass
class RewriteResult:
    """What :func:`bypass` changed: the new module, the removed nodes and the nodes it made
    out-of-place (or fed a clone) for in-place safety."""

    graph_module: fx.GraphModule
    modified: bool
    removed: list[str] = field(default_factory=list)
    out_of_place: list[str] = field(default_factory=list)
    # bypassed exit -> the node that stands for it now (a later pass on the result resolves names with it)
    replaced: dict[str, str] = field(default_factory=dict)
    # nodes that read a bypassed exit and read its entry now (where a bypass can leave a redundant op)
    rewired: list[str] = field(default_factory=list)


def _functional_twin(m: nn.Module) -> tuple[Callable, tuple] | None:
    t = type(m)
    table: dict[type, Callable[[nn.Module], tuple[Callable, tuple]]] = {
        nn.ReLU: lambda m: (torch.relu, ()),
        nn.ReLU6: lambda m: (F.hardtanh, (0.0, 6.0)),
        nn.Hardtanh: lambda m: (F.hardtanh, (m.min_val, m.max_val)),
        nn.LeakyReLU: lambda m: (F.leaky_relu, (m.negative_slope,)),
        nn.ELU: lambda m: (F.elu, (m.alpha,)),
        nn.CELU: lambda m: (F.celu, (m.alpha,)),
        nn.SELU: lambda m: (F.selu, ()),
        nn.SiLU: lambda m: (F.silu, ()),
        nn.Mish: lambda m: (F.mish, ()),
        nn.Hardswish: lambda m: (F.hardswish, ()),
        nn.Hardsigmoid: lambda m: (F.hardsigmoid, ()),
        nn.Threshold: lambda m: (F.threshold, (m.threshold, m.value)),
    }
    return table[t](m) if t in table else None


_INPLACE_OPERATORS = {
    operator.iadd: operator.add,
    operator.isub: operator.sub,
    operator.imul: operator.mul,
    operator.itruediv: operator.truediv,
}


def make_out_of_place(node: fx.Node, modules: dict[str, nn.Module]) -> str:
    """Rewrite an in-place ``node`` so it no longer mutates its first argument; the node keeps its
    name and users. Returns how (``"functional"``, ``"method"``, ``"kwarg"`` or ``"clone"``)."""
    if node.op == "call_module":
        twin = _functional_twin(modules[node.target])
        if twin is not None and not node.kwargs and len(node.args) == 1:
            fn, extra = twin
            node.op, node.target, node.args = "call_function", fn, (node.args[0], *extra)
            return "functional"
    elif node.op == "call_method" and hasattr(torch.Tensor, node.target[:-1]):
        node.target = node.target[:-1]
        return "method"
    elif node.op == "call_function":
        if node.kwargs.get("inplace", False) is True:
            node.kwargs = {**node.kwargs, "inplace": False}
            return "kwarg"
        if node.target in _INPLACE_OPERATORS:
            node.target = _INPLACE_OPERATORS[node.target]
            return "functional"
        name = getattr(node.target, "__name__", "")
        for ns in (torch, F):
            twin = getattr(ns, name[:-1], None)
            if getattr(ns, name, None) is node.target and callable(twin):
                node.target = twin
                return "functional"
    # unknown in-place op: let it mutate a private copy
    src = node.args[0]
    with node.graph.inserting_before(node):
        clone = node.graph.call_method("clone", (src,))
    clone.meta = {"tensor_meta": src.meta.get("tensor_meta")}
    node.args = (clone, *node.args[1:])
    return "clone"


def bypass(gm: fx.GraphModule, sites: Sequence[UnitSite]) -> RewriteResult:
    """Return a new ``GraphModule`` equal to ``gm`` with every site bypassed.

    For each site, the users of ``site.exit`` are redirected to ``site.entry`` and ``site.nodes`` are
    erased (an internal error is raised if one still has users: that would be a wrong graph). The
    result shares ``gm``'s submodules and parameters; ``gm`` itself is left untouched. Ends with
    ``graph.lint()`` and a recompile.
    """
    if not sites:
        return RewriteResult(gm, False)
    graph: fx.Graph = copy.deepcopy(gm.graph)
    modules = dict(gm.named_modules())
    nodes = {n.name: n for n in graph.nodes}
    order = {n: i for i, n in enumerate(graph.nodes)}
    replaced: dict[str, str] = {}  # erased exit -> the entry that now stands for it (chained drops)
    result = RewriteResult(gm, True)

    def resolve(name: str) -> fx.Node:
        while name in replaced:
            name = replaced[name]
        return nodes[name]

    for site in sorted(sites, key=lambda s: order[nodes[s.exit]]):
        entry, exit_node = resolve(site.entry), nodes[site.exit]
        former_users = sorted(exit_node.users, key=order.__getitem__)
        result.rewired += [u.name for u in former_users if u.op != "output"]
        exit_node.replace_all_uses_with(entry)
        replaced[site.exit] = entry.name
        for name in reversed(site.nodes):
            node = nodes[name]
            if node.users:
                raise RuntimeError(
                    f"fxdrop internal error: node {node.format_node()} of a bypassed unit still has users "
                    f"{[u.name for u in node.users]}; refusing to build a wrong graph"
                )
            graph.erase_node(node)
            result.removed.append(name)
        _protect_entry(entry, former_users, order, modules, result)
    graph.lint()
    result.replaced = dict(replaced)
    result.graph_module = fx.GraphModule(gm, graph, class_name=type(gm).__name__)
    return result


def blend(
    gm: fx.GraphModule,
    sites: Sequence[UnitSite],
    alphas: Sequence[float],
    replaced: dict[str, str] | None = None,
) -> RewriteResult:
    """Return a new ``GraphModule`` where each unit's output is ``entry + alpha * (exit - entry)``
    (``torch.lerp``): ``alpha = 1`` is the unit, ``alpha = 0`` its bypass. For a residual unit with an
    identity skip this scales the branch by ``alpha``; for a shape-preserving layer it mixes the layer
    with the identity. Fading a unit out over a few steps lets the rest of the network take over its
    work before it is bypassed. ``replaced`` (from :func:`bypass`) resolves entries that a bypass of an
    earlier unit renamed. ``gm`` is left untouched; ends with ``lint()``.
    """
    if len(sites) != len(alphas):
        raise ValueError(f"blend: {len(sites)} sites but {len(alphas)} weights")
    if not sites:
        return RewriteResult(gm, False)
    graph: fx.Graph = copy.deepcopy(gm.graph)
    modules = dict(gm.named_modules())
    nodes = {n.name: n for n in graph.nodes}
    replaced = replaced or {}
    result = RewriteResult(gm, True, replaced=dict(replaced))
    for site, alpha in zip(sites, alphas):
        name = site.entry
        while name in replaced:
            name = replaced[name]
        entry, exit_node = nodes[name], nodes[site.exit]
        inside = [nodes[n] for n in site.nodes]
        if any(is_inplace(n, modules) and n.args and n.args[0] is entry for n in inside):
            # the unit overwrites its input in place: the blend reads a copy taken before it runs
            with graph.inserting_after(entry):
                entry = graph.call_method("clone", (entry,))
            result.out_of_place.append(entry.name)
        users = list(exit_node.users)
        with graph.inserting_after(exit_node):
            mixed = graph.call_function(torch.lerp, (entry, exit_node, float(alpha)))
        mixed.meta = {"tensor_meta": exit_node.meta.get("tensor_meta")}
        for u in users:
            u.replace_input_with(exit_node, mixed)
        result.out_of_place.append(mixed.name)
    graph.lint()
    result.graph_module = fx.GraphModule(gm, graph, class_name=type(gm).__name__)
    return result


def _protect_entry(
    entry: fx.Node,
    former_users: list[fx.Node],
    order: dict[fx.Node, int],
    modules: dict[str, nn.Module],
    result: RewriteResult,
) -> None:
    """Make the unit's former consumers that mutate ``entry`` in place work on their own tensor; a later
    consumer that read the mutated value reads the op's result instead."""
    for i, user in enumerate(former_users):
        if user.op == "output" or not is_inplace(user, modules) or not user.args or user.args[0] is not entry:
            continue
        make_out_of_place(user, modules)
        result.out_of_place.append(user.name)
        for later in former_users[i + 1 :]:
            if order.get(later, -1) > order[user]:
                later.replace_input_with(entry, user)


def insert_stochastic_depth(
    gm: fx.GraphModule, sites: Sequence[UnitSite], probs: Sequence[float], mode: str = "row"
) -> RewriteResult:
    """Return a new ``GraphModule`` where each residual site's branch goes through
    ``torchvision.ops.stochastic_depth(branch, p, mode, training=True)`` before its add.

    This is the stochastic-depth baseline (Huang et al. 2016, torchvision's semantics): the branch is
    still computed, so no forward FLOPs are saved. Use it on the *train* graph only.
    """
    from torchvision.ops import stochastic_depth

    if len(sites) != len(probs):
        raise ValueError(f"insert_stochastic_depth: {len(sites)} sites but {len(probs)} probabilities")
    return _on_branches(gm, sites, [(stochastic_depth, (float(p), mode, True)) for p in probs])


def scale_branches(gm: fx.GraphModule, sites: Sequence[UnitSite], factors: Sequence[float]) -> RewriteResult:
    """Return a new ``GraphModule`` where each residual site's branch is multiplied by its factor
    before the add (the inverted scaling of layer-dropping schemes: a branch kept with probability
    ``p`` is scaled by ``1/p`` so the expected output matches the full network's)."""
    if len(sites) != len(factors):
        raise ValueError(f"scale_branches: {len(sites)} sites but {len(factors)} factors")
    return _on_branches(gm, sites, [(operator.mul, (float(f),)) for f in factors])


def _on_branches(gm: fx.GraphModule, sites: Sequence[UnitSite], calls: Sequence[tuple[Callable, tuple]]) -> RewriteResult:
    """Insert ``fn(branch, *extra)`` between each residual site's branch and its add."""
    if not sites:
        return RewriteResult(gm, False)
    graph: fx.Graph = copy.deepcopy(gm.graph)
    nodes = {n.name: n for n in graph.nodes}
    result = RewriteResult(gm, True)
    for site, (fn, extra) in zip(sites, calls):
        add = nodes[site.exit]
        inside = set(site.nodes)
        branch = next((a for a in add.args[:2] if isinstance(a, fx.Node) and a.name in inside), None)
        if branch is None:
            raise ValueError(f"unit site ending at {add.format_node()} is not a residual add; only residual units have a branch")
        with graph.inserting_before(add):
            new = graph.call_function(fn, (branch, *extra))
        new.meta = {"tensor_meta": branch.meta.get("tensor_meta")}
        add.replace_input_with(branch, new)
        result.out_of_place.append(new.name)
    graph.lint()
    result.graph_module = fx.GraphModule(gm, graph, class_name=type(gm).__name__)
    return result
