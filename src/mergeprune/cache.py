"""Stage cache: outputs stored under `<cache_dir>/<stage>/<hash of what determines them>/`.

An entry is written into a temporary folder and renamed into place, so a crash never leaves a
half-written entry that a later run trusts. A lock file serialises jobs that want the same entry,
so parallel jobs of a sweep build it once and the others reuse it; it names its holder, so a job
that waits says for whom. An entry that cannot be read back is moved aside (never deleted) and
rebuilt, and temporary folders left by killed processes are removed.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from mergeprune.errors import one_line

log = logging.getLogger(__name__)
T = TypeVar("T")

# 2: stages seed themselves from their key, so entries written by version 1 may differ
# 3: MTZ's light retraining runs through the shared fit, so version-2 MTZ merges differ
# 4: MTZ merges three or more teachers with the summed Hessians (version-3 merges of >2 tasks differ)
CACHE_VERSION = 4
# Stages seed themselves from their payload hashed with this version, which stays fixed: a new
# CACHE_VERSION retires stored entries without reseeding (and so changing) every stage.
SEED_VERSION = 3
HOST = socket.gethostname()


def cache_key(payload: Any, version: int | None = None) -> str:
    """Stable short hash of plain data and a format version (default CACHE_VERSION)."""
    blob = json.dumps({"v": CACHE_VERSION if version is None else version, "p": payload},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _folder(folder: Path) -> Path:
    """Load function of an entry that is just its folder."""
    return folder


class StageCache:
    """Atomic, lock-protected cache entries, one folder each."""

    def __init__(self, root: str | Path, owner: str = ""):
        self.root = Path(root)
        self.owner = owner or f"pid {os.getpid()}"

    def entry(self, stage: str, key: str) -> Path:
        """Folder of one entry (it exists only once complete)."""
        return self.root / stage / key

    @contextmanager
    def lock(self, stage: str, key: str) -> Iterator[None]:
        """Hold an exclusive lock on one entry (saying whom it waits for while another job holds it)."""
        path = self.root / stage / f"{key}.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a+") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = path.read_text().strip() or "another process"
                log.info("%s: waiting for %s, which is building cache entry %s", stage, holder, key)
                fcntl.flock(fh, fcntl.LOCK_EX)
            fh.seek(0)
            fh.truncate()
            fh.write(f"{self.owner} (pid {os.getpid()} on {HOST}, since {time.strftime('%H:%M:%S')})")
            fh.flush()
            try:
                yield
            finally:
                fh.seek(0)
                fh.truncate()
                fcntl.flock(fh, fcntl.LOCK_UN)

    def get_or_build(self, stage: str, payload: Any, build: Callable[[Path], None],
                     load: Callable[[Path], T] = _folder) -> tuple[T, bool]:
        """load(entry) for payload, built by build(tmp_dir) first if missing; returns (loaded, reused).

        An existing entry that load() cannot read is moved aside with a warning and rebuilt.
        """
        key = cache_key(payload)
        final = self.entry(stage, key)
        with self.lock(stage, key):
            found = self._load_existing(stage, key, load)
            if found is not None:
                return found[0], True
            tmp = final.parent / f".{key}.tmp-{HOST}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
            tmp.mkdir(parents=True)
            try:
                (tmp / "payload.json").write_text(json.dumps(payload, indent=1, sort_keys=True, default=str))
                build(tmp)
                os.replace(tmp, final)
            finally:
                if tmp.exists():
                    shutil.rmtree(tmp, ignore_errors=True)
            return load(final), False

    def lookup(self, stage: str, payload: Any, load: Callable[[Path], T] = _folder) -> T | None:
        """load(entry) for payload if the entry exists and is readable, else None (never builds)."""
        key = cache_key(payload)
        if not self.entry(stage, key).is_dir():
            return None
        with self.lock(stage, key):
            found = self._load_existing(stage, key, load)
        return None if found is None else found[0]

    def _load_existing(self, stage: str, key: str, load: Callable[[Path], T]) -> tuple[T] | None:
        """(load(entry),) if the entry exists and loads; an unreadable one is moved aside (lock held)."""
        self.remove_stale(stage)
        final = self.entry(stage, key)
        if not final.is_dir():
            return None
        try:
            return (load(final),)
        except PermissionError:
            raise
        except Exception as err:  # noqa: BLE001 - any unreadable entry is rebuilt
            aside = self.move_aside(stage, key)
            log.warning("%s: cache entry %s is unreadable (%s); moved to %s and rebuilt",
                        stage, final, one_line(err), aside)
            return None

    def move_aside(self, stage: str, key: str) -> Path:
        """Rename an entry to `.<key>.corrupt-<time>` (kept for inspection, never trusted again)."""
        aside = self.root / stage / f".{key}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:4]}"
        os.replace(self.entry(stage, key), aside)
        return aside

    def remove_stale(self, stage: str) -> None:
        """Delete temporary folders whose creating process on this host is gone."""
        for tmp in (self.root / stage).glob(".*.tmp-*"):
            owner = tmp_owner(tmp.name)
            if owner is None or owner[0] != HOST or not tmp.is_dir():
                continue
            if not process_outlived(owner[1], tmp.stat().st_mtime):
                log.info("%s: removing %s, left by process %d that is gone", stage, tmp, owner[1])
                shutil.rmtree(tmp, ignore_errors=True)


def tmp_owner(name: str) -> tuple[str, int] | None:
    """(host, pid) encoded in a temporary folder's name (`.<key>.tmp-<host>-<pid>-<id>`; older
    names `.<key>.tmp-<pid>-<id>` count as this host's)."""
    rest = name.split(".tmp-", 1)[-1]
    parts = rest.rsplit("-", 2)
    if len(parts) == 2 and parts[0].isdigit():
        return HOST, int(parts[0])
    if len(parts) == 3 and parts[1].isdigit():
        return parts[0], int(parts[1])
    return None


def process_outlived(pid: int, since: float) -> bool:
    """Whether process pid is alive and was already running at time `since` (not a reused pid)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = int(fields[19])  # field 22 of stat: start time in clock ticks after boot
        boot = next(int(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime"))
    except (OSError, ValueError, IndexError, StopIteration):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    started = boot + ticks / os.sysconf("SC_CLK_TCK")
    return started <= since + 1.0
