"""What each stage does to a job, and what a job publishes to its tracker at the end.

Stages hand networks to each other through ``job.state`` and cache their outputs under keys that
chain: teachers -> merge (teachers + merger) -> prune (+ pruner) -> finetune (+ finetune). With
``merger=none`` every teacher is pruned and finetuned separately (the papers' no-merging baseline)
and the parts are placed side by side afterwards. A skipped prune or finetune stage leaves the
network as it is; teachers and merge always run when a later stage needs them (cached, so cheap).
"""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from mergeprune.cache import cache_key
from mergeprune.cost import group_sizes
from mergeprune.models.grouped import GroupedNet
from mergeprune.seeding import seed_all, stage_seed
from mergeprune.stages.teachers import teacher_payload, train_teachers

log = logging.getLogger(__name__)


def run_teachers(job: Any) -> None:
    """Train or reuse the teachers and record their accuracy and cost."""
    if "teachers" in job.state:
        return
    teachers = train_teachers(job)
    job.state["teachers"] = teachers
    job.state["keys"] = {"teachers": [cache_key(teacher_payload(job, t.name)) for t in job.tasks]}
    for name, teacher in teachers.items():
        job.results["teachers"][name] = {"accuracy": teacher.accuracy, "flops": teacher.cost["flops"],
                                         "params": teacher.cost["params"], "reused": teacher.reused}


def _teacher_nets(job: Any) -> list[GroupedNet]:
    """Copies of the teachers in task order (stages modify networks in place)."""
    return [copy.deepcopy(job.state["teachers"][t.name].net) for t in job.tasks]


def _cfg(node: Any) -> Any:
    """A config node as plain data."""
    return OmegaConf.to_container(node, resolve=True)


def _cached_net(job: Any, stage: str, payload: dict[str, Any],
                make: Callable[[str], tuple[GroupedNet, dict[str, Any]]]) -> tuple[GroupedNet, dict, str]:
    """Build a network with make(key) unless cached; returns (net, report, key).

    The stage is seeded from the job seed and its key first, so what it builds depends on the key
    alone, not on what ran before it in this process.
    """
    key = cache_key(payload)

    def build(folder: Path) -> None:
        seed_all(stage_seed(job.cfg.seed, key))
        net, report = make(key)
        net.save(folder / "net.pt")
        (folder / "report.json").write_text(json.dumps(report, indent=1, default=str))

    def load(folder: Path) -> tuple[GroupedNet, dict]:
        return GroupedNet.load(folder / "net.pt"), json.loads((folder / "report.json").read_text())

    (net, report), reused = job.cache.get_or_build(stage, payload, build, load)
    if reused:
        log.info("%s: reusing cached result from %s", stage, job.cache.entry(stage, key))
    return net, report, key


def run_merge(job: Any) -> None:
    """Merge the teachers (merger=none defers the side-by-side assembly until after pruning)."""
    run_teachers(job)
    merger = job.components["merger"]
    if getattr(merger, "separate", False):
        job.state["parts"] = dict(zip([t.name for t in job.tasks], _teacher_nets(job), strict=True))
        job.state["keys"]["merge"] = job.state["keys"]["teachers"]
        return
    payload = {"teachers": job.state["keys"]["teachers"], "merger": _cfg(job.cfg.merger)}

    def make(key: str) -> tuple[GroupedNet, dict[str, Any]]:
        net = merger(_teacher_nets(job), job.context)
        return net, getattr(merger, "report", {})

    net, report, key = _cached_net(job, "merge", payload, make)
    job.state["net"], job.state["keys"]["merge"] = net, key
    job.results["merge"] = report
    job.results["groups_merged"] = group_sizes(net)


def _ensure_merged(job: Any) -> None:
    """Run the merge stage if a later stage needs it and it has not run."""
    if "keys" not in job.state or "merge" not in job.state["keys"]:
        run_merge(job)


