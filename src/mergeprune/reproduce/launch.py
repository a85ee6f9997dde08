"""Running a preset: the archived jobs restored into <root>/<name> (a new checkout resumes the
sweep), one Hydra multirun into it, from the current directory (the jobs' relative paths, such as
outputs/cache, are read from there), a line per launch in <root>/<name>/reproduce.json (command,
start, wall time, exit code, commit, machine), the sweep's `mergeprune-report` into
<root>/<name>/report. The command line (cli.py) then archives it (reproduce/archive.py).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from mergeprune import report as rp
from mergeprune.reproduce.archive import restore_sweep
from mergeprune.reproduce.presets import REPORT_ARGS
from mergeprune.results import write_json

SRC = Path(__file__).resolve().parents[2]  # the folder holding this package: the jobs import it too
CODE_DIR = Path(__file__).resolve().parent  # its commit is the one recorded

log = logging.getLogger(__name__)


def preset_command(name: str, sweep_dir: Path, overrides: list[str]) -> list[str]:
    """The mergeprune multirun that runs one preset into sweep_dir."""
    return [sys.executable, "-m", "mergeprune.cli", "-m", f"experiment={name}",
            f"hydra.sweep.dir={sweep_dir}", *overrides]


def run_preset(name: str, root: Path, overrides: list[str], archive: Path | None = None) -> int:
    """Restore its archived jobs, run one preset's multirun, log the launch, write its report."""
    sweep = root / name
    sweep.mkdir(parents=True, exist_ok=True)
    if archive is not None:
        restore_sweep(archive / name, sweep)
    cmd = preset_command(name, sweep, overrides)
    log.info("reproduce: %s: %s", name, shlex.join(cmd))
    started, t0, commit = dt.datetime.now().isoformat(timespec="seconds"), time.perf_counter(), git_commit()
    code = subprocess.call(cmd, env={**os.environ, "PYTHONPATH": str(SRC)})
    seconds = round(time.perf_counter() - t0, 1)
    history = launches(sweep)
    history.append({"command": shlex.join(cmd), "started": started, "seconds": seconds,
                "returncode": code, "commit": commit, "machine": machine()})
    write_json(sweep / "reproduce.json", {"preset": name, "launches": history})
    log.info("reproduce: %s: exit %d after %.0f s", name, code, seconds)
    rp.main([str(sweep), "--out", str(sweep / "report"), *REPORT_ARGS])
    return code


def launches(sweep: Path) -> list[dict[str, Any]]:
    """Earlier launches of a preset (empty when none or unreadable)."""
    try:
        return list(json.loads((sweep / "reproduce.json").read_text())["launches"])
    except (OSError, ValueError, KeyError, TypeError):
        return []


def machine() -> dict[str, Any]:
    """Where this runs: OS, CPU, cores, Python, torch."""
    import torch

    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__}


def git_commit() -> str:
    """The commit of the code that runs (short), '+dirty' when the package or the configs have changes
    (a regenerated page or archive does not count); 'unknown' outside git."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=CODE_DIR, capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", str(SRC),
                                str(SRC.parent / "conf")], cwd=CODE_DIR, capture_output=True, text=True,
                               check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")
