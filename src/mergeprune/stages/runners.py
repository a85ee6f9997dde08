"""The stages in order, each handing its result to the next; what a job publishes at the end.

The teachers come first; the merge turns them into `Part`s, the networks the job carries (each
with the tasks it serves and its cache key). The merger's `parts` says which tasks share one
network: all of them for a real merger, one each for merger=none (the papers' no-merging
baseline: every teacher pruned and finetuned on its own and placed side by side at evaluation).
A part of one task is its teacher as it is. Every stage caches its output under a key that
chains: teachers -> merge (teachers + merger) -> prune (+ pruner) -> finetune (+ finetune). A
skipped prune or finetune stage leaves the parts as they are; teachers and merge always run when
a later stage needs them (cached, so cheap).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from mergeprune.cache import SEED_VERSION, cache_key
from mergeprune.config_check import STAGES
from mergeprune.context import Built
from mergeprune.cost import group_sizes
from mergeprune.errors import ConfigError
from mergeprune.merger.assemble import alongside
from mergeprune.models.grouped import GroupedNet
from mergeprune.seeding import seed_all, stage_seed
from mergeprune.stages.teachers import Teacher, train_teachers

log = logging.getLogger(__name__)


@dataclass
class Part:
    """One network the job carries between stages: the tasks it serves, its cache key and seed key."""

    tasks: list[str]
    net: GroupedNet
    key: str
    seed: str  # the same chain hashed with cache.SEED_VERSION: what seeds the stages after it

    @property
    def name(self) -> str:
        """The part's subset key (`lo+hi`; a task's name for a part of one task)."""
        return "+".join(self.tasks)


class Clock:
    """Times every stage into `timings` and remembers the one running (for interruptions)."""

    def __init__(self, timings: dict[str, float]):
        self.timings, self.current = timings, ""

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        """Time one stage."""
        self.current, start = stage, time.perf_counter()
        yield
        self.timings[stage] = round(time.perf_counter() - start, 3)


def run_stages(job: Any, stages: Sequence[str], clock: Clock) -> None:
    """Run the requested stages in order, and teachers and merge whenever a later stage needs them."""
    with clock("teachers"):
        teachers = run_teachers(job)
    if max(STAGES.index(s) for s in stages) == 0:
        return
    with clock("merge"):
        parts = run_merge(job, teachers)
    if "prune" in stages:
        with clock("prune"):
            parts = run_prune(job, parts)
    if "finetune" in stages:
        with clock("finetune"):
            parts = run_finetune(job, parts, teachers)
    if "evaluate" in stages:
        with clock("evaluate"):
            run_evaluate(job, parts)


def run_teachers(job: Any) -> dict[str, Teacher]:
    """Train or reuse the teachers and record their accuracy and cost."""
    teachers = train_teachers(job)
    for name, teacher in teachers.items():
        job.results["teachers"][name] = {"accuracy": teacher.accuracy, "flops": teacher.cost["flops"],
                                         "params": teacher.cost["params"], "reused": teacher.reused}
    job.results["reference"] = {name: job.context.accuracy(t.net, "val")[name] for name, t in teachers.items()}
    job.results["splits"] = {split: job.context.split_size(split) for split in ("train", "val", "test")}
    return teachers


def _cfg(node: Any) -> Any:
    """A config node as plain data."""
    return OmegaConf.to_container(node, resolve=True)


def _cached_net(job: Any, stage: str, describe: Callable[[Any], dict[str, Any]], inputs: tuple[Any, Any],
                make: Callable[[str], Built],
                seed_describe: Callable[[Any], dict[str, Any]] | None = None) -> tuple[GroupedNet, dict, str, str]:
    """Build a network with make(key) unless cached; returns (net, report, key, seed key).

    describe(ids) is the stage's payload given its inputs' identities; inputs = (their cache keys,
    their seed keys). The stage is seeded from the job seed and its seed key first, so what it builds
    depends on the chain of payloads alone: not on what ran before it in this process, nor on the
    cache's format version. seed_describe (default describe) gives the seed's payload when some
    knobs must not change the seed (the pruner's max_steps: where to stop, not how to get there).
    """
    payload = describe(inputs[0])
    key, seed = cache_key(payload), cache_key((seed_describe or describe)(inputs[1]), SEED_VERSION)

    def build(folder: Path) -> None:
        seed_all(stage_seed(job.cfg.seed, seed))
        net, report = make(key)
        net.save(folder / "net.pt")
        (folder / "report.json").write_text(json.dumps(report, indent=1, default=str))

    def load(folder: Path) -> tuple[GroupedNet, dict]:
        return GroupedNet.load(folder / "net.pt"), json.loads((folder / "report.json").read_text())

    (net, report), reused = job.cache.get_or_build(stage, payload, build, load)
    if reused:
        log.info("%s: reusing cached result from %s", stage, job.cache.entry(stage, key))
    return net, report, key, seed


def run_merge(job: Any, teachers: dict[str, Teacher]) -> list[Part]:
    """The merger's parts: a copy of the teacher for a part of one task, else the merged network."""
    merger = job.components["merger"]
    names = [t.name for t in job.tasks]
    parts = []
    for tasks in merger.parts(names):
        if len(tasks) == 1:
            one = teachers[tasks[0]]
            parts.append(Part(list(tasks), copy.deepcopy(one.net), one.key, one.seed))
            continue
        if list(tasks) != names:
            raise ConfigError(f"merger {job.cfg.merger.name}: a merged part must hold every task "
                              f"({'+'.join(names)}), got {'+'.join(tasks)}")
        net, report, key, seed = _cached_net(
            job, "merge", lambda ids: {"teachers": ids, "merger": _cfg(job.cfg.merger)},
            ([teachers[t].key for t in tasks], [teachers[t].seed for t in tasks]),
            lambda key, tasks=tasks: merger([copy.deepcopy(teachers[t].net) for t in tasks], job.context))
        parts.append(Part(list(tasks), net, key, seed))
        job.results["merge"] = report
        job.results["groups_merged"] = group_sizes(net)
    return parts


def _each_part(job: Any, stage: str, parts: list[Part], cfg_node: Any,
               apply: Callable[[Part, str, str], Built], seed_cfg: Any = None) -> list[Part]:
    """apply(part, tag, key) to every part, cached; one report, or one per part when there are several.

    seed_cfg (default the stage's config) is what the stage's seed is derived from.
    """
    out, reports = [], {}
    seeded = _cfg(cfg_node) if seed_cfg is None else seed_cfg
    for part in parts:
        tag = stage if len(parts) == 1 else f"{stage}/{part.name}"
        net, report, key, seed = _cached_net(
            job, stage, lambda ids: {"input": ids, stage: _cfg(cfg_node), "seed": int(job.cfg.seed)},
            (part.key, part.seed), lambda key, part=part, tag=tag: apply(part, tag, key),
            lambda ids: {"input": ids, stage: seeded, "seed": int(job.cfg.seed)})
        out.append(Part(part.tasks, net, key, seed))
        reports[part.name] = report
    job.results["pruning" if stage == "prune" else stage] = (
        reports[parts[0].name] if len(parts) == 1 else reports)
    return out


def run_prune(job: Any, parts: list[Part]) -> list[Part]:
    """Prune every part (the merged network, or each teacher with merger=none); collect the trajectories."""
    pruner = job.components["pruner"]
    ctx = dataclasses.replace(job.context, reference=job.results.get("reference"))  # teachers' val acc
    out = _each_part(job, "prune", parts, job.cfg.pruner,
                     lambda part, tag, key: pruner(part.net, ctx, tag,
                                                   resume_dir=job.cache.root / "partial" / "prune" / key),
                     seed_cfg=prune_seed_cfg(_cfg(job.cfg.pruner)))
    reports = job.results.get("pruning", {})
    per_part = {parts[0].name: reports} if len(parts) == 1 else reports
    curves = {name: r.pop("trajectory") for name, r in per_part.items() if "trajectory" in r}
    if curves:
        job.results["trajectory"] = curves
    return out


def prune_seed_cfg(cfg: Any) -> Any:
    """The pruner config without the knobs that only say where to stop (schedule.max_steps, and
    max_stages of pruner=vib)."""
    if isinstance(cfg, dict) and isinstance(cfg.get("schedule"), dict):
        cfg = {**cfg, "schedule": {k: v for k, v in cfg["schedule"].items() if k != "max_steps"}}
    if isinstance(cfg, dict) and "max_stages" in cfg:
        cfg = {k: v for k, v in cfg.items() if k != "max_stages"}
    return cfg


def run_finetune(job: Any, parts: list[Part], teachers: dict[str, Teacher]) -> list[Part]:
    """Masked retraining of every part, distilling from its tasks' teachers if configured."""
    finetune = job.components["finetune"]

    def apply(part: Part, tag: str, key: str) -> Built:
        mine = {t: teachers[t].net for t in part.tasks}
        return finetune(part.net, job.context, mine, tag,
                        resume_dir=job.cache.root / "partial" / "finetune" / key)

    return _each_part(job, "finetune", parts, job.cfg.finetune, apply)


def final_network(parts: Sequence[Part]) -> GroupedNet:
    """The job's network: its one part, or the parts (one task each) side by side."""
    return parts[0].net if len(parts) == 1 else alongside([p.net for p in parts])


def run_evaluate(job: Any, parts: Sequence[Part]) -> None:
    """Accuracy per task, cost of every subset, group sizes, compression, compact export."""
    from mergeprune.stages.evaluate import evaluate

    evaluate(job, final_network(parts))


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
    if res.get("trajectory"):
        tasks = list(res.get("reference", {}))
        cols = ["part", "step", "tried", "flops", "params"] + [f"val/{t}/acc" for t in tasks] + [
            f"test/{t}/acc" for t in tasks]
        job.tracker.table("trajectory", cols, trajectory_rows(res["trajectory"], tasks))
    if res.get("groups"):
        rows = [[layer, group, n] for layer, groups in res["groups"].items() for group, n in groups.items()]
        job.tracker.table("groups", ["layer", "group", "neurons"], rows)


def trajectory_rows(curves: dict[str, list[dict[str, Any]]], tasks: Sequence[str]) -> list[list[Any]]:
    """One row per trajectory point: part, step, tried, the part's FLOPs and params, val and test accuracy."""
    rows = []
    for part, points in curves.items():
        for p in points:
            cost = p["cost"][part]
            rows.append([part, p["step"], p["tried"], cost["flops"], cost["params"]]
                        + [p["val"].get(t) for t in tasks] + [(p["test"] or {}).get(t) for t in tasks])
    return rows
