"""Sweeps through a real one-node SLURM cluster (scripts/slurm_local.sh): every job a SLURM job, teachers
trained once across jobs, a failed job reported, a cancelled job resumed by a relaunch, and the same
numbers as the same sweep run locally. Skips where the cluster cannot be started (no root, no apt)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import ROOT
from mergeprune.results import measured
from test_sweep import BIN, FAST, cli, job, results

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

SCRIPT = ROOT / "scripts" / "slurm_local.sh"
PORT = "16817"  # a cluster of its own, beside one a user may have started on the default ports
# two jobs that share their teachers; 24 finetuning epochs (~0.3 s each) leave time to cancel one mid-way
SWEEP = ["-m", "merger=concat,pam", "pruner.schedule.max_steps=2", "finetune.epochs=24", *FAST]
# the launcher config on this one-node cluster: both jobs at once, one core each
SLURM = ["hydra/launcher=submitit_slurm", "hydra.launcher.partition=debug", "hydra.launcher.timeout_min=20",
         "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=2"]


def script(env: dict[str, str], command: str) -> subprocess.CompletedProcess:
    """Run `bash scripts/slurm_local.sh <command>` for the test's cluster."""
    return subprocess.run(["bash", str(SCRIPT), command], env=env, capture_output=True, text=True,
                          timeout=900)


def running(pid: int | str) -> bool:
    """Whether a process runs (a zombie, already ended, does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def daemon_pids(folder: Path) -> list[int]:
    """The running processes named by the cluster's pid files, and slurmstepd with its cwd in folder."""
    pids = [int(p.read_text()) for p in (folder / "run").glob("*.pid") if p.read_text().strip().isdigit()]
    alive = [pid for pid in pids if running(pid)]
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if (proc / "comm").read_text().strip() == "slurmstepd" and str(folder) in os.readlink(proc / "cwd"):
                alive += [int(proc.name)] if running(proc.name) else []
        except OSError:
            continue
    return alive


@pytest.fixture(scope="module")
def cluster() -> Iterator[dict[str, str]]:
    """A started one-node cluster (its environment); stopped, with nothing left running, at the end."""
    folder = Path(tempfile.mkdtemp(prefix="mps-", dir="/tmp"))  # short: munge and slurmd sockets live there
    env = {**os.environ, "SLURM_LOCAL_DIR": str(folder), "SLURM_LOCAL_PORT": PORT, "SLURM_LOCAL_LINK": "0"}
    started = script(env, "start")
    try:
        if started.returncode != 0:
            reason = (started.stderr.strip().splitlines() or ["no message"])[-1]
            pytest.skip(f"SLURM cannot be started here: {reason}")
        with pytest.MonkeyPatch.context() as mp:  # the sweeps and their SLURM jobs read these
            mp.setenv("SLURM_CONF", str(folder / "etc" / "slurm.conf"))
            mp.setenv("MERGEPRUNE_THREADS", "1")  # the same threads locally and in SLURM jobs
            yield {**env, "SLURM_CONF": str(folder / "etc" / "slurm.conf")}
    finally:
        stopped = script(env, "stop")
        left = daemon_pids(folder)
        shutil.rmtree(folder, ignore_errors=True)
        assert stopped.returncode == 0, stopped.stderr
        assert not left, f"processes left running after stop: {left}"


def sacct(env: dict[str, str], settle_s: float = 60.0) -> dict[str, str]:
    """State of every SLURM job (array tasks by id, steps left out), from the accounting database,
    once no job is still listed as pending or running (slurmdbd records a job's end a little after
    the sweep has its result), or after settle_s."""
    deadline = time.monotonic() + settle_s
    while True:
        out = subprocess.run(["sacct", "-X", "-n", "-P", "-o", "JobID,State"], env=env,
                             capture_output=True, text=True, timeout=60, check=True).stdout
        states = dict(line.split("|", 1) for line in out.splitlines() if line)
        busy = any(s in ("PENDING", "RUNNING", "COMPLETING") for s in states.values())
        if not busy or time.monotonic() > deadline:
            return states
        time.sleep(2)


