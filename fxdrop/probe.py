"""Held batches for checking drops, and the state the checks must leave as they found it.

A :class:`Probe` keeps up to ``batches`` input batches seen by the wrapped model in training (detached
copies of at most ``samples`` rows each, every ``stride``-th step's), with their class labels when known;
:meth:`Probe.fixed` holds batches of held-out data instead. :func:`preserved_state` runs check forwards
without a trace: buffers restored bitwise, the RNG forked and re-seeded alike for every graph.
:func:`recalibrate_batchnorm` re-estimates BatchNorm running statistics on the held batches after the
graph changed, so an evaluation right after a drop does not use statistics of a graph that no longer
exists. What a check measures on these batches is :mod:`fxdrop.policies.checks`.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from typing import Any, Callable, Iterable, Iterator

import torch
from torch import nn
from torch.utils._pytree import tree_flatten, tree_map


__all__ = ["Probe", "recalibrate_batchnorm", "preserved_state", "leading_rows", "copy_rows"]


def copy_rows(v: Any, rows: int, device: torch.device | str | None = None) -> Any:
    """A detached copy of the first ``rows`` rows of tensor ``v`` (a 0-d tensor whole), on ``device`` if
    given; anything else as it is: what a probe holds of an input, so it does not keep the batch alive."""
    if not isinstance(v, torch.Tensor):
        return v
    v = v.detach()
    return (v[:rows] if v.dim() > 0 else v).to(device).clone()


def leading_rows(args: Any, kwargs: Any = None) -> int:
    """Rows of a call's inputs: the leading dimension of its first tensor with one (1 if none)."""
    first = next((a for a in tree_flatten((args, kwargs))[0] if isinstance(a, torch.Tensor) and a.dim() > 0), None)
    return int(first.shape[0]) if first is not None else 1


