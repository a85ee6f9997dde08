"""pruner=magnitude: magnitude pruning baselines (Han et al. 2015; Zhu & Gupta 2017).

Schedules:
- ``oneshot``: prune straight to the budget, then retrain ``retrain_epochs``.
- ``iterative``: prune ``fraction`` of the units each layer still keeps (never below its budget),
  retrain ``retrain_epochs``, repeat until every layer is at its budget.
- ``gradual``: while training, every ``frequency`` optimizer steps prune to the cubic schedule
  s_t = s_f + (s_i - s_f) * (1 - t / n)^3 over the first ``ramp_epochs`` epochs (n steps), then
  train ``retrain_epochs`` more with the masks frozen.

``scope: layer`` ranks units within each layer (each layer exactly at its budget); ``scope: global``
ranks all prunable layers together with one threshold for the same total (weights by |w|, neurons
by the RMS of their row). Units are weights ('unstructured') or whole neurons of hidden layers
('neurons'); heads keep all their outputs.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytorch_lightning as pl

from mergeprune.context import Built, Context
from mergeprune.errors import ConfigError, check_choice, check_int, check_number
from mergeprune.models.grouped import GroupedNet
from mergeprune.pruner.admm import mean_accuracy
from mergeprune.pruner.masks import (
    GRANULARITIES,
    Budget,
    compression,
    global_allocation,
    kept_units,
    prunable_layers,
    prune_layer,
    sparsity_report,
    total_units,
    train_phase,
)
from mergeprune.training.optim import adam, check_optimizer

SCHEDULES = ("oneshot", "iterative", "gradual")
SCOPES = ("layer", "global")


class MagnitudePruner:
    """Keep the largest weights (or neuron rows) of each layer or of the whole network."""

    def __init__(self, name: str = "magnitude", granularity: str = "unstructured",
                 schedule: str = "iterative", scope: str = "layer",
                 keep: Mapping[str, float] | None = None, target_compression: float | None = None,
                 proportions: Mapping[str, float] | None = None, fraction: float = 0.5,
                 retrain_epochs: int = 4, frequency: int = 10, ramp_epochs: int = 10,
                 initial_sparsity: float = 0.0, optimizer: Mapping[str, Any] | None = None):
        self.name = name
        self.granularity = check_choice(granularity, "pruner.granularity", GRANULARITIES)
        self.schedule = check_choice(schedule, "pruner.schedule", SCHEDULES)
        self.scope = check_choice(scope, "pruner.scope", SCOPES)
        self.budget = Budget(keep, target_compression, proportions)
        self.fraction = check_number(fraction, "pruner.fraction", low=0.0, high=1.0, strict=True)
        self.retrain_epochs = check_int(retrain_epochs, "pruner.retrain_epochs", 0)
        self.frequency = check_int(frequency, "pruner.frequency", 1)
        self.ramp_epochs = check_int(ramp_epochs, "pruner.ramp_epochs", 1)
        self.initial_sparsity = check_number(initial_sparsity, "pruner.initial_sparsity", low=0.0,
                                             high=1.0)
        if self.initial_sparsity >= 1.0:
            raise ConfigError(f"pruner.initial_sparsity={initial_sparsity}; allowed: 0 <= value < 1")
        self.optimizer = check_optimizer(optimizer or adam(1e-3), "pruner.optimizer")

    def __call__(self, net: GroupedNet, ctx: Context, tag: str, resume_dir: Path | None = None) -> Built:
        """Prune net in place with the configured schedule and retrain it; return it with its report."""
        ratios = self.budget.ratios(net, self.granularity)
        counts = self.budget.counts(net, self.granularity)
        if self.scope == "global":  # only the total is requested; layers share it
            overall = sum(counts.values()) / max(1, sum(total_units(net, n, self.granularity)
                                                        for n in counts))
            ratios = {n: overall for n in counts}
        if self.schedule == "oneshot":
            self.prune_to(net, counts)
            train_phase(net, ctx, self.optimizer, self.retrain_epochs, f"{tag}/retrain")
            rounds = [self.snapshot(net, ctx)]
        elif self.schedule == "iterative":
            rounds = self.iterate(net, ctx, tag, counts)
        else:
            callback = GradualCallback(self, counts, self.ramp_epochs)
            train_phase(net, ctx, self.optimizer, self.ramp_epochs + self.retrain_epochs,
                        f"{tag}/gradual", callbacks=[callback])
            self.prune_to(net, counts)  # exact budget even if the ramp ended between updates
            rounds = [self.snapshot(net, ctx) | {"mask_updates": callback.updates}]
        report = sparsity_report(net, ratios, self.granularity) | {
            "method": "magnitude", "schedule": self.schedule, "scope": self.scope,
            "budget": counts, "rounds": rounds}
        return Built(net, report)

    def iterate(self, net: GroupedNet, ctx: Context, tag: str,
                counts: Mapping[str, int]) -> list[dict[str, Any]]:
        """Prune a fraction of what is left and retrain, until the budget is reached."""
        rounds: list[dict[str, Any]] = []
        goal = sum(counts.values())
        while True:
            kept = {n: kept_units(net, n, self.granularity) for n in counts}
            if self.scope == "global":
                total = max(goal, int(round(sum(kept.values()) * (1 - self.fraction))))
                done = sum(kept.values()) <= goal
                self.prune_to(net, counts, total)
            else:
                done = all(kept[n] <= k for n, k in counts.items())
                self.prune_to(net, {n: max(k, int(round(kept[n] * (1 - self.fraction))))
                                    for n, k in counts.items()})
            if done or sum(kept_units(net, n, self.granularity) for n in counts) == sum(kept.values()):
                return rounds  # at the budget, or nothing left to prune (global floors)
            train_phase(net, ctx, self.optimizer, self.retrain_epochs, f"{tag}/round{len(rounds)}")
            rounds.append(self.snapshot(net, ctx))

    def prune_to(self, net: GroupedNet, counts: Mapping[str, int], total: int | None = None) -> None:
        """Keep counts[layer] units per layer (layer scope), or `total` (default their sum) globally."""
        if self.scope == "global":
            names = list(counts)
            total = min(sum(counts.values()) if total is None else total,
                        sum(kept_units(net, n, self.granularity) for n in names))
            counts = global_allocation(net, names, total, self.granularity,
                                       floor={n: 1 for n in names})
        for name, k in counts.items():
            if kept_units(net, name, self.granularity) > k:
                prune_layer(net, name, k, self.granularity)

    def snapshot(self, net: GroupedNet, ctx: Context) -> dict[str, Any]:
        """Compression, validation accuracy and kept units after a round."""
        return {"compression": compression(net), "val_acc": mean_accuracy(net, ctx),
                "kept": {n: kept_units(net, n, self.granularity)
                         for n in prunable_layers(net, self.granularity)}}


class GradualCallback(pl.Callback):
    """Zhu & Gupta's cubic sparsity ramp, applied every `frequency` optimizer steps."""

    def __init__(self, pruner: MagnitudePruner, counts: Mapping[str, int], ramp_epochs: int):
        self.pruner, self.counts, self.ramp_epochs = pruner, dict(counts), ramp_epochs
        self.ramp_steps = 1
        self.updates = 0
        self.done = False

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.ramp_steps = max(1, int(self.ramp_epochs * trainer.num_training_batches))
        self.apply(pl_module.net, 0)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any,
                           batch: Any, batch_idx: int) -> None:
        step = trainer.global_step
        if not self.done and (step % self.pruner.frequency == 0 or step >= self.ramp_steps):
            self.apply(pl_module.net, step)

    def apply(self, net: GroupedNet, step: int) -> None:
        """Prune every layer to the schedule's sparsity at this step."""
        frac = min(1.0, step / self.ramp_steps)
        granularity, s_i = self.pruner.granularity, self.pruner.initial_sparsity
        target = {}
        for name, k in self.counts.items():
            n = total_units(net, name, granularity)
            s_f = 1.0 - k / max(1, n)
            s_t = s_f + (min(s_i, s_f) - s_f) * (1.0 - frac) ** 3
            target[name] = max(k, int(round((1.0 - s_t) * n)))
        self.pruner.prune_to(net, target)
        self.updates += 1
        self.done = frac >= 1.0
