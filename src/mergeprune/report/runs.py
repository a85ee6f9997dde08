"""The runs below some directories: one Run per results.json, and one per Hydra job folder that
has none (a killed job), each with its status and a note saying what went wrong.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mergeprune.results import PAYLOAD_FILE, read_results

Method = tuple[str, str, str]


@dataclass
class Run:
    """One job: its results (empty when missing or unreadable), where it lives, and a note."""

    path: Path
    label: str
    status: str
    data: dict[str, Any] = field(default_factory=dict)
    note: str = ""
    val_size: int | None = None  # validation images per task (results.json `splits`, else the job's payload)

    @property
    def exp(self) -> dict[str, Any]:
        """The `experiment` block."""
        return self.data.get("experiment") or {}

    @property
    def tasks(self) -> list[str]:
        """Task names in configured order."""
        return [str(t) for t in self.exp.get("tasks") or []]

    @property
    def key(self) -> tuple[str, tuple[str, ...], str] | None:
        """The comparison this run belongs to: (dataset, tasks, model), or None if unknown."""
        if not self.exp.get("dataset") or not self.tasks:
            return None
        return str(self.exp["dataset"]), tuple(self.tasks), str(self.exp.get("model", "?"))

    @property
    def method(self) -> Method:
        """(merger, pruner, granularity); '-' for a missing granularity.

        Merger and pruner are the config files the job chose (`experiment.choices`, so that
        pruner=magnitude_71x is not pooled with pruner=magnitude although both are named
        'magnitude'); results written before choices were recorded give the configs' names.
        """
        exp = self.exp
        choices = exp.get("choices") if isinstance(exp.get("choices"), dict) else {}
        return (str(choices.get("merger", exp.get("merger", "?"))),
                str(choices.get("pruner", exp.get("pruner", "?"))),
                str(exp.get("granularity") or "-"))

    @property
    def seed(self) -> Any:
        """The run's seed ('' when unknown)."""
        return self.exp.get("seed", "")

    @property
    def ok(self) -> bool:
        """Whether the job finished."""
        return self.status == "ok"


def find_results(dirs: Iterable[str | Path]) -> list[tuple[Path, dict]]:
    """Every results.json below the directories, with its contents (status 'unreadable' if bad)."""
    found, seen = [], set()
    for d in dirs:
        for path in sorted(Path(d).rglob("results.json")):
            if path.resolve() in seen or not path.is_file() or not_a_run(path, Path(d)):
                continue
            seen.add(path.resolve())
            data = read_results(path)
            found.append((path, data if isinstance(data, dict) else {"status": "unreadable"}))
    return found


def not_a_run(path: Path, root: Path) -> bool:
    """Whether a results.json is a copy, not a job's own: a stage-cache entry (it holds payload.json)
    or anything in a hidden folder (superseded results, moved-aside cache entries)."""
    if (path.parent / "payload.json").exists():
        return True
    try:
        rel = path.resolve().relative_to(root.resolve())
    except ValueError:
        rel = path
    return any(part.startswith(".") for part in rel.parts[:-1])


def find_missing(dirs: Iterable[str | Path]) -> list[Path]:
    """Hydra job folders (holding `.hydra/`) below the directories that have no results.json."""
    missing, seen = [], set()
    for d in dirs:
        for hydra in sorted(Path(d).rglob(".hydra")):
            job = hydra.parent
            if hydra.is_dir() and job.resolve() not in seen and not (job / "results.json").exists():
                seen.add(job.resolve())
                missing.append(job)
    return missing


def job_override_list(job_dir: Path) -> list[str]:
    """The Hydra overrides a job was launched with (empty if unknown)."""
    try:
        lines = (job_dir / ".hydra" / "overrides.yaml").read_text().splitlines()
    except OSError:
        return []
    return [line.strip()[2:].strip() for line in lines if line.strip().startswith("- ")]


def job_overrides(job_dir: Path) -> str:
    """The Hydra overrides a job was launched with, space-separated ('' if unknown)."""
    return " ".join(job_override_list(job_dir))


def run_label(job_dir: Path, root: Path) -> str:
    """A short job name: its path below the searched directory, prefixed with that one's name."""
    try:
        rel = job_dir.resolve().relative_to(root.resolve())
    except ValueError:
        return str(job_dir)
    name = root.resolve().name
    return str(Path(name) / rel) if str(rel) != "." else name


def root_of(path: Path, dirs: list[Path]) -> Path:
    """The given directory a found path lies below (the first given one if none)."""
    for d in dirs:
        try:
            path.resolve().relative_to(d.resolve())
            return d
        except ValueError:
            continue
    return dirs[0]


def make_run(path: Path, data: dict[str, Any], dirs: list[Path]) -> Run:
    """A Run from one results.json."""
    status = str(data.get("status", "unknown"))
    label = run_label(path.parent, root_of(path, dirs))
    if status == "unreadable":
        return Run(path, label, status, {}, "not valid JSON (or not a JSON object)")
    note = str(data.get("error", "")) if status != "ok" else ""
    if status not in ("ok", "failed") and not note:
        note = "job did not finish (still running, or killed)"
    return Run(path, label, status, data, note, val_size(path, data))


def val_size(path: Path, data: dict[str, Any]) -> int | None:
    """Validation images of a run: results.json `splits.val`, else the `dataset.val_size` of the job
    payload beside it (runs written before splits were recorded); None when neither says."""
    splits = data.get("splits")
    if isinstance(splits, dict) and isinstance(splits.get("val"), int):
        return splits["val"]
    payload = read_results(path.parent / PAYLOAD_FILE)
    dataset = payload.get("dataset") if isinstance(payload, dict) else None
    size = dataset.get("val_size") if isinstance(dataset, dict) else None
    return size if isinstance(size, int) and size > 0 else None


def gather(dirs: Iterable[str | Path]) -> list[Run]:
    """Every run below the directories: found results.json files, then job folders without one."""
    roots = [Path(d) for d in dirs]
    runs = [make_run(path, data, roots) for path, data in find_results(roots)]
    for job in find_missing(roots):
        overrides = job_overrides(job)
        note = "no result (killed?)" + (f"; overrides: {overrides}" if overrides else "")
        runs.append(Run(job, run_label(job, root_of(job, roots)), "missing", {}, note))
    return runs
