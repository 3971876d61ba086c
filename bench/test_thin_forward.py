"""Forward time: drop-all ResNet-152 against the thin network built without those blocks (issue 36's
1.02x target), eager and compiled. ``bench/thin.py`` measures the ratio interleaved."""

import pytest
import torch

from .cases import SETS, rounds
from .thin import arms


@pytest.mark.slow  # a ResNet-152 wrap costs ~5 s of the fast tier's budget; the compiled arms ~1 min each
@pytest.mark.parametrize("mode", ["eager", "compiled"])
@pytest.mark.parametrize("arm", ["native", "dropped"])
def test_thin_forward(benchmark, request, arm, mode):
    sizes = request.config.getoption("--bench-sizes")
    size = int(sizes.split(",")[0]) if sizes else 224
    batch = SETS[request.config.getoption("--bench-set")]["batch"].get(size, 2)
    native, dropped, x = arms(size, batch, compiled=mode == "compiled")
    fn = native if arm == "native" else dropped
    benchmark.group = f"thin forward resnet152-{size}-{mode}"
    benchmark.extra_info.update(model="resnet152", arm=arm, mode=mode, size=size, batch=batch, kind="forward")

    def run():
        with torch.no_grad():
            return fn(x)

    run()  # warm-up; compiles in compiled mode
    out = benchmark.pedantic(run, rounds=rounds(request.config), warmup_rounds=1 if rounds(request.config) > 1 else 0)
    assert out.shape == (batch, 10) and torch.isfinite(out).all()
