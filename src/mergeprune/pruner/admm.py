"""pruner=admm: one-shot ADMM weight pruning (Zhang et al. ECCV 2018; Ye et al. arXiv 1810.07378).

Pruning to k_l units per layer is solved as  min f(W) s.t. W_l in S_l = {at most k_l non-zeros}
(or at most k_l neuron rows) with ADMM in scaled form:

- W-step: ordinary training of f(W) + sum_l rho_l/2 * ||W_l - Z_l + U_l||_F^2 for
  ``epochs_per_iteration`` epochs (the penalty enters the loss through ``module.regularizers``);
- Z-step: Z_l = Proj_{S_l}(W_l + U_l), the exact top-k projection (pruning.masks);
- U-step: U_l += W_l - Z_l; then rho_l <- min(rho_l * rho_multiplier, rho_max) and U_l is rescaled
  by old/new rho, so the unscaled dual rho*U is unchanged.

Z starts as the projection of W (a clone) and U at 0. The loop runs as a Lightning callback
(``AdmmCallback``), which logs per layer and per ADMM iteration ``admm/<layer>/residual``
(||W - Z||_F), ``residual_rel``, ``dual_residual``, ``z_sparsity`` and ``rho``. After ADMM the
weights are hard-pruned to exactly k_l per layer and the survivors retrained under the mask with a
fresh optimizer. Layers that already keep no more than their budget get no constraint (rho = 0).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import Tensor

from mergeprune.context import Built, Context
from mergeprune.errors import check_choice, check_int, check_number
from mergeprune.models.grouped import GroupedNet
from mergeprune.pruner.masks import (
    GRANULARITIES,
    Budget,
    compression,
    kept_units,
    project,
    prune_layer,
    sparsity_report,
    total_units,
    train_phase,
)
from mergeprune.training.optim import adam, check_optimizer


class AdmmState:
    """Z, U and rho of every constrained layer, with the penalty and the Z/U updates."""

    def __init__(self, net: GroupedNet, counts: Mapping[str, int], granularity: str, rho: float,
                 rho_multiplier: float = 1.0, rho_max: float | None = None):
        self.net, self.counts, self.granularity = net, dict(counts), granularity
        self.rho = {n: float(rho) for n in self.counts}
        self.rho_multiplier = float(rho_multiplier)
        self.rho_max = float(rho_max) if rho_max is not None else float("inf")
        self.z: dict[str, Tensor] = {}
        self.u: dict[str, Tensor] = {}
        self.target: dict[str, Tensor] = {}
        self.iteration = 0
        self.history: dict[str, dict[str, list[float]]] = {
            n: {"residual": [], "residual_rel": [], "dual_residual": [], "z_sparsity": [], "rho": []}
            for n in self.counts}

    def weight(self, name: str) -> Tensor:
        """The layer's weight parameter."""
        return self.net.layers[name].weight

    def project(self, name: str, values: Tensor) -> Tensor:
        """Exact projection of values onto the layer's constraint set, inside its current mask."""
        mask = self.net.mask(name).to(values.device)
        return project(values, self.counts[name], mask, self.granularity)

    @torch.no_grad()
    def start(self) -> None:
        """Z = Proj(W) (a copy), U = 0."""
        self.iteration = 0
        for name in self.counts:
            w = self.weight(name).detach()
            self.z[name] = self.project(name, w).clone()
            self.u[name] = torch.zeros_like(w)
            self.target[name] = self.z[name].clone()
            self._record(name, w, dual=0.0)

    def penalty(self) -> Tensor:
        """sum_l rho_l/2 * ||W_l - Z_l + U_l||_F^2 (one fused kernel per layer)."""
        terms = [F.mse_loss(self.weight(n), self.target[n], reduction="sum") * (0.5 * self.rho[n])
                 for n in self.counts if self.rho[n] > 0]
        if not terms:
            return self.weight(next(iter(self.counts))).new_zeros(())
        return torch.stack(terms).sum()

    @torch.no_grad()
    def update(self) -> dict[str, float]:
        """One Z-step, U-step and rho increase; returns this iteration's metrics."""
        self.iteration += 1
        for name in self.counts:
            w, u = self.weight(name).detach(), self.u[name]
            z_new = self.project(name, w + u)
            dual = self.rho[name] * float(torch.linalg.vector_norm(z_new - self.z[name]))
            u.add_(w - z_new)
            self.z[name] = z_new
            new_rho = min(self.rho[name] * self.rho_multiplier, self.rho_max)
            if new_rho != self.rho[name] and new_rho > 0:
                u.mul_(self.rho[name] / new_rho)
            self.rho[name] = new_rho
            self.target[name] = z_new - u
            self._record(name, w, dual)
        return self.metrics()

    def _record(self, name: str, w: Tensor, dual: float) -> None:
        """Append the layer's residual, dual residual, Z sparsity and rho to the history."""
        z = self.z[name]
        residual = float(torch.linalg.vector_norm(w - z))
        h = self.history[name]
        h["residual"].append(residual)
        h["residual_rel"].append(residual / max(float(torch.linalg.vector_norm(w)), 1e-12))
        h["dual_residual"].append(dual)
        h["z_sparsity"].append(self.z_sparsity(name))
        h["rho"].append(self.rho[name])

    def z_sparsity(self, name: str) -> float:
        """Fraction of the layer's units (allowed weights or neurons) that are zero in Z."""
        z = self.z[name]
        if self.granularity == "neurons":
            nonzero = int(z.flatten(1).ne(0).any(dim=1).sum())
        else:
            nonzero = int(z.ne(0).sum())
        return 1.0 - nonzero / max(1, total_units(self.net, name, self.granularity))

    def metrics(self) -> dict[str, float]:
        """Latest values per layer, keyed admm/<layer>/<metric>."""
        out = {"admm/iteration": float(self.iteration)}
        for name, h in self.history.items():
            for key, values in h.items():
                out[f"admm/{name}/{key}"] = values[-1]
        return out


