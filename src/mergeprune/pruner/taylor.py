"""pruner=taylor: iterative Taylor-FO neuron pruning (Molchanov et al., CVPR 2019), as PAM evaluated it.

Every hidden neuron (conv filter / linear unit) carries a virtual gate g = 1 on its pre-activation
(after the bias, before the ReLU). Its importance is |dL/dg| at g = 1, averaged over ``batches``
training minibatches, where L is the sum of the losses of all the network's tasks. Each iteration
scores the live neurons, removes the lowest ``fraction`` of them in one global ranking (task heads
are never pruned, and every task keeps a path of live neurons from the input to its head),
finetunes ``finetune_epochs`` with a fresh optimizer (masks enforced), and checks the validation
accuracy of every task. When a cut (after its finetune) lowers any task's validation accuracy by
more than ``tolerance`` below its accuracy before pruning, the network is rolled back to its state
before that cut and the next cut is half as large; pruning stops when the cut would fall below
``min_fraction`` (``min_fraction = fraction``: stop at the first broken cut), or after
``max_iterations`` cuts (rolled-back ones included). Halving lets a large network take big steps
early and still end close to its tolerance, so networks of very different sizes (one teacher, five
merged teachers) are pruned to comparable precision.

No gate is built. Scaling neuron i's weight row and bias by g is the same as gating its
pre-activation z_i = W_i x + b_i, so by the chain rule

    dL/dg_i (g = 1) = sum_positions dL/dz_i * z_i = sum_j W_ij dL/dW_ij + b_i dL/db_i,

and every gate gradient comes from the ordinary parameter gradients of one backward pass (masked
weights are zero, so they add nothing). ``normalize: l2`` divides each layer's scores by their L2
norm over the layer's live neurons before the global ranking (Molchanov et al., ICLR 2017), which
keeps layers of very different widths and spatial sizes comparable; ``none`` ranks raw scores.
Neurons left without inputs or without readers by a cut compute nothing useful and are removed too.

``report`` after a call: ``layers`` (achieved_sparsity = share of the layer's neurons live at the
start that were removed), ``iterations`` (one entry per cut: removed, live, val_acc, cost_all =
FLOPs of the all-tasks subset, rolled_back, seconds; a rolled-back cut is listed, then undone),
``stopped`` (tolerance | max_iterations | nothing_to_cut), ``base_val_acc``, ``final_val_acc``;
each iteration also lists the ``fraction`` it cut.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from mergeprune.context import Built, Context
from mergeprune.cost import subset_cost
from mergeprune.errors import ConfigError, check_choice, check_int, check_number
from mergeprune.models.grouped import GroupedNet
from mergeprune.pruner.task_paths import channel_mask, protect_paths
from mergeprune.tasks import Task
from mergeprune.training.module import MultiTaskModule
from mergeprune.training.optim import adam, check_optimizer

log = logging.getLogger(__name__)

NORMALIZE = ("l2", "flops", "none")


class TaylorPruner:
    """Iterative global Taylor-FO neuron pruning with finetuning between cuts and an accuracy stop."""

    def __init__(self, name: str = "taylor", granularity: str = "neurons", fraction: float = 0.09,
                 batches: int = 10, finetune_epochs: int = 1, max_iterations: int = 30,
                 tolerance: float = 0.01, final_epochs: int = 0, normalize: str = "l2",
                 optimizer: Mapping[str, Any] | None = None, batch_size: int | None = None,
                 min_fraction: float | None = None):
        self.granularity = check_choice(granularity, "pruner.granularity", ("neurons",))
        self.fraction = check_number(fraction, "pruner.fraction", low=0.0, high=1.0, strict=True)
        if self.fraction == 1.0:
            raise ConfigError(f"pruner.fraction={fraction}; allowed: a number in (0, 1)")
        self.min_fraction = check_number(fraction if min_fraction is None else min_fraction,
                                         "pruner.min_fraction", low=0.0, high=self.fraction, strict=True)
        self.batches = check_int(batches, "pruner.batches", 1)
        self.finetune_epochs = check_int(finetune_epochs, "pruner.finetune_epochs", 0)
        self.max_iterations = check_int(max_iterations, "pruner.max_iterations", 0)
        self.final_epochs = check_int(final_epochs, "pruner.final_epochs", 0)
        self.tolerance = check_number(tolerance, "pruner.tolerance", low=0.0, high=1.0)  # accuracy points as a fraction
        self.normalize = check_choice(normalize, "pruner.normalize", NORMALIZE)
        self.optimizer = check_optimizer(optimizer or adam(1e-3), "pruner.optimizer")
        self.batch_size = None if batch_size is None else check_int(batch_size, "pruner.batch_size", 1)
        self.name = name

    # ----- the loop --------------------------------------------------------------------------------
    def __call__(self, net: GroupedNet, ctx: Context, tag: str) -> Built:
        """Prune net in place until the accuracy tolerance or max_iterations stops it; return it."""
        hidden = net.names[:-1]
        start_live = {n: int(net.alive(n).sum()) for n in hidden}
        base = ctx.accuracy(net, "val")
        log.info(f"{tag}: taylor start, live {_fmt_live(net)}, val {_fmt_acc(base)}, "
              f"flops(all) {subset_cost(net, net.full_set)['flops']:,}")
        iterations: list[dict[str, Any]] = []
        stopped, fraction = "max_iterations", self.fraction
        for it in range(1, self.max_iterations + 1):
            t0 = time.perf_counter()
            snapshot = {k: v.detach().clone() for k, v in net.state_dict().items()}
            live_before = _live_total(net)
            scores = self.importance(net, ctx, seed=it)
            keep = select_keep(net, scores, fraction, self.normalize)
            if keep is None:
                stopped = "nothing_to_cut"
                break
            apply_keep(net, keep)
            removed = live_before - _live_total(net)
            self._finetune(net, ctx, self.finetune_epochs, f"{tag}/taylor{it}")
            acc = ctx.accuracy(net, "val")
            flops = subset_cost(net, net.full_set)["flops"]
            broken = {t: a for t, a in acc.items() if base[t] - a > self.tolerance}
            iterations.append({"iteration": it, "fraction": fraction, "removed": removed, "live": _live(net),
                               "val_acc": acc,
                               "cost_all": flops, "rolled_back": bool(broken),
                               "seconds": round(time.perf_counter() - t0, 2)})
            log.info(f"{tag}: taylor iter {it} (cut {fraction:.3g}): removed {removed}, live {_fmt_live(net)}, "
                  f"val {_fmt_acc(acc)}, flops(all) {flops:,}, {time.perf_counter() - t0:.1f} s"
                  + (" -> rolled back" if broken else ""))
            if broken:
                net.load_state_dict(snapshot)
                fraction /= 2
                if fraction < self.min_fraction - 1e-12:
                    stopped = "tolerance"
                    break
        if self.final_epochs > 0:
            self._finetune(net, ctx, self.final_epochs, f"{tag}/taylor_final")
        report = {
            "layers": {n: {"requested_sparsity": None,
                           "achieved_sparsity": 1 - int(net.alive(n).sum()) / max(start_live[n], 1)}
                       for n in hidden},
            "iterations": iterations, "stopped": stopped, "base_val_acc": base,
            "final_val_acc": ctx.accuracy(net, "val"),
            "cost_all": subset_cost(net, net.full_set)["flops"],
        }
        log.info(f"{tag}: taylor stopped ({stopped}) after {len(iterations)} iterations, "
              f"live {_fmt_live(net)}, flops(all) {report['cost_all']:,}")
        return Built(net, report)

    def importance(self, net: GroupedNet, ctx: Context, seed: int = 0) -> dict[str, Tensor]:
        """|dL/dg| of every hidden neuron, averaged over `batches` fixed random training minibatches."""
        size = self.batch_size or int(getattr(ctx.data, "batch_size", 64))
        x, targets = ctx.sample(size * self.batches, "train", seed=seed)
        order = {t.name: i for i, t in enumerate(ctx.data.tasks)}
        tasks = [t for t in ctx.tasks if t.name in net.tasks]
        total: dict[str, Tensor] = {}
        chunks = range(0, len(x), size)
        for lo in chunks:
            batch_targets = {t.name: targets[order[t.name]][lo:lo + size] for t in tasks}
            grads = gate_gradients(net, tasks, x[lo:lo + size], batch_targets)
            for name, g in grads.items():
                total[name] = total.get(name, 0) + g.abs()
        return {name: s / len(chunks) for name, s in total.items()}

    def _finetune(self, net: GroupedNet, ctx: Context, epochs: int, stage: str) -> None:
        """Masked retraining with a fresh optimizer (no-op for 0 epochs)."""
        if epochs <= 0:
            return
        module = MultiTaskModule(net, ctx.tasks, self.optimizer, epochs, stage=stage)
        ctx.fit(module, epochs)
        net.apply_masks()


# ----- scoring -------------------------------------------------------------------------------------
def gate_gradients(net: GroupedNet, tasks: Sequence[Task], x: Tensor,
                   targets: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Signed dL/dg at g = 1 of every hidden neuron for one batch (L = sum of the tasks' losses)."""
    device = next(net.parameters()).device
    out = net(x.to(device))
    loss = sum(t.loss(out[t.name], targets[t.name].to(device)) for t in tasks)
    hidden = net.names[:-1]
    params = [p for n in hidden for p in (net.layers[n].weight, net.layers[n].bias)]
    grads = torch.autograd.grad(loss, params)
    result = {}
    for i, name in enumerate(hidden):
        w, b = params[2 * i].detach(), params[2 * i + 1].detach()
        gw, gb = grads[2 * i], grads[2 * i + 1]
        result[name] = ((w * gw).flatten(1).sum(dim=1) + b * gb).cpu()
    return result


