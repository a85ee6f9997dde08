"""The archive of a preset's sweep: what the results page is generated from, kept in the repository.

A sweep folder (outputs/reproduce/<name>) holds checkpoints, logs and caches that are not kept. Its
archive (docs/results/runs/<name>) keeps, per job folder, the files every number on the page comes
from (results.json), the Hydra overrides the job was launched with (the page reads swept settings
from them), the job's payload (so a relaunch recognises the job as finished), and the preset's
launch log. Restoring the archive into an empty sweep folder lets a new checkout resume the sweep:
its finished jobs are skipped, only missing ones run. Archiving never drops an archived job: a job
folder of the sweep replaces its own archived copy only.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

log = logging.getLogger(__name__)

# per job folder, relative to it; the launch log sits at the sweep's top
JOB_FILES = ("results.json", "job_payload.json", ".hydra/overrides.yaml")
SWEEP_FILES = ("reproduce.json",)


def job_folders(sweep: Path) -> list[Path]:
    """The Hydra job folders of a sweep (those with .hydra/overrides.yaml), report and cache copies aside."""
    found = (p.parent.parent for p in sweep.rglob(".hydra/overrides.yaml"))
    return sorted(p for p in found if not any(part.startswith(".") for part in p.relative_to(sweep).parts))


def copy_files(src: Path, dest: Path, names: tuple[str, ...]) -> int:
    """Copy the named files that exist from src to dest (same relative paths); how many were copied."""
    n = 0
    for name in names:
        if (src / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src / name, dest / name)
            n += 1
    return n


def archive_sweep(sweep: Path, archive: Path) -> int:
    """Copy the result files of sweep's jobs into archive, each job replacing its archived copy
    (archived jobs the sweep folder lacks are kept); the number of jobs archived."""
    jobs = job_folders(sweep)
    for job in jobs:
        target = archive / job.relative_to(sweep)
        staging = target.with_name(target.name + ".new")
        shutil.rmtree(staging, ignore_errors=True)
        copy_files(job, staging, JOB_FILES)
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    if jobs:
        copy_files(sweep, archive, SWEEP_FILES)
        log.info("reproduce: archived %d job(s) of %s in %s", len(jobs), sweep, archive)
    return len(jobs)


def restore_sweep(archive: Path, sweep: Path) -> int:
    """Copy archived jobs into sweep where its job folder has no results.json; how many were restored."""
    n = 0
    for job in job_folders(archive) if archive.is_dir() else []:
        target = sweep / job.relative_to(archive)
        if not (target / "results.json").exists():
            copy_files(job, target, JOB_FILES)
            n += 1
    if n and not (sweep / "reproduce.json").exists():
        copy_files(archive, sweep, SWEEP_FILES)
    if n:
        log.info("reproduce: restored %d archived job(s) into %s", n, sweep)
    return n
