"""Finetune stage: masked retraining of a grouped network on its tasks (labels and/or distillation)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from mergeprune.context import Built, Context
from mergeprune.errors import ConfigError
from mergeprune.models.grouped import GroupedNet
from mergeprune.training.module import MultiTaskModule
from mergeprune.training.optim import adam, check_optimizer


class Finetune:
    """Retrain the unmasked weights of a network with its own optimizer and schedule."""

    def __init__(self, epochs: int = 8, optimizer: Mapping[str, Any] | None = None,
                 distill_weight: float = 0.0, temperature: float = 2.0, alternate: bool = False,
                 task_weights: Mapping[str, float] | None = None):
        if not isinstance(epochs, int) or epochs < 0:
            raise ConfigError(f"finetune.epochs={epochs}; allowed: an integer >= 0")
        if not 0.0 <= float(distill_weight) <= 1.0:
            raise ConfigError(f"finetune.distill_weight={distill_weight}; allowed: 0..1")
        if float(temperature) <= 0:
            raise ConfigError(f"finetune.temperature={temperature}; allowed: a number > 0")
        self.epochs = epochs
        self.optimizer = check_optimizer(optimizer or adam(5e-4), "finetune.optimizer")
        self.distill_weight, self.temperature = float(distill_weight), float(temperature)
        self.alternate = alternate
        self.task_weights = _plain(task_weights or {})

    def __call__(self, net: GroupedNet, ctx: Context, teachers: Mapping[str, GroupedNet], tag: str,
                 epochs: int | None = None, resume_dir: Path | None = None) -> Built:
        """Train net in place for the configured epochs (or `epochs`); resume_dir keeps a killed run's state."""
        n_epochs = self.epochs if epochs is None else epochs
        module = MultiTaskModule(net, ctx.tasks, self.optimizer, n_epochs, stage=tag,
                                 task_weights=self.task_weights, teachers=teachers,
                                 distill_weight=self.distill_weight, temperature=self.temperature,
                                 alternate=self.alternate)
        ctx.fit(module, n_epochs, resume_dir=resume_dir)
        net.apply_masks()
        return Built(net, {})


def _plain(node: Any) -> dict[str, Any]:
    """A config node as a plain dict."""
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node)