def normalized(net: GroupedNet, scores: Mapping[str, Tensor], how: str) -> dict[str, Tensor]:
    """Scores divided by their L2 norm over each layer's live neurons ('l2'), by the FLOPs one neuron
    of the layer costs ('flops': estimated loss increase per FLOP saved), or unchanged ('none')."""
    if how == "none":
        return dict(scores)
    if how == "flops":
        return {name: s / neuron_flops(net, name) for name, s in scores.items()}
    out = {}
    for name, s in scores.items():
        live = net.alive(name).cpu()
        norm = s[live].norm() if live.any() else s.new_tensor(0.0)
        out[name] = s / norm.clamp_min(1e-12)
    return out


def neuron_flops(net: GroupedNet, name: str) -> float:
    """FLOPs one live neuron of a hidden layer costs: its own outputs plus what the next layer spends reading it."""
    idx = net.names.index(name)
    sp, nxt = net.layer_specs[idx], net.layer_specs[idx + 1]
    prev_live = int(net.alive(net.names[idx - 1]).sum()) if idx > 0 else net.spec.in_channels
    own = 2 * sp.fan_per_input * prev_live * sp.positions
    readers = int(net.alive(net.names[idx + 1]).sum()) if idx + 1 < len(net.names) - 1 else len(
        net.groups(net.names[-1]))
    return float(own + 2 * nxt.fan_per_input * nxt.positions * readers)


