"""Forward time: original model vs fxdrop.wrap with 0/25/50/100% of units dropped, eager and compiled."""

import torch

from .cases import build, rounds, sync


def test_forward(benchmark, case, request):
    fn, x, info = build(case)
    fn.train()  # training-time forward: what dropping speeds up
    benchmark.group = f"forward {case.group}"
    benchmark.extra_info.update(info, model=case.model, size=case.size, mode=case.mode, variant=case.variant,
                                batch=case.batch, device=case.device, kind="forward")

    def run():
        with torch.no_grad():
            out = fn(x)
        sync(case.device)
        return out

    run()  # warm-up; compiles in compiled mode
    out = benchmark.pedantic(run, rounds=rounds(request.config), warmup_rounds=1 if rounds(request.config) > 1 else 0)
    assert out.shape == (case.batch, 10) and torch.isfinite(out).all()
