"""pruner=taylor (and other neuron pruners): an importance function plus the shared schedule.

A neuron pruner is its importance function (pruner.importance: Taylor-FO, magnitude, ...) run by
the schedule every neuron pruner shares (pruner.schedule). Both are config nodes under the
pruner's own: ``importance: {_target_: ...}`` and ``schedule: {step, tolerance, ...}``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hydra.utils import instantiate

from mergeprune.context import Built, Context
from mergeprune.errors import ConfigError, check_choice
from mergeprune.models.grouped import GroupedNet
from mergeprune.pruner.importance import Importance
from mergeprune.pruner.knobs import plain
from mergeprune.pruner.schedule import Schedule


class NeuronPruner:
    """Remove whole hidden neurons ranked by an importance function, on the shared schedule."""

    def __init__(self, name: str, importance: Mapping[str, Any], schedule: Mapping[str, Any] | None = None,
                 granularity: str = "neurons"):
        self.name = name
        self.granularity = check_choice(granularity, "pruner.granularity", ("neurons",))
        node = plain(importance)
        if not isinstance(node, Mapping) or "_target_" not in node:
            raise ConfigError(f"pruner.importance={node}; allowed: a node with _target_ "
                              "(mergeprune.pruner.importance.TaylorImportance or MagnitudeImportance)")
        self.importance: Importance = instantiate(node)
        self.schedule = Schedule(**(plain(schedule) or {}), prefix="pruner.schedule")

    def __call__(self, net: GroupedNet, ctx: Context, tag: str, resume_dir: Path | None = None) -> Built:
        """Prune net in place until the accuracy test stops it; return it with the schedule's report."""
        return Built(net, self.schedule.run(net, ctx, tag, self.importance, resume_dir))
