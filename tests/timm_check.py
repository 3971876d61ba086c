"""What the timm zoo test and scripts/timm_zoo.py check for one model (not a test module itself)."""

from __future__ import annotations

import time

import timm
import torch
from torch.utils._pytree import tree_flatten

import fxdrop

MAX_SIZE = 256


def _tensors(out) -> list[torch.Tensor]:
    return [t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor)]


def build(
    name: str, max_size: int = MAX_SIZE, any_size: bool = False, **kwargs
) -> tuple[torch.nn.Module, torch.Tensor]:
    """The model in eval mode, random init, and a batch of one at its input size capped at ``max_size``
    (``img_size=`` is passed to models that take it, others run at their own size, unless ``any_size``
    says the model takes any input size)."""
    cfg = timm.get_pretrained_cfg(name)
    c, h, w = (cfg.input_size if cfg is not None else (3, 224, 224))
    if max(h, w) > max_size:
        h = w = max_size
        if not any_size:
            kwargs["img_size"] = max_size
    try:
        model = timm.create_model(name, **kwargs)
    except TypeError:  # no img_size argument: its own size
        c, h, w = cfg.input_size
        model = timm.create_model(name, **{k: v for k, v in kwargs.items() if k != "img_size"})
    return model.eval(), torch.randn(2, c, h, w)  # two: a train step with BatchNorm on 1x1 maps needs it


def check(name: str, max_size: int = MAX_SIZE, any_size: bool = False, **kwargs) -> dict:
    """Wrap ``name``, compare outputs, check the model is untouched (every parameter and buffer bit-equal,
    training flags unchanged), drop every unit and run a train step; raises what wrap raises."""
    torch.manual_seed(0)
    model, x = build(name, max_size, any_size, **kwargs)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    modes = [m.training for m in model.modules()]
    with torch.no_grad():
        ref = model(x)
    t = time.perf_counter()
    net = fxdrop.wrap(model, example_inputs=(x,))
    wrap_s = time.perf_counter() - t
    untouched = all(torch.equal(v, state[k]) for k, v in model.state_dict().items()) and modes == [
        m.training for m in model.modules()
    ]
    net.eval()
    with torch.no_grad():
        out = net(x)
    fa, fb = _tensors(out), _tensors(ref)
    equal = len(fa) == len(fb) and all(torch.allclose(a, b, rtol=1e-4, atol=1e-5) for a, b in zip(fa, fb))
    names = [u.name for u in net.units]
    full = net.full_flops("eval")
    net.drop(*names)
    removable = 1 - net.flops("eval") / max(full, 1)
    net.train()
    out = net(x)
    loss = sum(t.float().sum() for t in _tensors(out))
    loss.backward()
    return {"model": name, "ok": bool(equal and untouched and torch.isfinite(loss)), "equal": equal,
            "untouched": untouched, "units": len(names), "removable": round(removable, 4),
            "wrap_s": round(wrap_s, 3), "input": list(x.shape), "names": names}
