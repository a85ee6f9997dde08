"""results.json: the per-job contract every tool relies on (DESIGN.md section 5)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

SCHEMA = 1


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
