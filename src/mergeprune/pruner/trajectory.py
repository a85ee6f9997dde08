"""One point of a pruning curve: what the network costs for every task subset and how accurate it is.

Every pruner that records a curve appends one `point` per accepted step (and one for the network
before pruning) to its report's ``trajectory``; the fields are those of results.json's
``trajectory`` (docs/results_json.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mergeprune.context import Context
from mergeprune.cost import subset_cost
from mergeprune.models.grouped import GroupedNet, all_subsets, subset_key


def subset_costs(net: GroupedNet) -> dict[str, dict[str, int]]:
    """FLOPs and params of every task subset of the network."""
    out = {}
    for bits in all_subsets(len(net.tasks)):
        cost = subset_cost(net, bits)
        out[subset_key(net.tasks, bits)] = {"flops": cost["flops"], "params": cost["params"]}
    return out


def point(net: GroupedNet, ctx: Context, step: int, tried: int, val: dict[str, float],
          with_test: bool) -> dict[str, Any]:
    """The trajectory entry of the network as it is now (val accuracy measured by the caller)."""
    return {"step": int(step), "tried": int(tried), "cost": subset_costs(net),
            "val": {t: float(a) for t, a in val.items()},
            "test": ctx.accuracy(net, "test") if with_test else None,
            "live": live(net)}


def wants_test(step: int, every: int) -> bool:
    """Whether accepted step `step` records test accuracy (`every` = 0: only the start)."""
    return step == 0 or (every > 0 and step % every == 0)


def live(net: GroupedNet) -> dict[str, int]:
    """Live neurons per hidden layer."""
    return {n: int(net.alive(n).sum()) for n in net.names[:-1]}


def fmt(values: Mapping[str, Any]) -> str:
    """'conv1=3 fc1=25' / 'lo=0.9912' (for the pruners' progress lines)."""
    return " ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items())
