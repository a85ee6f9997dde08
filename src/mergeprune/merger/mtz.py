"""merger=mtz: Multi-Task Zipping (He, Zhou, Thiele, NeurIPS 2018), the state-of-the-art baseline of PAM.

The teachers are zipped layer by layer from the input. For hidden layer l:

1. Per task t, the layer Hessian H_t = E[x~ x~^T] of the layer input restricted to the already-shared
   inputs and augmented with 1 (conv: the C_in-dim vector at one spatial position, averaged over
   samples and positions, one Hessian for every kernel position; linear after conv: the flattened
   input). It is computed on a fixed sample of the training data, on the samples the task has labels
   for (all of them for attribute tasks), and inverted with relative damping.
2. Lost inputs: a zipped neuron reads only zipped neurons below, so each constituent loses its links
   from its teacher's unzipped neurons there. Their mean contribution over the sample is added to the
   constituent's bias, and the variance r they leave joins the pair cost (``mtz_lost.py``).
3. Every pair (neuron i of A, neuron j of B) costs
   dE = 1/2 (w_i - w_j)^T (H_A^-1 + H_B^-1)^-1 (w_i - w_j) + 1/2 (r_i + r_j),
   w = [incoming weights from the shared inputs; compensated bias], summed over the kernel positions
   for conv. Pairs are zipped greedily by ascending cost, both ends unused, until `count` neurons of
   each teacher are; a zipped neuron gets w* = w_A + H_A^-1 (H_A^-1 + H_B^-1)^-1 (w_B - w_A) (the
   minimiser of the tasks' summed quadratic errors; conv: the merged bias is the mean over kernel
   positions). More than two tasks are zipped agglomeratively, in an order set by the costs alone:
   the cheapest pair of tasks first, then the task cheapest to match against the zipped tuples, whose
   Hessian is the sum of their tasks' Hessians (``mtz_match.py``). Every zipped neuron is shared by
   all tasks; permuting the teachers permutes only the neurons.
4. `count` = round(share x width). With `max_drop` set, `share` is the largest share tried: `share`
   and the tenths below it are tried from the top down, each rebuilt and scored on a held-out batch,
   and the largest whose mean task accuracy is at most `max_drop` points below the network before
   this layer is kept (``mtz_share.py``); MTZ's code sets the per-layer count k_l by hand.
5. The network is rebuilt: unzipped neurons keep their incoming weights; outgoing weights are not
   updated, but the next layer's (and the heads') columns are rewired, so a neuron of teacher t that
   read a now-zipped neuron reads the shared one with its own original weight (``mtz_rebuild.py``).
6. The whole network is retrained lightly: Adam steps on all tasks, masks enforced after every step,
   round(retrain_steps x retrain_growth^l) of them after hidden layer l (MTZ's code grows them with
   depth, from 50 iterations at conv1_1 to 5000 at fc7).

Representation: a zipped neuron has task set = all tasks; an unzipped neuron of teacher t has task set
{t}. MTZ keeps a shared neuron's inputs from each network's unshared neurons as task-specific links
(W_inter), which a grouped network cannot express: here they are replaced by their mean (step 2).
With `share=0` the result equals merger=none; with `share=1` (and no `max_drop`) every hidden neuron
is shared by all tasks. The arithmetic of steps 1 and 3 is in ``mtz_zip.py``.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from mergeprune.context import Built, Context, together
from mergeprune.errors import ConfigError, check_int, check_number
from mergeprune.merger.assemble import alongside
from mergeprune.merger.mtz_match import LayerStats, layer_stats, unzipped_plan, zip_plan
from mergeprune.merger.mtz_rebuild import rebuild
from mergeprune.merger.mtz_share import Batch, batch_accuracy, search_share, share_count, share_grid
from mergeprune.merger.mtz_zip import ZipPlan
from mergeprune.models.grouped import GroupedNet
from mergeprune.tasks import IGNORE, Task
from mergeprune.training.module import MultiTaskModule
from mergeprune.training.optim import adam

log = logging.getLogger(__name__)


class MtzMerger:
    """Zip the teachers' neurons layer by layer by Hessian-weighted weight similarity (MTZ)."""

    parts = staticmethod(together)

    def __init__(self, name: str = "mtz", share: float | Mapping[str, float] = 1.0,
                 retrain_steps: int = 100, lr: float = 1e-3, hessian_samples: int = 512,
                 damping: float = 1e-4, seed: int = 0, max_drop: float | None = 1.0,
                 val_samples: int = 512, retrain_growth: float = 2.0):
        self.name = name
        self.share = _check_share(share)
        self.retrain_steps = check_int(retrain_steps, "merger.retrain_steps", 0)
        self.lr = check_number(lr, "merger.lr", 0, strict=True)
        self.hessian_samples = check_int(hessian_samples, "merger.hessian_samples", 1)
        self.damping = check_number(damping, "merger.damping", 0)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ConfigError(f"merger.seed={seed}; allowed: an integer")
        self.seed = seed
        self.max_drop = _check_max_drop(max_drop)
        self.val_samples = check_int(val_samples, "merger.val_samples", 1)
        self.retrain_growth = check_number(retrain_growth, "merger.retrain_growth", 0, strict=True)

    def __call__(self, teachers: Sequence[GroupedNet], ctx: Context) -> Built:
        """The zipped network of the teachers (teachers[k] is the teacher of ctx.tasks[k])."""
        start = time.perf_counter()
        net = alongside(teachers)
        shares = self._layer_shares(net.names[:-1])
        x, targets = ctx.sample(self.hessian_samples, "train", seed=self.seed)
        valid = [_labelled(t) for t in targets[: len(teachers)]]
        held = ctx.sample(self.val_samples, "val", seed=self.seed) if self.max_drop is not None else None
        layers: dict[str, dict[str, Any]] = {}
        for idx, name in enumerate(net.names[:-1]):
            limit = shares[name] if _can_zip(net, idx) else 0.0
            net, plan, record = self._zip(net, idx, limit, (x, valid), ctx.tasks, held)
            steps = self.layer_steps(idx)
            loss = self._retrain(net, ctx, idx, steps)
            layers[name] = record | {"retrain_steps": steps, "retrain_loss": loss, "pairs": plan.pairs}
            loss_txt = "-" if loss is None else f"{loss:.4f}"
            log.info(f"merge/mtz: {name} zipped {len(plan.pairs)}/{net.layer_specs[idx].width} pairs "
                     f"(share {record['share']:g}), mean pair cost {record['mean_cost']:.4g}, "
                     f"retrain loss {loss_txt} ({steps} steps)")
        net.eval()
        return Built(net, {"layers": layers, "seconds": time.perf_counter() - start})

    def _layer_shares(self, names: Sequence[str]) -> dict[str, float]:
        """The share of every hidden layer (layers missing from a per-layer map share nothing)."""
        if isinstance(self.share, float):
            return dict.fromkeys(names, self.share)
        unknown = sorted(set(self.share) - set(names))
        if unknown:
            raise ConfigError(f"merger.share names unknown layers {unknown}; allowed: {list(names)}")
        return {n: self.share.get(n, 0.0) for n in names}

    def layer_steps(self, idx: int) -> int:
        """Retraining steps after hidden layer idx: retrain_steps x retrain_growth^idx, rounded."""
        return math.floor(self.retrain_steps * self.retrain_growth**idx + 0.5)

    def _zip(self, net: GroupedNet, idx: int, limit: float, sample: tuple[Tensor, Sequence[Tensor]],
             tasks: Sequence[Task], held: Batch | None) -> tuple[GroupedNet, ZipPlan, dict[str, Any]]:
        """Zip layer idx at share `limit`, or at the largest share within max_drop: (net, plan, report)."""
        name, width = net.names[idx], net.layer_specs[idx].width
        if share_count(limit, width) == 0:
            plan = unzipped_plan(net, idx)
            return rebuild(net, idx, plan), plan, _record(plan, None, 0.0, [])
        stats = layer_stats(net, idx, *sample, self.damping)

        def build(count: int) -> tuple[GroupedNet, ZipPlan]:
            plan = zip_plan(net, idx, stats, count)
            return rebuild(net, idx, plan), plan

        if self.max_drop is None or held is None:
            new, plan = build(share_count(limit, width))
            return new, plan, _record(plan, stats, limit, [])
        base = batch_accuracy(net, tasks, held)
        share, new, plan, tried = search_share(name, share_grid(limit), width, build,
                                               lambda n: batch_accuracy(n, tasks, held), base,
                                               self.max_drop)
        if new is None or plan is None:
            new, plan = build(0)
        return new, plan, _record(plan, stats, share, tried) | {"base_accuracy": base}

    @torch.no_grad()
    def zip_layer(self, net: GroupedNet, idx: int, count: int, x: Tensor, valid: Sequence[Tensor],
                  compensate: bool = True) -> ZipPlan:
        """Choose and merge `count` neurons of each teacher in hidden layer idx (not yet zipped)."""
        if count == 0:
            return unzipped_plan(net, idx)
        return zip_plan(net, idx, layer_stats(net, idx, x, valid, self.damping, compensate), count)

    def _retrain(self, net: GroupedNet, ctx: Context, idx: int, steps: int) -> float | None:
        """`steps` optimizer steps of the whole network on all tasks; their mean training loss."""
        if steps == 0:
            return None
        module = MultiTaskModule(net, ctx.tasks, adam(self.lr), 1,
                                 stage=f"merge/mtz/{net.names[idx]}")
        trainer = ctx.fit(module, 1, steps=steps)
        net.apply_masks()
        return float(trainer.callback_metrics["train/loss"])


