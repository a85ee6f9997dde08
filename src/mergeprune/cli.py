"""Entry point: `mergeprune [hydra overrides]` runs one job (or a sweep with -m)."""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import CompactHydraException
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

from mergeprune.errors import ConfigError, DataError, StorageError, TrainingError
from mergeprune.models.grouped import CheckpointError
from mergeprune.pipeline import run_job

log = logging.getLogger(__name__)

# errors whose message says all there is to say: one line, no traceback
USER_ERRORS = (ConfigError, DataError, TrainingError, CheckpointError, StorageError)


class JobFailed(CompactHydraException):
    """A job of a sweep failed with a user error; Hydra prints it as one line after the sweep."""


class OutputsWritable(Callback):
    """Before Hydra creates the run or sweep folder, fail with one line if it cannot be written."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        check_writable(Path(config.hydra.run.dir))

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        check_writable(Path(config.hydra.sweep.dir))


def check_writable(folder: Path) -> None:
    """Exit with status 2 and one line unless a file can be created where folder is (or would be)."""
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as err:
        # no job log exists yet (its folder is what cannot be written): stderr only
        sys.stderr.write(f"mergeprune: error: cannot write the output folder {folder} ({probe}: "
                         f"{err.strerror}); make it writable or choose another with hydra.run.dir / "
                         "hydra.sweep.dir / paths.output_dir\n")
        sys.exit(2)

CONF_DIR = os.environ.get("MERGEPRUNE_CONF", str(Path(__file__).resolve().parents[2] / "conf"))


def sweep_group(cfg: DictConfig) -> str:
    """W&B group: the experiment name, plus the sweep folder when running a multirun."""
    hc = HydraConfig.get()
    if hc.mode == RunMode.MULTIRUN:
        return f"{cfg.name}/{Path(hc.sweep.dir).name}"
    return str(cfg.name)


def group_choices() -> dict[str, str]:
    """The config file chosen in every group of the app (Hydra's own groups left out)."""
    return {group: str(choice) for group, choice in HydraConfig.get().runtime.choices.items()
            if not group.startswith("hydra/") and choice is not None}


def set_threads() -> None:
    """Torch threads per job: MERGEPRUNE_THREADS, else the cores shared among parallel jobs."""
    threads = os.environ.get("MERGEPRUNE_THREADS")
    if threads is None:
        n_jobs = HydraConfig.get().launcher.get("n_jobs")
        if isinstance(n_jobs, int) and n_jobs > 1:
            threads = str(max(1, (os.cpu_count() or 1) // n_jobs))
    if threads:
        import torch

        torch.set_num_threads(int(threads))


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def app(cfg: DictConfig) -> None:
    """Run one job in Hydra's output directory (a failed job of a sweep raises after the others ran)."""
    hc = HydraConfig.get()
    set_threads()
    try:
        run_job(cfg, Path(hc.runtime.output_dir), group=sweep_group(cfg), choices=group_choices())
    except USER_ERRORS as err:
        if hc.mode == RunMode.MULTIRUN:  # Hydra records it, runs the other jobs, then exits non-zero
            raise JobFailed(f"mergeprune: error: {err}") from None
        fail(f"mergeprune: error: {err}", 2)
    except KeyboardInterrupt as err:
        fail(f"mergeprune: interrupted: {err}" if str(err) else "mergeprune: interrupted", 130)


def fail(message: str, status: int) -> None:
    """End the job: the message into the job's log and, as the one line a user reads, on stderr."""
    log.error("%s", message)
    sys.stderr.write(message + "\n")
    sys.exit(status)


def main() -> None:
    """Console script."""
    if not Path(CONF_DIR, "config.yaml").is_file():
        sys.exit(f"mergeprune: error: no configs at {CONF_DIR}; install with `pip install -e .` "
                 "from the repository or set MERGEPRUNE_CONF")
    app()


if __name__ == "__main__":
    main()
