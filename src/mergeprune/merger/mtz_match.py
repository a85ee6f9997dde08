"""MTZ's matching of one layer for any number of tasks, in an order that depends only on the costs.

``layer_stats`` measures a layer once (Hessians and their inverses, the neurons' vectors with the
mean of their lost inputs added to the bias, the variance r those inputs leave: ``mtz_lost.py``);
``zip_plan`` then matches `count` neurons of every task and merges them (it runs once per share tried).

Matching is agglomerative:

1. Every pair of tasks (s, t) is matched greedily (``greedy_match``) on
   cost(i, j) = 1/2 d^T (H_s^-1 + H_t^-1)^-1 d + 1/2 (r_i + r_j), d = w_i - w_j; its total is the
   sum of the `count` accepted costs. The cheapest pair of tasks is zipped first.
2. Then, repeatedly, every remaining task u is matched against the current tuples (Hessian
   H_shared = the sum of the zipped tasks' Hessians, vectors w* = H_shared^-1 sum H_s w_s), with
   cost 1/2 d^T (H_shared^-1 + H_u^-1)^-1 d + 1/2 r_j; the cheapest task joins (w* via
   ``merge_weights`` with inverse(H_shared)).

The quadratic part of each step is exactly the increase of the tuple's summed error, so a tuple's
summed cost is the minimal summed error of its tasks. Ties are broken by the total cost and only
then by task index, so permuting the teachers permutes nothing but the tasks' columns (up to exactly
equal costs). With two tasks this is MTZ's single greedy match of A against B.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from mergeprune.merger.mtz_lost import bias_shift, lost_channels, lost_variance
from mergeprune.merger.mtz_zip import (
    ZipPlan,
    damped,
    greedy_match,
    inverse,
    layer_hessian,
    layer_input,
    merge_weights,
    neuron_vectors,
    pair_costs,
    plan_layer,
)
from mergeprune.models.grouped import GroupedNet

Match = tuple[Tensor, Tensor, list[float]]


@dataclass
class LayerStats:
    """What one layer's zipping needs, per task, measured once whatever the share."""

    rows: list[Tensor]  # the layer's rows of each teacher (task set {t})
    vecs: list[Tensor]  # [neurons, positions, shared + 1] weights and compensated bias
    hess: list[Tensor]  # damped Hessians on the shared inputs
    hinv: list[Tensor]  # their inverses
    shift: list[Tensor]  # [neurons] bias shift: mean contribution of the lost inputs
    lost_var: list[Tensor]  # [neurons] r, the variance of the lost inputs' contribution


def teacher_rows(net: GroupedNet, idx: int) -> list[Tensor]:
    """The rows of hidden layer idx that belong to each teacher (task set {t})."""
    groups = net.groups(net.names[idx])
    return [(groups == 1 << t).nonzero().flatten() for t in range(len(net.tasks))]


@torch.no_grad()
def layer_stats(net: GroupedNet, idx: int, x: Tensor, valid: Sequence[Tensor], damping: float,
                compensate: bool = True) -> LayerStats:
    """Hessians, inverses and compensated neuron vectors of every task for layer idx (not yet zipped)."""
    rows = teacher_rows(net, idx)
    shared = (net.input_groups(idx) == net.full_set).nonzero().flatten()
    conv = net.layer_specs[idx].kind == "conv"
    feats = layer_input(net, idx, x)
    hess = [damped(layer_hessian(feats[v][:, shared], conv), damping) for v in valid]
    vecs, shifts, lost_vars = [], [], []
    for t, v in enumerate(valid):
        lost = lost_channels(net, idx, t) if compensate else torch.empty(0, dtype=torch.long)
        shift = bias_shift(net, idx, rows[t], lost, feats[v].mean(dim=0))
        vec = neuron_vectors(net, idx, rows[t], shared)
        vec[:, :, -1] += shift[:, None]
        vecs.append(vec)
        shifts.append(shift)
        lost_vars.append(lost_variance(net, idx, rows[t], lost, feats[v]))
    return LayerStats(rows, vecs, hess, [inverse(h) for h in hess], shifts, lost_vars)


def unzipped_plan(net: GroupedNet, idx: int) -> ZipPlan:
    """The layer's layout with nothing zipped (every teacher's neurons as they are)."""
    rows = teacher_rows(net, idx)
    return plan_layer(net, idx, rows, [[] for _ in rows], torch.empty(0), [])


def zip_plan(net: GroupedNet, idx: int, stats: LayerStats, count: int) -> ZipPlan:
    """The layer's new layout with `count` zipped tuples (one neuron of every task each)."""
    if count == 0:
        return unzipped_plan(net, idx)
    chosen, merged, costs = match_tasks(stats, count)
    return plan_layer(net, idx, stats.rows, chosen, merged, costs)


def match_tasks(stats: LayerStats, count: int) -> tuple[list[Tensor], Tensor, list[float]]:
    """Agglomerative zipping: (each task's constituent per tuple, merged vectors, accepted costs)."""
    (s, t), (left, right, costs) = _cheapest_pair(stats, count)
    members = {s: left, t: right}
    merged = merge_weights(stats.vecs[s][left], stats.vecs[t][right], stats.hinv[s], stats.hinv[t])
    h_shared = stats.hess[s] + stats.hess[t]
    rest = [u for u in range(len(stats.vecs)) if u not in members]
    while rest:
        hinv_shared = inverse(h_shared)
        u, (left, right, step_costs) = _cheapest_task(stats, merged, hinv_shared, rest, count)
        members = {k: c[left] for k, c in members.items()} | {u: right}
        merged = merge_weights(merged[left], stats.vecs[u][right], hinv_shared, stats.hinv[u])
        h_shared = h_shared + stats.hess[u]
        costs = costs + step_costs
        rest.remove(u)
    return [members[k] for k in range(len(stats.vecs))], merged, costs


def _cheapest_pair(stats: LayerStats, count: int) -> tuple[tuple[int, int], Match]:
    """The pair of tasks whose greedy match of `count` pairs costs least (ties: lower indices)."""
    v, hinv, r = stats.vecs, stats.hinv, stats.lost_var
    trials = {(s, t): greedy_match(pair_costs(v[s], v[t], hinv[s], hinv[t])
                                   + 0.5 * (r[s][:, None] + r[t][None, :]), count)
              for s in range(len(v)) for t in range(s + 1, len(v))}
    best = min(trials, key=lambda p: (_total(trials[p]), p))
    return best, trials[best]


def _cheapest_task(stats: LayerStats, merged: Tensor, hinv_shared: Tensor, rest: list[int],
                   count: int) -> tuple[int, Match]:
    """The remaining task whose greedy match against the zipped tuples costs least (ties: lower index)."""
    trials = {u: greedy_match(pair_costs(merged, stats.vecs[u], hinv_shared, stats.hinv[u])
                              + 0.5 * stats.lost_var[u][None, :], count) for u in rest}
    best = min(rest, key=lambda u: (_total(trials[u]), u))
    return best, trials[best]


def _total(match: Match) -> float:
    """The summed cost of a greedy match's accepted pairs."""
    return float(sum(match[2]))
