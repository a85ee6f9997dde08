"""Experiment tracking for one job: W&B (offline by default), CSV files, or nothing.

Each variant gives the Lightning logger that the stages' trainers share (so one job is one run),
plus summary values and tables written at the end of the job. ``finish()`` is always called by the
pipeline, in a ``finally``.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pytorch_lightning.loggers import CSVLogger, Logger


class RunLogger:
    """Tracking that records nothing (logger=none)."""

    def __init__(self, job_dir: str | Path, config: dict[str, Any], group: str, job_type: str,
                 tags: Sequence[str] = ()):
        self.job_dir = Path(job_dir)
        self.config, self.group, self.job_type, self.tags = config, group, job_type, list(tags)

    def lightning(self) -> Logger | bool:
        """The Lightning logger the job's trainers share (False: none)."""
        return False

    def summary(self, values: dict[str, Any]) -> None:
        """Record final values of the job."""

    def table(self, name: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        """Record a table."""

    def finish(self) -> None:
        """Close the run (safe to call more than once)."""


class CsvRun(RunLogger):
    """Per-epoch metrics in `csv/metrics.csv`; summary and tables as files next to it."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._logger = CSVLogger(save_dir=str(self.job_dir), name="csv", version="")
        self._summary: dict[str, Any] = {}

    def lightning(self) -> Logger:
        return self._logger

    def summary(self, values: dict[str, Any]) -> None:
        self._summary.update(values)
        (self.job_dir / "csv").mkdir(parents=True, exist_ok=True)
        (self.job_dir / "csv" / "summary.json").write_text(json.dumps(self._summary, indent=1))

    def table(self, name: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        (self.job_dir / "csv").mkdir(parents=True, exist_ok=True)
        with open(self.job_dir / "csv" / f"{name}.csv", "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(columns)
            writer.writerows(rows)

    def finish(self) -> None:
        self._logger.finalize("success")


class WandbRun(RunLogger):
    """One W&B run per job, offline unless WANDB_MODE=online; files under the job directory."""

    def __init__(self, *args: Any, project: str = "mergeprune", entity: str | None = None,
                 mode: str | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        from pytorch_lightning.loggers import WandbLogger

        self.mode = mode or os.environ.get("WANDB_MODE", "offline")
        os.environ.setdefault("WANDB_SILENT", "true")
        if self.mode != "online":  # no server to talk to: no telemetry either (it makes DNS queries)
            os.environ.setdefault("WANDB_MODE", self.mode)
            os.environ.setdefault("WANDB_ERROR_REPORTING", "false")
        self._logger = WandbLogger(project=project, entity=entity, save_dir=str(self.job_dir),
                                   group=self.group, job_type=self.job_type, tags=self.tags,
                                   config=self.config, mode=self.mode)
        self._finished = False

    def lightning(self) -> Logger:
        return self._logger

    @property
    def run(self) -> Any:
        """The underlying wandb run."""
        return self._logger.experiment

    def summary(self, values: dict[str, Any]) -> None:
        self.run.summary.update(values)

    def table(self, name: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        import wandb

        self.run.log({name: wandb.Table(columns=list(columns), data=[list(r) for r in rows])})

    def finish(self) -> None:
        if self._finished:
            return
        self._finished = True
        if self._logger._experiment is not None:  # never started a run: nothing to close
            self._logger._experiment.finish()  # this job's run, even if wandb.run points elsewhere

    @property
    def run_dir(self) -> Path | None:
        """Folder of the W&B run files (offline-run-*)."""
        return Path(self.run.dir).parent if self._logger._experiment is not None else None
