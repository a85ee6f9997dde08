"""Stage cache: outputs stored under `<cache_dir>/<stage>/<hash of what determines them>/`.

An entry is written into a temporary folder and renamed into place, so a crash never leaves a
half-written entry that a later run trusts. A lock file serialises jobs that want the same entry,
so parallel jobs of a sweep build it once and the others reuse it.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

CACHE_VERSION = 1  # bump when the meaning of cached files changes


def cache_key(payload: Any) -> str:
    """Stable short hash of plain data."""
    blob = json.dumps({"v": CACHE_VERSION, "p": payload}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


class StageCache:
    """Atomic, lock-protected cache entries, one folder each."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def entry(self, stage: str, key: str) -> Path:
        """Folder of one entry (it exists only once complete)."""
        return self.root / stage / key

    @contextmanager
    def lock(self, stage: str, key: str) -> Iterator[None]:
        """Hold an exclusive lock on one entry."""
        path = self.root / stage / f"{key}.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def get_or_build(self, stage: str, payload: Any, build: Callable[[Path], None]) -> tuple[Path, bool]:
        """The entry for payload, built by build(tmp_dir) if missing; returns (folder, reused)."""
        key = cache_key(payload)
        final = self.entry(stage, key)
        with self.lock(stage, key):
            if final.is_dir():
                return final, True
            tmp = final.parent / f".{key}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
            tmp.mkdir(parents=True)
            try:
                (tmp / "payload.json").write_text(json.dumps(payload, indent=1, sort_keys=True, default=str))
                build(tmp)
                os.replace(tmp, final)
            finally:
                if tmp.exists():
                    shutil.rmtree(tmp, ignore_errors=True)
        return final, False
