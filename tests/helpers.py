"""Small shared helpers for the test-suite."""

from __future__ import annotations

import torch
from torch.utils._pytree import tree_flatten


def flat_tensors(out) -> list[torch.Tensor]:
    return [t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor)]


def loss_of(out) -> torch.Tensor:
    return sum(t.float().sum() for t in flat_tensors(out))


def assert_outputs_close(a, b, rtol=1e-4, atol=1e-5) -> None:
    fa, fb = flat_tensors(a), flat_tensors(b)
    assert len(fa) == len(fb) and fa, "output structures differ"
    for x, y in zip(fa, fb):
        torch.testing.assert_close(x, y, rtol=rtol, atol=atol)


def grads(module: torch.nn.Module) -> dict[str, torch.Tensor | None]:
    return {n: (p.grad.detach().clone() if p.grad is not None else None) for n, p in module.named_parameters()}
