"""Choosing and applying one pruning step: the least important neurons worth a share of the FLOPs.

Every live hidden neuron is ranked by its importance, normalised (`normalize`): ``flops`` divides
it by what removing the neuron saves (pruner.savings: FLOPs of the all-tasks subset in the grouped
network, so a conv filter read by many neurons is charged what it really costs), ``l2`` divides by
the L2 norm of the layer's live scores (Molchanov et al. 2017), ``none`` ranks raw scores. A step
takes neurons from the bottom of one global ranking, skipping protected ones, until their savings
reach ``share`` of the network's current FLOPs (at least one neuron). A neuron that alone saves more
than ``cap`` (the schedule's largest step) would make a step far larger than asked for (in LeNet-5
pruned to ~100k FLOPs, one conv1 filter is 40% of it): such neurons are left for "oversized" steps,
which take one of them alone once nothing smaller can go. Heads are never pruned and every task
keeps a path from the input to its head.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from mergeprune.models.grouped import GroupedNet
from mergeprune.pruner.savings import unit_savings
from mergeprune.pruner.task_paths import channel_mask, protect_paths

NORMALIZE = ("flops", "l2", "none")


def ranked(net: GroupedNet, scores: Mapping[str, Tensor], how: str,
           savings: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Scores normalised for one global ranking (lower: removed first)."""
    if how == "none":
        return {n: s.double() for n, s in scores.items()}
    if how == "flops":
        return {n: s.double() / savings[n].clamp(min=1.0) for n, s in scores.items()}
    out = {}
    for name, s in scores.items():
        live = net.alive(name).cpu()
        norm = s[live].double().norm() if live.any() else torch.tensor(0.0, dtype=torch.float64)
        out[name] = s.double() / norm.clamp_min(1e-12)
    return out


def choose(net: GroupedNet, rank: Mapping[str, Tensor], savings: Mapping[str, Tensor],
           protected: Mapping[str, Tensor], budget: float, cap: float,
           oversized: bool = False) -> list[tuple[str, int]]:
    """The lowest-ranked live unprotected neurons saving at most `cap` each, until their savings reach
    `budget` FLOPs; with `oversized`, the one lowest-ranked neuron saving more than `cap`."""
    hidden = net.names[:-1]
    free = {n: net.alive(n).cpu() & ~protected[n] & ((savings[n] > cap) if oversized else (savings[n] <= cap))
            for n in hidden}
    layer = torch.cat([torch.full((int(free[n].sum()),), i) for i, n in enumerate(hidden)])
    if len(layer) == 0:
        return []
    index = torch.cat([free[n].nonzero().flatten() for n in hidden])
    value = torch.cat([rank[n][free[n]] for n in hidden])
    saved = torch.cat([savings[n][free[n]] for n in hidden])
    order = torch.argsort(value, stable=True)
    n_take = 1 if oversized else int((saved[order].cumsum(0) < budget).sum()) + 1
    return [(hidden[int(layer[j])], int(index[j])) for j in order[:n_take].tolist()]


def keep_without(net: GroupedNet, chosen: list[tuple[str, int]],
                 rank: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Keep masks without the chosen neurons, with each task's best path put back if it was cut."""
    keep = {n: net.alive(n).cpu().clone() for n in net.names[:-1]}
    for name, i in chosen:
        keep[name][i] = False
    protect_paths(net, keep, {n: r.float() for n, r in rank.items()})
    return keep


@torch.no_grad()
def apply_keep(net: GroupedNet, keep: Mapping[str, Tensor]) -> None:
    """Remove the neurons keep marks False, then those left without inputs or without readers."""
    hidden = net.names[:-1]
    for name in hidden:
        net.prune_neurons(name, keep[name].to(net.mask(name).device))
    for name in hidden:  # orphans: no live input left
        net.prune_neurons(name, net.alive(name))
    for idx in range(len(hidden) - 1, -1, -1):  # dangling: no live reader left
        readers = channel_mask(net, idx + 1)[net.alive(net.names[idx + 1]).cpu()].any(dim=0)
        used = net.alive(hidden[idx]) & readers.to(net.mask(hidden[idx]).device)
        net.prune_neurons(hidden[idx], used)


def plan_step(net: GroupedNet, scores: Mapping[str, Tensor], how: str, protected: dict[str, Tensor],
              share: float, flops: float, cap: float, modes: tuple[bool, ...] = (False,),
              ) -> tuple[list[tuple[str, int]], dict[str, Tensor], bool] | None:
    """(chosen neurons, keep masks, oversized) of the next step; None when no candidate is left.

    `modes` are tried in order: False takes ordinary neurons (each saving at most `cap` FLOPs) worth
    `share` of `flops`, True one neuron saving more than `cap` alone. Neurons that could only go by
    cutting a task's last path are protected on the way.
    """
    savings = unit_savings(net)
    rank = ranked(net, scores, how, savings)
    for oversized in modes:
        while chosen := choose(net, rank, savings, protected, share * flops, cap, oversized):
            keep = keep_without(net, chosen, rank)
            removed = [(n, i) for n, i in chosen if not keep[n][i]]
            if removed:
                return removed, keep, oversized
            for name, i in chosen:  # all of them hold a task's last path
                protected[name][i] = True
    return None
