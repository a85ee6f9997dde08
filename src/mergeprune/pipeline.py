"""One job: validate the config, build the objects, run the stages in order, write results.json."""

from __future__ import annotations

import shutil
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from mergeprune.cache import StageCache, cache_key
from mergeprune.data.datamodule import MultiTaskDataModule
from mergeprune.errors import ConfigError
from mergeprune.logger import RunLogger
from mergeprune.models.spec import ModelSpec
from mergeprune.results import new_results, read_results, write_json
from mergeprune.stages.teachers import trainer_identity
from mergeprune.tasks import Task, build_tasks

STAGES = ("teachers", "merge", "prune", "finetune", "evaluate")


@dataclass
class Job:
    """Everything a stage needs: config, data, model spec, cache, tracking, results so far."""

    cfg: DictConfig
    job_dir: Path
    tasks: list[Task]
    data: MultiTaskDataModule
    spec: ModelSpec
    cache: StageCache
    tracker: RunLogger
    results: dict[str, Any]
    components: dict[str, Any] = field(default_factory=dict)
    state: dict[str, Any] = field(default_factory=dict)


def build(node: Any, **kwargs: Any) -> Any:
    """hydra.utils.instantiate (Python objects passed through untouched), surfacing ConfigError."""
    try:
        return instantiate(node, _partial_=True)(**kwargs)
    except InstantiationException as err:
        cause = err.__cause__
        while cause is not None and not isinstance(cause, ConfigError):
            cause = cause.__cause__
        if cause is not None:
            raise cause from None
        raise
    except TypeError as err:
        raise ConfigError(f"{node.get('_target_')}: {err}") from None


def check_config(cfg: DictConfig) -> None:
    """Fail on semantically wrong top-level values before anything is built."""
    stages = list(cfg.stages)
    bad = [s for s in stages if s not in STAGES]
    if bad or not stages:
        raise ConfigError(f"stages={stages} (bad: {bad or 'empty'}); allowed: any of {list(STAGES)}")
    _non_negative_int(cfg.teachers.epochs, "teachers.epochs")
    _positive(cfg.teachers.optimizer.lr, "teachers.optimizer.lr")
    _positive(cfg.dataset.batch_size, "dataset.batch_size")
    for key in ("val_size", "test_size"):
        _non_negative_int(cfg.dataset[key], f"dataset.{key}")


def _non_negative_int(value: Any, key: str) -> None:
    """Raise unless value is an integer >= 0."""
    if not isinstance(value, int) or value < 0:
        raise ConfigError(f"{key}={value}; allowed: an integer >= 0")


def _positive(value: Any, key: str) -> None:
    """Raise unless value is a number > 0."""
    if not isinstance(value, (int, float)) or value <= 0:
        raise ConfigError(f"{key}={value}; allowed: a number > 0")


def experiment_info(cfg: DictConfig) -> dict[str, Any]:
    """The `experiment` block of results.json."""
    return {"name": cfg.name, "dataset": cfg.dataset.name, "tasks": list(cfg.tasks.keys()),
            "model": cfg.model.name, "merger": cfg.merger.name, "pruner": cfg.pruner.name,
            "granularity": cfg.pruner.get("granularity"), "seed": int(cfg.seed)}


def prepare(cfg: DictConfig, job_dir: Path, group: str, job_type: str) -> Job:
    """Validate the config and build every object from it (no training yet)."""
    check_config(cfg)
    tasks = build_tasks(cfg.tasks, int(cfg.dataset.num_classes))
    data = build(cfg.dataset, tasks=tasks, data_dir=cfg.paths.data_dir)
    data.setup()
    channels, height, width = data.input_shape
    spec = build(cfg.model, in_channels=channels, in_hw=[height, width])
    components = {"merger": build(cfg.merger), "pruner": build(cfg.pruner),
                  "finetune": build(cfg.finetune)}
    tracker = build(cfg.logger, job_dir=job_dir, config=OmegaConf.to_container(cfg, resolve=True),
                    group=group, job_type=job_type,
                    tags=[f"merger:{cfg.merger.name}", f"pruner:{cfg.pruner.name}"])
    results = new_results(experiment_info(cfg))
    return Job(cfg, job_dir, tasks, data, spec, StageCache(cfg.paths.cache_dir), tracker, results,
               components)


