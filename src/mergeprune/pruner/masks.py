"""Shared pruning utilities: exact projections, per-layer budgets, sparsity reports, masked retraining.

Two constraint sets, both restricted to a base mask (a grouped network's structure and the weights
pruned earlier, which never come back):

- ``unstructured``: at most k non-zero entries. The Euclidean projection keeps the k allowed entries
  of largest magnitude; ties go to the lower flat index, so exactly min(k, allowed) are kept.
- ``neurons``: at most k non-zero neuron rows (filters / units of hidden layers). The projection
  keeps the k alive rows of largest L2 norm (over allowed entries), ties to the lower row index.

Budgets are counted from ALL allowed elements of a layer (its structure mask: every weight a
connection may carry, or every neuron row), never from the current non-zeros, so a progressive
stage asking for 1% keeps 1% of the layer, not 1% of what an earlier stage left.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor

from mergeprune.context import Context
from mergeprune.cost import dense_weights, nonzero_weights
from mergeprune.errors import ConfigError, check_number
from mergeprune.models.grouped import GroupedNet
from mergeprune.pruner.knobs import check_ratios, plain
from mergeprune.training.module import MultiTaskModule

GRANULARITIES = ("unstructured", "neurons")


# ----- exact projections ----------------------------------------------------------------------------
def topk_index(scores: Tensor, k: int) -> Tensor:
    """Boolean mask of the k largest scores of a 1-D tensor; ties go to the lower index."""
    n = scores.numel()
    keep = torch.zeros(n, dtype=torch.bool, device=scores.device)
    k = max(0, min(int(k), n))
    if k == 0:
        return keep
    if k == n:
        return ~keep
    scores = scores.float()
    threshold = torch.kthvalue(-scores.cpu(), k).values.to(scores.device).neg()
    above = scores > threshold
    keep |= above
    need = k - int(above.sum())
    if need > 0:
        ties = (scores == threshold).nonzero().flatten()[:need]
        keep[ties] = True
    return keep


def keep_entries(values: Tensor, k: int, base: Tensor | None = None) -> Tensor:
    """Bool mask (values' shape) of the k allowed entries of largest magnitude."""
    allowed = _allowed(values, base).flatten()
    k = min(int(k), int(allowed.sum()))
    scores = torch.where(allowed, values.detach().abs().flatten(), torch.full_like(allowed, -1.0,
                                                                               dtype=values.dtype))
    return topk_index(scores, k).view_as(values)


def row_norms(values: Tensor, base: Tensor | None = None) -> Tensor:
    """L2 norm of every neuron row over its allowed entries."""
    masked = values.detach() * _allowed(values, base).to(values.dtype)
    return masked.flatten(1).norm(dim=1)


def keep_rows(values: Tensor, k: int, base: Tensor | None = None) -> Tensor:
    """Bool per row: the k alive rows (any allowed entry) of largest L2 norm."""
    alive = _allowed(values, base).flatten(1).any(dim=1)
    k = min(int(k), int(alive.sum()))
    scores = torch.where(alive, row_norms(values, base), torch.full_like(alive, -1.0, dtype=values.dtype))
    return topk_index(scores, k)


def project_entries(values: Tensor, k: int, base: Tensor | None = None) -> Tensor:
    """Nearest point (Frobenius) with at most k non-zeros inside the base mask."""
    return values.detach() * keep_entries(values, k, base).to(values.dtype)


def project_rows(values: Tensor, k: int, base: Tensor | None = None) -> Tensor:
    """Nearest point (Frobenius) with at most k non-zero rows inside the base mask."""
    rows = keep_rows(values, k, base)
    keep = _allowed(values, base) & rows.view(-1, *([1] * (values.dim() - 1)))
    return values.detach() * keep.to(values.dtype)


def project(values: Tensor, k: int, base: Tensor | None, granularity: str) -> Tensor:
    """The projection for a granularity ('unstructured' entries or 'neurons' rows)."""
    if granularity == "neurons":
        return project_rows(values, k, base)
    return project_entries(values, k, base)


def _allowed(values: Tensor, base: Tensor | None) -> Tensor:
    """The base mask as bool (everything when None)."""
    if base is None:
        return torch.ones_like(values, dtype=torch.bool)
    return base.to(torch.bool)


# ----- layers, units, budgets -----------------------------------------------------------------------
def prunable_layers(net: GroupedNet, granularity: str) -> list[str]:
    """Layers a granularity can prune: all for 'unstructured', hidden layers only for 'neurons'."""
    return list(net.names) if granularity == "unstructured" else list(net.names[:-1])


def total_units(net: GroupedNet, name: str, granularity: str) -> int:
    """Budget base of a layer: allowed weights (structure mask) or neuron rows."""
    if granularity == "neurons":
        return len(net.groups(name))
    return int(net.structure_mask(name).sum())


def kept_units(net: GroupedNet, name: str, granularity: str) -> int:
    """Units a layer keeps now: unmasked weights or alive neurons."""
    if granularity == "neurons":
        return int(net.alive(name).sum())
    return int(net.mask(name).sum())


def current_weight(net: GroupedNet, name: str) -> Tensor:
    """The layer's weight as a detached tensor."""
    return net.layers[name].weight.detach()


@torch.no_grad()
def prune_layer(net: GroupedNet, name: str, k: int, granularity: str,
                values: Tensor | None = None) -> int:
    """Keep the top-k units of a layer (by |values| or row norm; default the weights); returns kept."""
    values = current_weight(net, name) if values is None else values
    base = net.mask(name)
    if granularity == "neurons":
        rows = keep_rows(values, k, base)
        net.prune_neurons(name, rows.cpu() if rows.device != base.device else rows)
        return int(rows.sum())
    keep = keep_entries(values, k, base)
    net.restrict_mask(name, keep)
    net.apply_masks()
    return int(keep.sum())


def unit_scores(net: GroupedNet, name: str, granularity: str) -> Tensor:
    """Flat scores for a global ranking: |w| of allowed weights, or RMS of alive rows; -1 elsewhere."""
    w, base = current_weight(net, name), net.mask(name).bool()
    if granularity == "neurons":
        count = base.flatten(1).sum(dim=1)
        rms = row_norms(w, base) / count.clamp(min=1).sqrt()
        return torch.where(count > 0, rms, torch.full_like(rms, -1.0))
    return torch.where(base, w.abs(), torch.full_like(w, -1.0)).flatten()


def global_allocation(net: GroupedNet, names: Sequence[str], total: int, granularity: str,
                      floor: Mapping[str, int] | None = None) -> dict[str, int]:
    """Per-layer counts of one global top-`total` ranking over the given layers (at least `floor`)."""
    scores = [unit_scores(net, n, granularity) for n in names]
    keep = topk_index(torch.cat(scores), total)
    counts, start = {}, 0
    for name, s in zip(names, scores, strict=True):
        counts[name] = int(keep[start:start + s.numel()].sum())
        start += s.numel()
    for name, low in (floor or {}).items():
        counts[name] = max(counts[name], int(low))
    return counts


class Budget:
    """Per-layer keep ratios: given directly (`keep`) or from a target compression and proportions.

    `keep[layer]` is the fraction of the layer's allowed units kept (layers not listed stay dense).
    `target_compression` C keeps 1/C of all units; layer l keeps min(1, s * proportions[l]) with
    s solved so the total matches (layers not listed in `proportions` stay dense; no proportions:
    every prunable layer the same ratio). Units are weights ('unstructured') or neurons ('neurons').
    """

    def __init__(self, keep: Mapping[str, float] | None, target_compression: float | None,
                 proportions: Mapping[str, float] | None, prefix: str = "pruner",
                 keep_key: str | None = None):
        self.prefix = prefix
        self.keep_key = keep_key or f"{prefix}.keep"
        keep, proportions = plain(keep), plain(proportions)
        if (keep is None) == (target_compression is None):
            raise ConfigError(f"{self.keep_key} / {prefix}.target_compression: set exactly one "
                              f"(got keep={keep}, target_compression={target_compression}); "
                              "allowed: a dict layer -> ratio in (0, 1], or a number >= 1")
        self.keep = check_ratios(keep, self.keep_key) if keep is not None else None
        self.target = None
        if target_compression is not None:
            self.target = check_number(target_compression, f"{prefix}.target_compression", low=1.0)
        if keep is not None and proportions:
            raise ConfigError(f"{prefix}.proportions={proportions}: only used with "
                              f"{prefix}.target_compression; allowed: null when {prefix}.keep is set")
        self.proportions = None
        if proportions is not None and not isinstance(proportions, Mapping):
            raise ConfigError(f"{prefix}.proportions={proportions}; allowed: null or a dict "
                              "layer -> relative keep density > 0")
        if proportions:
            self.proportions = {str(k): check_number(v, f"{prefix}.proportions.{k}", low=0.0,
                                                     strict=True) for k, v in proportions.items()}

    def ratios(self, net: GroupedNet, granularity: str) -> dict[str, float]:
        """Requested keep ratio of every prunable layer (1.0 = not pruned)."""
        names = prunable_layers(net, granularity)
        given = self.keep if self.keep is not None else self.proportions or {}
        key = self.keep_key if self.keep is not None else f"{self.prefix}.proportions"
        unknown = [n for n in given if n not in net.names]
        if unknown:
            raise ConfigError(f"{key}.{unknown[0]}: no such layer; allowed: {net.names}")
        if self.keep is not None:
            return {n: float(self.keep.get(n, 1.0)) for n in names}
        weights = {n: float(given[n]) for n in names if n in given} if given else {n: 1.0 for n in names}
        return solve_ratios({n: total_units(net, n, granularity) for n in names}, weights,
                            self.target, f"{self.prefix}.target_compression")

    def counts(self, net: GroupedNet, granularity: str) -> dict[str, int]:
        """Units each prunable layer keeps: round(ratio * all allowed units), at least 1."""
        return {n: units_for(r, total_units(net, n, granularity))
                for n, r in self.ratios(net, granularity).items()}


def units_for(ratio: float, total: int) -> int:
    """round(ratio * total), at least 1 unit when the layer has any."""
    return min(total, max(1, int(round(ratio * total)))) if total else 0


def solve_ratios(units: Mapping[str, int], weights: Mapping[str, float], target: float,
                 key: str) -> dict[str, float]:
    """Ratios min(1, s*w_l) (unweighted layers dense) that keep sum(units)/target units in all."""
    budget = sum(units.values()) / target
    fixed = sum(u for n, u in units.items() if n not in weights)
    if fixed > budget + 1e-9:
        raise ConfigError(f"{key}={target}: the layers without a proportion alone exceed it; "
                          "allowed: a smaller target or proportions for more layers")

    def kept(s: float) -> float:
        return fixed + sum(min(1.0, s * w) * units[n] for n, w in weights.items())

    lo, hi = 0.0, max(1.0 / w for w in weights.values())
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if kept(mid) < budget else (lo, mid)
    s = (lo + hi) / 2
    return {n: (min(1.0, s * weights[n]) if n in weights else 1.0) for n in units}


# ----- reporting ------------------------------------------------------------------------------------
def compression(net: GroupedNet) -> float:
    """Dense conv + linear weights / non-zero weights (biases excluded)."""
    return dense_weights(net) / max(1, nonzero_weights(net))


def sparsity_report(net: GroupedNet, ratios: Mapping[str, float], granularity: str) -> dict[str, Any]:
    """Requested and achieved sparsity per layer (of weights, or of neurons for 'neurons')."""
    layers = {}
    for name in net.names:
        allowed = int(net.structure_mask(name).sum())
        kept_w = int(net.mask(name).sum())
        entry = {"requested_sparsity": 1.0 - float(ratios.get(name, 1.0)),
                 "weight_sparsity": 1.0 - kept_w / max(1, allowed),
                 "kept_weights": kept_w, "allowed_weights": allowed}
        if granularity == "neurons" and name != net.names[-1]:
            rows = total_units(net, name, "neurons")
            alive = kept_units(net, name, "neurons")
            entry.update(achieved_sparsity=1.0 - alive / max(1, rows), kept_neurons=alive, neurons=rows)
        else:
            entry["achieved_sparsity"] = entry["weight_sparsity"]
            if granularity == "neurons":
                entry["requested_sparsity"] = 0.0
        layers[name] = entry
    return {"layers": layers, "granularity": granularity, "compression": compression(net),
            "nonzero_weights": nonzero_weights(net), "dense_weights": dense_weights(net)}


# ----- training -------------------------------------------------------------------------------------
def train_phase(net: GroupedNet, ctx: Context, optimizer: Mapping[str, Any], epochs: int, stage: str,
                callbacks: Sequence[pl.Callback] = (),
                regularizers: Iterable[Callable[[], Tensor]] = ()) -> pl.Trainer:
    """Train the unmasked weights for some epochs with a fresh module, optimizer and trainer."""
    net.train()
    module = MultiTaskModule(net, ctx.tasks, optimizer, epochs, stage=stage)
    module.regularizers.extend(regularizers)
    trainer = ctx.fit(module, epochs, callbacks)
    net.apply_masks()
    return trainer
