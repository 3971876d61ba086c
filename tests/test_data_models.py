"""The bundled Fashion-MNIST subset, the CIFAR ResNets and build_model (issue 8, item 4)."""

from __future__ import annotations

import gzip
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

import fxdrop
from fxdrop import data
from fxdrop.cli import main
from fxdrop.models import CifarResNet, build_model, cifar_vgg11, resnet20, resnet32, resnet56

ROOT = Path(__file__).resolve().parent.parent
X32 = (torch.randn(2, 3, 32, 32),)


# ---- fashion-small ----------------------------------------------------------------------------------

def test_fashion_small_shape_balance_and_known_statistics():
    d = data.load("fashion-small")
    assert d.train_x.shape == (6000, 1, 28, 28) and d.test_x.shape == (2000, 1, 28, 28)
    assert d.train_x.dtype == torch.uint8 and d.train_y.dtype == torch.long
    assert d.train_y.bincount().tolist() == [600] * 10  # exactly class-balanced
    assert d.test_y.bincount().tolist() == [200] * 10
    x = d.train_x.double() / 255
    # Fashion-MNIST's full training set: mean 0.2860, std 0.3530 (MNIST's would be 0.1307 / 0.3081)
    assert x.mean().item() == pytest.approx(0.2860, abs=0.002)
    assert x.std().item() == pytest.approx(0.3530, abs=0.002)
    assert (d.mean, d.std, d.num_classes) == ((0.2860,), (0.3530,), 10)
    assert "MIT" in d.source and "Zalando" in d.source
    # stored in permutation order: a --train-limit prefix holds every class, not one class first
    assert d.train_y[:512].bincount(minlength=10).min() >= 30


def test_fashion_small_is_bundled_and_loads_batches(monkeypatch, tmp_path):
    monkeypatch.setenv("FXDROP_DATA", str(tmp_path))  # nothing outside the package is read
    d = data.load("fashion-small", str(tmp_path / "missing")).limit(256, 64)
    assert data.BUNDLED_FASHION.parent == Path(data.__file__).parent / "data"
    xb, yb = next(d.batches("train", 128, torch.Generator().manual_seed(0)))
    x = d.prepare(xb, channels=3, size=32)
    assert x.shape == (128, 3, 32, 32) and yb.shape == (128,)
    inner = x[:, :, 2:30, 2:30]  # the 28x28 image inside the zero-padding
    assert inner.mean().item() == pytest.approx(0.0, abs=0.15) and inner.std().item() == pytest.approx(1.0, abs=0.15)
    assert len(list(d.batches("test", 50))) == 2  # 64 test images: batches of 50 and 14


def test_fashion_small_differs_from_mnist_small():
    f, m = data.load("fashion-small"), data.load("mnist-small")
    assert not torch.equal(f.test_x[:10], m.test_x[:10])
    assert f.test_x.float().mean() > m.test_x.float().mean() * 1.5  # clothes cover more of the frame


@pytest.mark.skipif(not Path("/usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz").exists(),
                    reason="Debian dataset-fashion-mnist not installed")
