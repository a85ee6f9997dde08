"""Evaluate stage: per-task test accuracy, cost of every subset, groups, compression, compact export."""

from __future__ import annotations

import logging
from typing import Any

from mergeprune.cost import all_costs, group_sizes, nonzero_weights
from mergeprune.models.grouped import GroupedNet
from mergeprune.training.fit import accuracy

log = logging.getLogger(__name__)


def compression_vs_teachers(job: Any, net: GroupedNet) -> dict[str, float]:
    """Weight compression: the teachers' dense conv+linear weights over the network's non-zero ones."""
    dense = sum(job.spec.single_task_weights(t.n_outputs) for t in job.tasks)
    nonzero = nonzero_weights(net)
    return {"weights": round(dense / max(nonzero, 1), 3), "dense_weights": dense,
            "nonzero_weights": nonzero}


def evaluate(job: Any, net: GroupedNet) -> None:
    """Fill accuracy, cost, groups, compression (and export) in the job's results."""
    res = job.results
    res["accuracy"] = accuracy(net, job.tasks, job.data, "test")
    res["cost"] = all_costs(net)
    res["groups"] = group_sizes(net)
    res["compression"] = compression_vs_teachers(job, net)
    net.save(job.job_dir / "model.pt")
    acc = ", ".join(f"{t} {a:.4f}" for t, a in res["accuracy"].items())
    log.info(f"evaluate: test accuracy {acc}; compression {res['compression']['weights']}x")
    settings = job.cfg.get("evaluate", {})
    if settings.get("export", True):
        from mergeprune.export import export_all

        res["export"] = export_all(net, job.data.input_shape, job.job_dir / "export",
                                   repeats=int(settings.get("latency_repeats", 20)))