class Probe:
    """A ring of held training input batches for checking drops (see module docstring).

    ``offer(step, args, kwargs)`` is called with every training forward's inputs; every ``stride``-th
    step's inputs are copied in (first ``samples`` rows of every tensor), keeping the last ``batches``.
    ``offer_targets(step, targets)`` attaches that step's class labels, when the training loop gives
    them (``net.step(opt, targets=y)``), so checks can measure accuracy instead of bounding it.
    """

    def __init__(self, batches: int = 4, samples: int = 64, stride: int = 1):
        if batches < 1 or samples < 1 or stride < 1:
            raise ValueError(f"Probe: batches, samples and stride must be >= 1, got {batches}, {samples}, {stride}")
        self.batches, self.samples, self.stride = batches, samples, stride
        self.held: list[tuple[tuple[Any, ...], dict[str, Any]]] = []
        self.targets: list[torch.Tensor | None] = []
        self.steps: list[int] = []
        self._next = 0

    def __len__(self) -> int:
        return len(self.held)

    @classmethod
    def fixed(cls, data: Iterable[Any], batches: int, samples: int, device: torch.device | str | None = None,
              what: str = "check_data") -> "Probe":
        """A probe of the first ``batches`` batches of ``data`` (held-out data, e.g. a validation loader),
        at most ``samples`` rows each, copied to ``device``. A batch is the model's input tensor, or a
        tuple or list ``(inputs, labels, ...)`` whose ``inputs`` is a tensor or a tuple of the model's
        positional inputs and whose ``labels``, when a 1-d integer tensor, are class labels (anything
        else is not used). Raises ``ValueError``/``TypeError`` naming ``what`` on data it cannot use."""
        probe = cls(batches, samples)
        for i, batch in enumerate(data):
            if i == batches:
                break
            args, labels = _split_batch(batch, i, what)
            probe.held.append((tuple(copy_rows(a, samples, device) for a in args), {}))
            probe.targets.append(copy_rows(labels, samples, device) if labels is not None else None)
            probe.steps.append(0)
        if not probe.held:
            raise ValueError(f"{what} gave no batches: pass an iterable of batches (e.g. a DataLoader of held-out "
                             "data), or leave it out to check on held training batches")
        labels = [t for t in probe.targets if t is not None]
        if labels and len(torch.cat([t.flatten().cpu() for t in labels]).unique()) == 1:
            # an unshuffled loader over class-sorted files (ImageFolder) starts with one class: checks on it
            # would judge every drop by that class alone
            warnings.warn(f"fxdrop: {what}'s first {len(probe)} batches hold a single class; checks would judge "
                          "drops on it alone: pass a shuffled loader or a mixed slice", stacklevel=4)
        return probe

    def offer(self, step: int, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        if step % self.stride:
            return

        def keep(v: Any) -> Any:
            return copy_rows(v, self.samples)

        item = (tree_map(keep, tuple(args)), tree_map(keep, dict(kwargs)))
        if len(self.held) < self.batches:
            self.held.append(item)
            self.targets.append(None)
            self.steps.append(step)
        else:
            self.held[self._next] = item
            self.targets[self._next] = None
            self.steps[self._next] = step
        self._next = (self._next + 1) % self.batches

    def offer_targets(self, step: int, targets: Any) -> None:
        """Attach class labels (a 1-d integer tensor) to the batch held for ``step``, if one is."""
        if step not in self.steps or not isinstance(targets, torch.Tensor) or targets.dim() != 1:
            return
        i = self.steps.index(step)
        self.targets[i] = targets.detach()[: self.samples].clone()

    @property
    def labelled(self) -> bool:
        """Whether every held batch has its class labels."""
        return all(t is not None for t in self.targets)

    @property
    def rows(self) -> int:
        """Rows held over all batches (the first tensor input's leading dimension)."""
        return sum(leading_rows(args, kwargs) for args, kwargs in self.held)

    def __iter__(self) -> Iterator[tuple[tuple[Any, ...], dict[str, Any]]]:
        return iter(self.held)

    def state_dict(self) -> dict[str, Any]:
        """The held batches, their labels and steps, and the ring position (for exact resume)."""
        return {"held": list(self.held), "targets": list(self.targets), "steps": list(self.steps), "next": self._next}

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        self.held = [(tuple(a), dict(k)) for a, k in sd.get("held", [])]
        self.targets = list(sd.get("targets", [None] * len(self.held)))
        self.steps = [int(s) for s in sd.get("steps", [0] * len(self.held))]
        self._next = int(sd.get("next", 0))

    def clear(self) -> None:
        self.held, self.targets, self.steps, self._next = [], [], [], 0

    def half(self) -> "Probe":
        """The first half of these batches (rounded up; the same tensors): for checks that need less
        precision than a cost against the tolerance."""
        return self.head(math.ceil(len(self) / 2))

    def head(self, batches: int) -> "Probe":
        """A probe holding the first ``batches`` of these batches (the same tensors, not copies): a
        cheaper, noisier check."""
        view = Probe(self.batches, self.samples, self.stride)
        view.held, view.targets, view.steps = self.held[:batches], self.targets[:batches], self.steps[:batches]
        return view


def _split_batch(batch: Any, i: int, what: str) -> tuple[tuple[torch.Tensor, ...], torch.Tensor | None]:
    """``(positional inputs, class labels or None)`` of one batch of held-out data (:meth:`Probe.fixed`)."""
    labels = None
    if isinstance(batch, torch.Tensor):
        inputs: Any = (batch,)
    elif isinstance(batch, (tuple, list)) and batch:
        inputs = tuple(batch[0]) if isinstance(batch[0], (tuple, list)) else (batch[0],)
        y = batch[1] if len(batch) > 1 else None
        if isinstance(y, torch.Tensor) and y.dim() == 1 and not y.is_floating_point():
            labels = y
    else:
        inputs = None
    if not inputs or not all(isinstance(a, torch.Tensor) for a in inputs):
        raise TypeError(f"{what}: batch {i} is a {type(batch).__name__}; expected the model's input tensor or an "
                        "(inputs, labels) pair whose inputs is a tensor or a tuple of tensors")
    if labels is not None and inputs[0].dim() > 0 and len(labels) != len(inputs[0]):
        raise ValueError(f"{what}: batch {i} has {len(inputs[0])} inputs but {len(labels)} labels")
    return inputs, labels


@contextlib.contextmanager
def preserved_state(model: nn.Module, seed: int = 0) -> Iterator[Callable[[], None]]:
    """Run probe forwards without leaving a trace: every buffer is restored bitwise on exit, the global
    RNG state is forked, and ``reseed()`` (yielded) restarts it at ``seed`` so two forwards draw the
    same dropout masks."""
    buffers = [b for b in model.buffers()]
    saved = [b.detach().clone() for b in buffers]
    devices = sorted({b.device.index or 0 for b in buffers if b.device.type == "cuda"})
    try:
        with torch.random.fork_rng(devices=devices), torch.no_grad():
            yield lambda: torch.manual_seed(seed)
    finally:
        with torch.no_grad():
            for b, s in zip(buffers, saved):
                b.copy_(s)


def recalibrate_batchnorm(model: nn.Module, forward: Callable[..., Any], probe: Probe) -> int:
    """Re-estimate the running statistics of the BatchNorm layers of ``model`` that ``forward`` runs in
    training mode, as the plain average over the probe's batches; returns how many layers that changed.

    A layer the user froze (in eval mode) runs in eval mode while the batches pass and keeps its
    statistics; a layer ``forward`` does not call (a dropped unit's) keeps them too, as does one that does
    not track running statistics. Which layers run is counted by a forward pre-hook on each, removed
    afterwards. Nothing else changes: the global RNG is forked, ``momentum`` and ``num_batches_tracked``
    are put back, other buffers restored."""
    bns = [m for m in model.modules()
           if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats and m.running_mean is not None]
    if not bns or not len(probe):
        return 0
    targets = [m for m in bns if m.training]  # frozen layers run in eval mode and are left as they are
    if not targets:
        return 0
    keep = [b for m in model.modules() for b in m.buffers(recurse=False) if not any(m is t for t in targets)]
    saved_other = [b.detach().clone() for b in keep]
    state = [(m, m.momentum, m.num_batches_tracked.clone(), m.running_mean.clone(), m.running_var.clone())
             for m in targets]
    called: set[int] = set()

    def count(m: nn.Module, args: Any) -> None:
        called.add(id(m))

    handles = [m.register_forward_pre_hook(count) for m in targets]
    try:
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            for m in targets:
                m.reset_running_stats()
                m.momentum = None  # cumulative average over the probe batches
            for args, kwargs in probe:
                forward(*args, **kwargs)
    finally:
        for h in handles:
            h.remove()
        with torch.no_grad():
            for m, momentum, nbt, mean, var in state:
                if id(m) not in called:  # not in the graph (a dropped unit's): keep its statistics
                    m.running_mean.copy_(mean)
                    m.running_var.copy_(var)
                m.momentum = momentum
                m.num_batches_tracked.copy_(nbt)
            for b, s in zip(keep, saved_other):
                b.copy_(s)
    return sum(1 for m in targets if id(m) in called)
