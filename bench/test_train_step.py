"""One optimizer step (forward + backward + SGD step) for the forward suite's cases."""

import torch
import torch.nn.functional as F

from .cases import build, rounds, sync


def test_train_step(benchmark, case, request):
    fn, x, info = build(case)
    fn.train()
    y = torch.arange(case.batch, device=case.device) % 10
    opt = torch.optim.SGD([p for p in fn.parameters() if p.requires_grad], lr=1e-3, momentum=0.9)
    benchmark.group = f"train-step {case.group}"
    benchmark.extra_info.update(info, model=case.model, size=case.size, mode=case.mode, variant=case.variant,
                                batch=case.batch, device=case.device, kind="train_step")
    snapshot = {k: v.detach().clone() for k, v in fn.state_dict().items()}

    def step():
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(fn(x), y)
        loss.backward()
        opt.step()
        sync(case.device)
        return loss

    step()
    loss = benchmark.pedantic(step, rounds=rounds(request.config), warmup_rounds=1 if rounds(request.config) > 1 else 0)
    assert torch.isfinite(loss)
    fn.load_state_dict(snapshot)  # the cached model is shared between cases