def _record(plan: ZipPlan, stats: LayerStats | None, share: float,
            tried: list[dict[str, Any]]) -> dict[str, Any]:
    """The layer report: share, tries, pair costs, and the lost inputs of the zipped constituents."""
    shift, var = 0.0, 0.0
    if stats is not None and plan.pairs:
        pairs = torch.as_tensor(plan.pairs)
        shift = float(torch.cat([s[pairs[:, t]] for t, s in enumerate(stats.shift)]).abs().mean())
        var = float(torch.cat([r[pairs[:, t]] for t, r in enumerate(stats.lost_var)]).mean())
    mean_cost = sum(plan.costs) / len(plan.costs) if plan.costs else 0.0
    return {"zipped": len(plan.pairs), "share": share, "tried": tried, "base_accuracy": None,
            "mean_cost": mean_cost, "mean_bias_shift": shift, "mean_lost_var": var}


def _can_zip(net: GroupedNet, idx: int) -> bool:
    """Whether layer idx can zip: two tasks or more, and something shared below to read."""
    return len(net.tasks) > 1 and (idx == 0 or bool((net.input_groups(idx) == net.full_set).any()))


def _check_max_drop(value: Any) -> float | None:
    """Validate merger.max_drop: null (fixed share) or an accuracy drop >= 0 in percentage points."""
    if value is None:
        return None
    try:
        return check_number(value, "merger.max_drop", 0)
    except ConfigError:
        raise ConfigError(f"merger.max_drop={value!r}; allowed: null (a fixed share) or a number >= 0 "
                          "(accuracy drop in percentage points)") from None


def _check_share(share: Any) -> float | dict[str, float]:
    """Validate merger.share: a fraction in 0..1, or a map from layer name to such a fraction."""
    allowed = "allowed: a number in 0..1, or a map {layer: number in 0..1}"
    if isinstance(share, Mapping):
        return {str(k): _fraction(v, f"merger.share.{k}", allowed) for k, v in share.items()}
    return _fraction(share, "merger.share", allowed)


def _fraction(value: Any, key: str, allowed: str) -> float:
    """A number in 0..1, or a ConfigError naming the key."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ConfigError(f"{key}={value!r}; {allowed}")
    return float(value)


def _labelled(target: Tensor) -> Tensor:
    """Samples a task has a label for (categorical tasks ignore samples outside their classes)."""
    keep = target != IGNORE if not target.is_floating_point() else torch.ones(len(target), dtype=torch.bool)
    return keep if keep.any() else torch.ones_like(keep)
