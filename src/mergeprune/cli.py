"""Entry point: `mergeprune [hydra overrides]` runs one job (or a sweep with -m)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from mergeprune.errors import ConfigError, DataError, TrainingError
from mergeprune.models.grouped import CheckpointError
from mergeprune.pipeline import run_job

CONF_DIR = os.environ.get("MERGEPRUNE_CONF", str(Path(__file__).resolve().parents[2] / "conf"))


def sweep_group(cfg: DictConfig) -> str:
    """W&B group: the experiment name, plus the sweep folder when running a multirun."""
    hc = HydraConfig.get()
    if hc.mode == RunMode.MULTIRUN:
        return f"{cfg.name}/{Path(hc.sweep.dir).name}"
    return str(cfg.name)


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
        run_job(cfg, Path(hc.runtime.output_dir), group=sweep_group(cfg))
    except (ConfigError, DataError, TrainingError, CheckpointError) as err:
        if hc.mode == RunMode.MULTIRUN:
            raise  # Hydra records the failure, runs the other jobs, then exits non-zero
        print(f"mergeprune: error: {err}", file=sys.stderr)
        sys.exit(2)


def main() -> None:
    """Console script."""
    if not Path(CONF_DIR, "config.yaml").is_file():
        sys.exit(f"mergeprune: error: no configs at {CONF_DIR}; install with `pip install -e .` "
                 "from the repository or set MERGEPRUNE_CONF")
    app()


if __name__ == "__main__":
    main()
