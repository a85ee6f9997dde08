"""One job: validate the config, build the objects, run the stages in order, write results.json."""

from __future__ import annotations

import json
import logging
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from mergeprune.cache import StageCache, cache_key
from mergeprune.config_check import STAGES, check_config
from mergeprune.context import Context
from mergeprune.data.datamodule import MultiTaskDataModule
from mergeprune.errors import ConfigError, JobInterrupted, storage_error
from mergeprune.finished import (
    PAYLOAD_FILE,
    job_payload,
    keep_finished,
    remember_finished,
    reuse_finished,
)
from mergeprune.logger import RunLogger
from mergeprune.models.spec import ModelSpec
from mergeprune.results import new_results, read_results, write_json
from mergeprune.seeding import seed_all
from mergeprune.tasks import Task, build_tasks

log = logging.getLogger(__name__)


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

    @property
    def context(self) -> Context:
        """What the algorithms may use of this job: tasks, data, training, metrics logger."""
        return Context(self.tasks, self.data, self.cfg.trainer, self.tracker.lightning(), self.job_dir)


def build(node: Any, **kwargs: Any) -> Any:
    """hydra.utils.instantiate with plain data (`_convert_="all"`), Python objects passed through
    untouched, surfacing ConfigError."""
    try:
        return instantiate(node, _partial_=True, _convert_="all")(**kwargs)
    except InstantiationException as err:
        cause = err.__cause__
        while cause is not None and not isinstance(cause, ConfigError):
            cause = cause.__cause__
        if cause is not None:
            raise cause from None
        raise
    except TypeError as err:
        raise ConfigError(f"{node.get('_target_')}: {err}") from None


def experiment_info(cfg: DictConfig, choices: dict[str, str] | None = None) -> dict[str, Any]:
    """The `experiment` block of results.json (`choices`: the config file chosen in every group)."""
    info = {"name": cfg.name, "dataset": cfg.dataset.name, "tasks": list(cfg.tasks.keys()),
            "model": cfg.model.name, "merger": cfg.merger.name, "pruner": cfg.pruner.name,
            "granularity": cfg.pruner.get("granularity"), "seed": int(cfg.seed)}
    return info | ({"choices": dict(choices)} if choices else {})


def prepare(cfg: DictConfig, job_dir: Path, group: str, job_type: str,
            choices: dict[str, str] | None = None) -> Job:
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
    results = new_results(experiment_info(cfg, choices))
    return Job(cfg, job_dir, tasks, data, spec, StageCache(cfg.paths.cache_dir, owner=str(job_dir)),
               tracker, results, components)


def run_job(cfg: DictConfig, job_dir: str | Path, group: str | None = None,
            choices: dict[str, str] | None = None) -> dict[str, Any]:
    """Run one job end to end and return its results (also written to job_dir/results.json).

    `choices` (Hydra's group -> config file name) identify the method in reports.
    """
    job_dir = Path(job_dir)
    try:
        return _run(cfg, job_dir, group, choices)
    except OSError as err:
        problem = storage_error(err)
        if problem is None:
            raise
        _write_failed(job_dir / "results.json", cfg, str(problem))
        raise problem from None


def _run(cfg: DictConfig, job_dir: Path, group: str | None,
         choices: dict[str, str] | None) -> dict[str, Any]:
    """run_job without the translation of storage errors."""
    from mergeprune.stages import runners

    job_dir.mkdir(parents=True, exist_ok=True)
    path = job_dir / "results.json"
    try:
        check_config(cfg)
        payload = job_payload(cfg)
    except Exception as err:  # bad config: recorded, nothing trained
        _write_failed(path, cfg, f"{type(err).__name__}: {err}")
        raise
    finished = reuse_finished(cfg, job_dir, payload, skip=bool(cfg.get("skip_finished", True)))
    if finished is not None:
        if finished["experiment"] != experiment_info(cfg, choices):  # same payload, other names
            finished["experiment"] = experiment_info(cfg, choices)
            write_json(path, finished)
        return finished
    stages = [s for s in STAGES if s in cfg.stages]
    job_type = stages[0] if len(stages) == 1 else "pipeline"
    seed_all(int(cfg.seed))
    try:
        job = prepare(cfg, job_dir, group or str(cfg.name), job_type, choices)
    except Exception as err:  # bad config or data: recorded, nothing trained
        _write_failed(path, cfg, f"{type(err).__name__}: {err}")
        raise
    job.results["job_key"] = cache_key(payload)
    (job_dir / PAYLOAD_FILE).write_text(json.dumps(payload, indent=1, sort_keys=True, default=str))
    write_json(path, job.results)  # status: running, until the job ends one way or another
    start = time.perf_counter()
    clock = runners.Clock(job.results["timings_s"])
    try:
        runners.run_stages(job, stages, clock)
        job.results["status"] = "ok"
        job.results["timings_s"]["total"] = round(time.perf_counter() - start, 3)
        write_json(path, job.results)
        remember_finished(cfg, job_dir, payload)
    except (KeyboardInterrupt, SystemExit):  # Ctrl-C (Lightning turns it into SystemExit)
        job.results["status"] = "interrupted"
        job.results["error"] = (f"interrupted during stage {clock.current}; run the same command again to "
                                "continue (finished stages are cached)")
        raise JobInterrupted(f"{path}: {job.results['error']}") from None
    except Exception as err:
        job.results["status"] = "failed"
        job.results["error"] = f"{type(err).__name__}: {err}"
        (job_dir / "error.txt").write_text(traceback.format_exc())
        raise
    finally:
        job.results["timings_s"]["total"] = round(time.perf_counter() - start, 3)
        _try_write(path, job.results)
        try:
            runners.publish(job)
        finally:
            job.tracker.finish()
    return job.results


def _write_failed(path: Path, cfg: DictConfig, message: str) -> None:
    """Record a failed job, keeping what its results.json already says (best effort: the folder may
    be unwritable); a finished result found there is set aside first."""
    try:
        keep_finished(path.parent)
    except OSError:
        pass
    results = read_results(path)
    if not isinstance(results, dict) or results.get("status") == "ok":
        results = new_results({"name": str(cfg.get("name"))})
    _try_write(path, results | {"status": "failed", "error": message})


def _try_write(path: Path, results: dict[str, Any]) -> None:
    """write_json, unless the folder cannot be written (the caller reports that)."""
    try:
        write_json(path, results)
    except OSError as err:
        log.error("cannot write %s: %s", path, err.strerror)
