"""DDP with the gloo backend, 2 processes on CPU: same decisions, same weights, no hang."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
import torchvision

import fxdrop
from fxdrop.distributed import DistributedDropNet


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, out_dir: str, full: bool = False, disagree: int | None = None) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=__import__("datetime").timedelta(seconds=60))
    try:
        torch.manual_seed(0)  # same init on both ranks
        if full:
            model = torchvision.models.resnet18(num_classes=10)
        else:  # same blocks and unit names, 16 channels in the first stage: ~1/13 of the FLOPs
            from tests.models import narrow_resnet18

            model = narrow_resnet18(width=16)
        pol = fxdrop.LearnAndDrop(interval=4, tolerance=0.99)
        import fxdrop.policies.learn_and_drop as ld

        ld._CHECK_SHARE = 1e9  # checks of 8-row batches are what the test is about, not their budget
        if disagree == rank:  # this rank alone would return every cohort after its probation
            judge = pol._judge

            def always_back(due, step):
                judge(due, step)
                return [n for t in due for n in t["names"]]

            pol._judge = always_back
        net = fxdrop.wrap(model, example_inputs=(torch.randn(1, 3, 32, 32),), policy=pol)
        ddp = DistributedDropNet(net)
        opt = torch.optim.SGD(ddp.parameters(), lr=0.05, momentum=0.9)
        g = torch.Generator().manual_seed(100 + rank)  # each rank its own data shard
        x = torch.randn(8, 3, 32, 32, generator=g)
        y = torch.randint(0, 10, (8,), generator=g)
        ddp.train()
        for _ in range(30):
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(ddp(x), y).backward()
            opt.step()
            ddp.step(opt, targets=y)
        torch.save({"dropped": net.dropped, "events": pol.events, "rebuilds": ddp.rebuilds, "checks": pol.checks,
                    "restored": pol.restored, "backoff": dict(pol.wait),
                    "params": {k: v.detach().clone() for k, v in net.named_parameters()}},
                   os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("full, disagree", [(False, None), pytest.param(False, 1, marks=pytest.mark.slow),
                                            pytest.param(False, 0, marks=pytest.mark.slow),
                                            pytest.param(True, None, marks=pytest.mark.slow, id="resnet18")])
def test_ddp_gloo_two_ranks(tmp_path, full, disagree):
    # disagree=r: rank r alone would restore every cohort after its probation; rank 0's decision must hold on
    # both, with what follows from it (a restored unit waits before it is tried again)
    mp.start_processes(_worker, args=(2, _free_port(), str(tmp_path), full, disagree), nprocs=2, join=True,
                       start_method="spawn")
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    assert r0["events"] and (r0["dropped"] or disagree == 0), "the run should have dropped units"
    assert r0["dropped"] == r1["dropped"] and r0["events"] == r1["events"]
    assert r0["restored"] == r1["restored"]  # rank 0's returns on every rank
    if disagree is not None:
        assert any(c["kind"] == "probation" for c in (r0, r1)[disagree]["checks"]), "a cohort must have been judged"
        assert bool(r0["restored"]) == (disagree == 0)
    else:
        assert r0["rebuilds"] == len(r0["events"]) + 1  # initial wrap + one per drop event
    assert r0["backoff"] == r1["backoff"]  # rank 0's: a restored unit waits alike on every rank
    # parameters are identical (gradients are averaged); BatchNorm buffers hold each rank's last local
    # batch statistics, as with plain DDP, so they are not compared
    for k in r0["params"]:
        torch.testing.assert_close(r0["params"][k], r1["params"][k], rtol=0, atol=0, msg=k)
