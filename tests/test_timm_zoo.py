"""timm's families: wrap one small model of each, compare with the original, check the model is left
bit-equal, drop every unit and train a step. A fast subset runs by default; every family is ``slow``.

The families are timm's model modules (``timm.list_modules()``), each represented by its smallest model
(tests/timm_families.json, written by ``python scripts/timm_zoo.py --pick``).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

timm = pytest.importorskip("timm")

import fxdrop  # noqa: E402

from .timm_check import check  # noqa: E402

FAMILIES: dict[str, str] = json.loads((Path(__file__).parent / "timm_families.json").read_text())

# fast subset: (model, input size, any_size, expected units or None), small inputs
FAST = {
    "resnet": ("resnet18", 64, True, 5),
    "cspnet": ("cs3darknet_focus_s", 64, True, None),  # BatchNormAct2d traced through: the weight-safety case
    "convnext": ("convnext_atto", 64, True, 12),
    "vision_transformer": ("vit_tiny_patch16_224", 64, False, 24),
    "efficientnet": ("test_efficientnet", 64, True, None),
    "metaformer": ("poolformer_s12", 64, True, 24),
}

# families that cannot be wrapped {family: (exception type, message regex)}: asserted, so a family that
# starts to work fails here and the table never goes stale
KNOWN_FAILURES: dict[str, tuple[type[BaseException], str]] = {
    # the root forward has data-dependent control flow; the error names the submodule to wrap instead
    "crossvit": (fxdrop.TraceError, r"root module CrossVit itself.*largest submodule that traces is 'blocks\.0'"),
    "vision_transformer": (fxdrop.TraceError, r"root module VisionTransformer itself.*largest submodule that traces is 'blocks'"),
}


def _assert_ok(rec: dict) -> None:
    assert rec["untouched"], "wrap changed a parameter, buffer or training flag of the model"
    assert rec["equal"], "the wrapped model's eval output differs from the model's"
    assert rec["ok"]
    assert len(set(rec["names"])) == len(rec["names"])


def test_family_lists_are_current():
    assert set(FAST) <= set(FAMILIES) and set(KNOWN_FAILURES) <= set(FAMILIES)
    assert set(FAMILIES) <= set(timm.list_modules())


@pytest.mark.parametrize("family", sorted(FAST))
def test_timm_fast(family):
    name, size, any_size, units = FAST[family]
    kwargs = {} if any_size else {"img_size": size}
    rec = check(name, max_size=size, any_size=any_size, **kwargs)
    _assert_ok(rec)
    if units is not None:
        assert rec["units"] == units, rec["names"]
    assert rec["units"] > 0


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_timm_family(family):
    name = FAMILIES[family]
    if family in KNOWN_FAILURES:
        exc, match = KNOWN_FAILURES[family]
        with pytest.raises(exc, match=match):
            check(name)
        return
    _assert_ok(check(name))
