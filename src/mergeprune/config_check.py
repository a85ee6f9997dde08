"""Start-up checks of the keys the pipeline reads itself (the components check their own knobs).

Unknown keys are refused: Hydra refuses `foo=1` for a key that does not exist, but `+foo=1` adds
one, which would change the job's cache key without changing what it computes. Groups built with
`instantiate` (dataset, model, merger, pruner, finetune, logger) refuse unknown keys through their
constructors; the nodes below are read directly, so their keys are listed here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig

from mergeprune.errors import ConfigError, check_int
from mergeprune.training.optim import check_optimizer

STAGES = ("teachers", "merge", "prune", "finetune", "evaluate")
GROUPS = ("dataset", "tasks", "model", "merger", "pruner", "finetune", "trainer", "logger", "paths")
KNOWN: dict[str, tuple[str, ...]] = {
    "": (*GROUPS, "name", "seed", "stages", "skip_finished", "teachers", "evaluate",
         "relatedness", "preset"),  # relatedness: the step of tasks=related2
    "teachers": ("epochs", "optimizer"),
    "evaluate": ("export", "latency_repeats"),
    "trainer": ("_target_", "accelerator", "devices", "strategy", "num_nodes", "precision", "progress_bar",
                "log_every_n_steps", "process_group_backend"),
    "paths": ("output_dir", "cache_dir", "data_dir"),
}


def check_config(cfg: DictConfig) -> None:
    """Fail on unknown keys and semantically wrong top-level values before anything is built."""
    check_known(cfg)
    stages = list(cfg.stages)
    bad = [s for s in stages if s not in STAGES]
    if bad or not stages:
        raise ConfigError(f"stages={stages} (bad: {bad or 'empty'}); allowed: any of {list(STAGES)}")
    check_int(cfg.seed, "seed")
    check_int(cfg.teachers.epochs, "teachers.epochs")
    check_optimizer(cfg.teachers.optimizer, "teachers.optimizer")
    check_int(cfg.dataset.batch_size, "dataset.batch_size", low=1)
    for key in ("val_size", "test_size"):
        check_int(cfg.dataset[key], f"dataset.{key}")
    if cfg.dataset.get("train_size") is not None:
        check_int(cfg.dataset.train_size, "dataset.train_size", low=1)
    check_int(cfg.evaluate.latency_repeats, "evaluate.latency_repeats", low=1)


def check_known(cfg: Mapping[str, Any]) -> None:
    """Raise on a key that no part of the pipeline reads (e.g. added with `+key=...`)."""
    for where, allowed in KNOWN.items():
        node = _node(cfg, where)
        if node is None:
            continue
        unknown = sorted(str(k) for k in node.keys() if k not in allowed)
        if unknown:
            name = f"{where}.{unknown[0]}" if where else unknown[0]
            raise ConfigError(f"{name}: unknown key (added with +{name}=...?); allowed keys"
                              f"{' of ' + where if where else ''}: {', '.join(sorted(allowed))}")


def _node(cfg: Mapping[str, Any], where: str) -> Mapping[str, Any] | None:
    """The sub-config at a dotted path, or None if absent or not a mapping."""
    node: Any = cfg
    for part in filter(None, where.split(".")):
        node = node.get(part) if isinstance(node, Mapping) else None
    return node if isinstance(node, Mapping) else None

