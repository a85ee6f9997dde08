"""Finished jobs: reused only when everything that determines their results is unchanged.

A job's payload is its config minus the keys that cannot change its results (where files go, how
progress is shown). Its hash, `job_key`, is written into results.json and the payload itself into
`job_payload.json`. A relaunch into the same folder skips the job only if the keys match; a
finished result of another payload is moved to `.superseded/<time>/` (never deleted) and the job
runs. The `jobs` cache holds every finished job by its payload, so a relaunched sweep in a new
folder reuses finished jobs too.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from mergeprune.cache import StageCache, cache_key
from mergeprune.results import PAYLOAD_FILE, read_results
from mergeprune.stages.teachers import trainer_identity

log = logging.getLogger(__name__)

# config keys that do not change a job's results (where files go, how progress is shown)
NOT_RESULT_KEYS = ("paths", "logger", "hydra", "name", "skip_finished", "preset")
# what a finished job leaves in its folder besides Hydra's files
ARTIFACTS = ("results.json", "job_payload.json", "model.pt", "export", "error.txt", "csv")


def job_payload(cfg: DictConfig) -> dict[str, Any]:
    """Everything that determines a job's results (its key in the finished-jobs cache)."""
    plain = OmegaConf.to_container(cfg, resolve=True)
    plain = {k: v for k, v in plain.items() if k not in NOT_RESULT_KEYS}
    plain.get("evaluate", {}).pop("latency_repeats", None)
    plain["trainer"] = trainer_identity(cfg.trainer)
    return plain


def changed_keys(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two plain configs."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for k in sorted(set(old) | set(new), key=str):
            out += changed_keys(old.get(k), new.get(k), f"{prefix}{k}.")
        return out
    return [] if old == new else [prefix.rstrip(".")]


def set_aside(job_dir: Path, payload: dict[str, Any] | None) -> Path:
    """Move a folder's previous results to `.superseded/<time>/` and say what changed."""
    old = read_json(job_dir / PAYLOAD_FILE)
    aside = job_dir / ".superseded" / time.strftime("%Y%m%d-%H%M%S")
    aside.mkdir(parents=True, exist_ok=True)
    for name in ARTIFACTS:
        if (job_dir / name).exists():
            shutil.move(str(job_dir / name), str(aside / name))
    if old is None or payload is None:
        why = "another or an unknown config"
    else:
        keys = changed_keys(old, payload)
        why = "another config (changed: " + ", ".join(keys[:6]) + (" ..." if len(keys) > 6 else "") + ")"
    log.info("%s held the results of %s: moved them to %s", job_dir, why, aside)
    return aside


def keep_finished(job_dir: Path) -> None:
    """Set aside a finished result in job_dir before something else is written over it."""
    previous = read_results(job_dir / "results.json")
    if previous is not None and previous.get("status") == "ok":
        set_aside(job_dir, None)


def read_json(path: Path) -> Any:
    """A JSON file's contents, or None if missing or unreadable."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def reuse_finished(cfg: DictConfig, job_dir: Path, payload: dict[str, Any],
                   skip: bool) -> dict[str, Any] | None:
    """Results of this job from its folder or the jobs cache if it finished with this payload."""
    key = cache_key(payload)
    previous = read_results(job_dir / "results.json")
    if previous is not None and previous.get("status") == "ok":
        if skip and previous.get("job_key") == key:
            log.info("job already finished in %s: skipped", job_dir)
            return previous
        set_aside(job_dir, payload)
    if not skip:
        return None
    cached = StageCache(cfg.paths.cache_dir).lookup("jobs", payload, _load_finished)
    if cached is None:
        return None
    entry, results = cached
    for item in entry.iterdir():
        if item.name != "payload.json":
            copy = shutil.copytree if item.is_dir() else shutil.copy2
            copy(item, job_dir / item.name, **({"dirs_exist_ok": True} if item.is_dir() else {}))
    (job_dir / PAYLOAD_FILE).write_text(json.dumps(payload, indent=1, sort_keys=True, default=str))
    log.info("job finished in an earlier launch: results reused from %s", entry)
    return results


def _load_finished(entry: Path) -> tuple[Path, dict[str, Any]]:
    """A jobs-cache entry and its results (raises if unreadable or not a finished job)."""
    results = json.loads((entry / "results.json").read_text())
    if not isinstance(results, dict) or results.get("status") != "ok":
        raise ValueError("results.json does not hold a finished job")
    return entry, results


def remember_finished(cfg: DictConfig, job_dir: Path, payload: dict[str, Any]) -> None:
    """Store a finished job's results, model and exports so a relaunch reuses them."""
    def build(folder: Path) -> None:
        for name in ("results.json", "model.pt", "export"):
            item = job_dir / name
            if item.is_dir():
                shutil.copytree(item, folder / name)
            elif item.exists():
                shutil.copy2(item, folder / name)

    StageCache(cfg.paths.cache_dir, owner=str(job_dir)).get_or_build(
        "jobs", payload, build, _load_finished)