def launch(tmp_path: Path, sweep: Path) -> subprocess.Popen:
    """Start the SLURM sweep in the background."""
    return subprocess.Popen([str(BIN / "mergeprune"), *SWEEP, *SLURM, f"hydra.sweep.dir={sweep}",
                             f"paths.cache_dir={tmp_path / 'shared_cache'}"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def cancel_mid_finetune(tmp_path: Path, sweep: Path, sweep_run: subprocess.Popen) -> str:
    """Once concat is done and pam has saved a finetuning checkpoint, scancel pam's SLURM job; its id."""
    partial = tmp_path / "shared_cache" / "partial" / "finetune"
    deadline = time.time() + 600
    while time.time() < deadline and sweep_run.poll() is None:
        runs = results(sweep)
        concat_done = any(r["experiment"]["merger"] == "concat" and r["status"] == "ok" for r in runs.values())
        if concat_done and list(partial.glob("*/last.ckpt")):  # concat finished: the checkpoint is pam's
            break
        time.sleep(0.2)
    ids = sorted(p.name for p in (sweep / ".submitit").glob("*_1"))  # array task 1: merger=pam
    assert sweep_run.poll() is None and ids, "the sweep ended before pam could be cancelled"
    subprocess.run(["scancel", ids[-1]], check=True, timeout=60)
    return ids[-1]


def job_logs(sweep: Path) -> str:
    """Everything the SLURM jobs of a sweep wrote (submitit's per-job logs), all launches."""
    return "".join(p.read_text(errors="replace") for p in sorted((sweep / ".submitit").glob("*/*_log.*")))


def test_slurm_sweep_cancel_relaunch_equals_local(tmp_path: Path, cluster: dict[str, str]) -> None:
    local = cli(tmp_path, *SWEEP, "hydra/launcher=joblib", f"hydra.sweep.dir={tmp_path / 'local'}",
                f"paths.cache_dir={tmp_path / 'local_cache'}")
    assert local.returncode == 0, local.stderr[-3000:]
    sweep = tmp_path / "slurm"
    first = launch(tmp_path, sweep)
    cancelled = cancel_mid_finetune(tmp_path, sweep, first)
    out, _ = first.communicate(timeout=900)
    assert first.returncode != 0 and "CANCELLED" in out, out[-3000:]  # the sweep says the job did not finish
    assert json.loads(next(sweep.glob("*merger=pam*/results.json")).read_text())["status"] != "ok"
    # the same command again: concat's finished results are reused, pam resumes from its checkpoint
    again = launch(tmp_path, sweep)
    out, _ = again.communicate(timeout=900)
    assert again.returncode == 0, out[-3000:]
    logs = job_logs(sweep)
    assert "already finished" in logs and "resuming from the checkpoint after epoch" in logs, logs[-3000:]
    assert logs.count("teachers: training '") == 2  # lo and hi, once for both jobs (the lock across jobs)
    states = sacct(cluster)  # every job ran as a SLURM job, the cancelled one included
    assert states[cancelled].startswith("CANCELLED"), states
    assert sum(s == "COMPLETED" for s in states.values()) >= 3, states
    # number for number the local sweep's results (times, reuse flags and paths aside)
    local_runs, slurm_runs = results(tmp_path / "local"), results(sweep)
    assert sorted(local_runs) == sorted(slurm_runs) and len(slurm_runs) == 2
    for name, res in slurm_runs.items():
        assert res["status"] == "ok"
        assert measured(res) == measured(local_runs[name]), name
    report = cli(tmp_path, str(sweep), exe="mergeprune-report")
    assert report.returncode == 0, report.stderr
    text = (sweep / "report.md").read_text()
    assert "concat" in text and "pam" in text


def test_slurm_failed_job_is_reported(tmp_path: Path, cluster: dict[str, str]) -> None:
    sweep = tmp_path / "failing"
    done = cli(tmp_path, "-m", "finetune.epochs=-1", "merger=concat", "pruner=none", *FAST, *SLURM,
               f"hydra.sweep.dir={sweep}")
    assert done.returncode != 0  # the sweep says that its job failed, and why
    assert "finetune.epochs" in done.stderr, done.stderr[-3000:]
    failed = job(results(sweep), "finetune.epochs=-1")
    assert failed["status"] == "failed" and "finetune.epochs" in failed["error"]
    report = cli(tmp_path, str(sweep), exe="mergeprune-report")
    assert report.returncode == 0 and "failed" in (sweep / "report.md").read_text()
