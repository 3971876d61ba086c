"""End-to-end: the CLI trains full and Learn&Drop on real (bundled) MNIST."""

import json

import pytest

from fxdrop import data
from fxdrop.cli import main


def test_bundled_data_is_real_mnist():
    d = data.load("mnist-small")
    assert d.train_x.shape == (12000, 1, 28, 28) and d.test_x.shape == (2000, 1, 28, 28)
    assert d.train_y.bincount().min() > 1000  # every digit is there
    assert d.train_x.float().mean() / 255 == pytest.approx(0.1307, abs=0.01)  # MNIST's known mean


def test_missing_local_datasets_say_how_to_get_them(tmp_path):
    with pytest.raises(FileNotFoundError, match="--data-dir.*cifar-10-batches-py.*never downloads"):
        data.load("cifar10", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="--data-dir"):
        data.load("imagenette", None)
    with pytest.raises(ValueError, match="unknown dataset"):
        data.load("imagenet")


def test_idx_loader_reads_torchvision_layout(tmp_path):
    import gzip

    import numpy as np

    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    imgs = np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28)
    for split, n in (("train", 2), ("t10k", 2)):
        header = (2051).to_bytes(4, "big") + n.to_bytes(4, "big") + (28).to_bytes(4, "big") * 2
        with gzip.open(raw / f"{split}-images-idx3-ubyte.gz", "wb") as f:
            f.write(header + imgs.tobytes())
        with open(raw / f"{split}-labels-idx1-ubyte", "wb") as f:
            f.write((2049).to_bytes(4, "big") + n.to_bytes(4, "big") + bytes([3, 7]))
    d = data.load("mnist", str(tmp_path))
    assert d.train_x.shape == (2, 1, 28, 28) and d.train_y.tolist() == [3, 7]
    assert (d.train_x[1, 0] == imgs[1]).all()


def test_cli_run_end_to_end(capsys):
    rc = main(["run", "--model", "resnet18", "--epochs", "2", "--train-limit", "2000", "--test-limit", "1000",
               "--batch-size", "64", "--json", "--no-progress", "--policy", "learn-and-drop", "random"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    runs = {r["policy"]: r for r in out["runs"]}
    assert set(runs) == {"none", "learn-and-drop", "random"}
    ld = runs["learn-and-drop"]
    assert ld["dropped"], "Learn&Drop dropped nothing"
    assert ld["flops_ratio"] < 1.0
    assert runs["none"]["test_acc"] >= 0.85 and ld["test_acc"] >= 0.85  # stated floor for 2 epochs on 2k images
    # random replays the same schedule: same number of drops at the same steps
    assert [(s, len(n)) for s, n in runs["random"]["events"]] == [(s, len(n)) for s, n in ld["events"]]


def test_cli_units_and_errors(capsys):
    assert main(["units", "--model", "vgg11", "--input-size", "32", "--num-classes", "10"]) == 0
    assert "features.8" in capsys.readouterr().out
    assert main(["run", "--model", "nonexistent_net", "--no-progress"]) == 2
    assert "unknown model" in capsys.readouterr().err


def test_cli_user_factory_and_ld_knobs(capsys):
    rc = main(["run", "--model", "tests.models:tiny_resnet", "--epochs", "2", "--train-limit", "1024",
               "--test-limit", "256", "--json", "--no-progress", "--ld", "stop=0.5", "interval=4"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["config"]["ld_options"] == {"stop": 0.5, "interval": 4}
    assert out["runs"][1]["units"] == 2
    assert main(["run", "--ld", "plateau=7", "--no-progress"]) == 2
    assert "plateau must be" in capsys.readouterr().err
