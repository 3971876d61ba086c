"""Optional forward arguments traced at their default: calls with the default work, others fail clearly."""

import pytest
import torch
from torch import nn

import fxdrop


class Flags(nn.Module):
    def __init__(self):
        super().__init__()
        self.c, self.d = nn.Conv2d(3, 3, 1), nn.Conv2d(3, 3, 1)

    def forward(self, x, mask=None, flip=False):
        y = x + self.c(x)
        if mask is not None:
            y = y * mask
        if flip:
            y = -y
        return y + self.d(y)


def test_defaults_pass_other_values_raise_naming_the_argument():
    model = Flags()
    net = fxdrop.wrap(model, example_inputs=(torch.randn(1, 3, 4, 4),))
    x = torch.randn(2, 3, 4, 4)
    want = model(x)
    for call in (lambda: net(x), lambda: net(x, flip=False), lambda: net(x, None, False), lambda: net(x, mask=None)):
        torch.testing.assert_close(call(), want)
    with pytest.raises(fxdrop.TraceError, match=r"flip=False.*flip=True.*concrete_args"):
        net(x, flip=True)
    with pytest.raises(fxdrop.TraceError, match=r"mask=None.*mask=a Tensor"):
        net(x, torch.ones(1))


def test_concrete_args_trace_the_value_the_user_passes():
    model = Flags()
    x = torch.randn(2, 3, 4, 4)
    # torch.fx renames concrete arguments' placeholders (flip -> flip_1): give them positionally
    net = fxdrop.wrap(model, example_inputs=(x[:1], None, True), concrete_args={"mask": None, "flip": True})
    torch.testing.assert_close(net(x, None, True), model(x, flip=True))
