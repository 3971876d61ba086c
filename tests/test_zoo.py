"""Every torchvision classification model: wrap, compare with the original, drop all, restore all."""

from __future__ import annotations

import pytest
import torch
import torchvision

import fxdrop

from .helpers import assert_outputs_close, grads, loss_of

ALL = torchvision.models.list_models(module=torchvision.models)
# the two largest (by parameters) are skipped for time on a 2-core CI machine
SKIPPED = {"vit_h_14", "regnet_y_128gf"}
ZOO = [n for n in ALL if n not in SKIPPED]
# models that only accept one input size
INPUT_SIZE = {"inception_v3": 299, "maxvit_t": 224, **{n: 224 for n in ALL if n.startswith("vit_")}}
# models wrapped but with nothing to drop: asserted, so a model that gains units fails here
NO_UNITS = {"densenet121", "densenet161", "densenet169", "densenet201"}
# known failures {name: (exception type, message regex)}: asserted, so a fixed model fails the test
KNOWN_FAILURES: dict[str, tuple[type[BaseException], str]] = {}
def _n_params(name: str) -> int:
    try:
        with torch.device("meta"):  # counts without allocating or initialising anything
            model = torchvision.models.get_model(name, weights=None)
    except NotImplementedError:  # a constructor that copies data (relative position tables)
        model = torchvision.models.get_model(name, weights=None)
    return sum(p.numel() for p in model.parameters())


def test_zoo_lists_are_current():
    assert SKIPPED <= set(ALL) and len(SKIPPED) <= 2
    assert set(NO_UNITS) <= set(ALL) and set(KNOWN_FAILURES) <= set(ALL)
    sizes = {n: _n_params(n) for n in ALL}
    assert set(sorted(ALL, key=sizes.__getitem__)[-2:]) == SKIPPED


@pytest.mark.parametrize("name", ZOO)
def test_torchvision_model(name):
    torch.manual_seed(0)
    model = torchvision.models.get_model(name, weights=None)
    size = INPUT_SIZE.get(name, 64)
    x = torch.randn(2, 3, size, size)
    if name in KNOWN_FAILURES:
        exc, match = KNOWN_FAILURES[name]
        with pytest.raises(exc, match=match):
            fxdrop.wrap(model, example_inputs=(x,))
        return
    model.eval()
    with torch.no_grad():
        ref = model(x)
    net = fxdrop.wrap(model, example_inputs=(x,))
    net.eval()
    with torch.no_grad():
        assert_outputs_close(net(x), ref)

    # train mode, same seed: same outputs and same gradients as the original model
    model.train()
    net.train()
    torch.manual_seed(1)
    out_model = model(x)
    loss_of(out_model).backward()
    g_model = grads(model)
    model.zero_grad(set_to_none=True)
    torch.manual_seed(1)
    out_net = net(x)
    loss_of(out_net).backward()
    g_net = grads(net)
    assert_outputs_close(out_net, out_model)
    assert g_model.keys() == g_net.keys()
    for k in g_model:
        assert (g_model[k] is None) == (g_net[k] is None), k
        if g_model[k] is not None:
            torch.testing.assert_close(g_net[k], g_model[k], rtol=1e-3, atol=1e-4, msg=k)

    names = [u.name for u in net.units]
    if name in NO_UNITS:
        assert names == []
        return
    assert names, f"{name} has no units but is not in NO_UNITS"
    assert len(set(names)) == len(names)
    full = net.flops()
    assert net.drop(*names) == names
    net.zero_grad(set_to_none=True)
    out = net(x)
    loss_of(out).backward()
    assert all(torch.isfinite(t).all() for t in [loss_of(out)])
    assert net.flops() < full
    dropped_params = {p for u in net.units for p in u.params}
    for k, p in net.named_parameters():
        if k in dropped_params:
            assert p.grad is None, f"dropped parameter {k} got a gradient"
        elif p.grad is not None:
            assert torch.isfinite(p.grad).all(), k

    assert net.restore(*names) == names
    assert net.flops() == full
    net.eval()
    with torch.no_grad():  # training updated BatchNorm statistics: compare with the model as it is now
        assert_outputs_close(net(x), model(x))
