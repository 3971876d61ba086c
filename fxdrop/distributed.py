"""torch.distributed support: identical drop decisions on every rank, and DDP that follows the graph.

* :func:`agree` broadcasts rank 0's decision (policies call it), so ranks never diverge even if their
  scores differ in the last bit.
* :class:`DistributedDropNet` wraps a :class:`fxdrop.DropNet` in ``DistributedDataParallel`` and rebuilds
  the DDP wrapper whenever the set of dropped or frozen units changes, telling DDP to ignore the
  parameters that no longer get gradients. Without that, DDP either raises ("Expected to have
  finished reduction in the prior iteration") or, with ``find_unused_parameters=True``, pays a graph
  traversal on every step. Rebuilding costs one parameter broadcast per drop event.
* :func:`fully_shard` shards a :class:`fxdrop.DropNet` with FSDP2, one group per unit. The traced graph
  calls leaf modules (the convs), never a block, so a group is the list of the unit's leaf modules:
  FSDP2 registers its hooks on each module of a group, gathers the group before the first of them runs
  and frees it after the last. A dropped unit's modules are not called, so its group is never gathered;
  a restored unit's modules run again and gather it as before.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn

if TYPE_CHECKING:
    from .module import DropNet

T = TypeVar("T")

__all__ = ["agree", "DistributedDropNet", "fully_shard", "unit_groups"]


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


def fully_shard(net: "DropNet", *, norms_in_float32: bool = True, **fsdp_kwargs: Any) -> "DropNet":
    """Shard ``net`` with FSDP2 (``torch.distributed.fsdp.fully_shard``): each unit's modules form one
    group, everything else the root group (``net`` itself). Returns ``net`` (now also an ``FSDPModule``).

    ``fsdp_kwargs`` go to every ``fully_shard`` call (``mesh=``, ``mp_policy=MixedPrecisionPolicy(...)``,
    ``reshard_after_forward=``, ...); without ``mesh`` FSDP2's default applies: a CUDA mesh over the
    default process group where there is a GPU (NCCL), else a CPU one (gloo). Call it after
    :func:`fxdrop.wrap` has found the units (``example_inputs``) and before building the optimizer, on
    every rank, with the model on its device. Drops and restores need no more: a dropped unit's group is
    never gathered (its modules do not run), a restored one is gathered when its modules run again.
    Decide drops alike on every rank (policies do, through :func:`agree`).

    With an ``mp_policy`` whose ``param_dtype`` is not float32, BatchNorm layers (whose running statistics
    stay float32, which ``batch_norm`` refuses beside low-precision weights) keep float32 parameters, as
    ``norms_in_float32=True`` asks: a unit's BatchNorms form a second group of that unit, the other
    BatchNorms one group of their own (FSDP2's per-group ``mp_policy``; their inputs are not cast).
    ``output_dtype`` applies to the network's output only (the root group).

    >>> net = fxdrop.wrap(model, example_inputs=(x,))                  # doctest: +SKIP
    >>> fxdrop.distributed.fully_shard(net, mp_policy=MixedPrecisionPolicy(param_dtype=torch.bfloat16))
    >>> opt = torch.optim.SGD(net.parameters(), lr=0.1)                # sharded (DTensor) parameters
    """
    from torch.distributed.fsdp import MixedPrecisionPolicy
    from torch.distributed.fsdp import fully_shard as fsdp_fully_shard

    mp = fsdp_kwargs.get("mp_policy")
    split = norms_in_float32 and mp is not None and mp.param_dtype not in (None, torch.float32)
    norm_kwargs = {**fsdp_kwargs, "mp_policy": MixedPrecisionPolicy(
        reduce_dtype=getattr(mp, "reduce_dtype", None), cast_forward_inputs=False)}
    # a group casts each of its modules' outputs to output_dtype: that is for the network's output (the
    # root), not for a unit's convolutions, whose outputs feed modules of the root group that no hook casts
    unit_kwargs = {**fsdp_kwargs, "mp_policy": dataclasses.replace(mp, output_dtype=None)} if mp else fsdp_kwargs

    def is_norm(m: nn.Module) -> bool:
        return split and isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None

    def shard(group: list[nn.Module], kwargs: dict[str, Any]) -> None:
        if group:
            fsdp_fully_shard(group if len(group) > 1 else group[0], **kwargs)

    in_units = set()
    for group in unit_groups(net).values():
        shard([m for m in group if not is_norm(m)], unit_kwargs)
        shard([m for m in group if is_norm(m)], norm_kwargs)
        in_units.update(map(id, group))
    shard([m for m in net.model.modules() if is_norm(m) and id(m) not in in_units], norm_kwargs)
    fsdp_fully_shard(net, **fsdp_kwargs)
    return net


def unit_groups(net: "DropNet") -> dict[str, list[nn.Module]]:
    """Each unit's FSDP group for :func:`fully_shard`: the modules that hold its parameters, each called
    by the graph as a leaf (in graph order). Raises :class:`fxdrop.UnitError` naming the unit and the
    module when that is not so (a parameter read as an attribute, a module also holding parameters of
    another part of the network)."""
    from .errors import UnitError
    from .module import MODES

    called: dict[str, int] = {}  # modules the graphs call, in first-call order
    for mode in MODES:
        for n in net._full[mode].graph.nodes:
            if n.op == "call_module":
                called.setdefault(str(n.target), len(called))
    modules = dict(net.model.named_modules())
    groups: dict[str, list[nn.Module]] = {}
    for u in net._require_units():
        owners: set[str] = set()
        for name in u.params:
            path = max((m for m in called if name.startswith(m + ".")), key=len, default=None)
            if path is None:
                holder = name.rpartition(".")[0]
                raise UnitError(
                    f"fxdrop.distributed.fully_shard: unit {u.name!r} has parameter {name!r}, which the traced graph "
                    "reads as an attribute instead of calling its module, so FSDP's module hooks could not gather "
                    f"it; make its module a leaf: fxdrop.wrap(..., leaf_modules=[{holder!r}])")
            owners.add(path)
        for path in owners:
            mine = {f"{path}.{k}" for k, _ in modules[path].named_parameters()}
            if not mine <= set(u.params):
                raise UnitError(
                    f"fxdrop.distributed.fully_shard: module {path} ({type(modules[path]).__name__}) holds parameters "
                    f"of unit {u.name!r} and of other parts ({sorted(mine - set(u.params))[:3]}); FSDP shards whole "
                    "modules: shard the net as one group with torch.distributed.fsdp.fully_shard(net) instead")
        owners_in_order = sorted(owners, key=called.__getitem__)
        groups[u.name] = [modules[p] for p in owners_in_order]
    return groups
