"""The inputs a zipped neuron loses, replaced by their mean, and the error that replacement leaves.

A zipped neuron (task set = all tasks) reads only the zipped neurons of the layer below, so each
constituent loses its links from its own teacher's unzipped neurons there (MTZ keeps them as
task-specific W_inter links, which a grouped network cannot express). With o those lost inputs and
v_o the constituent's weights from them:

- ``bias_shift``: E[o] . v_o, added to the constituent's bias before the pair costs and the merge
  (the best constant stand-in for o . v_o in the squared error);
- ``lost_variance``: r = v_o^T Cov(o) v_o, the squared error left after that replacement. Conv: the
  covariance of the C_lost-dim input vectors at one spatial position, shared by all kernel positions
  and summed over them, as ``mtz_zip.layer_hessian`` treats the Hessian. The pair cost adds 1/2 r
  per constituent.

Neglected: the cross-term E[(x~_s . (w - w*)) ((o - E[o]) . v_o)] between the error on the shared
inputs x~_s and the lost inputs' fluctuation, i.e. the correlation of shared and lost inputs (the
merged weights could partly predict o from x~_s; MTZ and this code do not try). A neuron with no
lost inputs gets shift 0 and r = 0, so its cost and merge are MTZ's.
"""

from __future__ import annotations

import torch
from torch import Tensor

from mergeprune.merger.pam_compensate import mean_contributions
from mergeprune.models.grouped import GroupedNet


def lost_channels(net: GroupedNet, idx: int, task: int) -> Tensor:
    """Input channels of layer idx that teacher `task`'s neurons read but a zipped neuron cannot."""
    groups = net.input_groups(idx)
    return (((groups >> task) & 1 == 1) & (groups != net.full_set)).nonzero().flatten()


@torch.no_grad()
def bias_shift(net: GroupedNet, idx: int, rows: Tensor, lost: Tensor, mean_in: Tensor) -> Tensor:
    """[rows] (float64): the summed mean contribution of the lost channels to each neuron's input."""
    if len(lost) == 0:
        return torch.zeros(len(rows), dtype=torch.float64)
    return mean_contributions(net, idx, mean_in)[rows][:, lost].sum(dim=1).double()


@torch.no_grad()
def lost_variance(net: GroupedNet, idx: int, rows: Tensor, lost: Tensor, feats: Tensor) -> Tensor:
    """[rows] (float64): r = v_o^T Cov(o) v_o of each neuron's input from the lost channels."""
    if len(lost) == 0:
        return torch.zeros(len(rows), dtype=torch.float64)
    name = net.names[idx]
    weight = (net.layers[name].weight * net.mask(name)).detach()[rows].double()
    sub = feats[:, lost].double()
    if net.layer_specs[idx].kind == "conv":
        cov = _covariance(sub.permute(0, 2, 3, 1).reshape(-1, len(lost)))
        v = weight[:, lost].flatten(2).transpose(1, 2)  # [rows, kernel positions, lost channels]
        return torch.einsum("rpc,cd,rpd->r", v, cov, v).clamp_min(0.0)
    v = weight[:, net.input_index(idx, lost)]
    return torch.einsum("rc,cd,rd->r", v, _covariance(sub.flatten(1)), v).clamp_min(0.0)


def _covariance(rows: Tensor) -> Tensor:
    """The (population) covariance of the rows of a [samples, features] matrix."""
    centred = rows - rows.mean(dim=0, keepdim=True)
    return centred.T @ centred / len(rows)
