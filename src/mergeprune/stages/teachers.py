"""Teachers stage: one single-task network per task, trained alone and cached by what determines it."""

from __future__ import annotations

import json
import logging
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from omegaconf import OmegaConf

from mergeprune.cache import SEED_VERSION, cache_key
from mergeprune.cost import all_costs
from mergeprune.models.grouped import CheckpointError, GroupedNet
from mergeprune.training.module import MultiTaskModule

log = logging.getLogger(__name__)


@dataclass
class Teacher:
    """A trained single-task network and its test accuracy."""

    name: str
    net: GroupedNet
    accuracy: float
    cost: dict[str, int]  # flops, params, ... of the teacher alone
    path: Path
    reused: bool
    key: str  # its cache key (what the stages after it chain onto)
    seed: str  # its payload hashed with cache.SEED_VERSION (what seeds the stages after it)


def data_identity(dataset_cfg: Any) -> dict[str, Any]:
    """The dataset settings that change what a network learns (not where files live)."""
    d = OmegaConf.to_container(dataset_cfg, resolve=True)
    return {k: v for k, v in d.items() if k not in ("_target_", "data_dir", "download", "verify")}


def trainer_identity(trainer_cfg: Any) -> dict[str, Any]:
    """The trainer settings that change what training computes (devices, strategy, precision)."""
    plain = OmegaConf.to_container(trainer_cfg, resolve=True)
    return {k: v for k, v in plain.items() if k not in ("_target_", "progress_bar", "log_every_n_steps")}


def teacher_payload(job: Any, task_name: str) -> dict[str, Any]:
    """Everything that determines one teacher (hashed into its cache key)."""
    task = next(t for t in job.tasks if t.name == task_name)
    return {"data": data_identity(job.cfg.dataset), "task": task.describe(), "name": task_name,  # seeds it
            "model": job.spec.to_dict(), "train": OmegaConf.to_container(job.cfg.teachers, resolve=True),
            "trainer": trainer_identity(job.cfg.trainer), "seed": int(job.cfg.seed)}


def task_seed(seed: int, task: str) -> int:
    """A per-task seed, so teachers of different tasks start from different weights."""
    return int(seed) * 1000 + zlib.crc32(task.encode()) % 1000


def train_teachers(job: Any) -> dict[str, Teacher]:
    """Train (or reuse from the cache) one teacher per task."""
    teachers = {}
    for task in job.tasks:
        def build(folder: Path, task=task) -> None:
            _train_one(job, task.name, folder)

        def load(folder: Path, task=task) -> tuple[GroupedNet, dict[str, Any]]:
            info = json.loads((folder / "info.json").read_text())
            net = GroupedNet.load(folder / "net.pt")
            if list(net.tasks) != [task.name] or {"accuracy", "cost"} - set(info):
                raise CheckpointError(f"{folder}: not a teacher of task '{task.name}'")
            return net, info

        payload = teacher_payload(job, task.name)
        (net, info), reused = job.cache.get_or_build("teachers", payload, build, load)
        key = cache_key(payload)
        folder = job.cache.entry("teachers", key)
        if reused:
            log.info(f"teachers: reusing cached teacher '{task.name}' "
                  f"(test acc {info['accuracy']:.4f}) from {folder}")
        teachers[task.name] = Teacher(task.name, net, info["accuracy"], info["cost"], folder, reused, key,
                                     cache_key(payload, SEED_VERSION))
    return teachers


def _train_one(job: Any, name: str, folder: Path) -> None:
    """Train one teacher and write net.pt and info.json into folder."""
    cfg = job.cfg.teachers
    task = next(t for t in job.tasks if t.name == name)
    pl.seed_everything(task_seed(job.cfg.seed, name), verbose=False)
    log.info(f"teachers: training '{name}' ({task.kind}, {task.n_outputs} outputs) for {cfg.epochs} epochs")
    net = GroupedNet.single(job.spec, name, task.n_outputs)
    module = MultiTaskModule(net, job.tasks, cfg.optimizer, cfg.epochs, stage=f"teachers/{name}")
    start = time.perf_counter()
    trainer = job.context.fit(module, cfg.epochs)
    seconds = time.perf_counter() - start
    trainer.test(module, datamodule=job.data, verbose=False)
    acc = float(trainer.callback_metrics[f"test/{name}/acc"])
    log.info(f"teachers: '{name}' test accuracy {acc:.4f} ({seconds:.1f} s)")
    net.save(folder / "net.pt")
    (folder / "info.json").write_text(json.dumps(
        {"task": name, "accuracy": acc, "epochs": int(cfg.epochs), "train_s": seconds,
         "cost": all_costs(net)[name]}, indent=1))
