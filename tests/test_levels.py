"""Nested units: ``wrap(..., level=k)`` picks how coarse the droppable units are."""

from __future__ import annotations

import pytest
import torch
import torchvision

import fxdrop

from .helpers import assert_outputs_close

VIT_LAYERS = [f"encoder.layers.encoder_layer_{i}" for i in range(12)]
CASES = [  # model, input side, level, expected unit names (or count and a name pattern)
    ("resnet18", 64, 0, ["layer1.0", "layer1.1", "layer2.1", "layer3.1", "layer4.1"]),
    ("resnet18", 64, 1, ["layer1", "layer2.1", "layer3.1", "layer4.1"]),
    ("vit_12x32", 32, 1, VIT_LAYERS),
    pytest.param("vit_b_16", 32, 1, VIT_LAYERS, marks=pytest.mark.slow),
    pytest.param("swin_t", 64, 1, [f"features.{s}.{b}" for s, n in ((1, 2), (3, 2), (5, 6), (7, 2)) for b in range(n)],
                 marks=pytest.mark.slow),
    pytest.param("swin_t", 64, 2, ["features.1", "features.3", "features.5", "features.7"], marks=pytest.mark.slow),
    pytest.param("convnext_tiny", 64, "outer", ["features.1", "features.3", "features.5", "features.7"],
                 marks=pytest.mark.slow),
]


def _model(name, side):
    torch.manual_seed(0)
    if name == "vit_12x32":  # vit_b_16's class and 12 encoder layers, 32 wide: its graph at 1/670 of the weights
        return torchvision.models.VisionTransformer(image_size=side, patch_size=16, num_layers=12, num_heads=2,
                                                    hidden_dim=32, mlp_dim=64, num_classes=10).eval()
    kw = {"image_size": side} if name.startswith("vit") else {}
    return getattr(torchvision.models, name)(num_classes=10, **kw).eval()


def _id(case) -> str:
    values = case.values if hasattr(case, "values") else case
    return f"{values[0]}-{values[2]}"


@pytest.mark.parametrize("name, side, level, expected", CASES, ids=[_id(c) for c in CASES])
def test_level_picks_the_units_of_that_level_and_they_drop(name, side, level, expected):
    model = _model(name, side)
    x = torch.randn(2, 3, side, side)
    net = fxdrop.wrap(model, example_inputs=(x,), level=level).eval()
    assert [u.name for u in net.units] == expected
    inner = {u.name: u for u in fxdrop.wrap(model, example_inputs=(x,)).units}
    for u in net.units:  # a coarser unit holds every finer unit it contains, parameters and FLOPs
        held = [v for v in inner.values() if set(v.params) <= set(u.params)]
        assert sum(v.flops for v in held) <= u.flops
    with torch.no_grad():
        assert_outputs_close(net(x), model(x))
        net.drop(*expected)
        out = net(x)
    assert out.shape == (2, 10) and torch.isfinite(out).all()
    assert net.flops("eval") < net.full_flops("eval")


def test_bad_level_is_refused_before_tracing():
    with pytest.raises(ValueError, match="level must be an int >= 0, 'inner' or 'outer', got 'top'"):
        fxdrop.wrap(torchvision.models.resnet18(), level="top")
    with pytest.raises(ValueError, match="got -1"):
        fxdrop.wrap(torchvision.models.resnet18(), level=-1)