class AdmmCallback(pl.Callback):
    """Runs ADMM on the training loop: penalty in the loss, Z/U updates every few epochs."""

    def __init__(self, state: AdmmState, epochs_per_iteration: int):
        self.state = state
        self.every = max(1, int(epochs_per_iteration))

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.state.start()
        pl_module.regularizers.append(self.state.penalty)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if (trainer.current_epoch + 1) % self.every:
            return
        for key, value in self.state.update().items():
            pl_module.log(key, value, on_step=False, on_epoch=True)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.state.penalty in pl_module.regularizers:
            pl_module.regularizers.remove(self.state.penalty)


class AdmmSettings:
    """The knobs of one ADMM stage (W/Z/U loop, hard pruning, masked retraining), validated."""

    def __init__(self, granularity: str = "unstructured", rho: float = 1e-3,
                 rho_multiplier: float = 1.0, rho_max: float | None = None, iterations: int = 10,
                 epochs_per_iteration: int = 2, optimizer: Mapping[str, Any] | None = None,
                 retrain_epochs: int = 10, retrain_optimizer: Mapping[str, Any] | None = None,
                 prefix: str = "pruner"):
        self.granularity = check_choice(granularity, f"{prefix}.granularity", GRANULARITIES)
        self.rho = check_number(rho, f"{prefix}.rho", low=0.0, strict=True)
        self.rho_multiplier = check_number(rho_multiplier, f"{prefix}.rho_multiplier", low=1.0)
        self.rho_max = None if rho_max is None else check_number(rho_max, f"{prefix}.rho_max", low=rho)
        self.iterations = check_int(iterations, f"{prefix}.iterations", 0)
        self.epochs_per_iteration = check_int(epochs_per_iteration, f"{prefix}.epochs_per_iteration", 1)
        self.optimizer = check_optimizer(optimizer or adam(1e-3), f"{prefix}.optimizer")
        self.retrain_epochs = check_int(retrain_epochs, f"{prefix}.retrain_epochs", 0)
        self.retrain_optimizer = check_optimizer(retrain_optimizer or adam(1e-3),
                                                 f"{prefix}.retrain_optimizer")

    def describe(self) -> dict[str, Any]:
        """The settings as plain data (for reports)."""
        return {k: v for k, v in vars(self).items()}


