"""Time ``fxdrop.wrap`` (trace, shape and FLOPs propagation, verification, unit search)."""

import pytest
import torch
import torchvision

import fxdrop


@pytest.mark.parametrize("name", ["resnet18", pytest.param("resnet152", marks=pytest.mark.slow),
                                  pytest.param("vit_b_16", marks=pytest.mark.slow)])
def test_wrap_time(benchmark, request, name):
    size = 224 if name == "vit_b_16" else 64
    x = torch.randn(1, 3, size, size)
    benchmark.group = "wrap"
    benchmark.extra_info.update(model=name, size=size, kind="wrap")
    net = benchmark.pedantic(lambda: fxdrop.wrap(torchvision.models.get_model(name, weights=None),
                                                 example_inputs=(x,)), rounds=3, warmup_rounds=1)
    assert net.units
