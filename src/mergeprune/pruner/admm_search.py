"""pruner=admm_neurons: neuron-level ADMM whose budget is searched for the accuracy target.

The configured budget (``keep`` or ``target_compression``) gives per-layer keep ratios r_l; a scale
s keeps min(1, s * r_l) of every layer (layers the budget keeps whole stay whole). Each scale the
search (pruner.admm_ladder: ladder from s = 1 by ``ladder_factor``, then ``bisect_steps`` of
bisection in log s) tries is one rung: one ADMM stage (pruner.admm.admm_stage: W/Z/U iterations to
that budget, hard pruning, masked retraining), judged with the shared noise-aware test
(pruner.accept: every task's validation accuracy within ``tolerance`` + ``noise_z`` standard
errors of its accuracy before pruning).

Warm start: every rung starts from the cheapest network accepted so far (the unpruned network
before the first acceptance), as progressive ADMM does, so a rung only removes the neurons between
two budgets; the result depends on the path the search took. The final network is the cheapest
accepted one. Every accepted rung is a trajectory point (pruner.trajectory; step 0 = the network
before pruning). Each rung is seeded from a seed drawn at the start and its index alone.
``search: false`` is plain one-shot ADMM to the configured budget (pruner.admm.AdmmPruner).
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mergeprune.context import Built, Context
from mergeprune.cost import subset_cost
from mergeprune.errors import ConfigError, check_int, check_number
from mergeprune.models.grouped import GroupedNet
from mergeprune.pruner.accept import Acceptance
from mergeprune.pruner.admm import AdmmPruner, admm_stage
from mergeprune.pruner.admm_ladder import ScaleSearch
from mergeprune.pruner.masks import kept_units, sparsity_report, total_units, units_for
from mergeprune.pruner.trajectory import fmt, live, point, wants_test
from mergeprune.seeding import draw_seed, seed_all, stage_seed

log = logging.getLogger(__name__)


class AdmmSearchPruner(AdmmPruner):
    """One-shot ADMM whose keep scale is searched (ladder + bisection) for the accuracy target."""

    def __init__(self, name: str = "admm_neurons", granularity: str = "neurons",
                 keep: Mapping[str, float] | None = None, target_compression: float | None = None,
                 proportions: Mapping[str, float] | None = None, search: bool = True,
                 ladder_factor: float = 0.7, bisect_steps: int = 2, max_rungs: int = 8,
                 descend_after_climb: bool = True, tolerance: float = 0.01, noise_z: float = 1.0,
                 test_every: int = 1, **admm: Any):
        super().__init__(name, granularity, keep, target_compression, proportions, **admm)
        for key, value in (("search", search), ("descend_after_climb", descend_after_climb)):
            if not isinstance(value, bool):
                raise ConfigError(f"pruner.{key}={value!r}; allowed: true, false")
        self.search, self.descend_after_climb = search, descend_after_climb
        self.ladder_factor = check_number(ladder_factor, "pruner.ladder_factor", low=0.0, high=0.95,
                                          strict=True)
        self.bisect_steps = check_int(bisect_steps, "pruner.bisect_steps", 0)
        self.max_rungs = check_int(max_rungs, "pruner.max_rungs", 1)
        self.accept = Acceptance(tolerance, noise_z)
        self.test_every = check_int(test_every, "pruner.test_every", 0)

    def __call__(self, net: GroupedNet, ctx: Context, tag: str, resume_dir: Path | None = None) -> Built:
        """Prune net in place to the cheapest accepted budget (or the fixed one); return it and its report."""
        if not self.search:
            return super().__call__(net, ctx, tag, resume_dir)
        base = self.budget.ratios(net, self.granularity)
        rungs = Rungs(self, net, ctx, tag, list(base))
        search = ScaleSearch(lambda s: self.counts(net, base, s), rungs.is_whole, rungs.judge,
                             ceiling(base), self.ladder_factor, self.bisect_steps, self.max_rungs,
                             self.descend_after_climb)
        chosen = search.run(1.0)
        net.load_state_dict(rungs.best.state_dict())
        report = sparsity_report(net, scaled(base, chosen), self.granularity) | {
            "method": "admm", "search": self._summary(net, ctx, search, base, chosen, rungs.epochs),
            "trajectory": rungs.trajectory, "settings": self.settings.describe()}
        summary = report["search"]
        log.info("%s: chose scale %.4g (%s; %d rungs, %d epochs): live %s, val %s, flops(all) %s", tag,
                 chosen, search.stopped, search.trained(), summary["epochs"], fmt(live(net)),
                 fmt(summary["final_val"]), f"{summary['flops']:,}")
        return Built(net, report)

    def counts(self, net: GroupedNet, base: Mapping[str, float], scale: float) -> dict[str, int]:
        """Units every prunable layer keeps at a scale (round(ratio * all units), at least 1)."""
        ratios = scaled(base, scale)
        return {n: units_for(r, total_units(net, n, self.granularity)) for n, r in ratios.items()}

    def _summary(self, net: GroupedNet, ctx: Context, search: ScaleSearch, base: Mapping[str, float],
                 chosen: float, epochs: int) -> dict[str, Any]:
        """What the search did: every scale tried, the chosen one, how the ladder ended, its cost."""
        return {"base_ratios": dict(base), "ladder_factor": self.ladder_factor,
                "bisect_steps": self.bisect_steps, "max_rungs": self.max_rungs,
                "descend_after_climb": self.descend_after_climb,
                "tolerance": self.accept.tolerance, "noise_z": self.accept.z,
                "tried": [t.as_dict() for t in search.trials], "chosen_scale": chosen,
                "chosen_counts": self.counts(net, base, chosen), "stopped": search.stopped,
                "trained_rungs": search.trained(), "epochs": epochs,
                "final_val": ctx.accuracy(net, "val"),
                "flops": subset_cost(net, net.full_set)["flops"]}


class Rungs:
    """Trains and judges rungs, each warm-started from the cheapest accepted network; keeps the trajectory."""

    def __init__(self, pruner: AdmmSearchPruner, net: GroupedNet, ctx: Context, tag: str,
                 layers: list[str]):
        self.pruner, self.ctx, self.tag = pruner, ctx, tag
        self.reference = ctx.target(net)  # the teachers' accuracy, as for every pruner
        self.n_val = ctx.split_size("val")
        self.start_live = {n: kept_units(net, n, pruner.granularity) for n in layers}
        self.best = copy.deepcopy(net)
        self.seed = draw_seed()
        self.tried = self.accepted = self.epochs = 0
        first = wants_test(0, pruner.test_every)
        self.trajectory = [point(net, ctx, 0, 0, ctx.accuracy(net, "val"), with_test=first)]
        log.info("%s: ADMM search from live %s, val %s, flops(all) %s", tag, fmt(live(net)),
                 fmt(self.reference), f"{subset_cost(net, net.full_set)['flops']:,}")

    def is_whole(self, counts: Mapping[str, int]) -> bool:
        """Whether a budget keeps every neuron the network had before pruning (nothing to prune)."""
        return all(counts[n] >= k for n, k in self.start_live.items())

    def judge(self, scale: float, counts: Mapping[str, int], phase: str) -> tuple[bool, dict[str, Any]]:
        """Train one rung to the budget and test it; returns (accepted, what the report lists)."""
        t0, self.tried = time.perf_counter(), self.tried + 1
        trial, hard = self._train(counts)
        val = self.ctx.accuracy(trial, "val")
        broken = self.pruner.accept.broken(self.reference, val, self.n_val)
        details = {"tried": self.tried, "val": val, "flops": subset_cost(trial, trial.full_set)["flops"],
                   "live": live(trial), "broken": broken, "val_acc_hard_pruned": hard,
                   "seconds": round(time.perf_counter() - t0, 2)}
        log.info("%s: rung %d (%s, scale %.4g): live %s, val %s, flops(all) %s, %.1f s -> %s", self.tag,
                 self.tried, phase, scale, fmt(details["live"]), fmt(val), f"{details['flops']:,}",
                 details["seconds"], f"rejected ({fmt(broken)} below)" if broken else "accepted")
        if not broken:
            self._accept(trial, val)
        return not broken, details

    def _train(self, counts: Mapping[str, int]) -> tuple[GroupedNet, float | None]:
        """ADMM to the budget from a copy of the cheapest accepted network (seeded by the rung's index)."""
        seed_all(stage_seed(self.seed, f"rung{self.tried}"))
        trial, cfg = copy.deepcopy(self.best), self.pruner.settings
        info = admm_stage(trial, self.ctx, f"{self.tag}/rung{self.tried}", counts, cfg)
        admm_epochs = cfg.iterations * cfg.epochs_per_iteration if info["constrained"] else 0
        self.epochs += admm_epochs + cfg.retrain_epochs
        return trial, info["val_acc_hard_pruned"]

    def _accept(self, trial: GroupedNet, val: Mapping[str, float]) -> None:
        """Keep an accepted rung as the new warm start and add it to the trajectory."""
        self.best, self.accepted = trial, self.accepted + 1
        with_test = wants_test(self.accepted, self.pruner.test_every)
        self.trajectory.append(point(trial, self.ctx, self.accepted, self.tried, dict(val), with_test))


def scaled(base: Mapping[str, float], scale: float) -> dict[str, float]:
    """Keep ratio of every layer at a scale: min(1, s * r_l); layers the budget keeps whole stay whole."""
    return {n: 1.0 if r >= 1.0 else min(1.0, scale * r) for n, r in base.items()}


def ceiling(base: Mapping[str, float]) -> float:
    """The smallest scale at which every layer is kept whole (1 when the budget prunes nothing)."""
    pruned = [r for r in base.values() if r < 1.0]
    return 1.0 / min(pruned) if pruned else 1.0
