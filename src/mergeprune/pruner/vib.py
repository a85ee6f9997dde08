"""pruner=vib: VIBNet neuron pruning (Dai et al., ICML 2018), the PAM paper's second pruner.

The network is trained with VIBNet's noise and KL term (pruner.vib_gates) in stages whose strength
grows: stage k trains ``epochs`` epochs at kl_factor * kl_growth^(k-1), continuing the previous
stage's weights and gates. After each stage the gates are read out (mu folded into the next layer,
neurons with log alpha >= ``threshold`` removed, every task keeping a path) and the read-out is
finetuned and judged by the same test as every accuracy-targeted pruner (pruner.judge, pruner.accept:
each task within ``tolerance`` + ``noise_z`` standard errors of the teachers' validation accuracy).
An accepted read-out is a trajectory point (the cost of every subset, the accuracy of every task, and
the ``kl_factor`` reached), and its removals become permanent in the VIB network. A rejected one
sends the VIB network back to the last state that passed and the next stage grows the strength by
the square root of the last growth; once some task has lost ``slow_at`` of its tolerance the growth is at most the
square root of ``kl_growth``, so the curve is fine where methods are compared (as the shared
schedule's steps are). ``patience`` rejections in a row, or ``max_stages`` stages, end pruning. The result is the cheapest accepted read-out. A stage that removes nothing new is no point.

``phase: joint`` trains every step on the sum of all task losses and their KL terms (a shared
group's KL reaches every task, an exclusive group's only its own); ``alternate`` (PAM's per-task
"individual" phase) steps on one task at a time: its loss plus its own KL sum.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mergeprune.context import Built, Context
from mergeprune.cost import subset_cost
from mergeprune.errors import ConfigError, check_choice, check_int, check_number
from mergeprune.models.grouped import GroupedNet
from mergeprune.pruner.accept import Acceptance
from mergeprune.pruner.judge import Retrain, retrain_and_judge, warm_start
from mergeprune.pruner.knobs import plain
from mergeprune.pruner.trajectory import fmt, live, point, wants_test
from mergeprune.pruner.vib_gates import LayerWeights, VibGates, gated_loss, neuron_weights, readout
from mergeprune.seeding import draw_seed, seed_all, stage_seed
from mergeprune.training.loop import train_steps
from mergeprune.training.optim import adam, check_optimizer

log = logging.getLogger(__name__)
PHASES = ("joint", "alternate")


class VibPruner:
    """VIBNet training in stages of growing KL strength, each read out and judged at the accuracy target."""

    def __init__(self, name: str = "vib", granularity: str = "neurons", kl_factor: float = 1e-5,
                 kl_growth: float = 2.0, threshold: float = 0.01, layer_weights: Any = "flops",
                 phase: str = "joint", epochs: int = 2, gate_lr: float = 1e-2,
                 init: Mapping[str, float] | None = None, optimizer: Mapping[str, Any] | None = None,
                 finetune_epochs: int = 1, recovery_epochs: int = 2, steps_per_epoch: int | None = None,
                 tolerance: float = 0.01, noise_z: float = 1.0, slow_at: float = 0.5, patience: int = 2,
                 max_stages: int = 30, test_every: int = 1):
        self.name = name
        self.granularity = check_choice(granularity, "pruner.granularity", ("neurons",))
        self.kl_factor = check_number(kl_factor, "pruner.kl_factor", low=0.0)
        self.kl_growth = check_number(kl_growth, "pruner.kl_growth", low=1.0)
        self.threshold = check_number(threshold, "pruner.threshold")
        self.layer_weights = _check_weights(plain(layer_weights))
        self.phase = check_choice(phase, "pruner.phase", PHASES)
        self.epochs = check_int(epochs, "pruner.epochs", 1)
        self.gate_lr = check_number(gate_lr, "pruner.gate_lr", low=0.0, strict=True)
        self.init = _check_init(plain(init) or {})
        self.optimizer = check_optimizer(plain(optimizer) or adam(1e-3), "pruner.optimizer")
        spe = None if steps_per_epoch is None else check_int(steps_per_epoch, "pruner.steps_per_epoch", 1)
        self.retrain = Retrain(check_int(finetune_epochs, "pruner.finetune_epochs", 0),
                               check_int(recovery_epochs, "pruner.recovery_epochs", 0), self.optimizer, spe)
        self.accept = Acceptance(tolerance, noise_z)
        self.slow_at = check_number(slow_at, "pruner.slow_at", low=0.0, high=1.0)
        self.patience = check_int(patience, "pruner.patience", 1)
        self.max_stages = check_int(max_stages, "pruner.max_stages", 0)
        self.test_every = check_int(test_every, "pruner.test_every", 0)

    def __call__(self, net: GroupedNet, ctx: Context, tag: str, resume_dir: Path | None = None) -> Built:
        """Prune net in place to the cheapest accepted read-out; return it with the stages' report."""
        if isinstance(self.layer_weights, Mapping):
            missing = [n for n in net.names[:-1] if n not in self.layer_weights]
            if missing:
                raise ConfigError(f"pruner.layer_weights has no weight for {', '.join(missing)}; "
                                  f"give one per hidden layer ({', '.join(net.names[:-1])}) or 'flops'")
        run = Stages(self, net, ctx, tag)
        run.run()
        net.load_state_dict(run.best.state_dict())
        report = run.report(net)
        log.info("%s: VIB stopped (%s) after %d stages (%d accepted): live %s, val %s, flops(all) %s",
                 tag, report["stopped"], len(report["stages"]), report["accepted"], fmt(live(net)),
                 fmt(report["final_val_acc"]), f"{report['cost_all']:,}")
        return Built(net, report)

    def train(self, net: GroupedNet, gates: VibGates, ctx: Context, kl_factor: float, stage: str) -> float:
        """One stage of VIB training (weights and gates) at a KL strength; returns the mean loss."""
        positions = [(i, t) for i, t in enumerate(ctx.data.tasks) if t.name in net.tasks]
        weights = neuron_weights(net, self.layer_weights)
        gates.train()

        def loss(x: Any, targets: Any, step: int) -> Any:
            task = step % len(positions) if self.phase == "alternate" else None
            return gated_loss(net, gates, positions, weights, kl_factor, x, targets, task)

        groups = [{"params": list(net.parameters())},
                  {"params": list(gates.parameters()), "lr": self.gate_lr, "weight_decay": 0.0}]
        mean = train_steps(net, ctx.data, groups, self.optimizer, self.epochs, stage, loss,
                           self.retrain.steps_per_epoch)
        gates.eval()
        return mean


