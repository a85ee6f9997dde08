"""Each data source through the datamodule: bundled sets, generated IDX files, corrupt files."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import SPLIT2
from mergeprune.data.datamodule import MultiTaskDataModule
from mergeprune.errors import DataError
from mergeprune.tasks import build_tasks


def test_mnist5k_splits_and_targets() -> None:
    tasks = build_tasks(SPLIT2, 10)
    dm = MultiTaskDataModule(tasks, source="mnist5k", val_size=500, test_size=1000)
    dm.setup()
    assert [len(dm.splits[s]) for s in ("train", "val", "test")] == [3500, 500, 1000]
    assert dm.input_shape == (1, 28, 28)
    x, (lo, hi) = next(iter(dm.loader("train")))
    assert x.shape == (64, 1, 28, 28) and lo.shape == (64, 5) and hi.shape == (64, 5)
    labels = dm.splits["train"].labels[:64]
    assert torch.all((lo == 1).sum(1) == (labels < 5).long())  # one +1 attribute for digits 0-4
    again = MultiTaskDataModule(tasks, source="mnist5k", val_size=500, test_size=1000)
    again.setup()
    assert torch.equal(again.splits["test"].labels, dm.splits["test"].labels)  # deterministic split


def test_digits_and_categorical_tasks() -> None:
    tasks = build_tasks({"digit": {"kind": "categorical", "classes": list(range(10))},
                         "parity": {"kind": "map", "map": [0, 1] * 5}}, 10)
    dm = MultiTaskDataModule(tasks, source="digits", val_size=200, test_size=300)
    x, (digit, parity) = dm.sample(32)
    assert x.shape == (32, 1, 8, 8)
    assert torch.equal(parity, digit % 2)


def _write_idx(path: Path, array: np.ndarray, gz: bool) -> None:
    """Write an IDX file of unsigned bytes."""
    header = bytes([0, 0, 8, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    blob = header + array.astype(np.uint8).tobytes()
    (gzip.open if gz else open)(path, "wb").write(blob)


def _idx_dir(root: Path, n: int = 60, gz: bool = True) -> Path:
    """A data dir with a small generated 'mnist' IDX set."""
    folder = root / "mnist"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    suffix = ".gz" if gz else ""
    for prefix, count in (("train", n), ("t10k", n // 2)):
        _write_idx(folder / f"{prefix}-images-idx3-ubyte{suffix}", rng.integers(0, 256, (count, 28, 28)), gz)
        _write_idx(folder / f"{prefix}-labels-idx1-ubyte{suffix}", rng.integers(0, 10, count), gz)
    return folder


def test_generated_idx_source(tmp_path: Path) -> None:
    _idx_dir(tmp_path, gz=False)
    dm = MultiTaskDataModule(build_tasks(SPLIT2, 10), source="mnist", data_dir=str(tmp_path),
                             val_size=10, test_size=0)
    dm.setup()
    assert [len(dm.splits[s]) for s in ("train", "val", "test")] == [50, 10, 30]


def test_corrupt_idx_names_the_file(tmp_path: Path) -> None:
    folder = _idx_dir(tmp_path, gz=False)
    target = folder / "train-images-idx3-ubyte"
    target.write_bytes(target.read_bytes()[:-100])  # truncated
    dm = MultiTaskDataModule(build_tasks(SPLIT2, 10), source="mnist", data_dir=str(tmp_path))
    with pytest.raises(DataError, match="train-images-idx3-ubyte"):
        dm.setup()


def test_checksum_mismatch_and_missing(tmp_path: Path) -> None:
    _idx_dir(tmp_path, gz=True)
    dm = MultiTaskDataModule(build_tasks(SPLIT2, 10), source="mnist", data_dir=str(tmp_path))
    with pytest.raises(DataError, match="md5"):
        dm.setup()
    missing = MultiTaskDataModule(build_tasks(SPLIT2, 10), source="kmnist", data_dir=str(tmp_path))
    with pytest.raises(DataError, match="download"):
        missing.setup()