# config keys that do not change a job's results (where files go, how progress is shown)
NOT_RESULT_KEYS = ("paths", "logger", "hydra", "name", "skip_finished")


def job_payload(cfg: DictConfig) -> dict[str, Any]:
    """Everything that determines a job's results (its key in the finished-jobs cache)."""
    plain = OmegaConf.to_container(cfg, resolve=True)
    plain = {k: v for k, v in plain.items() if k not in NOT_RESULT_KEYS}
    plain.get("evaluate", {}).pop("latency_repeats", None)
    plain["trainer"] = trainer_identity(cfg.trainer)
    return plain


def reuse_finished(cfg: DictConfig, job_dir: Path) -> dict[str, Any] | None:
    """Results of this job from this folder or an earlier launch of the same sweep, if it finished."""
    previous = read_results(job_dir / "results.json")
    if previous and previous.get("status") == "ok":
        print(f"job already finished in {job_dir}: skipped")
        return previous
    entry = StageCache(cfg.paths.cache_dir).entry("jobs", cache_key(job_payload(cfg)))
    cached = read_results(entry / "results.json")
    if not cached or cached.get("status") != "ok":
        return None
    for item in entry.iterdir():
        if item.name != "payload.json":
            copy = shutil.copytree if item.is_dir() else shutil.copy2
            copy(item, job_dir / item.name)
    print(f"job finished in an earlier launch: results reused from {entry}")
    return cached


def remember_finished(cfg: DictConfig, job_dir: Path) -> None:
    """Store a finished job's results, model and exports so a relaunch reuses them."""
    def build(folder: Path) -> None:
        for name in ("results.json", "model.pt", "export"):
            item = job_dir / name
            if item.is_dir():
                shutil.copytree(item, folder / name)
            elif item.exists():
                shutil.copy2(item, folder / name)

    StageCache(cfg.paths.cache_dir).get_or_build("jobs", job_payload(cfg), build)


def run_job(cfg: DictConfig, job_dir: str | Path, group: str | None = None) -> dict[str, Any]:
    """Run one job end to end and return its results (also written to job_dir/results.json)."""
    from mergeprune.stages import runners

    job_dir = Path(job_dir)
    job_dir.mkdir(parents=True, exist_ok=True)
    path = job_dir / "results.json"
    if cfg.get("skip_finished", True):
        finished = reuse_finished(cfg, job_dir)
        if finished is not None:
            return finished
    stages = [s for s in STAGES if s in cfg.stages]
    job_type = stages[0] if len(stages) == 1 else "pipeline"
    pl.seed_everything(int(cfg.seed), verbose=False)
    try:
        job = prepare(cfg, job_dir, group or str(cfg.name), job_type)
    except Exception as err:  # bad config or data: recorded, nothing trained
        failed = new_results({"name": str(cfg.get("name"))}) | {"status": "failed",
                                                                "error": f"{type(err).__name__}: {err}"}
        write_json(path, failed)
        raise
    start = time.perf_counter()
    try:
        for stage in stages:
            t0 = time.perf_counter()
            runners.STAGE_RUNNERS[stage](job)
            job.results["timings_s"][stage] = round(time.perf_counter() - t0, 3)
        job.results["status"] = "ok"
        job.results["timings_s"]["total"] = round(time.perf_counter() - start, 3)
        write_json(path, job.results)
        remember_finished(cfg, job_dir)
    except Exception as err:
        job.results["status"] = "failed"
        job.results["error"] = f"{type(err).__name__}: {err}"
        (job_dir / "error.txt").write_text(traceback.format_exc())
        raise
    finally:
        job.results["timings_s"]["total"] = round(time.perf_counter() - start, 3)
        write_json(path, job.results)
        try:
            runners.publish(job)
        finally:
            job.tracker.finish()
    return job.results
