"""MTZ's share of each layer chosen by accuracy (``max_drop``).

MTZ's code takes the number of zipped neurons per layer (k_l) as a hand-set hyper-parameter; here it
is the largest within an accuracy budget. The shares tried for a layer are `share` (the largest) and
the tenths below it, from the top down; each is zipped (the layer's Hessians and vectors are measured
once, only matching and merging are redone), rebuilt and scored by the mean task accuracy on a
held-out batch. The first, i.e. largest, share whose drop versus the network before zipping this
layer is at most ``max_drop`` percentage points is kept; none kept means share 0. Shares that give
the same neuron count are tried once.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from mergeprune.merger.mtz_zip import ZipPlan
from mergeprune.models.grouped import GroupedNet
from mergeprune.tasks import Task

log = logging.getLogger(__name__)

Batch = tuple[Tensor, Sequence[Tensor]]
Build = Callable[[int], tuple[GroupedNet, ZipPlan]]


def share_count(share: float, width: int) -> int:
    """Neurons per teacher zipped at a share of a layer of `width` (rounded half up)."""
    return math.floor(share * width + 0.5)


def share_grid(share: float) -> list[float]:
    """The shares tried under max_drop, largest first: `share`, then the tenths below it."""
    tenths = [k / 10 for k in range(9, 0, -1) if k / 10 < share - 1e-9]
    return ([share] if share > 0 else []) + tenths


@torch.no_grad()
def batch_accuracy(net: GroupedNet, tasks: Sequence[Task], batch: Batch) -> float:
    """Mean accuracy of the net's tasks on one batch, each by its own metric (as training.fit.accuracy)."""
    x, targets = batch
    training = net.training
    net.eval()
    out = net(x)
    net.train(training)
    accs = []
    for pos, task in enumerate(tasks):
        if task.name in net.tasks:
            metric = task.new_metric()
            task.update_metric(metric, out[task.name], targets[pos])
            accs.append(float(metric.compute()))
    return sum(accs) / max(1, len(accs))


def search_share(name: str, grid: Sequence[float], width: int, build: Build,
                 score: Callable[[GroupedNet], float], base: float,
                 max_drop: float) -> tuple[float, GroupedNet | None, ZipPlan | None, list[dict[str, Any]]]:
    """The largest share of the grid within max_drop: (share, its net, its plan, every share tried)."""
    tried: list[dict[str, Any]] = []
    seen: set[int] = set()
    for share in grid:
        count = share_count(share, width)
        if count == 0 or count in seen:
            continue
        seen.add(count)
        net, plan = build(count)
        acc = score(net)
        drop = 100.0 * (base - acc)
        tried.append({"share": share, "count": count, "accuracy": acc, "drop": drop})
        log.info(f"merge/mtz: {name} share {share:.2f} ({count}/{width}): held-out accuracy "
                 f"{acc:.4f} (before {base:.4f}), drop {drop:+.2f} points (max_drop {max_drop:g})")
        if drop <= max_drop:
            return share, net, plan, tried
    return 0.0, None, None, tried
