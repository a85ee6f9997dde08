"""What each stage does to a job, and what a job publishes to its tracker at the end."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mergeprune.stages.teachers import train_teachers


def run_teachers(job: Any) -> None:
    """Train or reuse the teachers and record their accuracy and cost."""
    teachers = train_teachers(job)
    job.state["teachers"] = teachers
    from mergeprune.cost import all_costs

    for name, teacher in teachers.items():
        cost = all_costs(teacher.net)[name]
        job.results["teachers"][name] = {"accuracy": teacher.accuracy, "flops": cost["flops"],
                                         "params": cost["params"], "reused": teacher.reused}


def not_built(stage: str) -> Callable[[Any], None]:
    """A runner for a stage that does not exist yet: one-line notice, nothing faked."""
    def run(job: Any) -> None:
        print(f"stage '{stage}' is not built yet: skipped")
    return run


STAGE_RUNNERS: dict[str, Callable[[Any], None]] = {
    "teachers": run_teachers,
    "merge": not_built("merge"),
    "prune": not_built("prune"),
    "finetune": not_built("finetune"),
    "evaluate": not_built("evaluate"),
}


def publish(job: Any) -> None:
    """Send the job's final figures to its tracker (W&B summary, CSV files)."""
    summary: dict[str, Any] = {"status": job.results["status"]}
    for name, info in job.results["teachers"].items():
        summary[f"teachers/{name}/acc"] = info["accuracy"]
    for name, value in job.results.get("accuracy", {}).items():
        summary[f"test/{name}/acc"] = value
    for stage, seconds in job.results["timings_s"].items():
        summary[f"timings/{stage}_s"] = seconds
    job.tracker.summary(summary)
