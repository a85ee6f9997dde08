"""Entry point: `mergeprune [hydra overrides]` runs one job (or a sweep with -m)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from mergeprune.errors import ConfigError, DataError
from mergeprune.pipeline import run_job

CONF_DIR = os.environ.get("MERGEPRUNE_CONF", str(Path(__file__).resolve().parents[2] / "conf"))


def sweep_group(cfg: DictConfig) -> str:
    """W&B group: the experiment name, plus the sweep folder when running a multirun."""
    hc = HydraConfig.get()
    if hc.mode == RunMode.MULTIRUN:
        return f"{cfg.name}/{Path(hc.sweep.dir).name}"
    return str(cfg.name)


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def app(cfg: DictConfig) -> None:
    """Run one job in Hydra's output directory."""
    job_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        run_job(cfg, job_dir, group=sweep_group(cfg))
    except (ConfigError, DataError) as err:
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
