"""pruner=admm_progressive: progressive ADMM pruning in stages (Ye et al., arXiv 1810.07378).

A ladder of stages, each a compression target (``targets``, spread over layers by ``proportions``)
or a per-layer keep dict (``stages``). Every stage starts from an earlier stage's pruned model,
keeps the weights pruned before masked (masks only shrink), runs masked ADMM on the remaining
weights (layers not pruned further get no constraint, i.e. rho = 0), hard-prunes to the stage's
budget and retrains (one ``admm_stage`` of pruning.admm per stage).

``pool_size`` P > 1 is the paper's pool of partial models: the first P stages each start from the
dense model; every later stage is tried from each pooled model, the best on the validation split
wins and replaces the model it started from in the pool. P = 1 is a plain chain.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mergeprune.context import Built, Context
from mergeprune.errors import ConfigError, check_int, check_number
from mergeprune.models.grouped import GroupedNet
from mergeprune.pruner.admm import AdmmSettings, admm_stage
from mergeprune.pruner.knobs import plain
from mergeprune.pruner.masks import Budget, sparsity_report


class ProgressiveAdmmPruner:
    """Masked ADMM stages along a ladder of budgets, optionally with a pool of partial models."""

    def __init__(self, name: str = "admm_progressive", granularity: str = "unstructured",
                 targets: Sequence[float] | None = None,
                 stages: Sequence[Mapping[str, float]] | None = None,
                 proportions: Mapping[str, float] | None = None, pool_size: int = 1,
                 rho: float = 1e-3, rho_multiplier: float = 1.0, rho_max: float | None = None,
                 iterations: int = 10, epochs_per_iteration: int = 2,
                 optimizer: Mapping[str, Any] | None = None, retrain_epochs: int = 10,
                 retrain_optimizer: Mapping[str, Any] | None = None):
        self.name = name
        self.settings = AdmmSettings(granularity, rho, rho_multiplier, rho_max, iterations,
                                     epochs_per_iteration, optimizer, retrain_epochs,
                                     retrain_optimizer)
        self.granularity = self.settings.granularity
        self.budgets = ladder(plain(targets), plain(stages), plain(proportions))
        self.pool_size = check_int(pool_size, "pruner.pool_size", 1)

    def __call__(self, net: GroupedNet, ctx: Context, tag: str, resume_dir: Path | None = None) -> Built:
        """Prune net in place along the ladder, retraining after every stage; return it with its report."""
        dense = copy.deepcopy(net)
        pool: list[GroupedNet] = []
        history: list[dict[str, Any]] = []
        best = net
        for i, budget in enumerate(self.budgets):
            counts = budget.counts(net, self.granularity)
            starts = [dense] if i < self.pool_size else pool
            trials = []
            for j, start in enumerate(starts):
                trial = copy.deepcopy(start)
                info = admm_stage(trial, ctx, f"{tag}/stage{i}", counts, self.settings)
                trials.append((info["val_acc_retrained"], j, trial, info))
            acc, j, best, info = max(trials, key=lambda t: (t[0], -t[1]))
            if i < self.pool_size:
                pool.append(best)
            else:
                pool[j] = best
            history.append({"stage": i, "start": "dense" if i < self.pool_size else f"pool[{j}]",
                            "tried": len(trials), "val_acc": acc,
                            "ratios": budget.ratios(net, self.granularity), **info})
        net.load_state_dict(best.state_dict())
        ratios = self.budgets[-1].ratios(net, self.granularity)
        report = sparsity_report(net, ratios, self.granularity) | {
            "method": "admm_progressive", "stages": history, "pool_size": self.pool_size,
            "settings": self.settings.describe()}
        return Built(net, report)


def ladder(targets: Any, stages: Any, proportions: Any) -> list[Budget]:
    """The stages' budgets from a list of compression targets or a list of keep dicts."""
    if (targets is None) == (stages is None):
        raise ConfigError(f"pruner.targets / pruner.stages: set exactly one (got targets={targets}, "
                          f"stages={stages}); allowed: a list of increasing compression targets, "
                          "or a list of per-layer keep dicts")
    if targets is not None:
        if not isinstance(targets, Sequence) or isinstance(targets, str) or not targets:
            raise ConfigError(f"pruner.targets={targets}; allowed: a non-empty list of numbers >= 1")
        values = [check_number(t, f"pruner.targets[{i}]", low=1.0) for i, t in enumerate(targets)]
        if any(b <= a for a, b in zip(values, values[1:], strict=False)):
            raise ConfigError(f"pruner.targets={values}; allowed: strictly increasing targets")
        return [Budget(None, t, proportions, prefix="pruner") for t in values]
    if not isinstance(stages, Sequence) or isinstance(stages, str) or not stages:
        raise ConfigError(f"pruner.stages={stages}; allowed: a non-empty list of keep dicts")
    if proportions:
        raise ConfigError(f"pruner.proportions={proportions}: only used with pruner.targets; "
                          "allowed: null when pruner.stages is set")
    return [Budget(s, None, None, keep_key=f"pruner.stages[{i}]") for i, s in enumerate(stages)]
