import pytest

from .cases import cases


def pytest_generate_tests(metafunc):
    if "case" in metafunc.fixturenames:
        # torch.compile (inductor) costs about a minute of CPU and GBs of memory per case on 2 cores: the
        # compiled cases are in the slow tier; the eager ones check the suites in the default one
        cs = [pytest.param(c, id=c.id, marks=[pytest.mark.slow] if c.mode == "compiled" else [])
              for c in cases(metafunc.config)]
        metafunc.parametrize("case", cs)


@pytest.fixture(autouse=True)
def _device_available(request):
    dev = request.config.getoption("--bench-device")
    if dev.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            pytest.fail("--bench-device cuda but no CUDA device is visible")


def pytest_configure(config):
    import torch._dynamo

    # every case compiles its own module; the default limit (8) would make later cases fall back to eager
    torch._dynamo.config.cache_size_limit = 64
    torch._dynamo.config.accumulated_cache_size_limit = 1024
