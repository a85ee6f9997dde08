"""merger=mtz: Multi-Task Zipping (He, Zhou, Thiele, NeurIPS 2018), the state-of-the-art baseline of PAM.

The teachers are zipped layer by layer from the input. For hidden layer l:

1. Per task t, the layer Hessian H_t = E[x~ x~^T] of the layer input restricted to the already-shared
   inputs and augmented with 1 (conv: the C_in-dim vector at one spatial position, averaged over
   samples and positions, one Hessian for every kernel position; linear after conv: the flattened
   input). It is computed on a fixed sample of the training data, on the samples the task has labels
   for (all of them for attribute tasks), and inverted with relative damping.
2. Every pair (neuron i of A, neuron j of B) costs dE = 1/2 (w_i - w_j)^T (H_A^-1 + H_B^-1)^-1 (w_i - w_j),
   w = [incoming weights from the shared inputs; bias], summed over the kernel positions for conv.
3. Greedily, by ascending cost, pairs whose ends are both unused are zipped until `share` of the
   layer's neurons are. A zipped neuron gets w* = w_A + H_A^-1 (H_A^-1 + H_B^-1)^-1 (w_B - w_A)
   (the minimiser of the two tasks' summed quadratic errors); for conv the merged bias is the mean
   over kernel positions. More than two tasks are zipped in one after the other: the new task's
   neurons pair with the shared ones, whose inverse Hessian is the sum of the merged tasks' inverse
   Hessians (as in MTZ's code), so every zipped neuron is shared by all tasks.
4. The network is rebuilt: unzipped neurons keep their incoming weights; outgoing weights are not
   updated, but the next layer's (and the heads') columns are rewired, so a neuron of teacher t that
   read a now-zipped neuron reads the shared one with its own original weight.
5. The whole network is retrained lightly (`retrain_steps` Adam steps on all tasks, masks enforced
   after every step).

Representation: a zipped neuron has task set = all tasks; an unzipped neuron of teacher t has task set
{t}. A zipped neuron therefore reads only zipped neurons of the previous layer. MTZ keeps its inputs
from each network's unshared neurons as task-specific links (W_inter), which a grouped network cannot
express: here those inputs are dropped. With `share=0` the result equals merger=none; with `share=1`
every hidden neuron is shared by all tasks.
The arithmetic of steps 1-3 (layer inputs, Hessians, pair costs, merged weights, the greedy match
and the new layer layout) is in ``mtz_zip.py``; the rebuilding of step 4 is in ``mtz_rebuild.py``.
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
from mergeprune.errors import ConfigError
from mergeprune.merger.assemble import alongside
from mergeprune.merger.mtz_rebuild import rebuild
from mergeprune.merger.mtz_zip import (
    ZipPlan,
    damped,
    greedy_match,
    inverse,
    layer_hessian,
    layer_input,
    merge_weights,
    neuron_vectors,
    pair_costs,
    plan_layer,
)
from mergeprune.models.grouped import GroupedNet
from mergeprune.tasks import IGNORE
from mergeprune.training.module import MultiTaskModule
from mergeprune.training.optim import adam

log = logging.getLogger(__name__)


class MtzMerger:
    """Zip the teachers' neurons layer by layer by Hessian-weighted weight similarity (MTZ)."""

    parts = staticmethod(together)

    def __init__(self, name: str = "mtz", share: float | Mapping[str, float] = 0.5,
                 retrain_steps: int = 100, lr: float = 1e-3, hessian_samples: int = 512,
                 damping: float = 1e-4, seed: int = 0):
        self.name = name
        self.share = _check_share(share)
        if isinstance(retrain_steps, bool) or not isinstance(retrain_steps, int) or retrain_steps < 0:
            raise ConfigError(f"merger.retrain_steps={retrain_steps}; allowed: an integer >= 0")
        if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr > 0:
            raise ConfigError(f"merger.lr={lr}; allowed: a number > 0")
        if isinstance(hessian_samples, bool) or not isinstance(hessian_samples, int) or hessian_samples < 1:
            raise ConfigError(f"merger.hessian_samples={hessian_samples}; allowed: an integer >= 1")
        if isinstance(damping, bool) or not isinstance(damping, (int, float)) or not damping >= 0:
            raise ConfigError(f"merger.damping={damping}; allowed: a number >= 0")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ConfigError(f"merger.seed={seed}; allowed: an integer")
        self.retrain_steps, self.lr = retrain_steps, float(lr)
        self.hessian_samples, self.damping, self.seed = hessian_samples, float(damping), seed

    def __call__(self, teachers: Sequence[GroupedNet], ctx: Context) -> Built:
        """The zipped network of the teachers (teachers[k] is the teacher of ctx.tasks[k])."""
        start = time.perf_counter()
        net = alongside(teachers)
        shares = self._layer_shares(net.names[:-1])
        x, targets = ctx.sample(self.hessian_samples, "train", seed=self.seed)
        valid = [_labelled(t) for t in targets[: len(teachers)]]
        layers: dict[str, dict[str, Any]] = {}
        for idx, name in enumerate(net.names[:-1]):
            width = net.layer_specs[idx].width
            count = math.floor(shares[name] * width + 0.5) if len(teachers) > 1 else 0
            if idx > 0 and not (net.input_groups(idx) == net.full_set).any():
                count = 0  # nothing shared below: a zipped neuron would have no inputs
            plan = self.zip_layer(net, idx, count, x, valid)
            net = rebuild(net, idx, plan)
            loss = self._retrain(net, ctx, idx)
            mean_cost = sum(plan.costs) / len(plan.costs) if plan.costs else 0.0
            layers[name] = {"zipped": len(plan.pairs), "mean_cost": mean_cost,
                            "retrain_loss": loss, "pairs": plan.pairs}
            loss_txt = "-" if loss is None else f"{loss:.4f}"
            log.info(f"merge/mtz: {name} zipped {len(plan.pairs)}/{width} pairs, mean pair cost "
                  f"{mean_cost:.4g}, retrain loss {loss_txt} ({self.retrain_steps} steps)")
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

    @torch.no_grad()
    def zip_layer(self, net: GroupedNet, idx: int, count: int, x: Tensor,
                  valid: Sequence[Tensor]) -> ZipPlan:
        """Choose and merge `count` neurons of each teacher in hidden layer idx (not yet zipped)."""
        name, n_tasks = net.names[idx], len(net.tasks)
        rows = [(net.groups(name) == 1 << t).nonzero().flatten() for t in range(n_tasks)]
        if count == 0:
            return plan_layer(net, idx, rows, [[] for _ in rows], torch.empty(0), [])
        shared = (net.input_groups(idx) == net.full_set).nonzero().flatten()
        conv = net.layer_specs[idx].kind == "conv"
        feats = layer_input(net, idx, x)[:, shared]
        hess = [damped(layer_hessian(feats[v], conv), self.damping) for v in valid]
        hinv = [inverse(h) for h in hess]
        vecs = [neuron_vectors(net, idx, r, shared) for r in rows]
        left, right, costs = greedy_match(pair_costs(vecs[0], vecs[1], hinv[0], hinv[1]), count)
        chosen = [left, right]
        merged = merge_weights(vecs[0][left], vecs[1][right], hinv[0], hinv[1])
        # the zipped neurons so far minimise the summed errors of their tasks: their Hessian is the
        # sum of the tasks' Hessians, so every task weighs in by its own Hessian, whatever the order
        h_shared = hess[0] + hess[1]
        for t in range(2, n_tasks):
            hinv_shared = inverse(h_shared)
            left, right, step_costs = greedy_match(pair_costs(merged, vecs[t], hinv_shared, hinv[t]), count)
            chosen = [c[left] for c in chosen] + [right]
            merged = merge_weights(merged[left], vecs[t][right], hinv_shared, hinv[t])
            h_shared = h_shared + hess[t]
            costs = costs + step_costs
        return plan_layer(net, idx, rows, chosen, merged, costs)

    def _retrain(self, net: GroupedNet, ctx: Context, idx: int) -> float | None:
        """retrain_steps optimizer steps of the whole network on all tasks; their mean training loss."""
        if self.retrain_steps == 0:
            return None
        module = MultiTaskModule(net, ctx.tasks, adam(self.lr), 1,
                                 stage=f"merge/mtz/{net.names[idx]}")
        trainer = ctx.fit(module, 1, steps=self.retrain_steps)
        net.apply_masks()
        return float(trainer.callback_metrics["train/loss"])


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