# ----- choosing and applying a cut ------------------------------------------------------------------
def select_keep(net: GroupedNet, scores: Mapping[str, Tensor], fraction: float,
                normalize: str = "l2") -> dict[str, Tensor] | None:
    """Keep masks after removing the lowest-ranked live hidden neurons (global ranking): `fraction` of
    them, or with normalize='flops' the lowest importance per FLOP worth `fraction` of the FLOPs.

    Returns None when nothing can be removed without cutting a task's last path.
    """
    hidden = net.names[:-1]
    alive = {n: net.alive(n).cpu() for n in hidden}
    ranked = normalized(net, scores, normalize)
    flat = torch.cat([ranked[n][alive[n]] for n in hidden])
    owner = torch.cat([torch.full((int(alive[n].sum()),), i) for i, n in enumerate(hidden)])
    index = torch.cat([alive[n].nonzero().flatten() for n in hidden])
    order = torch.argsort(flat, stable=True)
    if normalize == "flops":  # cut the least important neurons worth `fraction` of the FLOPs
        cost = torch.tensor([neuron_flops(net, hidden[int(i)]) for i in owner])[order]
        n_cut = int((cost.cumsum(0) < fraction * cost.sum()).sum()) + 1
    else:  # cut `fraction` of the live neurons
        n_cut = max(1, round(fraction * len(flat)))
    keep = {n: alive[n].clone() for n in hidden}
    order = order[:n_cut]
    for j in order.tolist():
        keep[hidden[int(owner[j])]][index[j]] = False
    protect_paths(net, keep, ranked)
    if all(torch.equal(keep[n], alive[n]) for n in hidden):
        return None
    return keep


@torch.no_grad()
def apply_keep(net: GroupedNet, keep: Mapping[str, Tensor]) -> None:
    """Remove the neurons keep marks False, then those left without inputs or without readers."""
    hidden = net.names[:-1]
    for name in hidden:
        device = net.mask(name).device
        net.prune_neurons(name, keep[name].to(device))
    for name in hidden:  # orphans: no live input left
        net.prune_neurons(name, net.alive(name))
    for idx in range(len(hidden) - 1, -1, -1):  # dangling: no live reader left
        readers = channel_mask(net, idx + 1)[net.alive(net.names[idx + 1]).cpu()].any(dim=0)
        used = net.alive(hidden[idx]) & readers.to(net.mask(hidden[idx]).device)
        net.prune_neurons(hidden[idx], used)


# ----- helpers -------------------------------------------------------------------------------------
def _live(net: GroupedNet) -> dict[str, int]:
    """Live neurons per hidden layer."""
    return {n: int(net.alive(n).sum()) for n in net.names[:-1]}


def _live_total(net: GroupedNet) -> int:
    """Live hidden neurons in all layers."""
    return sum(_live(net).values())


def _fmt_live(net: GroupedNet) -> str:
    """'conv1=40 conv2=100 ...'."""
    return " ".join(f"{n}={v}" for n, v in _live(net).items())


def _fmt_acc(acc: Mapping[str, float]) -> str:
    """'lo=0.9912 hi=0.9876'."""
    return " ".join(f"{t}={a:.4f}" for t, a in acc.items())
