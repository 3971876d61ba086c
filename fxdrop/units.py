"""Droppable units: the parts of a traced graph that can be bypassed without breaking shapes.

Two kinds are found (docs/design.md has the reasoning):

* **residual**: ``add(skip, branch)`` (``+``, ``+=``, ``torch.add``, ``Tensor.add``/``add_``) whose output
  has the shape, dtype and memory format of both inputs and whose ``skip`` is an ancestor of
  ``branch``. The unit is the add plus every node the branch needs that the skip does not; those nodes
  must be private to it (no user outside the unit). Dropping it makes the add's users read ``skip``.
  A downsampling block, whose skip goes through its own ``downsample`` module, is a unit only with
  ``projections=True`` (its branch goes, the projection stays: see :func:`_projection_skip`).
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
from typing import Any, Callable

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from .shapes import node_flops, same_tensor_meta, tensor_meta
from .trace import keeps_running_stats

__all__ = ["Unit", "UnitSite", "find_units", "is_inplace", "level_depth"]

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
        return not _is_norm(m) and any(True for _ in m.parameters())
    if n.op == "call_function" and n.target in _ANCHOR_FUNCTIONS:
        return any(a.op == "get_attr" for a in n.all_input_nodes)
    return False


def _is_norm(m: nn.Module) -> bool:
    """A normalisation layer (never the anchor of a unit): torch's, or one with running statistics."""
    return isinstance(m, _NORM_TYPES) or keeps_running_stats(m)


@dataclass
class _Candidate:
    kind: str
    site: UnitSite
    module: str
    name_hint: str
    param_ids: set[int]
    flops: int


_CHECKS = {torch._assert}


def _dead_nodes(graph: fx.Graph, modules: dict[str, nn.Module]) -> set[fx.Node]:
    """Nodes whose value nobody reads and that change nothing (the unused attention weights of
    ``x, _ = self_attention(...)``, the ``x.dim()`` of a ``torch._assert`` shape check), transitively. They never make a region impure; a unit takes the
    dead nodes hanging off it along, so that bypassing it leaves no dangling reader."""
    dead: set[fx.Node] = set()
    for n in reversed(graph.nodes):
        if n.op in ("placeholder", "output") or is_inplace(n, modules):
            continue
        if n.is_impure() and n.target not in _CHECKS:
            continue  # side effects are never dead; a shape check on a unit's tensor goes with the unit
        if n.op == "call_module" and n.target not in modules:  # pragma: no cover - defensive
            continue
        if all(u in dead for u in n.users):
            dead.add(n)
    return dead


def _with_dead(nodes: set[fx.Node], dead: set[fx.Node], exit_node: fx.Node) -> set[fx.Node]:
    """``nodes`` and the dead nodes reading them (not the exit's: those will read the entry)."""
    out = set(nodes)
    stack = [u for n in nodes if n is not exit_node for u in n.users if u in dead and u not in out]
    while stack:
        cur = stack.pop()
        if cur not in out:
            out.add(cur)
            stack.extend(u for u in cur.users if u in dead)
    return out


_TRANSPARENT_FUNCTIONS = {operator.mul, torch.mul}
_TRANSPARENT_METHODS = {"mul", "contiguous", "clone"}


def _transparent(n: fx.Node, modules: dict[str, nn.Module]) -> fx.Node | None:
    """If ``n`` is an identity-like step on a skip path (``nn.Identity``, drop-path, dropout, any
    parameter-free module, a scale by a constant or a parameter, ``contiguous``) that keeps its input's
    tensor meta, the input it reads; else ``None``."""
    data_in = [a for a in n.all_input_nodes if a.op != "get_attr"]
    if len(data_in) != 1 or not same_tensor_meta(n, data_in[0], views=True) or (n.args and n.args[0] is not data_in[0]):
        return None
    if n.op == "call_module":
        m = modules.get(n.target)
        ok = m is not None and not any(True for _ in m.parameters()) and not any(True for _ in m.buffers())
    elif n.op == "call_function":
        ok = n.target in _TRANSPARENT_FUNCTIONS
    elif n.op == "call_method":
        ok = n.target in _TRANSPARENT_METHODS
    else:
        ok = False
    return data_in[0] if ok else None


