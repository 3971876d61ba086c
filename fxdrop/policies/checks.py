"""The check behind every Learn&Drop decision: the loss on a few held training batches, of the network
as it runs now against the same network with some units bypassed (a drop) or put back (a return).

The loss is the cross-entropy against the held batches' class labels: those the loop passes to
``net.step(targets=y)``, else those read off the gradient the loss sends back to the output
(:func:`labels_from_grad`: exact for softmax cross-entropy with one-hot or smoothed targets), else the
network's own current predictions, against which only drops can be judged. For outputs that are not
``N x C`` logits the "loss" of a graph is ``1 + ||out - out_now|| / ||out_now||``.

Graphs run in training mode under ``no_grad`` with buffers restored and the RNG forked and re-seeded
alike for every graph (:func:`fxdrop.probe.preserved_state`); the candidates share the prefix they have
in common with the current graph (:class:`fxdrop.reuse.SharedPrefix`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn
from torch.utils._pytree import tree_flatten

from ..probe import Probe, leading_rows, preserved_state
from ..reuse import SharedPrefix

__all__ = ["HeldLosses", "held_losses", "labels_from_grad", "read_grad", "rise"]


@dataclass
class HeldLosses:
    """Mean held loss of the current graph (``now``) and of each candidate (``candidates``); ``work`` is
    the forward compute the check ran, in rows through the current graph; ``labelled`` whether true
    labels (given or read off gradients) were used."""

    now: float
    candidates: list[float]
    rows: int
    work: float
    labelled: bool
    classes: int = 0  # columns of the logits (0: the output is not N x C logits)


def rise(now: float, other: float) -> float:
    """The relative change of the held loss from ``now`` to ``other`` (``inf`` when ``now`` is 0 and
    ``other`` is larger)."""
    if now > 0:
        return (other - now) / now
    return 0.0 if other <= now else math.inf


def labels_from_grad(logits: torch.Tensor, grad: torch.Tensor) -> torch.Tensor | None:
    """The class labels of a batch, read off the gradient of a softmax cross-entropy loss with respect
    to the ``N x C`` logits: the targets are ``softmax(logits) - s * grad`` with ``s = N`` (mean reduction)
    or ``1`` (sum); a row's label is its target's arg-max. ``None`` when neither scale gives rows that
    are probability distributions (another loss, a scaled or accumulated loss, AMP's loss scaling)."""
    read = read_grad(logits, grad)
    return read[0] if read is not None and bool(read[2]) else None


def read_grad(logits: torch.Tensor, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """What :func:`labels_from_grad` reads, as tensors on the logits' device with no host sync: the
    labels, the batch's mean cross-entropy against them, and whether they could be read (0-dim bool);
    ``None`` for a non-``N x C`` output."""
    if logits.dim() != 2 or grad.shape != logits.shape or logits.shape[1] < 2:
        return None
    logp = torch.log_softmax(logits.detach().float(), 1)
    p, g = logp.exp(), grad.detach().float()
    found = None
    for s in (1, logits.shape[0]):  # the mean reduction's scale wins where both read
        t = p - s * g
        ok = (t.min() > -0.02) & ((t.sum(1) - 1).abs().max() < 0.02) & (t.max(1).values.min() > 0.3)
        labels = t.argmax(1)
        if found is None:
            found = (labels, ok)
        else:
            found = (torch.where(ok, labels, found[0]), ok | found[1])
    labels, ok = found
    return labels, -logp.gather(1, labels[:, None]).mean(), ok


def _loss(out: Any, ref: Any, y: torch.Tensor | None) -> float:
    """Summed loss of ``out`` on one batch (see module docstring); ``ref`` is the current graph's output."""
    if isinstance(out, torch.Tensor) and out.dim() == 2 and out.shape[1] > 1:
        target = y.to(out.device) if y is not None else ref.argmax(1)
        return float(F.cross_entropy(out.float(), target, reduction="sum"))
    fo = [t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor)]
    fr = [t for t in tree_flatten(ref)[0] if isinstance(t, torch.Tensor)]
    num = sum(float((a.float() - b.float()).pow(2).sum()) for a, b in zip(fo, fr))
    den = sum(float(b.float().pow(2).sum()) for b in fr)
    rows = leading_rows(fr)
    return rows * (1 + (math.sqrt(num / den) if den > 0 else (0.0 if num == 0 else math.inf)))


def held_losses(model: nn.Module, current: Callable[..., Any], candidates: Sequence[Callable[..., Any]],
                probe: Probe, seed: int = 0) -> HeldLosses:
    """Run ``current`` and every candidate graph on the probe's batches and return their mean losses
    (``model``: the module whose buffers the graphs share, restored afterwards)."""
    labelled = len(probe) > 0 and probe.labelled
    sums, base, rows, work, classes = [0.0] * len(candidates), 0.0, 0, 0.0, 0
    shared = None
    if isinstance(current, fx.GraphModule) and all(isinstance(g, fx.GraphModule) for g in candidates):
        shared = SharedPrefix(current, candidates)
    with preserved_state(model, seed) as reseed:
        for (args, kwargs), y in zip(probe, probe.targets):
            n = leading_rows(args, kwargs)
            if shared is not None:
                ref, outs, reused = shared.run(args, kwargs, reseed)
                shares = [s if r else f for s, f, r in zip(shared.shares, shared.full_shares, reused)]
            else:
                outs = []
                reseed()
                ref = current(*args, **kwargs)
                for g in candidates:
                    reseed()
                    outs.append(g(*args, **kwargs))
                shares = [1.0] * len(candidates)
            y = y if labelled else None
            base += _loss(ref, ref, y)
            if isinstance(ref, torch.Tensor) and ref.dim() == 2:
                classes = int(ref.shape[1])
            for i, out in enumerate(outs):
                sums[i] += _loss(out, ref, y)
            rows += n
            work += n * (1 + sum(shares))
    d = max(rows, 1)
    return HeldLosses(base / d, [s / d for s in sums], rows, work, labelled and classes > 1, classes)
