"""The LightningModule that trains a grouped network on its tasks (teachers, students, finetuning).

The loss per task comes from the labels, from teachers' outputs (distillation), or a mix of both;
the total is a weighted sum over tasks, or one task per step when ``alternate`` is set. Masks are
enforced after every optimizer step, so pruned weights stay zero whatever the optimizer does.
Extra loss terms (ADMM's penalty) are added through ``regularizers``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor, nn

from mergeprune.errors import TrainingError
from mergeprune.models.grouped import GroupedNet
from mergeprune.tasks import Task
from mergeprune.training.optim import build_optimizer


class MultiTaskModule(pl.LightningModule):
    """Train a GroupedNet on its tasks with per-task metrics `split/task/metric`."""

    def __init__(self, net: GroupedNet, tasks: Sequence[Task], optimizer: Mapping[str, Any],
                 epochs: int, stage: str = "train", task_weights: Mapping[str, float] | None = None,
                 teachers: Mapping[str, GroupedNet] | None = None, distill_weight: float = 0.0,
                 temperature: float = 2.0, alternate: bool = False):
        super().__init__()
        self.net = net
        # `tasks` are the datamodule's tasks (batch order); the net may hold only some of them
        self.positions = [i for i, t in enumerate(tasks) if t.name in net.tasks]
        self.tasks = [tasks[i] for i in self.positions]
        self.opt_cfg = dict(optimizer)
        self.epochs = epochs
        self.stage = stage
        self.task_weights = {t.name: float((task_weights or {}).get(t.name, 1.0)) for t in self.tasks}
        self.teachers = nn.ModuleDict(dict(teachers or {})) if distill_weight > 0 else nn.ModuleDict()
        for teacher in self.teachers.values():
            teacher.requires_grad_(False)
        self.distill_weight = distill_weight
        self.temperature = temperature
        self.alternate = alternate
        self.regularizers: list[Callable[[], Tensor]] = []
        self.metrics = nn.ModuleDict({f"{split}_{t.name}": t.new_metric()
                                      for split in ("val", "test") for t in self.tasks})

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        return self.net(x)

    def task_losses(self, x: Tensor, targets: Sequence[Tensor]) -> dict[str, Tensor]:
        """Loss of every task on one batch (labels, distillation or both)."""
        out = self.net(x)
        losses = {}
        for task, pos in zip(self.tasks, self.positions, strict=True):
            target = targets[pos]
            loss = task.loss(out[task.name], target)
            if self.distill_weight > 0:
                with torch.no_grad():
                    soft = self.teachers[task.name](x)[task.name]
                kd = task.distill_loss(out[task.name], soft, self.temperature)
                loss = (1 - self.distill_weight) * loss + self.distill_weight * kd
            losses[task.name] = loss
        return losses

    def training_step(self, batch: tuple[Tensor, tuple[Tensor, ...]], batch_idx: int) -> Tensor:
        x, targets = batch
        losses = self.task_losses(x, targets)
        if self.alternate:
            name = self.tasks[batch_idx % len(self.tasks)].name
            total = self.task_weights[name] * losses[name]
        else:
            total = sum(self.task_weights[n] * v for n, v in losses.items())
        for reg in self.regularizers:
            total = total + reg()
        if not torch.isfinite(total):
            raise TrainingError(f"{self.stage}: training loss became {float(total)} at epoch "
                                f"{self.current_epoch}, batch {batch_idx}; lower the learning rate "
                                f"(optimizer.lr={self.opt_cfg.get('lr')}) or check the data")
        with torch.no_grad():  # summed here, logged once per epoch (self.log per step costs ~10% here)
            for name, value in losses.items():
                self.loss_sums[name] = self.loss_sums.get(name, 0.0) + value.detach()
            self.loss_sums[""] = self.loss_sums.get("", 0.0) + total.detach()
            self.loss_count += 1
        return total

    def on_train_epoch_start(self) -> None:
        self.loss_sums: dict[str, Tensor] = {}
        self.loss_count = 0

    def on_train_epoch_end(self) -> None:
        """Log the epoch's mean training losses `train/<task>/loss` and `train/loss`."""
        for name, value in self.loss_sums.items():
            key = f"train/{name}/loss" if name else "train/loss"
            self.log(key, value / max(self.loss_count, 1), prog_bar=not name)

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        """Enforce the masks after the optimizer step."""
        self.net.apply_masks()

    def _eval_step(self, split: str, batch: tuple[Tensor, tuple[Tensor, ...]]) -> None:
        """Update the accuracies of one split."""
        x, targets = batch
        out = self.net(x)
        for task, pos in zip(self.tasks, self.positions, strict=True):
            task.update_metric(self.metrics[f"{split}_{task.name}"], out[task.name], targets[pos])

    def validation_step(self, batch: tuple[Tensor, tuple[Tensor, ...]], batch_idx: int) -> None:
        self._eval_step("val", batch)

    def test_step(self, batch: tuple[Tensor, tuple[Tensor, ...]], batch_idx: int) -> None:
        self._eval_step("test", batch)

    def _log_metrics(self, split: str) -> None:
        """Log and reset the accuracies of one split."""
        for task in self.tasks:
            metric = self.metrics[f"{split}_{task.name}"]
            self.log(f"{split}/{task.name}/acc", metric.compute(), prog_bar=split == "val")
            metric.reset()

    def on_validation_epoch_end(self) -> None:
        self._log_metrics("val")

    def on_test_epoch_end(self) -> None:
        self._log_metrics("test")

    def configure_optimizers(self) -> Any:
        return build_optimizer(self.net.parameters(), self.opt_cfg, self.epochs)
