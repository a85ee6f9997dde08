"""The pruning schedule every neuron pruner shares: small steps toward an accuracy target.

Each step scores the live hidden neurons with the pruner's importance function, removes the
least important ones worth ``step`` of the network's current all-tasks FLOPs (pruner.steps: one
global ranking, each neuron charged what removing it saves in the grouped network), finetunes
``finetune_epochs`` (training.loop: masks enforced, fresh optimizer, no Trainer per step; an epoch is
``steps_per_epoch`` optimizer steps when set, else a pass over the training set; a step that leaves some task more than
``tolerance`` below its start gets ``recovery_epochs`` more, so a step near the target is judged on
a network that has recovered what it can) and only then judges the step with the noise-
aware accuracy test (pruner.accept: each task's validation accuracy within ``tolerance`` plus
``noise_z`` standard errors of its reference: the teachers' validation accuracy (Context.reference),
else the network's own before pruning). A network that starts beyond the tolerance (a merge that lost
accuracy) first gets ``recovery_epochs`` of finetuning, so no step is judged on an unrecovered merge. Steps start at ``step`` and grow by
``growth`` after each accepted one, up to ``max_step``, so the redundant first 90% of a network goes
in a few large steps; once some task has lost ``slow_at`` of its tolerance, steps stay at ``step``,
so the trajectory is fine where the methods are compared; a rejected step is undone, its neurons are protected from later steps, and the
next step is back to ``step`` (or half the last one when it was no larger, down to ``min_step``), so
the region where accuracy starts to fall is crossed in small steps. Pruning goes on down the
ranking, so one unremovable
neuron or one noisy validation dip does not end it. A neuron that alone saves more than
``max_step`` of the FLOPs is not part of ordinary steps (pruner.steps): it is tried alone, once
nothing smaller is left or after ``patience`` rejections in a row. Pruning stops when, after
``patience`` rejections in a row, no such neuron is left to try (``tolerance``), when every live
neuron is protected (``nothing_left``), or after ``max_steps`` tried steps. The same rule applies to a
teacher and to a merged network.

Every accepted step is a point of the trajectory (pruner.trajectory: the cost of every task subset,
the validation accuracy of every task, the test accuracy every ``test_every`` accepted steps), and
its figures go to the job's metrics logger as `<tag>/flops`, `<tag>/val/<task>/acc`. Each step is
seeded from the stage's seed and its index alone, so rerunning with ``max_steps`` = a point's
``tried`` rebuilds that point's network, and a run killed mid-way continues from the state saved
after its last finished step (pruner.resume) with the same result as an uninterrupted one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from pytorch_lightning.loggers import Logger
from torch import Tensor

from mergeprune.context import Context
from mergeprune.cost import subset_cost
from mergeprune.errors import check_choice, check_int, check_number
from mergeprune.models.grouped import GroupedNet
from mergeprune.pruner.accept import Acceptance
from mergeprune.pruner.importance import Importance
from mergeprune.pruner.judge import Retrain, retrain_and_judge, warm_start
from mergeprune.pruner.resume import StepCheckpoint
from mergeprune.pruner.steps import NORMALIZE, apply_keep, plan_step
from mergeprune.pruner.trajectory import fmt, live, point, wants_test
from mergeprune.seeding import seed_all, stage_seed
from mergeprune.training.optim import adam, check_optimizer

log = logging.getLogger(__name__)


class Schedule:
    """Prune toward the accuracy target in small FLOPs steps; record every accepted step."""

    def __init__(self, step: float = 0.05, min_step: float = 0.0125, max_step: float = 0.25,
                 growth: float = 1.5, slow_at: float = 0.5, patience: int = 3, max_steps: int = 150,
                 finetune_epochs: int = 1, recovery_epochs: int = 2, steps_per_epoch: int | None = None,
                 optimizer: Mapping[str, Any] | None = None,
                 tolerance: float = 0.01, noise_z: float = 1.0, normalize: str = "flops",
                 test_every: int = 1, final_epochs: int = 0, prefix: str = "pruner"):
        self.step = check_number(step, f"{prefix}.step", low=0.0, high=1.0, strict=True)
        self.min_step = check_number(min_step, f"{prefix}.min_step", low=0.0, high=self.step, strict=True)
        self.max_step = check_number(max_step, f"{prefix}.max_step", low=self.step, high=1.0)
        self.growth = check_number(growth, f"{prefix}.growth", low=1.0)
        self.slow_at = check_number(slow_at, f"{prefix}.slow_at", low=0.0, high=1.0)
        self.patience = check_int(patience, f"{prefix}.patience", 1)
        self.max_steps = check_int(max_steps, f"{prefix}.max_steps", 0)
        self.retrain = Retrain(
            check_int(finetune_epochs, f"{prefix}.finetune_epochs", 0),
            check_int(recovery_epochs, f"{prefix}.recovery_epochs", 0),
            check_optimizer(optimizer or adam(1e-3), f"{prefix}.optimizer"),
            None if steps_per_epoch is None else check_int(steps_per_epoch, f"{prefix}.steps_per_epoch", 1))
        self.accept = Acceptance(tolerance, noise_z, prefix)
        self.normalize = check_choice(normalize, f"{prefix}.normalize", NORMALIZE)
        self.test_every = check_int(test_every, f"{prefix}.test_every", 0)
        self.final_epochs = check_int(final_epochs, f"{prefix}.final_epochs", 0)

    def run(self, net: GroupedNet, ctx: Context, tag: str, importance: Importance,
            resume_dir: Path | None = None) -> dict[str, Any]:
        """Prune net in place; returns the report (steps, trajectory, why it stopped)."""
        ckpt = StepCheckpoint(resume_dir)
        loaded = ckpt.load(net)
        if loaded is not None:
            state, protected = loaded
            log.info("%s: resuming pruning after step %d (%d accepted) from %s", tag, state["tried"],
                     state["accepted"], ckpt.path)
        else:
            state, protected = self._start(net, ctx, tag), {n: torch.zeros(len(net.groups(n)), dtype=torch.bool)
                                                             for n in net.names[:-1]}
            ckpt.save(net, state, protected)
        n_val = ctx.split_size("val")
        while state["stopped"] is None:
            state["stopped"] = self._step(net, ctx, tag, importance, state, protected, n_val)
            ckpt.save(net, state, protected)
        if self.final_epochs > 0:
            self.retrain.run(net, ctx, self.final_epochs, f"{tag}/final")
        report = self._report(net, ctx, state, importance)
        ckpt.clear()
        log.info("%s: pruning stopped (%s) after %d steps (%d accepted): live %s, flops(all) %s",
                 tag, state["stopped"], state["tried"], state["accepted"], fmt(live(net)),
                 f"{report['cost_all']:,}")
        return report

    def _start(self, net: GroupedNet, ctx: Context, tag: str) -> dict[str, Any]:
        """The state before the first step, with the trajectory's first point."""
        base = ctx.target(net)
        own, warm = warm_start(net, ctx, base, self.accept, self.retrain, tag)
        first = point(net, ctx, 0, 0, own, with_test=True)
        log.info("%s: pruning from live %s, val %s (held to %s), flops(all) %s", tag, fmt(live(net)),
                 fmt(own), fmt(base), f"{first['cost'][_all_key(net)]['flops']:,}")
        _log_point(ctx.logger, tag, first)
        return {"seed": int(torch.initial_seed()) & 0x7FFFFFFF, "tried": 0, "accepted": 0, "streak": 0,
                "share": self.step, "base": base, "warm_start": warm, "start_live": live(net), "trajectory": [first],
                "steps": [], "stopped": None}

    def _step(self, net: GroupedNet, ctx: Context, tag: str, importance: Importance,
              state: dict[str, Any], protected: dict[str, Tensor], n_val: int) -> str | None:
        """Try one step and keep or undo it; returns why pruning stops, or None to go on."""
        if state["tried"] >= self.max_steps:
            return "max_steps"
        t0, tried = time.perf_counter(), state["tried"] + 1
        seed_all(stage_seed(state["seed"], f"step{tried}"))
        scores = importance(net, ctx, seed=tried)
        flops = subset_cost(net, net.full_set)["flops"]
        cap, spent = self.max_step * flops, state["streak"] >= self.patience
        # after `patience` rejections, or once nothing small is left: the large neurons, one at a time
        modes = (True,) if spent else (False, True)
        plan = plan_step(net, scores, self.normalize, protected, state["share"], flops, cap, modes)
        if plan is None:
            return "tolerance" if spent else "nothing_left"
        chosen, keep, oversized = plan
        snapshot = {k: v.detach().clone() for k, v in net.state_dict().items()}
        apply_keep(net, keep)
        verdict = retrain_and_judge(net, ctx, state["base"], self.accept, self.retrain, f"{tag}/step{tried}",
                                    n_val)
        acc, broken, recovered = verdict.val, verdict.broken, verdict.recovered
        after = subset_cost(net, net.full_set)["flops"]
        state["tried"] = tried
        state["steps"].append({"tried": tried, "share": state["share"], "oversized": oversized,
                               "removed": len(chosen),
                               "flops_before": flops, "flops": after, "val": acc, "val_before_recovery": verdict.first if recovered else None, "recovered": recovered,
                               "accepted": not broken,
                               "broken": broken, "live": live(net),
                               "seconds": round(time.perf_counter() - t0, 2)})
        log.info("%s: step %d (%.3g of %s FLOPs): removed %d, live %s, val %s, flops(all) %s, %.1f s%s",
                 tag, tried, state["share"], f"{flops:,}", len(chosen), fmt(live(net)), fmt(acc),
                 f"{after:,}", time.perf_counter() - t0,
                 "" if not broken else f" -> rejected ({fmt(broken)} below)")
        if broken:
            net.load_state_dict(snapshot)
            for name, i in chosen:
                protected[name][i] = True
            state["streak"] += 1
            share = state["share"]
            state["share"] = self.step if share > self.step + 1e-12 else max(share / 2, self.min_step)
            return None
        state["accepted"] += 1
        worst = max(state["base"][t] - a for t, a in acc.items())
        near = worst >= self.slow_at * self.accept.tolerance
        state["streak"], state["share"] = 0, self.step if near else min(state["share"] * self.growth,
                                                                         self.max_step)
        entry = point(net, ctx, state["accepted"], tried, acc, wants_test(state["accepted"], self.test_every))
        state["trajectory"].append(entry)
        _log_point(ctx.logger, tag, entry)
        return None

    def _report(self, net: GroupedNet, ctx: Context, state: dict[str, Any],
                importance: Importance) -> dict[str, Any]:
        """What the run did: sparsity per layer, every step, the trajectory and why it stopped."""
        return {
            "importance": importance.name, "normalize": self.normalize,
            "layers": {n: {"requested_sparsity": None,
                           "achieved_sparsity": 1 - int(net.alive(n).sum()) / max(state["start_live"][n], 1)}
                       for n in net.names[:-1]},
            "steps": state["steps"], "tried": state["tried"], "accepted": state["accepted"],
            "stopped": state["stopped"], "base_val_acc": state["base"],
            "warm_start": state.get("warm_start", False), "start_val_acc": state["trajectory"][0]["val"],
            "final_val_acc": ctx.accuracy(net, "val"),
            "cost_all": subset_cost(net, net.full_set)["flops"],
            "trajectory": state["trajectory"],
        }


def _log_point(logger: Logger | bool, tag: str, entry: dict[str, Any]) -> None:
    """Send one trajectory point to the metrics logger (W&B line charts against `<tag>/step`)."""
    if not isinstance(logger, Logger):
        return
    metrics = {f"{tag}/step": entry["step"],
               f"{tag}/flops": max(c["flops"] for c in entry["cost"].values())}
    metrics |= {f"{tag}/val/{t}/acc": a for t, a in entry["val"].items()}
    metrics |= {f"{tag}/test/{t}/acc": a for t, a in (entry["test"] or {}).items()}
    logger.log_metrics(metrics)


def _all_key(net: GroupedNet) -> str:
    """The all-tasks subset key ('lo+hi')."""
    return "+".join(net.tasks)