def mean_accuracy(net: GroupedNet, ctx: Context, split: str = "val") -> float:
    """Mean accuracy over the net's tasks on one split (the net's train/eval mode is kept)."""
    training = net.training
    accs = ctx.accuracy(net, split)
    net.train(training)
    return sum(accs.values()) / max(1, len(accs))


def admm_stage(net: GroupedNet, ctx: Context, tag: str, counts: Mapping[str, int],
               cfg: AdmmSettings) -> dict[str, Any]:
    """ADMM towards `counts` units per layer, hard pruning to exactly them, masked retraining."""
    start = time.perf_counter()
    active = {n: k for n, k in counts.items() if kept_units(net, n, cfg.granularity) > k}
    state = AdmmState(net, active, cfg.granularity, cfg.rho, cfg.rho_multiplier, cfg.rho_max)
    epochs = cfg.iterations * cfg.epochs_per_iteration
    if active and epochs:
        train_phase(net, ctx, cfg.optimizer, epochs, f"{tag}/admm",
                    callbacks=[AdmmCallback(state, cfg.epochs_per_iteration)])
    before = mean_accuracy(net, ctx) if active else None
    for name, k in active.items():
        # exactly k, unless pruning an earlier layer left fewer live neurons than k here
        expected = min(k, kept_units(net, name, cfg.granularity))
        kept = prune_layer(net, name, k, cfg.granularity)
        if kept != expected or kept_units(net, name, cfg.granularity) != expected:
            raise RuntimeError(f"ADMM hard pruning of {name} kept {kept} units, budget {k}")
    hard = mean_accuracy(net, ctx) if active else None
    train_phase(net, ctx, cfg.retrain_optimizer, cfg.retrain_epochs, f"{tag}/retrain")
    return {"budget": dict(counts), "constrained": sorted(active), "history": state.history,
            "val_acc_before_prune": before, "val_acc_hard_pruned": hard,
            "val_acc_retrained": mean_accuracy(net, ctx), "compression": compression(net),
            "seconds": round(time.perf_counter() - start, 3)}


class AdmmPruner:
    """One-shot ADMM pruning to per-layer budgets, then masked retraining."""

    def __init__(self, name: str = "admm", granularity: str = "unstructured",
                 keep: Mapping[str, float] | None = None, target_compression: float | None = None,
                 proportions: Mapping[str, float] | None = None, rho: float = 1e-3,
                 rho_multiplier: float = 1.0, rho_max: float | None = None, iterations: int = 10,
                 epochs_per_iteration: int = 2, optimizer: Mapping[str, Any] | None = None,
                 retrain_epochs: int = 10, retrain_optimizer: Mapping[str, Any] | None = None):
        self.name = name
        self.settings = AdmmSettings(granularity, rho, rho_multiplier, rho_max, iterations,
                                     epochs_per_iteration, optimizer, retrain_epochs,
                                     retrain_optimizer)
        self.granularity = self.settings.granularity
        self.budget = Budget(keep, target_compression, proportions)

    def __call__(self, net: GroupedNet, ctx: Context, tag: str, resume_dir: Path | None = None) -> Built:
        """Prune net in place to the budget with ADMM, retrain it; return it with its report (no resume)."""
        ratios = self.budget.ratios(net, self.granularity)
        counts = self.budget.counts(net, self.granularity)
        stage = admm_stage(net, ctx, tag, counts, self.settings)
        report = sparsity_report(net, ratios, self.granularity) | {
            "method": "admm", "admm": stage, "settings": self.settings.describe()}
        return Built(net, report)