class Stages:
    """The stages of one VIB run: the VIB network and gates, the best read-out and the trajectory."""

    def __init__(self, pruner: VibPruner, net: GroupedNet, ctx: Context, tag: str):
        self.p, self.ctx, self.tag = pruner, ctx, tag
        self.reference = ctx.target(net)
        self.n_val = ctx.split_size("val")
        own, self.warm = warm_start(net, ctx, self.reference, pruner.accept, pruner.retrain, tag)
        self.start_val, self.start_live = own, live(net)
        self.seed = draw_seed()
        seed_all(stage_seed(self.seed, "gates"))
        self.vib, self.best = copy.deepcopy(net), copy.deepcopy(net)
        self.gates = VibGates(self.vib, **pruner.init)
        self.saved = self._snapshot(pruner.kl_factor / pruner.kl_growth)
        self.growth, self.streak, self.accepted = pruner.kl_growth, 0, 0
        self.stages: list[dict[str, Any]] = []
        self.stopped = "max_stages"
        first = point(net, ctx, 0, 0, own, with_test=True) | {"kl_factor": 0.0}
        self.trajectory = [first]
        log.info("%s: VIB from live %s, val %s (held to %s), flops(all) %s", tag, fmt(self.start_live),
                 fmt(own), fmt(self.reference), f"{subset_cost(net, net.full_set)['flops']:,}")

    def run(self) -> None:
        """Stages until `patience` rejections in a row or `max_stages`."""
        for k in range(1, self.p.max_stages + 1):
            if not self._stage(k):
                self.stopped = "tolerance"
                return

    def _stage(self, k: int) -> bool:
        """Train, read out and judge one stage; False once pruning should stop."""
        t0 = time.perf_counter()
        kl = self.saved["kl"] * self.growth
        seed_all(stage_seed(self.seed, f"stage{k}"))
        loss = self.p.train(self.vib, self.gates, self.ctx, kl, f"{self.tag}/vib{k}")
        cand, _ = readout(self.vib, self.gates, self.p.threshold)
        entry: dict[str, Any] = {"stage": k, "kl_factor": kl, "train_loss": loss, "live": live(cand),
                                 "flops": subset_cost(cand, cand.full_set)["flops"]}
        if _same_neurons(cand, self.best):  # nothing new crossed the threshold: no point to judge
            entry |= {"accepted": None, "seconds": round(time.perf_counter() - t0, 2)}
            self.stages.append(entry)
            self.saved = self._snapshot(kl)
            log.info("%s: stage %d (kl_factor %.3g): nothing new removed, %.1f s", self.tag, k, kl,
                     entry["seconds"])
            return True
        verdict = retrain_and_judge(cand, self.ctx, self.reference, self.p.accept, self.p.retrain,
                                    f"{self.tag}/vib{k}/readout", self.n_val)
        entry |= {"val": verdict.val, "recovered": verdict.recovered, "broken": verdict.broken,
                  "accepted": verdict.accepted, "seconds": round(time.perf_counter() - t0, 2)}
        self.stages.append(entry)
        log.info("%s: stage %d (kl_factor %.3g): live %s, val %s, flops(all) %s, %.1f s%s", self.tag, k,
                 kl, fmt(entry["live"]), fmt(verdict.val), f"{entry['flops']:,}", entry["seconds"],
                 "" if verdict.accepted else f" -> rejected ({fmt(verdict.broken)} below)")
        if verdict.accepted:
            self._accept(cand, verdict.val, k, kl)
            return True
        self._restore()
        self.streak += 1
        self.growth = math.sqrt(self.growth)
        return self.streak < self.p.patience

    def _accept(self, cand: GroupedNet, val: Mapping[str, float], k: int, kl: float) -> None:
        """Keep the read-out, make its removals permanent in the VIB network, add a trajectory point."""
        self.best, self.accepted, self.streak = cand, self.accepted + 1, 0
        worst = max(self.reference[t] - a for t, a in val.items())
        if worst >= self.p.slow_at * self.p.accept.tolerance:  # near the target: finer stages
            self.growth = min(self.growth, math.sqrt(self.p.kl_growth))
        for name in self.vib.names[:-1]:
            self.vib.prune_neurons(name, cand.alive(name).to(self.vib.mask(name).device))
        self.saved = self._snapshot(kl)
        with_test = wants_test(self.accepted, self.p.test_every)
        self.trajectory.append(point(cand, self.ctx, self.accepted, k, dict(val), with_test)
                               | {"kl_factor": kl})

    def _snapshot(self, kl: float) -> dict[str, Any]:
        """The VIB network, gates and strength to go back to after a rejected stage."""
        return {"kl": kl, "net": copy.deepcopy(self.vib.state_dict()),
                "gates": copy.deepcopy(self.gates.state_dict())}

    def _restore(self) -> None:
        """Back to the last state that passed (accepted, or nothing new removed)."""
        self.vib.load_state_dict(self.saved["net"])
        self.gates.load_state_dict(self.saved["gates"])

    def report(self, net: GroupedNet) -> dict[str, Any]:
        """What the run did: every stage, the trajectory, the settings and why it stopped."""
        p = self.p
        return {
            "method": "vib", "phase": p.phase, "threshold": p.threshold,
            "layer_weights": p.layer_weights if isinstance(p.layer_weights, str) else dict(p.layer_weights),
            "layers": {n: {"requested_sparsity": None,
                           "achieved_sparsity": 1 - int(net.alive(n).sum()) / max(self.start_live[n], 1)}
                       for n in net.names[:-1]},
            "stages": self.stages, "accepted": self.accepted, "stopped": self.stopped,
            "base_val_acc": dict(self.reference), "warm_start": self.warm, "start_val_acc": self.start_val,
            "final_val_acc": self.ctx.accuracy(net, "val"),
            "cost_all": subset_cost(net, net.full_set)["flops"], "trajectory": self.trajectory,
        }


def _check_weights(value: Any) -> LayerWeights:
    """'flops', or a dict layer -> weight >= 0."""
    if value == "flops":
        return value
    if isinstance(value, Mapping) and value:
        return {str(k): check_number(v, f"pruner.layer_weights.{k}", low=0.0) for k, v in value.items()}
    raise ConfigError(f"pruner.layer_weights={value!r}; allowed: flops, or a dict layer -> weight >= 0")


def _check_init(value: Mapping[str, Any]) -> dict[str, float]:
    """The gates' initialisation: mu, log_d (means) and std."""
    unknown = sorted(set(value) - {"mu", "log_d", "std"})
    if unknown:
        raise ConfigError(f"pruner.init has unknown keys {unknown}; allowed: mu, log_d, std")
    out = {k: check_number(v, f"pruner.init.{k}") for k, v in value.items()}
    if "std" in out:
        check_number(out["std"], "pruner.init.std", low=0.0)
    return out


def _same_neurons(a: GroupedNet, b: GroupedNet) -> bool:
    """Whether two networks keep the same hidden neurons."""
    return all(bool((a.alive(n).cpu() == b.alive(n).cpu()).all()) for n in a.names[:-1])