def _walk_skip(n: fx.Node, modules: dict[str, nn.Module]) -> list[fx.Node]:
    """``n`` and the values it is an identity-like function of, nearest first."""
    path = [n]
    while (prev := _transparent(path[-1], modules)) is not None:
        path.append(prev)
    return path


def _residual_candidates(
    gm: fx.GraphModule, modules: dict[str, nn.Module], dead: set[fx.Node], projections: bool = False
) -> list[tuple[_Candidate, set[fx.Node]]]:
    found = []
    anc_cache: dict[fx.Node, set[fx.Node]] = {}
    index = _graph_index(gm.graph)

    def ancestors(x: fx.Node) -> set[fx.Node]:
        if x not in anc_cache:
            anc_cache[x] = _ancestors(x)
        return anc_cache[x]

    for n in gm.graph.nodes:
        if not _is_add(n):
            continue
        args = [a for a in n.args[:2] if isinstance(a, fx.Node)]
        if len(args) != 2 or args[0] is args[1]:
            continue
        a, b = args
        if not (same_tensor_meta(n, a, views=True) and same_tensor_meta(n, b, views=True)):
            continue
        # the skip is the block input itself, or reaches the add through identity-like steps
        # (nn.Identity, drop-path, a scale): the entry is the first value on it the branch also reads
        entry = None
        for skip, branch in ((a, b), (b, a)):
            anc_branch = ancestors(branch)
            entry = next((s for s in _walk_skip(skip, modules) if s in anc_branch and same_tensor_meta(s, n, views=True)), None)
            if entry is not None:
                break
        if entry is None and projections:
            entry = _projection_skip(a, b, ancestors, index)
        if entry is None:
            continue
        region = _side_inputs_out((ancestors(n) | {n}) - (ancestors(entry) | {entry}), entry, n, modules)
        region = _with_dead(region, dead, n)
        if not _private(region, n, modules):
            continue
        found.append((_Candidate("residual", _site(entry, n, region), _module_path(n), "", set(), 0), region))
    return found


def _projection_skip(a: fx.Node, b: fx.Node, ancestors: Callable[[fx.Node], set[fx.Node]],
                     index: Callable[[fx.Node], int]) -> fx.Node | None:
    """The skip of ``add(a, b)`` when it is a *projection* (a downsampling block's ``downsample(x)``
    beside its branch ``f(x)``), else None. Both sides must fork from one value ``x`` that is the only
    tensor each side reads from before the fork (weights aside), neither may read the other, and the
    skip is the side with fewer FLOPs: strictly fewer than the branch, so two equal paths (a merge of
    two streams) are not a unit. Dropping the unit keeps the skip: the add's users read ``downsample(x)``.
    ``index`` gives a node's position in the graph."""
    anc_a, anc_b = ancestors(a), ancestors(b)
    if a in anc_b or b in anc_a:
        return None
    common = anc_a & anc_b
    tensors = [c for c in common if tensor_meta(c) is not None]
    if not tensors:
        return None
    fork = max(tensors, key=index)  # the last value both sides read

    def side(x: fx.Node) -> set[fx.Node] | None:
        """The nodes ``x`` needs past the fork, when the fork is all it reads from before it."""
        own = (ancestors(x) | {x}) - (ancestors(fork) | {fork})
        for r in own:
            for i in r.all_input_nodes:
                if i not in own and i is not fork and i.op != "get_attr":
                    return None
        return own

    sides = [(x, side(x)) for x in (a, b)]
    if any(nodes is None for _, nodes in sides):
        return None
    (skip, skip_nodes), (_, branch_nodes) = sorted(sides, key=lambda xs: node_flops(xs[1]))
    if node_flops(skip_nodes) >= node_flops(branch_nodes):
        return None
    return skip


