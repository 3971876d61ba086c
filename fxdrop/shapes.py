"""Shape, dtype and FLOPs propagation: facts recorded on ``node.meta``.

``propagate(gm, example_inputs)`` runs the graph once, node by node, and records for every node
``meta["tensor_meta"]`` (torch.fx's ``TensorMetadata``, as ``ShapeProp`` does) and
``meta["fxdrop_flops"]`` (forward FLOPs counted by ``torch.utils.flop_counter.FlopCounterMode``).
It runs in eval mode under ``no_grad`` so that BatchNorm running statistics are not updated, and puts
every module back into the mode it had.
"""

from __future__ import annotations

from typing import Any, Iterable

import torch
import torch.fx as fx
from torch.fx.passes.shape_prop import TensorMetadata, _extract_tensor_metadata
from torch.utils._pytree import tree_map
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["propagate", "tensor_meta", "same_tensor_meta", "node_flops", "FLOPS_KEY"]

FLOPS_KEY = "fxdrop_flops"


class _MetaInterpreter(fx.Interpreter):
    def run_node(self, n: fx.Node) -> Any:
        with FlopCounterMode(display=False) as counter:
            result = super().run_node(n)
        n.meta[FLOPS_KEY] = int(counter.get_total_flops())

        def extract(obj):
            return _extract_tensor_metadata(obj) if isinstance(obj, torch.Tensor) else obj

        meta = tree_map(extract, result)
        n.meta["tensor_meta"] = meta if isinstance(result, torch.Tensor) or meta is not result else None
        return result


def propagate(gm: fx.GraphModule, example_inputs: tuple[Any, ...], example_kwargs: dict[str, Any] | None = None) -> Any:
    """Record tensor metadata and FLOPs on every node of ``gm``; return the graph's output.

    The whole model runs in eval mode under ``torch.no_grad()``; modes are restored afterwards.
    """
    modes = [(m, m.training) for m in gm.modules()]
    gm.eval()
    try:
        with torch.no_grad():
            args = list(example_inputs)
            if example_kwargs:
                # placeholders are positional for the interpreter: fill kwargs in placeholder order
                names = [n.target for n in gm.graph.nodes if n.op == "placeholder"]
                args += [example_kwargs[name] for name in names[len(args):] if name in example_kwargs]
            return _MetaInterpreter(gm).run(*args)
    finally:
        for m, mode in modes:
            m.training = mode


def node_flops(nodes: Iterable[fx.Node]) -> int:
    """The forward FLOPs :func:`propagate` recorded on ``nodes`` (0 for a node it did not see), summed:
    a graph's with ``gm.graph.nodes``."""
    return sum(n.meta.get(FLOPS_KEY, 0) for n in nodes)


def tensor_meta(node: fx.Node) -> TensorMetadata | None:
    """The node's ``TensorMetadata`` if it produced a single tensor, else ``None``."""
    meta = node.meta.get("tensor_meta")
    return meta if isinstance(meta, TensorMetadata) else None


def same_tensor_meta(a: fx.Node, b: fx.Node, views: bool = False) -> bool:
    """Whether two nodes produce tensors of equal shape, dtype and memory format.

    With ``views=True`` a tensor in no memory format at all (a transposed or sliced view, whose
    ``memory_format`` is ``None``) matches any format: MaxViT's grid attention adds its branch to a
    ``swapaxes`` view, and the add's contiguous result holds the same values in the same shape."""
    ma, mb = tensor_meta(a), tensor_meta(b)
    return (
        ma is not None
        and mb is not None
        and ma.shape == mb.shape
        and ma.dtype == mb.dtype
        and (ma.memory_format == mb.memory_format or (views and None in (ma.memory_format, mb.memory_format)))
    )
