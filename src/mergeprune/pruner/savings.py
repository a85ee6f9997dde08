"""What removing one hidden neuron saves: the FLOPs of the all-tasks subset it stops costing.

In a grouped network a neuron reads only the live input channels its group may connect to, and
only the live neurons of the next layer that are allowed to read it pay for it. Removing neuron i
of layer l saves its own computation, (2 k*k n_in(i) - 1) * H*W FLOPs over the n_in(i) live
channels it reads (nothing if it reads none), plus 2 k'*k' * H'*W' FLOPs in each live reader of the
next layer (one input channel fewer; a head row reading it counts as a reader). This is the exact
drop of `cost.subset_cost(net, net.full_set)["flops"]` for the removal of that one neuron, except
when a reader loses its last input (it then stops costing its -1 term as well) or the cleanup
removes neurons left without inputs or readers.
"""

from __future__ import annotations

import torch
from torch import Tensor

from mergeprune.models.grouped import GroupedNet


def live_inputs(net: GroupedNet, idx: int) -> Tensor:
    """Live input channels each neuron of layer idx may read (its group's connections, as cost.py counts)."""
    conn = net.connectivity(idx).cpu()
    if idx > 0:
        conn = conn & net.alive(net.names[idx - 1]).cpu()[None, :]
    return conn.sum(dim=1)


def unit_savings(net: GroupedNet) -> dict[str, Tensor]:
    """All-tasks FLOPs saved by removing each neuron of every hidden layer (0 for dead ones)."""
    out = {}
    for idx, name in enumerate(net.names[:-1]):
        sp, nxt = net.layer_specs[idx], net.layer_specs[idx + 1]
        alive = net.alive(name).cpu()
        n_in = live_inputs(net, idx).to(torch.float64)
        own = ((2 * sp.fan_per_input * n_in - 1).clamp(min=0)) * sp.positions
        reader_alive = net.alive(net.names[idx + 1]).cpu()
        readers = net.connectivity(idx + 1).cpu()[reader_alive].sum(dim=0).to(torch.float64)
        read = 2 * nxt.fan_per_input * nxt.positions * readers
        out[name] = torch.where(alive, own + read, torch.zeros_like(own))
    return out
