"""Benchmark cases shared by the suites: models, input sizes, drop variants, eager/compiled."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import torchvision

import fxdrop

SETS = {
    "smoke": {"models": ["resnet18"], "sizes": [32], "batch": {32: 2, 224: 1}, "rounds": 1,
              "variants": ["original", "wrapped", "50%", "all"]},
    "quick": {"models": ["resnet18", "vgg11"], "sizes": [32], "batch": {32: 32, 224: 4}, "rounds": 5,
              "variants": ["original", "wrapped", "25%", "50%", "all"],
              "compiled_variants": ["original", "wrapped", "all"]},  # inductor compiles cost ~1 min each here
    "full": {"models": ["resnet18", "resnet50", "resnet152", "vgg11", "vgg16", "mobilenet_v2", "convnext_tiny"],
             "sizes": [32, 224], "batch": {32: 32, 224: 4}, "rounds": 5,
             "variants": ["original", "wrapped", "25%", "50%", "all"]},
}
FRACTION = {"wrapped": 0.0, "25%": 0.25, "50%": 0.5, "all": 1.0}


@dataclass(frozen=True)
class Case:
    model: str
    size: int
    variant: str
    mode: str  # eager | compiled
    batch: int
    device: str

    @property
    def id(self) -> str:
        return f"{self.model}-{self.size}-{self.mode}-{self.variant}"

    @property
    def group(self) -> str:
        return f"{self.model}-{self.size}-{self.mode}"


def cases(config, modes=("eager", "compiled")) -> list[Case]:
    s = SETS[config.getoption("--bench-set")]
    models = config.getoption("--bench-models")
    sizes = config.getoption("--bench-sizes")
    models = models.split(",") if models else s["models"]
    sizes = [int(x) for x in sizes.split(",")] if sizes else s["sizes"]
    if config.getoption("--bench-no-compile"):
        modes = tuple(m for m in modes if m != "compiled")
    dev = config.getoption("--bench-device")
    def variants(mode):
        return s.get("compiled_variants", s["variants"]) if mode == "compiled" else s["variants"]

    return [Case(m, size, v, mode, s["batch"].get(size, 2), dev)
            for m in models for size in sizes for mode in modes for v in variants(mode)]


def rounds(config) -> int:
    return config.getoption("--bench-rounds") or SETS[config.getoption("--bench-set")]["rounds"]


@functools.lru_cache(maxsize=4)
def model_for(name: str, size: int, device: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return torchvision.models.get_model(name, weights=None, num_classes=10).to(device)


def evenly(units: list, fraction: float) -> list[str]:
    """``fraction`` of the units, spread evenly over depth (first and last included when possible)."""
    k = round(fraction * len(units))
    if k == 0:
        return []
    if k >= len(units):
        return [u.name for u in units]
    step = (len(units) - 1) / max(k - 1, 1)
    return [units[round(i * step)].name for i in range(k)] if k > 1 else [units[len(units) // 2].name]


def build(case: Case):
    """Returns (callable module, x, extra_info). The user's model is never changed."""
    model = model_for(case.model, case.size, case.device)
    x = torch.randn(case.batch, 3, case.size, case.size, device=case.device)
    if case.variant == "original":
        fn = torch.compile(model) if case.mode == "compiled" else model
        net = fxdrop.wrap(model, example_inputs=(x[:1],))  # only for the FLOPs figure
        info = {"flops": net.full_flops(), "flops_ratio": 1.0, "units_dropped": 0, "units": len(net.units)}
        return fn, x, info
    net = fxdrop.wrap(model, example_inputs=(x[:1],), compile=case.mode == "compiled")
    names = evenly(net.units, FRACTION[case.variant])
    net.drop(*names)
    info = {"flops": net.flops(), "flops_ratio": net.flops() / net.full_flops(), "units_dropped": len(names),
            "units": len(net.units)}
    return net, x, info


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
