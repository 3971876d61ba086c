"""Learn&Drop under FSDP2, one group per unit: the torchrun example of docs/usage.md.

    torchrun --standalone --nproc-per-node 2 scripts/fsdp_example.py            # CPU: gloo
    torchrun --standalone --nproc-per-node 8 scripts/fsdp_example.py --bf16     # one process per GPU: NCCL

Each rank trains ResNet-18 on its own random data for 12 steps and drops two units at step 4 (rank 0's
choice, agreed by every rank); at the end it checks that the ranks hold the same parameters.
"""
from __future__ import annotations

import argparse
import os

import torch
import torch.distributed as dist
import torch.nn.functional as F
import torchvision

import fxdrop
from fxdrop.distributed import agree, fully_shard


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--drop-at", type=int, default=4)
    p.add_argument("--bf16", action="store_true", help="MixedPrecisionPolicy(param_dtype=torch.bfloat16)")
    a = p.parse_args()
    cuda = torch.cuda.is_available()
    dist.init_process_group("nccl" if cuda else "gloo")
    rank = dist.get_rank()
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    torch.manual_seed(0)  # the same initial weights on every rank
    model = torchvision.models.resnet18(num_classes=10).to(device)
    net = fxdrop.wrap(model, example_inputs=(torch.randn(1, 3, 32, 32, device=device),))
    kwargs = {}
    if a.bf16:
        from torch.distributed.fsdp import MixedPrecisionPolicy

        kwargs["mp_policy"] = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32,
                                                   output_dtype=torch.float32)
    fully_shard(net, **kwargs)  # default mesh: all ranks, on CUDA where there is a GPU
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    g = torch.Generator().manual_seed(100 + rank)  # each rank its own data
    for step in range(1, a.steps + 1):
        x = torch.randn(8, 3, 32, 32, generator=g).to(device)
        y = torch.randint(0, 10, (8,), generator=g).to(device)
        loss = F.cross_entropy(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        net.step(opt)  # a policy (fxdrop.wrap(..., policy=...)) would decide here, agreed across ranks
        if step == a.drop_at:
            net.drop(*agree(["layer1.1", "layer3.1"]))
        if rank == 0:
            print(f"step {step}: loss {loss.item():.4f}, dropped {net.dropped}, flops {net.flops() / net.full_flops():.2f}")
    full = torch.cat([p.full_tensor().flatten().float() for p in net.parameters()])
    other = full.clone()
    dist.broadcast(other, src=0)
    if rank == 0:
        print("ranks agree bit for bit:", torch.equal(full, other))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
