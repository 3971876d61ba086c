"""Checks that re-run only what a rewrite changed.

A check runs the current graph and a few candidate graphs (the current one with more units bypassed) on
the same held batches. Everything upstream of the first bypassed unit computes the same values in
both, so a candidate need only run its *suffix*: the nodes whose computation differs from the current
graph's, fed with the values the current graph computed for the nodes they read (the *frontier*).
This is torch.fx's split-and-stitch (``torch.fx.passes.split_module``) applied to two graphs that share
a prefix: one pass of the current graph returns its output and every frontier value, then each
candidate's suffix runs from them. A candidate whose bypassed units sit late in the network costs a
fraction of a forward: :attr:`SharedPrefix.shares` says which, in the forward FLOPs ``propagate`` recorded
on the nodes, so a policy can count what its checks ran.

The values are the ones a full run of the candidate would compute, bit for bit on a deterministic
backend, under two conditions checked here (a batch or a candidate that fails one is run in full):

* **no randomness**: the current graph's run must leave the global RNG where it was (a dropout in the
  prefix would otherwise shift every later draw of the candidate's suffix against a full run);
* **no mutation of a frontier value** in the current graph's run after it was computed (an in-place op
  on it or on a view of it would hand the suffix the mutated tensor): its version counter, recorded as
  it is computed, must be unchanged at the end. The suffix gets its own copies of the frontier values,
  so its in-place ops touch nothing shared.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
import torch.fx as fx

from .shapes import node_flops

__all__ = ["SharedPrefix", "changed_nodes"]


def changed_nodes(base: fx.GraphModule, other: fx.GraphModule) -> set[str]:
    """Names of the nodes of ``other`` that may compute something else than ``base``'s node of the same
    name: a node ``base`` lacks, or with another op, target or arguments, a module or attribute that is
    not the same object, or reading a changed node. (The graphs of one model's rewrites keep the names
    of the nodes they keep, :func:`fxdrop.rewrite.bypass`, and share its modules.)"""
    mine = {n.name: n for n in base.graph.nodes}
    changed: set[str] = set()
    for n in other.graph.nodes:
        twin = mine.get(n.name)
        if (twin is None or twin.op != n.op or twin.target != n.target or any(i.name in changed for i in n.all_input_nodes)
                or _by_name(twin.args) != _by_name(n.args) or _by_name(twin.kwargs) != _by_name(n.kwargs)
                or (n.op in ("call_module", "get_attr") and _owned(base, n.target) is not _owned(other, n.target))):
            changed.add(n.name)
    return changed


def _owned(gm: fx.GraphModule, target: str) -> Any:
    """The submodule or attribute ``target`` names in ``gm`` (None if it has none)."""
    obj: Any = gm
    for part in target.split("."):
        obj = getattr(obj, part, None)
    return obj


def _by_name(a: Any) -> Any:
    return fx.node.map_arg(a, lambda x: ("node", x.name))


@dataclass
class _Suffix:
    module: fx.GraphModule | None  # None: the candidate computes what the base does
    frontier: list[str]  # base nodes whose values feed it, in the order of its inputs


class SharedPrefix:
    """The current graph ``base`` made to return its frontier values too, and each candidate's suffix.
    :meth:`run` gives the base's output and every candidate's, running the shared prefix once.

    ``shares[i]`` is the forward FLOPs of candidate ``i``'s suffix and ``full_shares[i]`` those of the
    whole candidate, both relative to ``base``'s (1.0 for both when the graphs carry no FLOPs)."""

    def __init__(self, base: fx.GraphModule, candidates: Sequence[fx.GraphModule]):
        self.candidates = list(candidates)
        base_nodes = {n.name: n for n in base.graph.nodes}
        self.suffixes = [_suffix(cand, changed_nodes(base, cand)) for cand in self.candidates]
        self.frontier = list(dict.fromkeys(f for s in self.suffixes for f in s.frontier))
        self.reference = _with_outputs(base, [base_nodes[f] for f in self.frontier])
        whole = node_flops(base.graph.nodes)
        self.full_shares = [node_flops(c.graph.nodes) / whole if whole else 1.0 for c in self.candidates]
        self.shares = [(node_flops(s.module.graph.nodes) / whole if s.module is not None else 0.0) if whole else 1.0
                       for s in self.suffixes]

    def run(self, args: tuple, kwargs: dict, reseed: Callable[[], None]) -> tuple[Any, list[Any], list[bool]]:
        """``(base output, candidate outputs, which candidates ran as suffixes)``; ``reseed()`` is called
        before every run, as before a full one (a candidate falls back to a full run when the conditions of
        the module docstring fail)."""
        reseed()
        before = _rng_state()
        out, values, versions = self.reference(*args, **kwargs)
        clean = _rng_state() == before  # the run drew no random number: the suffixes see what a full run would
        env = dict(zip(self.frontier, values))
        # an in-place write after a value was computed bumps its version counter (shared by its views)
        touched = {f for f, v, n in zip(self.frontier, values, versions) if isinstance(v, torch.Tensor) and v._version != n}
        outs, reused = [], []
        for cand, suffix in zip(self.candidates, self.suffixes):
            reseed()
            reused.append(clean and not touched.intersection(suffix.frontier))
            if not reused[-1]:
                outs.append(cand(*args, **kwargs))
                continue
            outs.append(out if suffix.module is None else suffix.module(*[_copy(env[f]) for f in suffix.frontier]))
        return out, outs, reused


def _copy(v: Any) -> Any:
    return v.clone() if isinstance(v, torch.Tensor) else v


def _version(v: Any) -> int:
    return v._version if isinstance(v, torch.Tensor) else 0


def _rng_state() -> tuple:
    states = [torch.get_rng_state()]
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states += torch.cuda.get_rng_state_all()
    return tuple(bytes(s.numpy()) for s in states)


def _suffix(cand: fx.GraphModule, changed: set[str]) -> _Suffix:
    """The graph of ``cand``'s changed nodes, its inputs the unchanged nodes they read (constants,
    ``get_attr``, are copied in rather than fed)."""
    out_node = next(n for n in cand.graph.nodes if n.op == "output")
    if out_node.name not in changed:
        return _Suffix(None, [])
    graph = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    frontier: list[str] = []
    todo = [n for n in cand.graph.nodes if n.name in changed]
    for n in todo:  # placeholders first: the frontier, in first-use order
        for i in n.all_input_nodes:
            if i.name not in changed and i not in env and i.op != "get_attr":
                env[i] = graph.placeholder(i.name)
                env[i].meta = dict(i.meta)
                frontier.append(i.name)
    for n in todo:
        for i in n.all_input_nodes:
            if i not in env and i.op == "get_attr":
                env[i] = graph.node_copy(i)
        env[n] = graph.node_copy(n, env.__getitem__)
    graph.lint()
    return _Suffix(fx.GraphModule(cand, graph, class_name="Suffix"), frontier)


def _with_outputs(base: fx.GraphModule, extra: list[fx.Node]) -> fx.GraphModule:
    """``base`` returning ``(its output, [values of extra], [their version counters when computed])``."""
    graph = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    out = graph.graph_copy(base.graph, env)
    versions = []
    for n in extra:
        with graph.inserting_after(env[n]):
            versions.append(graph.call_function(_version, (env[n],)))
    graph.output((out, [env[n] for n in extra], versions))
    graph.lint()
    return fx.GraphModule(base, graph, class_name="WithFrontier")
