"""MTZ's zipping arithmetic for one layer: Hessians, pair costs, merged weights and the new layout.

Unlike MTZ's ImageNet + CelebA setting, all tasks here read the same images, and the shared inputs
are computed alike for every task, so the Hessians differ only through the samples each task has
labels for. For attribute tasks H_A = H_B: the pair cost is then a Hessian-weighted distance and w* is
the pair's mean (with more tasks too: the zipped tuples' Hessian is the sum of their tasks' Hessians,
so w* = (sum H_t)^-1 sum H_t w_t is the plain mean). Which tasks are matched in which order, and the
lost inputs' share of the cost, are in ``mtz_match.py`` and ``mtz_lost.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from mergeprune.models.grouped import GroupedNet


@dataclass
class ZipPlan:
    """The new neurons of one layer: which teacher neurons they come from, and the zipped weights."""

    members: Tensor  # [new neurons, tasks] old row index of each task's constituent, -1 where none
    bits: list[int]  # task set of each new neuron
    weight: Tensor  # [zipped, *weight row shape] merged incoming weights (zero off the shared inputs)
    bias: Tensor  # [zipped] merged biases
    costs: list[float]  # dE of every accepted pair (all zipping steps)
    pairs: list[list[int]]  # per zipped neuron, the teacher-local index of each task's constituent


@torch.no_grad()
def layer_input(net: GroupedNet, idx: int, x: Tensor) -> Tensor:
    """The input of layer idx (activations of the layer below after ReLU and pooling)."""
    return net.hidden_outputs(x, idx)[-1][1] if idx > 0 else x


def layer_hessian(feats: Tensor, conv: bool) -> Tensor:
    """E[x~ x~^T] of the input augmented with 1: per spatial position for conv, flattened for linear."""
    rows = feats.permute(0, 2, 3, 1).reshape(-1, feats.shape[1]) if conv else feats.flatten(1)
    rows = torch.cat([rows.double(), torch.ones(len(rows), 1, dtype=torch.float64)], dim=1)
    return rows.T @ rows / len(rows)


def damped(hessian: Tensor, damping: float) -> Tensor:
    """A Hessian with damping * (mean diagonal) added to its diagonal."""
    eye = torch.eye(len(hessian), dtype=hessian.dtype)
    return hessian + damping * hessian.diagonal().mean() * eye


def inverse(hessian: Tensor) -> Tensor:
    """The (pseudo-)inverse of a symmetric Hessian."""
    return torch.linalg.pinv(hessian, hermitian=True)


def neuron_vectors(net: GroupedNet, idx: int, rows: Tensor, shared: Tensor) -> Tensor:
    """[neurons, kernel positions, shared inputs + 1]: each neuron's weights from the shared inputs and bias."""
    layer = net.layers[net.names[idx]]
    weight, bias = layer.weight.detach()[rows].double(), layer.bias.detach()[rows].double()
    if net.layer_specs[idx].kind == "conv":
        vec = weight[:, shared].flatten(2).transpose(1, 2)
    else:
        vec = weight[:, net.input_index(idx, shared)][:, None, :]
    return torch.cat([vec, bias[:, None, None].expand(-1, vec.shape[1], 1)], dim=2)


def pair_costs(a: Tensor, b: Tensor, hinv_a: Tensor, hinv_b: Tensor) -> Tensor:
    """dE of zipping every (a_i, b_j): 1/2 sum over positions of d^T (H_A^-1 + H_B^-1)^-1 d, d = a_i - b_j."""
    metric = torch.linalg.pinv(hinv_a + hinv_b, hermitian=True)
    am, bm = a @ metric, b @ metric
    qa, qb = (am * a).sum(dim=(1, 2)), (bm * b).sum(dim=(1, 2))
    cross = torch.einsum("ipd,jpd->ij", am, b)
    return (0.5 * (qa[:, None] + qb[None, :] - 2 * cross)).clamp_min(0.0)


def merge_weights(a: Tensor, b: Tensor, hinv_a: Tensor, hinv_b: Tensor) -> Tensor:
    """w* = a + H_A^-1 (H_A^-1 + H_B^-1)^-1 (b - a), row by row (the minimiser of the summed errors)."""
    gain = hinv_a @ torch.linalg.pinv(hinv_a + hinv_b, hermitian=True)
    return a + (b - a) @ gain.T


def greedy_match(cost: Tensor, count: int) -> tuple[Tensor, Tensor, list[float]]:
    """Pairs (i, j) by ascending cost with both ends unused, until `count` are taken: (i's, j's, costs)."""
    n_b = cost.shape[1]
    used_a, used_b = [False] * cost.shape[0], [False] * n_b
    left, right, costs = [], [], []
    flat = cost.flatten()
    for f in torch.argsort(flat, stable=True).tolist():
        if len(left) == count:
            break
        i, j = divmod(f, n_b)
        if not used_a[i] and not used_b[j]:
            used_a[i] = used_b[j] = True
            left.append(i)
            right.append(j)
            costs.append(float(flat[f]))
    return torch.as_tensor(left, dtype=torch.long), torch.as_tensor(right, dtype=torch.long), costs


def plan_layer(net: GroupedNet, idx: int, rows: Sequence[Tensor], chosen: Sequence[Tensor | list],
               merged: Tensor, costs: list[float]) -> ZipPlan:
    """New layer layout: zipped neurons first (weights from their merged vectors), then each teacher's rest."""
    n_tasks, full = len(rows), net.full_set
    chosen = [torch.as_tensor(c, dtype=torch.long) for c in chosen]
    zipped = len(chosen[0])
    members = [[int(rows[t][c[i]]) for t, c in enumerate(chosen)] for i in range(zipped)]
    bits = [full] * zipped
    for t in range(n_tasks):
        taken = set(chosen[t].tolist())
        for local, row in enumerate(rows[t].tolist()):
            if local not in taken:
                members.append([row if s == t else -1 for s in range(n_tasks)])
                bits.append(1 << t)
    weight, bias = _vectors_to_weights(net, idx, merged) if zipped else (torch.empty(0), torch.empty(0))
    pairs = [[int(c[i]) for c in chosen] for i in range(zipped)]
    return ZipPlan(torch.as_tensor(members, dtype=torch.long).reshape(-1, n_tasks), bits, weight,
                   bias, costs, pairs)


def _vectors_to_weights(net: GroupedNet, idx: int, vec: Tensor) -> tuple[Tensor, Tensor]:
    """Weight rows (zero off the shared inputs) and biases from merged [neurons, positions, d] vectors."""
    layer = net.layers[net.names[idx]]
    shared = (net.input_groups(idx) == net.full_set).nonzero().flatten()
    weight = torch.zeros(len(vec), *layer.weight.shape[1:], dtype=layer.weight.dtype)
    if net.layer_specs[idx].kind == "conv":
        k = layer.weight.shape[-1]
        weight[:, shared] = vec[:, :, :-1].transpose(1, 2).reshape(len(vec), len(shared), k, k).float()
    else:
        weight[:, net.input_index(idx, shared)] = vec[:, 0, :-1].float()
    return weight, vec[:, :, -1].mean(dim=1).float()
