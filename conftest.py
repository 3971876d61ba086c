"""Root conftest: command-line options of the benchmark suites (bench/), which pytest only accepts
from a conftest at the root of the run."""


def pytest_addoption(parser):
    g = parser.getgroup("fxdrop benchmarks")
    g.addoption("--bench-set", default="smoke", choices=["smoke", "quick", "full"],
                help="smoke: one tiny case per suite (CI); quick: a few minutes on CPU; full: every model")
    g.addoption("--bench-models", default=None, help="comma-separated torchvision model names (overrides the set)")
    g.addoption("--bench-sizes", default=None, help="comma-separated input sizes, e.g. 32,224")
    g.addoption("--bench-device", default="cpu", help="cpu or cuda")
    g.addoption("--bench-rounds", type=int, default=None, help="timed rounds per case")
    g.addoption("--bench-no-compile", action="store_true", help="skip the torch.compile cases")
