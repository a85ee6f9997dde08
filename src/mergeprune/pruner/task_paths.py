"""Every task keeps a path: which neurons a task reaches from its head, and which to keep so it can.

A neuron pruning step must leave each task at least one chain of live neurons from the input to its
head (else the task's outputs are constants); `protect_paths` adds the best-scored such chain back
to a keep set that would cut one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import Tensor

from mergeprune.models.grouped import GroupedNet


def channel_mask(net: GroupedNet, idx: int) -> Tensor:
    """[neurons, input channels] True where the layer's mask has any live weight."""
    name, sp = net.names[idx], net.layer_specs[idx]
    mask = net.mask(name).detach().cpu() != 0
    if sp.kind == "conv":
        return mask.flatten(2).any(dim=2)
    return mask.view(mask.shape[0], -1, sp.fan_per_input).any(dim=2)


def reachable(net: GroupedNet, keep: Mapping[str, Tensor], task: int) -> list[Tensor]:
    """Per hidden layer, the kept neurons of a task's group path that are fed from the input."""
    bit = 1 << task
    reach = torch.ones(net.spec.in_channels, dtype=torch.bool)
    out = []
    for idx, name in enumerate(net.names[:-1]):
        mine = keep[name] & ((net.groups(name).cpu() & bit) != 0)
        reach = mine & channel_mask(net, idx)[:, reach].any(dim=1)
        out.append(reach)
    return out


def head_rows(net: GroupedNet, task: int) -> Tensor:
    """Rows of the head that are the outputs of one task."""
    return (net.groups(net.names[-1]).cpu() & (1 << task)) != 0


def has_path(net: GroupedNet, keep: Mapping[str, Tensor], task: int) -> bool:
    """Whether a task's head still reads a chain of kept neurons from the input."""
    reach = reachable(net, keep, task)
    head = channel_mask(net, len(net.names) - 1)[head_rows(net, task)]
    return bool(head[:, reach[-1]].any())


def protect_paths(net: GroupedNet, keep: dict[str, Tensor], scores: Mapping[str, Tensor]) -> None:
    """Un-cut the best-scoring chain of neurons of every task whose path the cut would break."""
    alive = {n: net.alive(n).cpu() for n in net.names[:-1]}
    for task in range(len(net.tasks)):
        if not has_path(net, keep, task) and has_path(net, alive, task):
            for name, pick in best_chain(net, alive, scores, task):
                keep[name][pick] = True


def best_chain(net: GroupedNet, alive: Mapping[str, Tensor], scores: Mapping[str, Tensor],
               task: int) -> list[tuple[str, int]]:
    """A chain of live neurons from the input to a task's head, best score first from the top down."""
    hidden = net.names[:-1]
    before = reachable(net, alive, task)
    readers = channel_mask(net, len(net.names) - 1)[head_rows(net, task)].any(dim=0)
    chain = []
    for idx in range(len(hidden) - 1, -1, -1):
        options = before[idx] & readers
        pick = int(torch.where(options, scores[hidden[idx]], -math.inf).argmax())
        chain.append((hidden[idx], pick))
        readers = channel_mask(net, idx)[pick]
    return chain
