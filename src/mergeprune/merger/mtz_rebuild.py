"""Rebuilding MTZ's grouped network around one zipped layer: its rows laid out by the plan, the layer
above rewired to it (step 5 of the algorithm in ``mtz.py``)."""

from __future__ import annotations

import torch
from torch import Tensor

from mergeprune.merger.mtz_zip import ZipPlan
from mergeprune.models.grouped import GroupedNet


@torch.no_grad()
def rebuild(net: GroupedNet, idx: int, plan: ZipPlan) -> GroupedNet:
    """A copy of net whose hidden layer idx is laid out by the plan, the layer above rewired to it."""
    tasks = [net.groups(n).tolist() for n in net.names[:-1]]
    tasks[idx] = plan.bits
    new = GroupedNet(net.spec, net.tasks, net.n_outputs, tasks)
    for i, name in enumerate(net.names):
        if i not in (idx, idx + 1):
            new.layers[name].load_state_dict(net.layers[name].state_dict())
            new.mask(name).copy_(net.mask(name))
    _fill_rows(new, net, idx, plan)
    _rewire_columns(new, net, idx + 1, plan.members)
    for name in (net.names[idx], net.names[idx + 1]):
        new.mask(name).mul_(new.structure_mask(name))
    new.apply_masks()
    return new


def _fill_rows(new: GroupedNet, old: GroupedNet, idx: int, plan: ZipPlan) -> None:
    """Layer idx: zipped rows from the plan, the others copied from their teacher's neuron."""
    name, zipped = old.names[idx], len(plan.weight)
    src, dst = old.layers[name], new.layers[name]
    constituents = plan.members[:zipped]
    if zipped:
        dst.weight[:zipped] = plan.weight
        dst.bias[:zipped] = plan.bias
        # a zipped weight stays masked only where every constituent's weight was masked
        new.mask(name)[:zipped] = old.mask(name)[constituents].amax(dim=1)
    rest = plan.members[zipped:].amax(dim=1)
    dst.weight[zipped:] = src.weight[rest]
    dst.bias[zipped:] = src.bias[rest]
    new.mask(name)[zipped:] = old.mask(name)[rest]


def _rewire_columns(new: GroupedNet, old: GroupedNet, idx: int, members: Tensor) -> None:
    """Layer idx (above the zipped one): each task's rows read the new neuron holding their old input."""
    name = old.names[idx]
    src, dst = old.layers[name], new.layers[name]
    groups = old.groups(name)
    if not torch.isin(groups, torch.as_tensor([1 << t for t in range(members.shape[1])])).all():
        raise ValueError(f"layer {name} is already zipped; MTZ zips layers from the input upwards")
    dst.weight.zero_()
    new.mask(name).zero_()
    dst.bias.copy_(src.bias)
    for t in range(members.shape[1]):
        rows = (groups == 1 << t).nonzero().flatten()
        sel = (members[:, t] >= 0).nonzero().flatten()
        new_cols = new.input_index(idx, sel)[None, :]
        old_cols = old.input_index(idx, members[sel, t])[None, :]
        dst.weight[rows[:, None], new_cols] = src.weight[rows[:, None], old_cols]
        new.mask(name)[rows[:, None], new_cols] = old.mask(name)[rows[:, None], old_cols]