def _per_part(job: Any, stage: str, component: Any, cfg_node: Any,
              apply: Callable[[GroupedNet, str | None, str], GroupedNet]) -> None:
    """Apply a prune/finetune step to the network, or to every teacher separately with merger=none."""
    prev_key = job.state["keys"]["merge" if stage == "prune" else "prune"]
    if "parts" in job.state:
        keys, reports = [], {}
        for i, (name, net) in enumerate(job.state["parts"].items()):
            payload = {"input": prev_key[i], stage: _cfg(cfg_node), "seed": int(job.cfg.seed)}
            part, report, key = _cached_net(
                job, stage, payload,
                lambda key, net=net, name=name: (apply(net, name, key), _report(component)))
            job.state["parts"][name] = part
            keys.append(key)
            reports[name] = report
        job.state["keys"][stage] = keys
        job.results[stage if stage != "prune" else "pruning"] = reports
        return
    payload = {"input": prev_key, stage: _cfg(cfg_node), "seed": int(job.cfg.seed)}
    net, report, key = _cached_net(
        job, stage, payload, lambda key: (apply(job.state["net"], None, key), _report(component)))
    job.state["net"], job.state["keys"][stage] = net, key
    job.results[stage if stage != "prune" else "pruning"] = report


def _report(component: Any) -> dict[str, Any]:
    """The report a component left after running (empty if none)."""
    return dict(getattr(component, "report", {}) or {})


def run_prune(job: Any) -> None:
    """Prune the merged network, or each teacher separately with merger=none."""
    _ensure_merged(job)
    pruner = job.components["pruner"]

    def apply(net: GroupedNet, part: str | None, key: str) -> GroupedNet:
        return pruner(net, job.context, f"prune/{part}" if part else "prune")

    _per_part(job, "prune", pruner, job.cfg.pruner, apply)


def run_finetune(job: Any) -> None:
    """Masked retraining of the pruned network(s), distilling from the teachers if configured."""
    _ensure_merged(job)
    if "prune" not in job.state["keys"]:
        job.state["keys"]["prune"] = job.state["keys"]["merge"]
    finetune = job.components["finetune"]
    teachers = {name: t.net for name, t in job.state["teachers"].items()}

    def apply(net: GroupedNet, part: str | None, key: str) -> GroupedNet:
        mine = {part: teachers[part]} if part else teachers
        return finetune(net, job.context, mine, f"finetune/{part}" if part else "finetune",
                        resume_dir=job.cache.root / "partial" / "finetune" / key)

    _per_part(job, "finetune", finetune, job.cfg.finetune, apply)


def final_network(job: Any) -> GroupedNet:
    """The job's network after the stages that ran (parts placed side by side for merger=none)."""
    _ensure_merged(job)
    if "parts" in job.state:
        from mergeprune.merging.none import NoMerge

        return NoMerge()([job.state["parts"][t.name] for t in job.tasks])
    return job.state["net"]


def run_evaluate(job: Any) -> None:
    """Accuracy per task, cost of every subset, group sizes, compression, compact export."""
    from mergeprune.stages.evaluate import evaluate

    evaluate(job, final_network(job))


STAGE_RUNNERS: dict[str, Callable[[Any], None]] = {
    "teachers": run_teachers,
    "merge": run_merge,
    "prune": run_prune,
    "finetune": run_finetune,
    "evaluate": run_evaluate,
}


def publish(job: Any) -> None:
    """Send the job's final figures to its tracker (W&B summary and tables, CSV files)."""
    res = job.results
    summary: dict[str, Any] = {"status": res["status"]}
    for name, info in res["teachers"].items():
        summary[f"teachers/{name}/acc"] = info["accuracy"]
    for name, value in res.get("accuracy", {}).items():
        summary[f"test/{name}/acc"] = value
    for subset, cost in res.get("cost", {}).items():
        for metric, value in cost.items():
            summary[f"cost/{subset}/{metric}"] = value
    for key, value in res.get("compression", {}).items():
        summary[f"compression/{key}"] = value
    for stage, seconds in res["timings_s"].items():
        summary[f"timings/{stage}_s"] = seconds
    job.tracker.summary(summary)
    if res.get("cost"):
        cols = ["subset", "flops", "params", "nonzero_flops", "nonzero_params"]
        job.tracker.table("cost", cols, [[s] + [c[m] for m in cols[1:]] for s, c in res["cost"].items()])
    if res.get("groups"):
        rows = [[layer, group, n] for layer, groups in res["groups"].items() for group, n in groups.items()]
        job.tracker.table("groups", ["layer", "group", "neurons"], rows)
