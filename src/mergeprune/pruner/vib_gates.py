"""VIBNet's multiplicative noise on a grouped network (Dai et al., ICML 2018): gates, KL, folding.

Every hidden neuron's output (after ReLU and pooling) is multiplied by z ~ N(mu, exp(logD)) while
training and by mu at test time. The KL term of a neuron is 1/2 log(1 + mu^2 / exp(logD)), times
its weight (`neuron_weights`: the layer's weight times H*W for a conv channel, or what the neuron
costs in FLOPs); a neuron is kept iff log alpha = logD - log mu^2 is below the threshold. On a
grouped network a neuron's KL is part of the loss of every task in its task set: a shared group's
reaches every task, an exclusive one only its own (`task_kl`).

z multiplies after pooling, not between ReLU and pooling as in the paper's code: the two are equal
for mu >= 0, and after pooling folding mu into the next layer's input weights (`fold`) is exact
whatever mu's sign, so the pruned network computes exactly what the gated one did at test time.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from mergeprune.models.grouped import GroupedNet
from mergeprune.pruner.savings import unit_savings
from mergeprune.pruner.steps import apply_keep
from mergeprune.pruner.task_paths import protect_paths
from mergeprune.tasks import Task

LayerWeights = str | Mapping[str, float]  # "flops", or {layer: weight} (times H*W for conv)


class VibGates(nn.Module):
    """mu and logD of every hidden neuron of a network."""

    def __init__(self, net: GroupedNet, mu: float = 1.0, log_d: float = -9.0, std: float = 0.01):
        super().__init__()
        self.names = list(net.names[:-1])
        widths = {n: len(net.groups(n)) for n in self.names}
        self.mu = nn.ParameterDict({n: nn.Parameter(torch.normal(mu, std, (w,))) for n, w in widths.items()})
        self.log_d = nn.ParameterDict({n: nn.Parameter(torch.normal(log_d, std, (w,)))
                                       for n, w in widths.items()})

    def scales(self, batch: int) -> list[Tensor]:
        """Per hidden layer, z for a batch while training ([batch, neurons]), mu at test time ([1, neurons])."""
        out = []
        for n in self.names:
            mu, log_d = self.mu[n], self.log_d[n]
            if self.training:
                out.append(mu + torch.exp(0.5 * log_d) * torch.randn(batch, len(mu), device=mu.device))
            else:
                out.append(mu[None, :])
        return out

    def log_alpha(self) -> dict[str, Tensor]:
        """logD - log mu^2 of every neuron (large: the neuron carries noise, not signal)."""
        return {n: (self.log_d[n] - torch.log(self.mu[n] ** 2 + 1e-12)).detach() for n in self.names}

    def kl(self) -> dict[str, Tensor]:
        """1/2 log(1 + mu^2 / exp(logD)) of every neuron."""
        return {n: 0.5 * torch.log1p(self.mu[n] ** 2 * torch.exp(-self.log_d[n])) for n in self.names}


def neuron_weights(net: GroupedNet, how: LayerWeights) -> dict[str, Tensor]:
    """Each live hidden neuron's KL weight: ``flops`` = the all-tasks FLOPs it costs over their mean
    (pruner.savings), or a per-layer weight times H*W for conv channels; dead neurons weigh 0."""
    alive = {n: net.alive(n).cpu() for n in net.names[:-1]}
    if how == "flops":
        savings = unit_savings(net)
        live = torch.cat([savings[n][alive[n]] for n in savings])
        mean = float(live.mean()) if len(live) else 1.0
        return {n: (s / max(mean, 1e-12)).float() for n, s in savings.items()}
    out = {}
    for sp in net.layer_specs[:-1]:
        out[sp.name] = torch.where(alive[sp.name], float(how[sp.name]) * sp.positions, 0.0).float()
    return out


def task_kl(net: GroupedNet, gates: VibGates, weights: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The KL term of every task: the weighted KL of the live neurons whose task set holds the task."""
    kl = gates.kl()
    out = {}
    for i, task in enumerate(net.tasks):
        terms = []
        for n in gates.names:
            mine = ((net.groups(n) & (1 << i)) != 0).to(kl[n].dtype)
            terms.append((kl[n] * weights[n].to(kl[n].device) * mine).sum())
        out[task] = torch.stack(terms).sum()
    return out


@torch.no_grad()
def fold(net: GroupedNet, gates: VibGates) -> None:
    """Multiply every hidden layer's mu into the next layer's input weights (then the gates are 1)."""
    for idx, name in enumerate(gates.names):
        nxt = net.names[idx + 1]
        mu = gates.mu[name].detach().to(net.layers[nxt].weight.device)
        net.layers[nxt].weight.mul_(net.expand_inputs(idx + 1, mu[None, :].expand(len(net.groups(nxt)), -1)))


def readout(net: GroupedNet, gates: VibGates, threshold: float) -> tuple[GroupedNet, dict[str, Tensor]]:
    """The pruned network the gates describe: mu folded, neurons with log alpha >= threshold removed
    (each task keeping a path: its least noisy chain); returns it and the keep masks asked for."""
    out = copy.deepcopy(net)
    fold(out, gates)
    alpha = gates.log_alpha()
    keep = {n: out.alive(n).cpu() & (alpha[n].cpu() < threshold) for n in gates.names}
    protect_paths(out, keep, {n: -a.cpu() for n, a in alpha.items()})
    apply_keep(out, keep)
    return out, keep


def gated_loss(net: GroupedNet, gates: VibGates, positions: Sequence[tuple[int, Task]],
               weights: Mapping[str, Tensor], kl_factor: float, x: Tensor, targets: Sequence[Tensor],
               task: int | None = None) -> Tensor:
    """Task losses of the noisy network plus kl_factor times their KL terms (all tasks, or one)."""
    out = net(x, scales=gates.scales(len(x)))
    kls = task_kl(net, gates, weights) if kl_factor > 0 else {}
    total = x.new_zeros(())
    for k, (i, t) in enumerate(positions):
        if task is not None and k != task:
            continue
        total = total + t.loss(out[t.name], targets[i].to(x.device))
        if kls:
            total = total + kl_factor * kls[t.name]
    return total
