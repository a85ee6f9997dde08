"""Build Lightning trainers from the `trainer` config and run fit / test with them."""

from __future__ import annotations

import logging
import os
import shutil
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.loggers import Logger

from mergeprune.data.datamodule import MultiTaskDataModule
from mergeprune.models.grouped import GroupedNet
from mergeprune.tasks import Task

warnings.filterwarnings("ignore", ".*does not have many workers.*")
warnings.filterwarnings("ignore", ".*LeafSpec.*")
for _name in ("pytorch_lightning.utilities.rank_zero", "lightning.pytorch.utilities.rank_zero"):
    logging.getLogger(_name).setLevel(logging.WARNING)  # no GPU/TPU banners and tips per trainer


def make_trainer(trainer_cfg: Mapping[str, Any], epochs: int, logger: Logger | bool,
                 root_dir: str | Path, callbacks: Sequence[Callback] = ()) -> pl.Trainer:
    """A Lightning Trainer for one training phase."""
    return pl.Trainer(
        max_epochs=epochs,
        accelerator=trainer_cfg.get("accelerator", "cpu"),
        devices=trainer_cfg.get("devices", 1),
        strategy=_strategy(trainer_cfg),
        num_nodes=trainer_cfg.get("num_nodes", 1),
        precision=trainer_cfg.get("precision", "32-true"),
        logger=logger,
        callbacks=list(callbacks),
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=bool(trainer_cfg.get("progress_bar", True)),
        num_sanity_val_steps=0,
        log_every_n_steps=int(trainer_cfg.get("log_every_n_steps", 10)),
        default_root_dir=str(root_dir),
    )


class EpochCheckpoint(Callback):
    """Save the whole training state after every epoch, atomically, to resume a killed run."""

    def __init__(self, path: Path):
        self.path = path

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.tmp-{os.getpid()}")
        trainer.save_checkpoint(tmp, weights_only=False)  # full state (optimizer, loops) to resume
        os.replace(tmp, self.path)


def fit(module: pl.LightningModule, datamodule: MultiTaskDataModule, epochs: int,
        trainer_cfg: Mapping[str, Any], logger: Logger | bool, root_dir: str | Path,
        callbacks: Sequence[Callback] = (), resume_dir: Path | None = None) -> pl.Trainer:
    """Train a module for some epochs (no-op for 0 epochs); with resume_dir, continue a killed run."""
    callbacks = list(callbacks)
    ckpt_path = None
    if resume_dir is not None:
        last = Path(resume_dir) / "last.ckpt"
        callbacks.append(EpochCheckpoint(last))
        if last.exists():
            epoch = torch.load(last, map_location="cpu", weights_only=True)["epoch"]
            print(f"resuming from the checkpoint after epoch {epoch + 1} of {epochs} ({last})")
            ckpt_path = str(last)
    trainer = make_trainer(trainer_cfg, epochs, logger, root_dir, callbacks)
    if epochs > 0:
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    if resume_dir is not None and Path(resume_dir).exists():
        shutil.rmtree(resume_dir, ignore_errors=True)  # finished: the partial state is no longer needed
    return trainer


def _strategy(trainer_cfg: Mapping[str, Any]) -> Any:
    """The Lightning strategy: a name, or DDP with an explicit process-group backend (gloo on CPU)."""
    name = trainer_cfg.get("strategy", "auto")
    backend = trainer_cfg.get("process_group_backend")
    if backend and str(name).startswith("ddp"):
        from pytorch_lightning.strategies import DDPStrategy

        start = str(name).removeprefix("ddp").lstrip("_") or "popen"
        return DDPStrategy(process_group_backend=backend, start_method=start)
    return name


@torch.no_grad()
def accuracy(net: GroupedNet, tasks: Sequence[Task], datamodule: MultiTaskDataModule,
             split: str = "test", subset: Sequence[str] | None = None) -> dict[str, float]:
    """Accuracy of each of the net's tasks on one split (optionally running only a task subset)."""
    net.eval()
    mine = [t for t in tasks if t.name in net.tasks and (subset is None or t.name in subset)]
    metrics = {t.name: t.new_metric() for t in mine}
    index = {t.name: i for i, t in enumerate(datamodule.tasks)}
    for x, targets in datamodule.loader(split, batch_size=512):
        out = net(x, subset)
        for t in mine:
            t.update_metric(metrics[t.name], out[t.name], targets[index[t.name]])
    return {name: float(m.compute()) for name, m in metrics.items()}
