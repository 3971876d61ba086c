"""The docs' code blocks run as written: README's loop snippet, and docs/usage.md's blocks that hold no
placeholders (``model``, ``loader``, ... that the reader supplies are given by the test's namespace)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
import torchvision

ROOT = Path(__file__).resolve().parents[1]


def _blocks(path: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", (ROOT / path).read_text(), re.S)


def test_readme_loop_snippet_runs_and_wraps_with_the_default_policy(capsys):
    import fxdrop

    (snippet,) = _blocks("README.md")
    scope: dict = {}
    exec(compile(snippet, "README.md", "exec"), scope)
    net = scope["net"]
    assert isinstance(net.policy, fxdrop.LearnAndDrop) and net.steps == 20
    assert net.policy.total_steps == 20  # read from the CosineAnnealingLR of the snippet
    assert "5 units" in capsys.readouterr().out


def _user_namespace() -> dict:
    """What usage.md's snippets take from the reader: a model, a loader of (x, y), an epoch count, data."""
    torch.manual_seed(0)
    data = [(torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))) for _ in range(3)]
    return {"model": torchvision.models.resnet18(num_classes=10), "loader": data, "epochs": 1,
            "x": data[0][0], "val_set": list(zip(data[0][0], data[0][1]))}


USAGE = _blocks("docs/usage.md")
RUNNABLE = [i for i, b in enumerate(USAGE) if "torchrun" not in b and "dist." not in b and "L.Trainer" not in b
            and "rank" not in b and "ckpt" not in b and "fully_shard" not in b]


@pytest.mark.parametrize("i", RUNNABLE)
def test_usage_snippet_runs(i):
    scope = _user_namespace()
    exec(compile("import torch, torch.nn.functional as F, torchvision, fxdrop\n" + USAGE[i], f"usage.md[{i}]",
                 "exec"), scope)
