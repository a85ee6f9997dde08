"""How much each hidden neuron matters: the importance functions the pruning schedule ranks by.

An importance function takes the network, the context and a seed (which fixed training sample to
score on) and returns one non-negative score per neuron of every hidden layer (dead neurons score
whatever; the schedule ignores them). Larger means more important.

- ``TaylorImportance`` (Molchanov et al., CVPR 2019, "Taylor-FO"): every hidden neuron carries a
  gate g = 1 on its pre-activation; the importance of neuron m is the squared first-order estimate
  of the loss change when its gate goes to 0, accumulated per sample:
  I_m = mean over samples n of (g_m * dL_n/dg_m)^2, where L_n is the sum of the network's task
  losses on sample n. Per-sample accumulation matters: near convergence the batch mean of dL/dg is
  close to zero for every neuron and ranks by noise, while its per-sample square does not cancel.
- ``MagnitudeImportance``: the L2 norm of each neuron's live incoming weights (the classic filter
  norm criterion, Li et al. 2017), no data needed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

import torch
from torch import Tensor

from mergeprune.context import Context
from mergeprune.errors import check_int
from mergeprune.models.grouped import GroupedNet, run_layers
from mergeprune.tasks import Task


class Importance(Protocol):
    """Scores every hidden neuron of a network (larger: more important)."""

    name: str

    def __call__(self, net: GroupedNet, ctx: Context, seed: int) -> dict[str, Tensor]: ...


class TaylorImportance:
    """Per-sample squared gate gradients (g dL/dg)^2, averaged over `batches` training minibatches."""

    name = "taylor"

    def __init__(self, batches: int = 10, batch_size: int | None = None):
        self.batches = check_int(batches, "pruner.importance.batches", 1)
        self.batch_size = None if batch_size is None else check_int(batch_size, "pruner.importance.batch_size", 1)

    def __call__(self, net: GroupedNet, ctx: Context, seed: int) -> dict[str, Tensor]:
        """Mean over a fixed sample (drawn with `seed`) of every neuron's per-sample (dL/dg)^2."""
        size = self.batch_size or int(getattr(ctx.data, "batch_size", 64))
        x, targets = ctx.sample(size * self.batches, "train", seed=seed)
        order = {t.name: i for i, t in enumerate(ctx.data.tasks)}
        tasks = [t for t in ctx.tasks if t.name in net.tasks]
        total: dict[str, Tensor] = {}
        for lo in range(0, len(x), size):
            batch = {t.name: targets[order[t.name]][lo:lo + size] for t in tasks}
            for name, g in per_sample_gate_grads(net, tasks, x[lo:lo + size], batch).items():
                total[name] = total.get(name, 0) + g.pow(2).sum(dim=0)
        return {name: s / len(x) for name, s in total.items()}


def per_sample_gate_grads(net: GroupedNet, tasks: Sequence[Task], x: Tensor,
                          targets: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """[batch, neurons] dL_n/dg at g = 1 for every hidden layer (L_n: sample n's summed task losses)."""
    device = next(net.parameters()).device
    x = x.to(device)
    hidden = net.names[:-1]
    gates = [torch.ones(len(x), len(net.groups(n)), device=device, requires_grad=True) for n in hidden]
    ws = [net.layers[n].weight for n in net.names]
    bs = [net.layers[n].bias for n in net.names]
    out = run_layers(x, net.layer_specs, ws, bs, gates=gates)
    heads = net.head_slices()
    # mean-reduced task losses times the batch size: the sum of per-sample losses, so that the
    # gradient with respect to sample n's gates is that sample's own gradient
    loss = sum(t.loss(out[:, heads[t.name]], targets[t.name].to(device)) for t in tasks) * len(x)
    grads = torch.autograd.grad(loss, gates)
    return {name: g.detach().cpu() for name, g in zip(hidden, grads, strict=True)}


class MagnitudeImportance:
    """L2 norm of each neuron's unmasked incoming weights."""

    name = "magnitude"

    def __call__(self, net: GroupedNet, ctx: Context, seed: int) -> dict[str, Tensor]:
        """Row norms of the masked weights of every hidden layer."""
        out = {}
        for name in net.names[:-1]:
            w = net.layers[name].weight.detach() * net.mask(name)
            out[name] = w.flatten(1).norm(dim=1).cpu()
        return out
