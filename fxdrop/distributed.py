"""torch.distributed support: identical drop decisions on every rank, and DDP that follows the graph.

* :func:`agree` broadcasts rank 0's decision (policies call it), so ranks never diverge even if their
  scores differ in the last bit.
* :class:`DistributedDropNet` wraps a :class:`fxdrop.DropNet` in ``DistributedDataParallel`` and rebuilds
  the DDP wrapper whenever the set of dropped or frozen units changes, telling DDP to ignore the
  parameters that no longer get gradients. Without that, DDP either raises ("Expected to have
  finished reduction in the prior iteration") or, with ``find_unused_parameters=True``, pays a graph
  traversal on every step. Rebuilding costs one parameter broadcast per drop event.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn

if TYPE_CHECKING:
    from .module import DropNet

T = TypeVar("T")

__all__ = ["agree", "DistributedDropNet"]


def _active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def agree(names: T) -> T:
    """Rank 0's ``names`` (any picklable value: a list of unit names, a dict of fades) on every rank
    (identity when not distributed)."""
    if not _active():
        return names
    box = [names]
    dist.broadcast_object_list(box, src=0)
    return box[0]


class DistributedDropNet(nn.Module):
    """``DistributedDataParallel`` over a :class:`DropNet` that stays valid across drop events.

    >>> ddp = DistributedDropNet(net, device_ids=[rank])     # instead of DistributedDataParallel(net)
    >>> loss = F.cross_entropy(ddp(x), y); loss.backward(); opt.step(); ddp.step(opt)

    ``ddp.net`` is the DropNet, ``ddp.module`` the current ``DistributedDataParallel``. State dict keys
    are the plain model's (the DDP wrapper is not a registered child).
    """

    def __init__(self, net: "DropNet", **ddp_kwargs: Any):
        super().__init__()
        from .module import share_module_state

        self.__dict__["net"] = net
        share_module_state(self, net)  # same keys as the model
        self._ddp_kwargs = ddp_kwargs
        self._key: tuple | None = None
        self.__dict__["module"] = None
        self.rebuilds = 0

    def _state_key(self) -> tuple:
        units = self.net.units if self.net._units is not None else []
        return tuple((u.name, u.dropped, u.frozen) for u in units)

    def _ensure(self) -> nn.parallel.DistributedDataParallel:
        key = self._state_key()
        if self.module is None or key != self._key:
            ignore = sorted({p for u in (self.net.units if self.net._units is not None else [])
                             if u.dropped or u.frozen for p in u.params})
            nn.parallel.DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(self.net, ignore)
            self.__dict__["module"] = nn.parallel.DistributedDataParallel(self.net, **self._ddp_kwargs)
            self._key = key
            self.rebuilds += 1
        return self.module

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if self.net._units is None:  # find units on the first batch (same on every rank), then wrap
            with torch.no_grad():
                self.net._initialize(tuple(args), dict(kwargs))
        return self._ensure()(*args, **kwargs)

    def step(self, optimizer: torch.optim.Optimizer | None = None, *, targets: torch.Tensor | None = None) -> list[str]:
        """``net.step()``: decisions are agreed across ranks; the DDP wrapper follows at the next forward."""
        return self.net.step(optimizer, targets=targets)

    def train(self, mode: bool = True) -> "DistributedDropNet":
        self.net.train(mode)
        self.training = mode
        return self
