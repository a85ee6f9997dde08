"""Every config composes; semantically wrong values fail at start-up with a one-line message."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import CONF, ROOT, make_cfg
from mergeprune.errors import ConfigError
from mergeprune.pipeline import run_job

GROUPS = ["dataset", "tasks", "model", "merger", "pruner", "finetune", "trainer", "logger", "paths"]


def options(group: str) -> list[str]:
    """Variant names of one config group."""
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


@pytest.mark.parametrize("group", GROUPS)
def test_every_variant_composes(tmp_path: Path, group: str) -> None:
    for option in options(group):
        cfg = make_cfg(tmp_path, [f"{group}={option}"])
        assert cfg[group] is not None, option


def test_debug_and_experiments_compose(tmp_path: Path) -> None:
    for name in options("debug"):
        assert make_cfg(tmp_path, [f"debug={name}"]).teachers.epochs >= 0
    for name in options("experiment"):
        assert make_cfg(tmp_path, [f"experiment={name}"]).name


@pytest.mark.parametrize(("override", "key"), [
    ("tasks.lo.classes=[11]", "tasks.lo.classes"),
    ("teachers.epochs=-1", "teachers.epochs"),
    ("finetune.epochs=-2", "finetune.epochs"),
    ("finetune.distill_weight=1.5", "finetune.distill_weight"),
    ("stages=[teachers,nosuch]", "stages"),
    ("tasks.lo.kind=regression", "tasks.lo.kind"),
])
def test_semantic_errors_name_the_key(tiny, tmp_path: Path, override: str, key: str) -> None:
    cfg = tiny(override)
    with pytest.raises(ConfigError) as err:
        run_job(cfg, tmp_path / "job")
    message = str(err.value)
    assert key in message and "allowed" in message and "\n" not in message
    assert not (tmp_path / "cache").exists()  # nothing was trained


def _cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    """Run the mergeprune console script in tmp_path."""
    exe = Path(sys.executable).with_name("mergeprune")
    return subprocess.run([str(exe), *args], cwd=tmp_path, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_cli_errors_exit_nonzero_and_leave_outputs(tmp_path: Path) -> None:
    earlier = tmp_path / "outputs" / "runs" / "earlier"
    earlier.mkdir(parents=True)
    (earlier / "results.json").write_text('{"status": "ok"}')
    bad_group = _cli(tmp_path, "model=nosuch")
    assert bad_group.returncode != 0 and "nosuch" in bad_group.stderr
    bad_class = _cli(tmp_path, "tasks.lo.classes=[11]", "logger=none")
    assert bad_class.returncode == 2
    last = bad_class.stderr.strip().splitlines()[-1]
    assert "tasks.lo.classes" in last and "0..9" in last
    assert (earlier / "results.json").read_text() == '{"status": "ok"}'
    assert ROOT.joinpath("conf", "config.yaml").exists()