def _side_inputs_out(region: set[fx.Node], entry: fx.Node, exit_node: fx.Node, modules: dict[str, nn.Module]) -> set[fx.Node]:
    """Leave out of a region the nodes that read nothing inside it and are also read outside it: a graph
    input such as timm's ``attn_mask`` read by every block, or ``B, H, W, C = x.shape`` of the entry that
    the code after the add reuses (timm's Swin). They are inputs of the region, not part of it, and stay
    in the graph when the unit is dropped. Private ones (a weight's ``get_attr``) stay in the region."""
    out = set(region)
    ordered = sorted(region, key=_graph_index(entry.graph))
    changed = True
    while changed:
        changed = False
        for r in ordered:
            if r not in out or r is exit_node or is_inplace(r, modules):
                continue
            if all(a not in out for a in r.all_input_nodes) and (
                r.op == "placeholder" or any(u not in out for u in r.users)
            ):
                out.discard(r)
                changed = True
    return out


def _graph_index(graph: fx.Graph):
    index = {n: i for i, n in enumerate(graph.nodes)}
    return index.__getitem__


def _innermost(found: list[tuple[_Candidate, set[fx.Node]]]) -> list[tuple[_Candidate, set[fx.Node]]]:
    """Nested regions: keep the innermost (a block rather than the stage around it)."""
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


def _module_candidates(
    gm: fx.GraphModule, modules: dict[str, nn.Module], dead: set[fx.Node]
) -> list[tuple[_Candidate, set[fx.Node]]]:
    """Submodules traced through whose nodes form a single-entry, single-exit region that keeps the
    entry's tensor meta (ShuffleNetV2's ``branch2``, an Inception block with equal in/out shapes)."""
    members: dict[str, set[fx.Node]] = {}
    for n in gm.graph.nodes:
        if n.op in ("placeholder", "output", "get_attr"):
            continue
        stack = n.meta.get("nn_module_stack") or {}
        for key in stack:
            path = key.split("@")[0]
            if path and not (n.op == "call_module" and n.target == path):
                members.setdefault(path, set()).add(n)
    found = []
    for path, nodes in members.items():
        if path in modules and _is_norm(modules[path]):
            continue  # a normalisation layer traced through is not a layer to drop, as for chains
        if not any(_is_anchor(r, modules) for r in nodes):
            continue
        inputs = {a for r in nodes for a in r.all_input_nodes if a not in nodes and a.op != "get_attr"}
        inputs = {a for a in inputs if not (a.op == "placeholder" and tensor_meta(a) is None)}
        outputs = [r for r in nodes if any(u not in nodes and u not in dead for u in r.users)]
        if len(inputs) != 1 or len(outputs) != 1:
            continue
        entry, exit_node = next(iter(inputs)), outputs[0]
        if entry.op == "placeholder" or any(u.op == "output" for u in exit_node.users):
            continue  # the stem reading the raw input and the head feeding the output are never units
        if not same_tensor_meta(entry, exit_node):
            continue
        region = _with_dead(nodes, dead, exit_node)
        for r in list(region):  # private get_attr inputs (functional weights) belong to the unit
            region |= {x for x in r.all_input_nodes if x.op == "get_attr" and all(u in region for u in x.users)}
        if not _private(region, exit_node, modules):
            continue
        found.append((_Candidate("module", _site(entry, exit_node, region), path, path, set(), 0), region))
    return found


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


def level_depth(level: int | str) -> int:
    """The nesting depth a ``level`` argument asks for (``"inner"`` 0, ``"outer"`` unbounded);
    ``ValueError`` naming the bad value otherwise."""
    depth = {"inner": 0, "outer": 1 << 30}.get(level, level) if isinstance(level, str) else level
    if isinstance(depth, str) or isinstance(depth, bool) or not isinstance(depth, int) or depth < 0:
        raise ValueError(f"level must be an int >= 0, 'inner' or 'outer', got {level!r}")
    return depth


