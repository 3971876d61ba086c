"""Baselines that are not drop policies: stochastic depth and progressive layer dropping (PLD) on the
residual units of a wrapped model."""

from __future__ import annotations

import math

import torch

from .errors import FxdropError
from .module import DropNet
from .rewrite import bypass, insert_stochastic_depth, scale_branches
from .shapes import node_flops

__all__ = ["apply_stochastic_depth", "ProgressiveLayerDrop"]


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


class ProgressiveLayerDrop:
    """Progressive layer dropping (PLD, Zhang & He 2020, "Accelerating training of transformer-based
    language models with progressive layer dropping") on the residual units of a :class:`DropNet`,
    with the skipped branches really skipped (forward FLOPs saved), as a published anchor.

    At training step ``t`` (0-based) the global keep probability is
    ``theta(t) = (1 - theta_bar) * exp(-gamma * t) + theta_bar`` and residual unit ``l`` of ``L`` (in
    graph order) is kept with ``p_l(t) = 1 - (l / L) * (1 - theta(t))``; a kept branch is scaled by
    ``1 / p_l`` (inverted scaling, torchvision's stochastic-depth convention) so evaluation runs the
    full network unscaled. ``gamma`` defaults to ``20 / total_steps``: the paper's ``gamma * T`` is in the
    hundreds for its long runs, i.e. ``theta`` reaches ``theta_bar`` early; 20 keeps that shape on short
    runs (``theta`` within 1% of ``theta_bar`` after a quarter of the run). Graphs are cached per
    (dropped set, probabilities rounded to 0.01), so rewrites stay off most steps.

    Use it in place of the net in the training forward: ``out = pld(x)`` then, after the optimizer
    step, ``pld.step()``. ``pld.flops_fraction`` is the forward-FLOPs fraction of the last training
    forward.
    """

    def __init__(self, net: DropNet, total_steps: int, theta_bar: float = 0.5, gamma: float | None = None,
                 seed: int = 0):
        if not 0 < theta_bar <= 1:
            raise ValueError(f"ProgressiveLayerDrop: theta_bar must be in (0, 1], got {theta_bar}")
        if total_steps < 1:
            raise ValueError(f"ProgressiveLayerDrop: total_steps must be >= 1, got {total_steps}")
        if net.dropped:
            raise FxdropError("ProgressiveLayerDrop needs a net with no dropped unit; restore_all() first")
        self.net = net
        self.units = [u for u in net.units if u.kind == "residual"]
        self.theta_bar = theta_bar
        self.gamma = 20.0 / total_steps if gamma is None else gamma
        self.generator = torch.Generator().manual_seed(seed)
        self.steps = 0
        self.flops_fraction = 1.0
        self._cache: dict = {}

    def theta(self, step: int) -> float:
        return (1 - self.theta_bar) * math.exp(-self.gamma * step) + self.theta_bar

    def keep_probs(self, step: int) -> list[float]:
        L = len(self.units)
        th = self.theta(step)
        return [1 - (i + 1) / L * (1 - th) for i in range(L)]

    def _graph(self):
        probs = [round(p, 2) for p in self.keep_probs(self.steps)]
        draws = torch.rand(len(self.units), generator=self.generator).tolist()
        kept = tuple(d < p for d, p in zip(draws, probs))
        key = (kept, tuple(probs))
        hit = self._cache.get(key)
        if hit is None:
            full = self.net.full_graph_module
            keep = [(u, p) for u, k, p in zip(self.units, kept, probs) if k]
            scaled = scale_branches(full, [u.sites["train"] for u, _ in keep], [1 / p for _, p in keep]).graph_module
            gm = bypass(scaled, [u.sites["train"] for u, k in zip(self.units, kept) if not k]).graph_module
            frac = node_flops(gm.graph.nodes) / max(self.net.full_flops("train"), 1)
            hit = self._cache[key] = (gm, frac)
        return hit

    def __call__(self, *args, **kwargs):
        if not self.net.training:
            return self.net(*args, **kwargs)
        gm, self.flops_fraction = self._graph()
        return gm(*args, **kwargs)

    def step(self) -> None:
        self.steps += 1
