"""Retrain a pruned network, then judge it: the verdict every accuracy-targeted pruner gives a step.

A candidate (a schedule step, a VIB stage) is finetuned ``finetune_epochs`` under its masks; if some
task is then more than ``tolerance`` below its reference it gets ``recovery_epochs`` more, so a
candidate near the target is judged on a network that has recovered what it can. Then the
noise-aware test (pruner.accept) says whether it is kept.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from mergeprune.context import Context
from mergeprune.models.grouped import GroupedNet
from mergeprune.pruner.accept import Acceptance
from mergeprune.pruner.trajectory import fmt
from mergeprune.training.loop import masked_finetune

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Retrain:
    """How a candidate is retrained before it is judged (masked finetuning of every task)."""

    finetune_epochs: int = 1
    recovery_epochs: int = 2
    optimizer: Mapping[str, Any] = field(default_factory=dict)
    steps_per_epoch: int | None = None

    def run(self, net: GroupedNet, ctx: Context, epochs: int, stage: str) -> None:
        """Masked finetuning of every task for some epochs (training.loop: no Trainer)."""
        masked_finetune(net, ctx.tasks, ctx.data, self.optimizer, epochs, stage, self.steps_per_epoch)


@dataclass
class Verdict:
    """A judged candidate: its validation accuracy (before recovery too) and the tasks it broke."""

    val: dict[str, float]
    first: dict[str, float]
    recovered: bool
    broken: dict[str, float]

    @property
    def accepted(self) -> bool:
        """Whether every task is within what the test allows."""
        return not self.broken


def retrain_and_judge(net: GroupedNet, ctx: Context, reference: Mapping[str, float],
                      accept: Acceptance, retrain: Retrain, stage: str, n_val: int) -> Verdict:
    """Finetune the candidate (and recover it when it is beyond the tolerance), then test it."""
    if retrain.finetune_epochs > 0:
        retrain.run(net, ctx, retrain.finetune_epochs, stage)
    acc = first = ctx.accuracy(net, "val")
    recovered = retrain.recovery_epochs > 0 and any(
        reference[t] - a > accept.tolerance for t, a in acc.items())
    if recovered:
        retrain.run(net, ctx, retrain.recovery_epochs, f"{stage}/recovery")
        acc = ctx.accuracy(net, "val")
    return Verdict(acc, first, recovered, accept.broken(reference, acc, n_val))


def warm_start(net: GroupedNet, ctx: Context, reference: Mapping[str, float], accept: Acceptance,
               retrain: Retrain, tag: str) -> tuple[dict[str, float], bool]:
    """The network's validation accuracy before pruning, and whether it first got `recovery_epochs`
    of finetuning because it started beyond the tolerance (a merge that lost accuracy)."""
    own = ctx.accuracy(net, "val")
    warm = retrain.recovery_epochs > 0 and bool(accept.broken(reference, own, ctx.split_size("val")))
    if warm:
        log.info("%s: val %s starts beyond the tolerance of the reference %s: %d recovery epochs "
                 "before pruning", tag, fmt(own), fmt(reference), retrain.recovery_epochs)
        retrain.run(net, ctx, retrain.recovery_epochs, f"{tag}/start")
        own = ctx.accuracy(net, "val")
    return own, warm
