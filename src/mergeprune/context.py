"""What an algorithm (merger, pruner, finetuning) may use: never the job, its config or its folders.

A `Context` holds the tasks and the data, trains a module (`fit`, the one training path), measures
accuracy and draws fixed samples. Mergers are `(teachers, ctx) -> Built` and pruners
`(net, ctx, tag) -> Built`: the network and a report of what the algorithm found.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.loggers import Logger
from torch import Tensor

from mergeprune.data.datamodule import MultiTaskDataModule
from mergeprune.models.grouped import GroupedNet
from mergeprune.tasks import Task
from mergeprune.training import fit as training


@dataclass
class Context:
    """The tasks, the data, how to train (trainer settings, metrics logger) and where trainers write."""

    tasks: Sequence[Task]
    data: MultiTaskDataModule
    trainer: Mapping[str, Any]
    logger: Logger | bool = False
    root_dir: Path = Path(".")
    # the validation accuracy each task is held to when pruning (the teachers'); None: the network's own
    reference: Mapping[str, float] | None = None

    def fit(self, module: pl.LightningModule, epochs: int, callbacks: Sequence[Callback] = (),
            resume_dir: Path | None = None, steps: int | None = None) -> pl.Trainer:
        """Train a module on the data for some epochs or steps (see training.fit.fit)."""
        return training.fit(module, self.data, epochs, self.trainer, self.logger, self.root_dir,
                            callbacks, resume_dir, steps)

    def accuracy(self, net: GroupedNet, split: str = "val",
                 subset: Sequence[str] | None = None) -> dict[str, float]:
        """Accuracy of each of the net's tasks on one split."""
        return training.accuracy(net, self.tasks, self.data, split, subset)

    def target(self, net: GroupedNet) -> dict[str, float]:
        """The accuracy each of net's tasks is held to: the reference where given, else net's own (val)."""
        own = self.accuracy(net, "val")
        return {t: float(self.reference[t]) for t in own} if self.reference else own

    def split_size(self, split: str = "val") -> int:
        """Number of images in one split."""
        self.data.setup()
        return len(self.data.splits[split])

    def sample(self, n: int, split: str = "train", seed: int = 0) -> tuple[Tensor, tuple[Tensor, ...]]:
        """A fixed random batch of n samples of a split."""
        return self.data.sample(n, split, seed)


class Built(NamedTuple):
    """What a merger or pruner returns: the network and a report of what it found (plain data)."""

    net: GroupedNet
    report: dict[str, Any]


class Merger(Protocol):
    """Builds grouped multitask networks from single-task teachers.

    `parts` says which tasks share one network (all of them for a real merger, one each for
    merger=none). The merger is called once per part of two or more tasks, with that part's
    teachers in task order; a part of one task is its teacher as it is.
    """

    def parts(self, tasks: Sequence[str]) -> list[list[str]]: ...

    def __call__(self, teachers: Sequence[GroupedNet], ctx: Context) -> Built: ...


class Pruner(Protocol):
    """Prunes a network in place and returns it with its report; `tag` prefixes its metric names.

    With `resume_dir`, a pruner that saves its progress there continues a killed run.
    """

    def __call__(self, net: GroupedNet, ctx: Context, tag: str, resume_dir: Path | None = None) -> Built: ...


def together(tasks: Sequence[str]) -> list[list[str]]:
    """All tasks in one network (every merger except merger=none)."""
    return [list(tasks)]
