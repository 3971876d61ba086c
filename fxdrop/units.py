"""Droppable units: the parts of a traced graph that can be bypassed without breaking shapes.

Two kinds are found (docs/design.md has the reasoning):

* **residual**: ``add(skip, branch)`` (``+``, ``+=``, ``torch.add``, ``Tensor.add``/``add_``) whose output
  has the shape, dtype and memory format of both inputs and whose ``skip`` is an ancestor of
  ``branch``. The unit is the add plus every node the branch needs that the skip does not; those nodes
  must be private to it (no user outside the unit). Dropping it makes the add's users read ``skip``.
  A downsampling block, whose skip goes through its own ``downsample`` module, is not a unit.
  Nested residuals keep the innermost (a ResNet block, not a stage).
* **chain**: on the graph's trunk (not between a fork and its merge), a parameterised anchor (a conv, linear or other module owning
  parameters, normalisation layers excepted) with the single-user, single-input, shape-keeping nodes
  that follow it (BatchNorm, activation, dropout) up to the next anchor, whose output equals its
  input in shape, dtype and memory format (VGG's 256->256 conv+relu, the 4096->4096 classifier
  layer). A chain reading a graph input (the stem) or feeding the graph output directly (the
  classifier head) is never a unit.

Every unit must own at least one parameter that no node outside it uses.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from .shapes import FLOPS_KEY, same_tensor_meta

__all__ = ["Unit", "UnitSite", "find_units", "is_inplace"]

_ADD_FUNCTIONS = {operator.add, operator.iadd, torch.add}
_ADD_METHODS = {"add", "add_"}
_NORM_TYPES = (
    nn.modules.batchnorm._NormBase,
    nn.LayerNorm,
    nn.GroupNorm,
    nn.LocalResponseNorm,
)
_ANCHOR_FUNCTIONS = {F.conv1d, F.conv2d, F.conv3d, F.linear, torch.conv2d, torch.conv1d, torch.conv3d}


@dataclass(frozen=True)
class UnitSite:
    """Where a unit lives in one graph: dropping it redirects ``exit``'s users to ``entry`` and
    removes ``nodes`` (node names, in graph order, ``exit`` included)."""

    entry: str
    exit: str
    nodes: tuple[str, ...]


@dataclass(eq=False)
class Unit:
    """One droppable unit. ``params`` are the ``state_dict`` names of the parameters only it uses and
    ``n_params`` their number of weights (elements), the figure ``repr`` and ``summary()`` show;
    ``flops`` its forward FLOPs for the example input; ``scores`` the history the policy records (the
    same list is on ``node.meta["fxdrop_scores"]`` of the unit's exit node in the full graphs)."""

    name: str
    kind: str
    params: tuple[str, ...]
    flops: int
    module: str
    sites: dict[str, UnitSite] = field(repr=False)
    dropped: bool = False
    frozen: bool = False
    scores: list[dict[str, float]] = field(default_factory=list, repr=False)
    weights: int = field(default=0, repr=False)

    @property
    def n_params(self) -> int:
        """The number of weights (elements of the parameters in ``params``), as ``summary()`` counts."""
        return self.weights

    def __repr__(self) -> str:
        return (
            f"Unit(name={self.name!r}, kind={self.kind!r}, params={self.n_params}, "
            f"flops={self.flops}, dropped={self.dropped}, frozen={self.frozen})"
        )


def is_inplace(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    """Whether ``node`` mutates its first argument (module ``inplace=True``, ``x.add_()``, ``+=``,
    ``F.relu(..., inplace=True)``, ``torch.relu_``)."""
    if node.op == "call_module":
        return bool(getattr(modules.get(node.target), "inplace", False))
    if node.op == "call_method":
        return node.target.endswith("_") and not node.target.endswith("__")
    if node.op == "call_function":
        if node.kwargs.get("inplace", False) is True:
            return True
        name = getattr(node.target, "__name__", "")
        if node.target in (operator.iadd, operator.isub, operator.imul, operator.itruediv):
            return True
        return name.endswith("_") and not name.endswith("__") and getattr(node.target, "__module__", "") in (
            "torch",
            "torch.nn.functional",
            None,
        )
    return False


def _is_add(n: fx.Node) -> bool:
    if n.op == "call_function" and n.target in _ADD_FUNCTIONS:
        return True
    return n.op == "call_method" and n.target in _ADD_METHODS


def _ancestors(n: fx.Node) -> set[fx.Node]:
    seen: set[fx.Node] = set()
    stack = list(n.all_input_nodes)
    while stack:
        cur = stack.pop()
        if cur not in seen:
            seen.add(cur)
            stack.extend(cur.all_input_nodes)
    return seen


def _module_path(n: fx.Node) -> str:
    """The module a node belongs to, as a dotted path ('' for the root)."""
    if n.op == "call_module":
        return str(n.target)
    if n.op == "get_attr":
        return str(n.target).rpartition(".")[0]
    stack = n.meta.get("nn_module_stack") or {}
    if not stack:
        return ""
    return next(reversed(stack.keys())).split("@")[0]


def _common_prefix(paths: list[str]) -> str:
    parts = [p.split(".") if p else [] for p in paths]
    out: list[str] = []
    for comps in zip(*parts):
        if all(c == comps[0] for c in comps):
            out.append(comps[0])
        else:
            break
    return ".".join(out)


def _params_of(n: fx.Node, modules: dict[str, nn.Module], gm: fx.GraphModule) -> list[torch.nn.Parameter]:
    if n.op == "call_module":
        return list(modules[n.target].parameters())
    if n.op == "get_attr":
        obj: Any = gm
        for part in str(n.target).split("."):
            obj = getattr(obj, part)
        if isinstance(obj, nn.Parameter):
            return [obj]
        if isinstance(obj, nn.Module):
            return list(obj.parameters())
    return []


def _is_anchor(n: fx.Node, modules: dict[str, nn.Module]) -> bool:
    if n.op == "call_module":
        m = modules[n.target]
        return not isinstance(m, _NORM_TYPES) and any(True for _ in m.parameters())
    if n.op == "call_function" and n.target in _ANCHOR_FUNCTIONS:
        return any(a.op == "get_attr" for a in n.all_input_nodes)
    return False


@dataclass
class _Candidate:
    kind: str
    site: UnitSite
    module: str
    name_hint: str
    param_ids: set[int]
    flops: int


def _residual_candidates(gm: fx.GraphModule, modules: dict[str, nn.Module]) -> list[tuple[_Candidate, set[fx.Node]]]:
    found = []
    for n in gm.graph.nodes:
        if not _is_add(n):
            continue
        args = [a for a in n.args[:2] if isinstance(a, fx.Node)]
        if len(args) != 2 or args[0] is args[1]:
            continue
        a, b = args
        if not (same_tensor_meta(n, a) and same_tensor_meta(n, b)):
            continue
        anc_a, anc_b = _ancestors(a), _ancestors(b)
        if a in anc_b:
            skip, branch, anc_branch, anc_skip = a, b, anc_b, anc_a
        elif b in anc_a:
            skip, branch, anc_branch, anc_skip = b, a, anc_a, anc_b
        else:
            continue
        region = (anc_branch | {branch}) - (anc_skip | {skip})
        if not _private(region, n, modules):
            continue
        nodes = region | {n}
        found.append((_Candidate("residual", _site(skip, n, nodes), _module_path(n), "", set(), 0), nodes))
    # nested residuals: keep the innermost (a block rather than the stage around it)
    exits = {c.site.exit for c, _ in found}
    return [(c, nodes) for c, nodes in found if not any(e in {x.name for x in nodes} - {c.site.exit} for e in exits)]


def _private(region: set[fx.Node], exit_node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    if not any(r.op in ("call_module", "call_function", "call_method") for r in region):
        return False
    for r in region:
        if r.op in ("placeholder", "output"):
            return False
        if r is not exit_node and any(u not in region and u is not exit_node for u in r.users):
            return False
        # an in-place op on a tensor from outside the unit would vanish with it: not droppable
        if is_inplace(r, modules) and r.args and isinstance(r.args[0], fx.Node) and r.args[0] not in region:
            return False
    return True


def _site(entry: fx.Node, exit_node: fx.Node, nodes: set[fx.Node]) -> UnitSite:
    order = {n: i for i, n in enumerate(exit_node.graph.nodes)}
    return UnitSite(entry.name, exit_node.name, tuple(n.name for n in sorted(nodes, key=order.__getitem__)))


def _trunk_cuts(graph: fx.Graph) -> tuple[dict[fx.Node, fx.Node | None], dict[fx.Node, fx.Node | None]]:
    """For each node, the single value live just before / just after it in graph order, or ``None``
    when several are (the node then sits between a fork and its merge, e.g. in a projection block).
    Constants (``get_attr``) do not count as live values."""
    nodes = list(graph.nodes)
    index = {n: i for i, n in enumerate(nodes)}
    last_use = {n: max((index[u] for u in n.users), default=-1) for n in nodes}
    expire: dict[int, list[fx.Node]] = {}
    live: set[fx.Node] = set()
    before: dict[fx.Node, fx.Node | None] = {}
    after: dict[fx.Node, fx.Node | None] = {}
    for i, n in enumerate(nodes):
        before[n] = next(iter(live)) if len(live) == 1 else None
        if n.op != "get_attr" and last_use[n] > i:
            live.add(n)
            expire.setdefault(last_use[n], []).append(n)
        for done in expire.pop(i, ()):
            live.discard(done)
        after[n] = next(iter(live)) if len(live) == 1 else None
    return before, after


def _chain_candidates(
    gm: fx.GraphModule, modules: dict[str, nn.Module], covered: set[fx.Node]
) -> list[tuple[_Candidate, set[fx.Node]]]:
    found = []
    before, after = _trunk_cuts(gm.graph)
    for h in gm.graph.nodes:
        if h in covered or not _is_anchor(h, modules):
            continue
        data_in = [a for a in h.all_input_nodes if a.op != "get_attr"]
        if len(data_in) != 1:
            continue
        entry = data_in[0]
        seq = [h]
        cur = h
        while len(cur.users) == 1:
            nxt = next(iter(cur.users))
            if nxt in covered or nxt.op == "output" or _is_anchor(nxt, modules):
                break
            if [a for a in nxt.all_input_nodes if a.op != "get_attr"] != [cur] or not same_tensor_meta(nxt, h):
                break
            seq.append(nxt)
            cur = nxt
        exit_node = seq[-1]
        if not same_tensor_meta(entry, exit_node):
            continue
        # only on the trunk: every path from the input to the output runs through the chain, so a
        # layer inside a downsampling block or another multi-branch block is never a chain unit
        if before[h] is not entry or after[exit_node] is not exit_node:
            continue
        if any(u.op == "output" for u in exit_node.users):  # the classifier head is never a unit
            continue
        if entry.op == "placeholder":  # nor is the stem reading the raw input, even if it keeps the shape
            continue
        nodes = set(seq)
        for s in seq:  # private get_attr inputs (functional weights) belong to the unit
            nodes |= {a for a in s.all_input_nodes if a.op == "get_attr" and all(u in nodes for u in a.users)}
        if not _private(nodes, exit_node, modules) or (is_inplace(h, modules) and h.args[0] is entry):
            continue
        module = str(h.target) if h.op == "call_module" else _module_path(h)
        found.append((_Candidate("chain", _site(entry, exit_node, nodes), module, module, set(), 0), nodes))
    return found


def find_units(gm: fx.GraphModule) -> list[_Candidate]:
    """Find unit candidates in ``gm`` (whose nodes carry ``tensor_meta`` and FLOPs, see
    :func:`fxdrop.shapes.propagate`), in graph order, with their owned parameter ids and FLOPs.

    Names are assigned by :func:`name_units`; candidates that own no parameter are left out.
    """
    modules = dict(gm.named_modules())
    residual = _residual_candidates(gm, modules)
    covered = set().union(*(nodes for _, nodes in residual)) if residual else set()
    chain = _chain_candidates(gm, modules, covered)
    order = {n.name: i for i, n in enumerate(gm.graph.nodes)}
    everything = sorted(residual + chain, key=lambda cn: order[cn[0].site.exit])

    users_of: dict[int, set[fx.Node]] = {}
    for n in gm.graph.nodes:
        for p in _params_of(n, modules, gm):
            users_of.setdefault(id(p), set()).add(n)
    out = []
    for cand, nodes in everything:
        ids = {id(p) for n in nodes for p in _params_of(n, modules, gm)}
        cand.param_ids = {i for i in ids if users_of[i] <= nodes}
        if not cand.param_ids:
            continue
        cand.flops = sum(n.meta.get(FLOPS_KEY, 0) for n in nodes)
        if cand.kind == "residual":
            cand.module = _common_prefix([_module_path(n) for n in nodes])
            cand.name_hint = cand.module
        out.append(cand)
    name_units(out)
    return out


def name_units(cands: list[_Candidate]) -> None:
    """Give each candidate a readable, unique name: its module path, with ``:node`` added where two
    units share a module (a transformer block holds two residuals)."""
    counts: dict[str, int] = {}
    for c in cands:
        counts[c.name_hint] = counts.get(c.name_hint, 0) + 1
    for c in cands:
        if not c.name_hint:
            c.name_hint = c.site.exit
        elif counts[c.name_hint] > 1:
            c.name_hint = f"{c.name_hint}:{c.site.exit}"