def find_units(gm: fx.GraphModule, level: int | str = 0, projections: bool = False) -> list[_Candidate]:
    """Find unit candidates in ``gm`` (whose nodes carry ``tensor_meta`` and FLOPs, see
    :func:`fxdrop.shapes.propagate`), in graph order, with their owned parameter ids and FLOPs.

    Units nest: a transformer layer holds its attention and MLP residuals, a ResNet stage that keeps
    its shape holds its blocks. A unit's *level* is 0 when it holds no other unit, the level of the unit
    it holds when it holds one (a residual around an MLP module), else one more than the highest level
    it holds. ``level=k`` gives the largest units of level at most ``k`` (each region
    once): 0 the innermost (a ResNet block, a transformer layer's MLP), 1 a whole transformer layer or a
    ResNet stage, with the inner units standing where nothing of level ``<= k`` contains them;
    ``"outer"`` no limit. ``projections=True`` also makes the branch of a residual whose skip is a
    projection a unit (a downsampling block: the skip, ``downsample(x)``, stays). Names are assigned by
    :func:`name_units`; candidates that own no parameter are left out.
    """
    depth = level_depth(level)
    modules = dict(gm.named_modules())
    dead = _dead_nodes(gm.graph, modules)
    if depth == 0:
        residual = _innermost(_residual_candidates(gm, modules, dead, projections))
        covered = set().union(*(nodes for _, nodes in residual)) if residual else set()
        chain = _chain_candidates(gm, modules, covered)
        covered |= set().union(*(nodes for _, nodes in chain)) if chain else set()
        module = _innermost([(c, nodes) for c, nodes in _module_candidates(gm, modules, dead) if not nodes & covered])
        everything = residual + module + chain
    else:
        everything = (_residual_candidates(gm, modules, dead, projections) + _module_candidates(gm, modules, dead)
                      + _chain_candidates(gm, modules, set()))
    order = {n.name: i for i, n in enumerate(gm.graph.nodes)}
    everything.sort(key=lambda cn: order[cn[0].site.exit])

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
        cand.flops = node_flops(nodes)
        if cand.kind == "residual":
            # constants (``_tensor_constant0``) live on the root: they say nothing about the module
            cand.module = _common_prefix([_module_path(n) for n in nodes if n.op != "get_attr"])
            cand.name_hint = cand.module
        out.append((cand, nodes))
    if depth > 0:
        out = _at_level(out, depth)
        out.sort(key=lambda cn: order[cn[0].site.exit])
    units = [c for c, _ in out]
    name_units(units)
    return units


def _at_level(found: list[tuple[_Candidate, set[fx.Node]]], depth: int) -> list[tuple[_Candidate, set[fx.Node]]]:
    """The largest regions of level at most ``depth``, none overlapping another (see :func:`find_units`)."""
    size = [len(nodes) for _, nodes in found]
    inside = [[j for j, (_, other) in enumerate(found) if j != i and size[j] < size[i] and other <= nodes]
              for i, (_, nodes) in enumerate(found)]
    # a region holding a single unit (a residual around an MLP module) is that unit's level, not one up
    children = [[j for j in inside[i] if not any(j in inside[k] for k in inside[i])] for i in range(len(found))]
    height: dict[int, int] = {}

    def level_of(i: int) -> int:
        if i not in height:
            kids = [level_of(j) for j in children[i]]
            height[i] = 0 if not kids else max(kids) + (len(kids) > 1)
        return height[i]

    ranked = sorted((i for i in range(len(found)) if level_of(i) <= depth), key=lambda i: (-level_of(i), -size[i]))
    kept, taken = [], set()
    for i in ranked:
        if not found[i][1] & taken:
            kept.append(found[i])
            taken |= found[i][1]
    return kept


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
