"""FSDP2 sharded per unit (fxdrop.distributed.fully_shard), gloo, 2 processes on CPU: drops, restores,
mixed precision and checkpoints through torch.distributed.checkpoint."""

from __future__ import annotations

import datetime
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

STEPS, DROP_AT, RESTORE_AT = 12, 4, 8
DROPPED, RESTORED = ["layer1.1", "layer3.1"], ["layer3.1"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _build(mixed: bool):
    import fxdrop
    from fxdrop.distributed import fully_shard
    from tests.models import narrow_resnet18

    torch.manual_seed(0)  # same init on every rank
    net = fxdrop.wrap(narrow_resnet18(width=8), example_inputs=(torch.randn(1, 3, 32, 32),))
    kwargs = {}
    if mixed:
        from torch.distributed.fsdp import MixedPrecisionPolicy

        kwargs["mp_policy"] = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32,
                                                       output_dtype=torch.float32)
    fully_shard(net, **kwargs)
    return net, torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)


def _batch(rank: int, step: int):
    g = torch.Generator().manual_seed(1000 * rank + step)  # each rank its own data, the same after a resume
    return torch.randn(4, 3, 32, 32, generator=g), torch.randint(0, 10, (4,), generator=g)


def _train(net, opt, rank: int, steps: range, losses: list, restore: bool = True) -> None:
    from fxdrop.distributed import agree

    net.train()
    for step in steps:
        x, y = _batch(rank, step)
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(net(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if step + 1 == DROP_AT:
            net.drop(*agree(DROPPED))  # rank 0's decision on every rank, as a policy's through net.step()
        if restore and step + 1 == RESTORE_AT:
            net.restore(*agree(RESTORED))


def _full(net) -> dict[str, torch.Tensor]:
    return {k: p.full_tensor().detach().clone() for k, p in net.named_parameters()}  # a collective


def _worker(rank: int, world: int, port: int, out_dir: str, mixed: bool) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=datetime.timedelta(seconds=60))
    try:
        from torch.distributed.fsdp._fully_shard._fsdp_param_group import FSDPParamGroup
        from torch.distributed.tensor import DTensor, Shard

        from fxdrop.distributed import unit_groups

        net, opt = _build(mixed)
        group_of = {id(mods[0]._get_fsdp_state()._fsdp_param_group): u for u, mods in unit_groups(net).items()}
        gathered: list[tuple[int, str]] = []  # (step, unit) for every unshard of a unit's group
        step_now = [0]
        unshard = FSDPParamGroup.unshard

        def counting_unshard(self, *args, **kwargs):
            if id(self) in group_of and self._all_gather_result is None and not self.is_unsharded:  # a real gather
                gathered.append((step_now[0], group_of[id(self)]))
            return unshard(self, *args, **kwargs)

        FSDPParamGroup.unshard = counting_unshard
        sharded = all(isinstance(p, DTensor) and p.placements == (Shard(0),) for p in net.parameters())
        losses: list[float] = []
        snaps = {}
        for step in range(STEPS):
            step_now[0] = step
            _train(net, opt, rank, range(step, step + 1), losses)
            if step + 1 in (DROP_AT, RESTORE_AT, STEPS):
                snaps[step + 1] = _full(net)
        # the restored network computes what the plain network with the same weights computes
        import fxdrop
        from tests.models import narrow_resnet18

        plain = narrow_resnet18(width=8)
        plain.load_state_dict({**plain.state_dict(), **snaps[STEPS]})
        for k, b in net.named_buffers():
            plain.get_buffer(k).copy_(b)
        ref = fxdrop.wrap(plain, example_inputs=(torch.randn(1, 3, 32, 32),))
        ref.drop(*[u for u in DROPPED if u not in RESTORED])
        x, _ = _batch(rank, 99)
        net.eval(), ref.eval()
        with torch.no_grad():
            out, out_ref = net(x), ref(x)
        torch.save({"losses": losses, "snaps": snaps, "gathered": gathered, "sharded": sharded,
                    "dropped": net.dropped, "out": out, "out_ref": out_ref},
                   os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow  # two spawned ranks cost ~10 s idle: beyond the fast tier's budget (unit_groups is checked there)
@pytest.mark.timeout(180)
@pytest.mark.parametrize("mixed", [False, True], ids=["fp32", "bf16"])
def test_fsdp_per_unit_two_ranks(tmp_path, mixed):
    mp.start_processes(_worker, args=(2, _free_port(), str(tmp_path), mixed), nprocs=2, join=True, start_method="spawn")
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    assert r0["sharded"] and r1["sharded"], "every parameter is a DTensor sharded on dim 0"
    assert r0["losses"] != r1["losses"], "each rank trains on its own data"
    assert r0["dropped"] == r1["dropped"] == ["layer1.1"]
    for at in r0["snaps"]:  # ranks agree bit for bit
        for k in r0["snaps"][at]:
            torch.testing.assert_close(r0["snaps"][at][k], r1["snaps"][at][k], rtol=0, atol=0, msg=k)
    snaps = r0["snaps"]
    for k in snaps[DROP_AT]:
        unit = next((u for u in DROPPED if k.startswith(u + ".")), None)
        if unit == "layer1.1":  # dropped for good: never changed after the drop
            assert torch.equal(snaps[DROP_AT][k], snaps[STEPS][k]), k
        elif unit == "layer3.1":  # dropped, then restored: unchanged while out, trained again after
            assert torch.equal(snaps[DROP_AT][k], snaps[RESTORE_AT][k]), k
            if k.endswith("weight"):
                assert not torch.equal(snaps[RESTORE_AT][k], snaps[STEPS][k]), k
    for r in (r0, r1):
        # a dropped unit's group is never gathered while it is out; a restored one is again
        assert not [(s, u) for s, u in r["gathered"] if u == "layer1.1" and s >= DROP_AT]
        assert not [(s, u) for s, u in r["gathered"] if u == "layer3.1" and DROP_AT <= s < RESTORE_AT]
        assert {u for s, u in r["gathered"] if s >= RESTORE_AT} == {"layer1.0", "layer2.1", "layer3.1", "layer4.1"}
        assert {u for s, u in r["gathered"] if s == 0} == {"layer1.0", "layer1.1", "layer2.1", "layer3.1", "layer4.1"}
        if mixed:
            assert r["out"].dtype == torch.float32 and torch.isfinite(r["out"]).all()
        else:
            torch.testing.assert_close(r["out"], r["out_ref"], rtol=1e-5, atol=1e-6)


def _ckpt_worker(rank: int, world: int, port: int, out_dir: str) -> None:
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=datetime.timedelta(seconds=60))
    try:
        net, opt = _build(False)
        losses: list[float] = []
        _train(net, opt, rank, range(STEPS), losses, restore=False)  # uninterrupted
        straight = _full(net)
        # the same run saved after step 6 (units dropped at step 4) and resumed in new objects
        net, opt = _build(False)
        resumed: list[float] = []
        _train(net, opt, rank, range(6), resumed, restore=False)
        model_sd, optim_sd = get_state_dict(net, opt)
        dcp.save({"model": model_sd, "optim": optim_sd}, checkpoint_id=os.path.join(out_dir, "ckpt"))
        if rank == 0:
            torch.save(net.drop_state_dict(), os.path.join(out_dir, "drop_state.pt"))
        dist.barrier()
        del net, opt
        net, opt = _build(False)
        net.load_drop_state_dict(torch.load(os.path.join(out_dir, "drop_state.pt"), weights_only=False))
        model_sd, optim_sd = get_state_dict(net, opt)
        state = {"model": model_sd, "optim": optim_sd}
        dcp.load(state, checkpoint_id=os.path.join(out_dir, "ckpt"))
        set_state_dict(net, opt, model_state_dict=state["model"], optim_state_dict=state["optim"])
        _train(net, opt, rank, range(6, STEPS), resumed, restore=False)
        torch.save({"straight": straight, "resumed": _full(net), "losses": losses, "resumed_losses": resumed,
                    "dropped": net.dropped}, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_fsdp_checkpoint_resumes_bit_for_bit(tmp_path):
    mp.start_processes(_ckpt_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True, start_method="spawn")
    for r in (0, 1):
        out = torch.load(tmp_path / f"rank{r}.pt")
        assert out["dropped"] == DROPPED
        assert out["losses"] == out["resumed_losses"]
        for k in out["straight"]:
            torch.testing.assert_close(out["straight"][k], out["resumed"][k], rtol=0, atol=0, msg=k)


def test_unit_groups_are_the_leaf_modules_or_an_error_names_the_way_out():
    import fxdrop
    from fxdrop.distributed import unit_groups
    from tests.models import narrow_resnet18

    net = fxdrop.wrap(narrow_resnet18(width=4), example_inputs=(torch.randn(1, 3, 16, 16),))
    groups = unit_groups(net)
    assert list(groups) == [u.name for u in net.units]
    assert [type(m).__name__ for m in groups["layer1.1"]] == ["Conv2d", "BatchNorm2d", "Conv2d", "BatchNorm2d"]

    class Functional(torch.nn.Module):  # the unit's weight is read as an attribute, not through a module call
        def __init__(self):
            super().__init__()
            self.stem = torch.nn.Conv2d(3, 4, 1)
            self.weight = torch.nn.Parameter(torch.randn(4, 4, 1, 1))
            self.head = torch.nn.Linear(4, 2)

        def forward(self, x):
            x = self.stem(x)
            x = x + F.conv2d(x, self.weight)
            return self.head(x.mean((2, 3)))

    net = fxdrop.wrap(Functional(), example_inputs=(torch.randn(1, 3, 4, 4),))
    assert [u.params for u in net.units] == [("weight",)]
    with pytest.raises(fxdrop.UnitError, match=r"parameter 'weight'.*reads as an attribute.*leaf_modules"):
        unit_groups(net)
