"""Cost of every task subset of a grouped network (docs/architecture.md#cost-of-a-task-subset, PAM's counting rule).

For a subset S the computed neurons are those whose task set meets S and that are not pruned.
A neuron reading n_in live input channels costs (2*k*k*n_in - 1)*H*W FLOPs and k*k*n_in params
(conv, output H x W) or (2*n_in - 1) FLOPs and n_in params (linear, n_in counted after flattening).
A live neuron none of whose inputs is live (n_in = 0) costs nothing. Summed over the neurons
of a group this is the group formula. Heads count like linear layers;
pooling, activations and biases are free. The ``nonzero_*`` figures count only unmasked non-zero
weights, at 2 FLOPs per weight per output position.
"""

from __future__ import annotations

import torch

from mergeprune.models.grouped import GroupedNet, all_subsets, subset_key


def subset_cost(net: GroupedNet, bits: int) -> dict[str, int]:
    """flops, params, nonzero_flops, nonzero_params of one task subset."""
    total = {"flops": 0, "params": 0, "nonzero_flops": 0, "nonzero_params": 0}
    rows_per_layer = net.neuron_index(bits, alive_only=True)
    prev_rows: torch.Tensor | None = None
    for idx, (name, rows) in enumerate(zip(net.names, rows_per_layer, strict=True)):
        sp = net.layer_specs[idx]
        conn = net.connectivity(idx)[rows]
        if prev_rows is not None:
            conn = conn[:, prev_rows]
        n_in = conn.sum(dim=1).to(torch.int64) * sp.fan_per_input  # per computed neuron
        cols = net.input_index(idx, prev_rows)
        weight = net.layers[name].weight.detach() * net.mask(name)
        block = weight[rows] if cols is None else weight[rows][:, cols]
        nnz = int((block != 0).sum())
        per_pos = sp.positions
        total["flops"] += int(((2 * n_in - 1).clamp(min=0) * per_pos).sum())  # no live input: 0
        total["params"] += int(n_in.sum())
        total["nonzero_flops"] += 2 * nnz * per_pos
        total["nonzero_params"] += nnz
        prev_rows = rows
    return total


def all_costs(net: GroupedNet) -> dict[str, dict[str, int]]:
    """Cost of every non-empty task subset, keyed 'lo', 'hi', 'lo+hi', ..."""
    return {subset_key(net.tasks, b): subset_cost(net, b) for b in all_subsets(len(net.tasks))}


def group_sizes(net: GroupedNet) -> dict[str, dict[str, int]]:
    """Live neurons of every hidden layer, per group (keyed by the group's task subset)."""
    out: dict[str, dict[str, int]] = {}
    for name in net.names[:-1]:
        live = net.groups(name)[net.alive(name)]
        counts = torch.bincount(live, minlength=net.full_set + 1)
        out[name] = {subset_key(net.tasks, b): int(counts[b]) for b in all_subsets(len(net.tasks))
                     if counts[b] > 0}
    return out


def nonzero_weights(net: GroupedNet) -> int:
    """Non-zero conv + linear weights (biases excluded) under the masks."""
    return sum(int(((net.layers[n].weight.detach() * net.mask(n)) != 0).sum()) for n in net.names)


def dense_weights(net: GroupedNet) -> int:
    """Conv + linear weights the network's structure allows (biases excluded)."""
    return sum(int(net.structure_mask(n).sum()) for n in net.names)
