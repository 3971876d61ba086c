"""Baselines that are not drop policies: stochastic depth on the residual units of a wrapped model."""

from __future__ import annotations

from .errors import FxdropError
from .module import DropNet
from .rewrite import insert_stochastic_depth

__all__ = ["apply_stochastic_depth"]


def apply_stochastic_depth(net: DropNet, p: float = 0.5, mode: str = "row") -> list[float]:
    """Give every residual unit of ``net`` torchvision's ``stochastic_depth`` in training, with the
    linear decay rule of Huang et al. (unit ``l`` of ``L`` is skipped with probability ``p * l / L``).

    Only the train graph changes; evaluation runs the full network. Units can no longer be dropped
    afterwards (the two are alternatives). Returns the probabilities, in unit order.
    """
    if not 0 <= p <= 1:
        raise ValueError(f"stochastic depth probability must be in [0, 1], got {p}")
    if net.dropped:
        raise FxdropError("apply_stochastic_depth needs a net with no dropped unit; restore_all() first")
    units = [u for u in net.units if u.kind == "residual"]
    probs = [p * (i + 1) / len(units) for i in range(len(units))]
    gm = insert_stochastic_depth(net._full["train"], [u.sites["train"] for u in units], probs, mode).graph_module
    net._replace_train_graph(gm.graph)
    return probs
