"""Errors that end a job with a one-line message instead of a traceback, and the config checks that raise them."""

from __future__ import annotations

import errno
import math
import pickle
from collections.abc import Sequence
from typing import Any


class ConfigError(ValueError):
    """A semantically wrong config value; the message names the key and the allowed values."""


class TrainingError(RuntimeError):
    """Training cannot go on (a NaN or infinite loss); the message says where it happened."""


class DataError(Exception):
    """Bad or missing data file; the message names the file and what was wrong."""

    def __init__(self, message: str) -> None:
        """Store the message folded onto a single line."""
        super().__init__(" ".join(str(message).splitlines()))


def check_choice(value: Any, key: str, allowed: Sequence[str]) -> str:
    """The value if it is one of the allowed strings."""
    if value not in allowed:
        raise ConfigError(f"{key}={value!r}; allowed: {', '.join(allowed)}")
    return str(value)


def check_number(value: Any, key: str, low: float | None = None, high: float | None = None,
                 strict: bool = False) -> float:
    """The value as a float if it is a finite number within [low, high] (low excluded if strict)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok and low is not None:
        ok = value > low if strict else value >= low
    if ok and high is not None:
        ok = value <= high
    if not ok:
        lo = "" if low is None else (f"> {low}" if strict else f">= {low}")
        hi = "" if high is None else f"<= {high}"
        raise ConfigError(f"{key}={value}; allowed: a number {' and '.join(x for x in (lo, hi) if x)}")
    return float(value)


def check_int(value: Any, key: str, low: int = 0) -> int:
    """The value if it is an integer >= low."""
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ConfigError(f"{key}={value}; allowed: an integer >= {low}")
    return int(value)


def one_line(err: BaseException) -> str:
    """A short one-line description of an exception (torch's unpickling advice left out)."""
    if isinstance(err, pickle.UnpicklingError) or "weights_only" in str(err):
        return "it holds more than tensors and plain data, refused by torch.load(weights_only=True)"
    first = (str(err).strip().splitlines() or [""])[0]
    return f"{type(err).__name__}: {first}"[:300]


class JobInterrupted(KeyboardInterrupt):
    """The job was interrupted (Ctrl-C); its results.json says `interrupted`."""


class StorageError(Exception):
    """A file or folder the job must write cannot be written; the message names it and what to do."""


WRITE_ERRNOS = (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT)


def storage_error(err: OSError) -> StorageError | None:
    """A one-line StorageError for an OSError that means 'cannot write here', else None."""
    if err.errno not in WRITE_ERRNOS:
        return None
    where = err.filename or "a file"
    return StorageError(f"cannot write {where}: {err.strerror}; make it writable, or point "
                        "paths.output_dir / paths.cache_dir / hydra.run.dir at a writable folder")