def test_make_fashion_small_reproduces_the_bundled_file(tmp_path):
    spec = importlib.util.spec_from_file_location("make_fashion_small", ROOT / "scripts" / "make_fashion_small.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    built = script.build(script.SRC, tmp_path / "f.npz")
    bundled = np.load(data.BUNDLED_FASHION)
    for key in ("train_x", "train_y", "test_x", "test_y"):
        assert built[key].dtype == np.uint8 and np.array_equal(built[key], bundled[key]), key


def test_fashion_mnist_local_dir_loader(tmp_path):
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    imgs = np.arange(3 * 28 * 28, dtype=np.uint8).reshape(3, 28, 28)
    for split in ("train", "t10k"):
        with gzip.open(raw / f"{split}-images-idx3-ubyte.gz", "wb") as f:
            f.write((2051).to_bytes(4, "big") + (3).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2 + imgs.tobytes())
        with gzip.open(raw / f"{split}-labels-idx1-ubyte.gz", "wb") as f:
            f.write((2049).to_bytes(4, "big") + (3).to_bytes(4, "big") + bytes([9, 0, 4]))
    d = data.load("fashion-mnist", str(tmp_path))
    assert d.name == "fashion-mnist" and d.train_x.shape == (3, 1, 28, 28) and d.test_y.tolist() == [9, 0, 4]
    assert torch.equal(d.train_x[2, 0], torch.from_numpy(imgs[2])) and d.mean == (0.2860,)


# ---- CIFAR ResNets -----------------------------------------------------------------------------------
# Parameters by hand, option B, 10 classes (convs have no bias):
#   stem 3*16*9 + BN 2*16 = 464; fc 64*10 + 10 = 650
#   stage 1: n blocks of 2*(16*16*9) + 2*2*16 = 4,672
#   stage 2: first 16*32*9 + 32*32*9 + 2*64 + (16*32 + 64) = 14,528; then (n-1) x (2*32*32*9 + 128) = 18,560
#   stage 3: first 32*64*9 + 64*64*9 + 2*128 + (32*64 + 128) = 57,728; then (n-1) x (2*64*64*9 + 256) = 73,984
#   total = 73,370 + 4,672 n + 92,544 (n-1): n=3 -> 272,474; n=5 -> 466,906; n=9 -> 855,770
#   (the paper's option A has no 1x1 shortcut convs: 270,394 / 464,826 / 853,690 = 0.27M / 0.46M / 0.85M)

@pytest.mark.parametrize("factory, n, params", [(resnet20, 3, 272_474), (resnet32, 5, 466_906), (resnet56, 9, 855_770)])
def test_cifar_resnet_parameters_shape_and_units(factory, n, params):
    model = factory(num_classes=10)
    assert sum(p.numel() for p in model.parameters()) == params
    assert sum(isinstance(m, torch.nn.Conv2d) for m in model.modules()) == 6 * n + 3  # 3x3: stem + 6n; 1x1: 2
    assert model(X32[0]).shape == (2, 10)
    net = fxdrop.wrap(model, example_inputs=X32)
    # identity-skip blocks: all n of stage 1 (the stem already gives 16 channels) and n-1 of stages 2, 3;
    # each stage's first block of stages 2 and 3 has a downsample shortcut and is not a unit
    expected = [f"layer1.{i}" for i in range(n)] + [f"layer{s}.{i}" for s in (2, 3) for i in range(1, n)]
    assert [u.name for u in net.units] == expected and len(expected) == 3 * n - 2
    assert {u.kind for u in net.units} == {"residual"}


def test_cifar_vgg11_parameters_units_and_flops():
    # convs by hand (3x3, no bias): 3*64*9 + 64*128*9 + 128*256*9 + 256*256*9 + 256*512*9 + 3 * 512*512*9
    #   = 1,728 + 73,728 + 294,912 + 589,824 + 1,179,648 + 7,077,888 = 9,217,728; BN 2*(64+128+256*2+512*4)
    #   = 5,504; linear 512*10 + 10 = 5,130: 9,228,362
    model = cifar_vgg11(num_classes=10)
    assert sum(p.numel() for p in model.parameters()) == 9_228_362
    assert model(X32[0]).shape == (2, 10)
    net = fxdrop.wrap(model, example_inputs=X32)
    # the shape-preserving convs (256 -> 256 at 8 px, 512 -> 512 at 4 px and twice at 2 px), as
    # torchvision's vgg11_bn indexes them; MACs 256*256*9*64 = 512*512*9*16 = 37,748,736, 512*512*9*4 =
    # 9,437,184 each, of 152,764,416 conv MACs in all: shares 0.2471 and 0.0618 (BN, ReLU and pooling
    # add a little to the whole)
    assert [u.name for u in net.units] == ["features.11", "features.18", "features.22", "features.25"]
    assert {u.kind for u in net.units} == {"chain"}
    shares = [u.flops / net.full_flops("train") for u in net.units]
    assert shares == pytest.approx([0.2471, 0.2471, 0.0618, 0.0618], abs=2e-3)
    assert build_model("cifar_vgg11", 7)(X32[0]).shape == (2, 7)


def test_cifar_resnet_structure_and_init():
    m = resnet20(num_classes=7, in_channels=1)
    assert m(torch.randn(2, 1, 32, 32)).shape == (2, 7)
    assert m.conv1.kernel_size == (3, 3) and m.conv1.stride == (1, 1)
    assert not any(isinstance(x, torch.nn.MaxPool2d) for x in m.modules())
    assert m.layer1[0].downsample is None and m.layer2[0].downsample[0].kernel_size == (1, 1)
    assert [m.layer2[0].conv1.stride, m.layer3[0].conv1.stride] == [(2, 2), (2, 2)]
    w = m.layer3[1].conv2.weight  # Kaiming normal, fan_out: std = sqrt(2 / (64 * 9)) = 0.0589
    assert w.std().item() == pytest.approx((2 / (64 * 9)) ** 0.5, rel=0.05)
    with pytest.raises(ValueError, match="blocks"):
        CifarResNet(0)


def test_resnet20_drop_all_still_trains_one_step():
    torch.manual_seed(0)
    model = resnet20(num_classes=10)
    net = fxdrop.wrap(model, example_inputs=X32)
    names = [u.name for u in net.units]
    assert net.drop(*names) == names and net.flops() < net.full_flops()
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))
    before = model.layer2[0].conv1.weight.detach().clone()
    dropped_before = model.layer1[1].conv1.weight.detach().clone()
    loss = torch.nn.functional.cross_entropy(net(x), y)
    loss.backward()
    opt.step()
    net.step()
    assert torch.isfinite(loss)
    assert not torch.equal(model.layer2[0].conv1.weight, before)  # the kept downsampling block learned
    assert torch.equal(model.layer1[1].conv1.weight, dropped_before)  # a dropped block did not
    assert net(x).shape == (8, 10)


# ---- build_model -------------------------------------------------------------------------------------

def test_build_model_names_and_errors():
    from fxdrop import train

    assert train.build_model is build_model  # still exported where the CLI and users import it
    assert isinstance(build_model("resnet56", 5), CifarResNet) and build_model("resnet56", 5).fc.out_features == 5
    assert build_model("resnet18", 7).fc.out_features == 7  # torchvision
    assert build_model("fxdrop.models:resnet32", 3).fc.out_features == 3  # package.module:factory
    with pytest.raises(ValueError, match=r"unknown model 'resnet5'; did you mean .*'resnet56'.*'resnet50'") as e:
        build_model("resnet5", 10)
    assert "torchvision" in str(e.value) and "package.module:factory" in str(e.value)
    with pytest.raises(ValueError, match=r"unknown model 'zzzz'\. Model names come from"):
        build_model("zzzz", 10)


def test_cli_lists_resnet20_units_and_rejects_typos(capsys):
    assert main(["units", "--model", "resnet20", "--num-classes", "10", "--input-size", "32"]) == 0
    out = capsys.readouterr().out
    assert "layer1.0" in out and "layer3.2" in out and "layer2.0 " not in out
    assert main(["run", "--model", "resnet5", "--dataset", "fashion-small", "--no-progress"]) == 2
    assert "did you mean" in capsys.readouterr().err
