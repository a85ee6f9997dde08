"""Assemble a grouped network from teachers' neurons: weights copied within a teacher, zero across."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from mergeprune.models.grouped import GroupedNet

Source = tuple[int, int]  # (teacher index = task index, neuron index in that teacher)


def side_by_side(teachers: Sequence[GroupedNet]) -> list[list[Source]]:
    """Every neuron of every teacher, teacher after teacher, for each hidden layer."""
    widths = [len(teachers[0].groups(n)) for n in teachers[0].names[:-1]]
    for t in teachers:
        if [len(t.groups(n)) for n in t.names[:-1]] != widths:
            raise ValueError("teachers must share one architecture to be merged")
    return [[(k, n) for k in range(len(teachers)) for n in range(w)] for w in widths]


@torch.no_grad()
def assemble(teachers: Sequence[GroupedNet], sources: Sequence[Sequence[Source]],
             neuron_tasks: Sequence[Sequence[int]]) -> GroupedNet:
    """A grouped network whose neuron i of layer l is teacher sources[l][i]; cross-teacher links start at zero.

    teachers[k] is the single-task network of the k-th task; masks (pruning) carry over within a teacher.
    """
    first = teachers[0]
    tasks = [t.tasks[0] for t in teachers]
    n_out = {t.tasks[0]: t.n_outputs[t.tasks[0]] for t in teachers}
    net = GroupedNet(first.spec, tasks, n_out, neuron_tasks)
    head_src = [(k, o) for k, t in enumerate(teachers) for o in range(n_out[t.tasks[0]])]
    all_sources = [list(s) for s in sources] + [head_src]
    prev: list[Source] | None = None
    for idx, name in enumerate(net.names):
        layer, mask = net.layers[name], net.mask(name)
        layer.weight.zero_()
        layer.bias.zero_()
        src = torch.as_tensor(all_sources[idx])
        for k, teacher in enumerate(teachers):
            rows = (src[:, 0] == k).nonzero().flatten()
            orig_rows = src[rows, 1]
            t_layer = teacher.layers[name]
            layer.bias[rows] = t_layer.bias[orig_rows]
            if prev is None:
                cols, orig_cols = None, None
            else:
                p = torch.as_tensor(prev)
                sel = (p[:, 0] == k).nonzero().flatten()
                cols = net.input_index(idx, sel)
                orig_cols = teacher.input_index(idx, p[sel, 1])
            _copy_block(layer.weight, t_layer.weight, rows, orig_rows, cols, orig_cols)
            _copy_block(mask, teacher.mask(name), rows, orig_rows, cols, orig_cols)
        mask.mul_(net.structure_mask(name))
        prev = all_sources[idx]
    net.apply_masks()
    return net


def alongside(nets: Sequence[GroupedNet]) -> GroupedNet:
    """Single-task networks side by side in one grouped network: one group per task, no links."""
    sources = side_by_side(nets)
    return assemble(nets, sources, [[1 << k for k, _ in layer] for layer in sources])


def _copy_block(dst: torch.Tensor, src: torch.Tensor, rows: torch.Tensor, orig_rows: torch.Tensor,
                cols: torch.Tensor | None, orig_cols: torch.Tensor | None) -> None:
    """dst[rows, cols] = src[orig_rows, orig_cols] (all columns when cols is None)."""
    if cols is None:
        dst[rows] = src[orig_rows]
    else:
        dst[rows[:, None], cols[None, :]] = src[orig_rows[:, None], orig_cols[None, :]]
