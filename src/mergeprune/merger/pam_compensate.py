"""PAM's bias compensation for the teacher links that the merged network lacks.

Compensation (``compensate``): a teacher link that the merged network lacks (source dropped, or
cut) is replaced by its mean contribution over the B samples, added to the reader's bias.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from mergeprune.merger.assemble import Source
from mergeprune.models.grouped import GroupedNet


def mean_contributions(net: GroupedNet, idx: int, mean_in: Tensor) -> Tensor:
    """[neurons, input channels]: each input channel's mean contribution to each neuron of layer idx."""
    sp, layer = net.layer_specs[idx], net.layers[net.names[idx]]
    w = layer.weight * net.mask(net.names[idx])
    if sp.kind == "conv":
        n_out, n_in = w.shape[:2]
        per = F.conv2d(mean_in[None], w.transpose(0, 1).reshape(n_in * n_out, 1, *w.shape[2:]),
                       padding=sp.padding, groups=n_in)
        return per.reshape(n_in, n_out, -1).mean(-1).t()
    n_in = mean_in.shape[0]
    return (w.reshape(w.shape[0], n_in, -1) * mean_in.reshape(1, n_in, -1)).sum(-1)


def compensate_biases(net: GroupedNet, teachers: Sequence[GroupedNet], sources: Sequence[Sequence[Source]],
                      means: Sequence[Sequence[Tensor]]) -> None:
    """In place: add to each neuron's bias the mean contribution of the teacher inputs it lost."""
    head_src = [(k, o) for k, t in enumerate(teachers) for o in range(t.n_outputs[t.tasks[0]])]
    all_src = [list(s) for s in sources] + [head_src]
    for idx in range(1, len(net.names)):
        name = net.names[idx]
        conn, prev = net.connectivity(idx), all_src[idx - 1]  # merged [rows, previous-layer rows]
        for k, teacher in enumerate(teachers):
            rows = torch.as_tensor([r for r, (o, _) in enumerate(all_src[idx]) if o == k], dtype=torch.long)
            cols = torch.as_tensor([c for c, (o, _) in enumerate(prev) if o == k], dtype=torch.long)
            if len(rows) == 0:
                continue
            contrib = mean_contributions(teacher, idx, means[k][idx - 1])  # [teacher rows, teacher cols]
            t_rows = torch.as_tensor([all_src[idx][r][1] for r in rows.tolist()], dtype=torch.long)
            missing = torch.ones(len(rows), contrib.shape[1], dtype=torch.bool)
            if len(cols):
                t_cols = torch.as_tensor([prev[c][1] for c in cols.tolist()], dtype=torch.long)
                missing[:, t_cols] = ~conn[rows][:, cols]
            net.layers[name].bias[rows] += (contrib[t_rows] * missing).sum(1)
    net.apply_masks()
