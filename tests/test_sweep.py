"""Sweeps through the real command line: end to end, resume, failure isolation, launchers, DDP."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
FAST = ["dataset=digits", "debug=fast", "logger=none", "evaluate.latency_repeats=2"]


def cli(tmp_path: Path, *args: str, exe: str = "mergeprune") -> subprocess.CompletedProcess:
    """Run a console script in tmp_path and return what it did."""
    return subprocess.run([str(BIN / exe), *args], cwd=tmp_path, capture_output=True, text=True,
                          timeout=900)


def results(sweep: Path) -> dict[str, dict]:
    """results.json of every job of a sweep, by job folder name."""
    return {p.parent.name: json.loads(p.read_text()) for p in sweep.glob("*/results.json")}


def job(runs: dict[str, dict], override: str) -> dict:
    """The results of the one job whose folder name holds an override."""
    found = [r for name, r in runs.items() if override in name.split(",")]
    assert len(found) == 1, (override, list(runs))
    return found[0]


@pytest.mark.slow
def test_two_merger_sweep_end_to_end_then_resumes(tmp_path: Path) -> None:
    args = ["-m", "merger=concat,pam", "pruner=taylor", "pruner.schedule.max_steps=2", "pruner.schedule.step=0.3",
            "pruner.schedule.max_step=0.5", *FAST]
    first = cli(tmp_path, *args, "hydra.sweep.dir=outputs/first")
    assert first.returncode == 0, first.stderr[-3000:]
    runs = results(tmp_path / "outputs" / "first")
    assert sorted(r["experiment"]["merger"] for r in runs.values()) == ["concat", "pam"]
    for name, res in runs.items():
        assert res["status"] == "ok"
        assert set(res["cost"]) == {"lo", "hi", "lo+hi"} and set(res["accuracy"]) == {"lo", "hi"}
        assert res["pruning"]["stopped"] and res["compression"]["weights"] >= 1.0
        assert {p.name for p in (tmp_path / "outputs" / "first" / name / "export").iterdir()} == {
            "lo.pt2", "hi.pt2", "lo+hi.pt2"}
    # a relaunch into a new sweep folder reuses every finished job and trains nothing
    again = cli(tmp_path, *args, "hydra.sweep.dir=outputs/again")
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("results reused") == 2 and "training" not in again.stdout
    again_runs = results(tmp_path / "outputs" / "again")
    for name, res in runs.items():
        for key in ("accuracy", "cost", "groups", "compression", "teachers"):
            assert again_runs[name][key] == res[key]
    report = cli(tmp_path, "outputs/first", exe="mergeprune-report")
    assert report.returncode == 0, report.stderr
    assert {"report.md", "report.csv", "report.html"} <= {p.name for p in (tmp_path / "outputs" / "first").iterdir()}


@pytest.mark.slow
def test_failed_job_is_isolated_and_reported(tmp_path: Path) -> None:
    sweep = tmp_path / "outputs" / "sweep"
    done = cli(tmp_path, "-m", "finetune.epochs=0,-1", "merger=concat", "pruner=none", *FAST,
               f"hydra.sweep.dir={sweep}")
    assert done.returncode != 0  # the sweep says that something failed
    runs = results(sweep)
    assert job(runs, "finetune.epochs=0")["status"] == "ok"
    failed = job(runs, "finetune.epochs=-1")
    assert failed["status"] == "failed" and "finetune.epochs" in failed["error"]
    report = cli(tmp_path, str(sweep), exe="mergeprune-report")
    text = (sweep / "report.md").read_text()
    assert report.returncode == 0 and "failed" in text and "finetune.epochs" in text


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["joblib", "submitit_local"])
def test_parallel_launchers(tmp_path: Path, launcher: str) -> None:
    sweep = tmp_path / "outputs" / "sweep"
    done = cli(tmp_path, "-m", "merger=none,concat", "pruner=none", "finetune.epochs=0", *FAST,
               f"hydra/launcher={launcher}", f"hydra.sweep.dir={sweep}", "logger=wandb")
    assert done.returncode == 0, done.stderr[-3000:]
    runs = results(sweep)
    assert {r["status"] for r in runs.values()} == {"ok"} and len(runs) == 2
    for name in runs:  # W&B offline still records every job
        assert list((sweep / name / "wandb").glob("offline-run-*/run-*.wandb")), name


@pytest.mark.slow
def test_ddp_two_cpu_processes_keep_hydra_outputs(tmp_path: Path) -> None:
    done = cli(tmp_path, "stages=[teachers]", "trainer=ddp", "dataset=digits", "teachers.epochs=10",
               "logger=none", "trainer.progress_bar=false", "hydra.run.dir=outputs/ddp")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "MEMBER: 2/2" in done.stdout + done.stderr  # two processes took part
    res = json.loads((tmp_path / "outputs" / "ddp" / "results.json").read_text())
    assert res["status"] == "ok"
    assert all(t["accuracy"] > 0.92 for t in res["teachers"].values())  # trained, not the 0.9 baseline
    assert {p.name for p in (tmp_path / "outputs").iterdir()} == {"ddp", "cache"}
