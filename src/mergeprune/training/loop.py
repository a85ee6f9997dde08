"""Short masked finetuning without a Trainer: the retraining after each step of a pruning schedule.

A pruning schedule finetunes dozens of times for a few hundred optimizer steps each; building a
Lightning Trainer and module for each of them costs about as much as the steps themselves on a small
network (scripts/bench_training.py measures both). This loop does exactly what `MultiTaskModule`
under a Trainer does for label training (the same batches of the datamodule in the same order, the
summed task losses, a fresh optimizer from the same config, masks enforced after every optimizer
step, a clear error on a non-finite loss), on the network's own device, in one process.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from torch import Tensor

from mergeprune.data.datamodule import EpochShuffle, MultiTaskDataModule
from mergeprune.errors import TrainingError
from mergeprune.models.grouped import GroupedNet
from mergeprune.seeding import draw_seed
from mergeprune.tasks import Task
from mergeprune.training.optim import build_optimizer

log = logging.getLogger(__name__)


StepLoss = Callable[[Tensor, Sequence[Tensor], int], Tensor]


def masked_finetune(net: GroupedNet, tasks: Sequence[Task], data: MultiTaskDataModule,
                    optimizer: Mapping[str, Any], epochs: int, stage: str,
                    steps_per_epoch: int | None = None) -> float:
    """Train the unmasked weights on every task of net for `epochs` passes over the training set, or
    `epochs * steps_per_epoch` optimizer steps; returns the mean training loss (nan for no steps)."""
    positions = [(i, t) for i, t in enumerate(data.tasks) if t.name in net.tasks]

    def summed(x: Tensor, targets: Sequence[Tensor], step: int) -> Tensor:
        out = net(x)
        return sum(t.loss(out[t.name], targets[i].to(x.device)) for i, t in positions)

    return train_steps(net, data, [{"params": list(net.parameters())}], optimizer, epochs, stage,
                       summed, steps_per_epoch)


def train_steps(net: GroupedNet, data: MultiTaskDataModule, groups: list[dict[str, Any]],
                optimizer: Mapping[str, Any], epochs: int, stage: str, step_loss: StepLoss,
                steps_per_epoch: int | None = None) -> float:
    """Minimise `step_loss(x, targets, step)` over the training batches with masks enforced after
    every step; `groups` are the optimizer's parameter groups. Returns the mean loss (nan: no steps)."""
    data.setup()
    train = data.splits["train"]
    per_epoch = steps_per_epoch or math.ceil(len(train) / data.batch_size)
    total = epochs * per_epoch
    if total <= 0:
        return float("nan")
    device = next(net.parameters()).device
    built = build_optimizer(groups, optimizer, total, interval="step")
    opt, sched = (built["optimizer"], built["lr_scheduler"]["scheduler"]) if isinstance(built, dict) \
        else (built, None)
    order = EpochShuffle(train, draw_seed())  # the data order, fixed by the stage's seed
    net.train()
    done, loss_sum, epoch = 0, 0.0, 0
    while done < total:
        order.set_epoch(epoch)
        index = list(order)
        for start in range(0, len(index), data.batch_size):
            x, targets = train.__getitems__(index[start:start + data.batch_size])
            loss = step_loss(x.to(device), targets, done)
            value = float(loss.detach())
            if not math.isfinite(value):
                raise TrainingError(f"{stage}: training loss became {value} at step {done + 1}; "
                                    f"lower the learning rate (optimizer.lr={optimizer.get('lr')}) "
                                    "or check the data")
            opt.zero_grad()
            loss.backward()
            opt.step()
            if sched is not None:
                sched.step()
            net.apply_masks()
            loss_sum, done = loss_sum + value, done + 1
            if done == total:
                break
        epoch += 1
    log.debug("%s: %d steps, mean loss %.4f", stage, done, loss_sum / done)
    return loss_sum / done
