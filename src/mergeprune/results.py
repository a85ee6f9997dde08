"""results.json: the per-job contract every tool relies on (docs/results_json.md)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

SCHEMA = 1
PAYLOAD_FILE = "job_payload.json"  # the job's config as run, beside its results.json


def new_results(experiment: dict[str, Any]) -> dict[str, Any]:
    """A results dict in its initial (running) state."""
    return {"schema": SCHEMA, "status": "running", "experiment": experiment, "teachers": {},
            "accuracy": {}, "cost": {}, "groups": {}, "compression": {}, "timings_s": {}}


def write_json(path: str | Path, data: dict[str, Any]) -> None:
    """Write JSON atomically (temporary file, then rename)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False))
    os.replace(tmp, path)


def read_results(path: str | Path) -> dict[str, Any] | None:
    """A results.json, or None if missing or unreadable."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError):
        return None


# what two runs of one job may differ in although they computed the same thing
RUN_KEYS = ("timings_s", "seconds", "train_s", "reused", "latency_ms", "path")


def measured(data: Any) -> Any:
    """The results without run-time measurements (times, cache-reuse flags, file paths)."""
    if isinstance(data, dict):
        return {k: measured(v) for k, v in data.items() if k not in RUN_KEYS}
    if isinstance(data, list):
        return [measured(v) for v in data]
    return data


def same_network(a: str | Path, b: str | Path) -> bool:
    """Whether two saved networks (GroupedNet.save) hold bit-identical tensors and metadata."""
    import torch

    pa, pb = (torch.load(p, map_location="cpu", weights_only=True) for p in (a, b))
    if pa["meta"] != pb["meta"] or set(pa["state"]) != set(pb["state"]):
        return False
    return all(torch.equal(pa["state"][k], pb["state"][k]) for k in pa["state"])
