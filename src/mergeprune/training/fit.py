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
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.loggers import Logger

from mergeprune.data.datamodule import MultiTaskDataModule
from mergeprune.errors import one_line
from mergeprune.models.grouped import GroupedNet
from mergeprune.seeding import draw_seed, rng_state, set_rng_state
from mergeprune.tasks import Task

log = logging.getLogger(__name__)

warnings.filterwarnings("ignore", ".*does not have many workers.*")
warnings.filterwarnings("ignore", ".*LeafSpec.*")
for _name in ("pytorch_lightning.utilities.rank_zero", "lightning.pytorch.utilities.rank_zero"):
    logging.getLogger(_name).setLevel(logging.WARNING)  # no GPU/TPU banners and tips per trainer


# trainer config keys that are not pytorch_lightning.Trainer arguments
NOT_TRAINER_ARGS = ("progress_bar", "process_group_backend", "strategy")


def make_trainer(trainer_cfg: Mapping[str, Any], epochs: int, logger: Logger | bool,
                 root_dir: str | Path, callbacks: Sequence[Callback] = (),
                 steps: int | None = None) -> pl.Trainer:
    """A Lightning Trainer for one training phase, instantiated from the `trainer` config node.

    The node's keys are Trainer arguments (`_target_` defaults to pytorch_lightning.Trainer), plus
    `progress_bar` and, for DDP, `process_group_backend`; what a phase needs besides (epochs, the
    logger, callbacks, no checkpoints or sanity checks) is added here. With `steps`, training stops
    after that many optimizer steps, however many epochs it takes. The only Trainer built.
    """
    plain = OmegaConf.to_container(trainer_cfg, resolve=True) if isinstance(trainer_cfg, DictConfig) \
        else dict(trainer_cfg)
    node = {"_target_": "pytorch_lightning.Trainer", "accelerator": "cpu", "devices": 1,
            "num_nodes": 1, "precision": "32-true", "log_every_n_steps": 10}
    node |= {k: v for k, v in plain.items() if k not in NOT_TRAINER_ARGS}
    length = {"max_epochs": epochs} if steps is None else {"max_epochs": -1, "max_steps": steps}
    return instantiate(node, **length, strategy=_strategy(plain), logger=logger,
                       callbacks=list(callbacks), enable_checkpointing=False,
                       enable_model_summary=False, num_sanity_val_steps=0,
                       enable_progress_bar=bool(plain.get("progress_bar", True)),
                       default_root_dir=str(root_dir))


class EpochCheckpoint(Callback):
    """Save the whole training state after every epoch, atomically, to resume a killed run.

    Besides Lightning's state (weights, optimizer, schedule, loops) the checkpoint holds the torch,
    numpy and Python random states and the data order's seed, so a resumed run equals one that was
    never interrupted.
    """

    def __init__(self, path: Path, datamodule: MultiTaskDataModule):
        self.path = path
        self.datamodule = datamodule

    def state_dict(self) -> dict[str, Any]:
        """Random state and shuffle seed, stored with the checkpoint."""
        return {"rng": rng_state(), "shuffle_seed": int(self.datamodule.shuffle_seed)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Continue with the random state of the killed run."""
        set_rng_state(state_dict["rng"])
        self.datamodule.shuffle_seed = int(state_dict["shuffle_seed"])

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.tmp-{os.getpid()}")
        trainer.save_checkpoint(tmp, weights_only=False)  # full state (optimizer, loops) to resume
        os.replace(tmp, self.path)


def fit(module: pl.LightningModule, datamodule: MultiTaskDataModule, epochs: int,
        trainer_cfg: Mapping[str, Any], logger: Logger | bool, root_dir: str | Path,
        callbacks: Sequence[Callback] = (), resume_dir: Path | None = None,
        steps: int | None = None) -> pl.Trainer:
    """Train a module for some epochs, or `steps` optimizer steps (no-op for 0 of them).

    With resume_dir, a killed run continues from its last finished epoch.
    """
    callbacks = list(callbacks)
    datamodule.shuffle_seed = draw_seed()  # the data order of this phase, fixed by the stage's seed
    ckpt_path = None
    if resume_dir is not None:
        last = Path(resume_dir) / "last.ckpt"
        callbacks.append(EpochCheckpoint(last, datamodule))
        epoch = resumable_epoch(last, module, epochs)
        if epoch is not None:
            log.info("resuming from the checkpoint after epoch %d of %d (%s)", epoch + 1, epochs, last)
            ckpt_path = str(last)
    trainer = make_trainer(trainer_cfg, epochs, logger, root_dir, callbacks, steps)
    if (epochs if steps is None else steps) > 0:
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    if resume_dir is not None and Path(resume_dir).exists():
        shutil.rmtree(resume_dir, ignore_errors=True)  # finished: the partial state is no longer needed
    return trainer


def resumable_epoch(path: Path, module: pl.LightningModule, epochs: int) -> int | None:
    """The epoch a resume checkpoint was saved after, or None (an unusable one is discarded with a warning)."""
    if not path.exists():
        return None
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        problem = checkpoint_problem(ckpt, module, epochs)
    except Exception as err:  # noqa: BLE001 - truncated, tampered or not tensors-only: all unusable
        problem = one_line(err)
    if problem is None:
        return int(ckpt["epoch"])
    log.warning("resume checkpoint %s is unusable (%s): discarded, this training phase restarts "
                "from its first epoch", path, problem)
    path.unlink(missing_ok=True)
    return None


def checkpoint_problem(ckpt: Any, module: pl.LightningModule, epochs: int) -> str | None:
    """What makes a loaded resume checkpoint unusable for this module, or None."""
    if not isinstance(ckpt, dict) or not {"epoch", "state_dict", "optimizer_states", "loops",
                                          "callbacks"} <= set(ckpt):
        return "not a full training checkpoint"
    if not isinstance(ckpt["epoch"], int) or not 0 <= ckpt["epoch"] < max(epochs, 1):
        return f"epoch {ckpt['epoch']!r} outside 0..{epochs - 1}"
    mine = module.state_dict()
    theirs = ckpt["state_dict"]
    if set(mine) != set(theirs) or any(tuple(theirs[k].shape) != tuple(v.shape) for k, v in mine.items()):
        return "its weights do not fit this network"
    if not any(k.startswith("EpochCheckpoint") for k in ckpt["callbacks"]):
        return "no random state saved with it"
    return None


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
