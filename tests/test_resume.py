"""A job killed mid-finetune (or mid-pruning) continues from its last epoch (or step) checkpoint and
ends as if never killed."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mergeprune.results import measured, same_network

ARGS = ["dataset=digits", "teachers.epochs=1", "merger=concat", "pruner=none", "finetune.epochs=30",
        "dataset.train_size=256",
        "logger=none", "evaluate.export=false", "trainer.progress_bar=false"]


def _launch(tmp_path: Path, run: str, *extra: str) -> subprocess.Popen:
    """Start `mergeprune` in tmp_path with its own process group."""
    exe = Path(sys.executable).with_name("mergeprune")
    keys = {e.split("=", 1)[0] for e in extra}
    args = [a for a in ARGS if a.split("=", 1)[0] not in keys]  # extra overrides replace ARGS
    return subprocess.Popen([str(exe), *args, f"hydra.run.dir=outputs/{run}", *extra], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, preexec_fn=_default_sigint)


def _default_sigint() -> None:
    """In the child: Ctrl-C as for a foreground job of a terminal, whatever the test process ignores."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _wait_for_checkpoint(tmp_path: Path, job: subprocess.Popen) -> Path:
    """Wait until the job has saved a finetuning checkpoint; returns the partial-state folder."""
    partial = tmp_path / "outputs" / "cache" / "partial" / "finetune"
    deadline = time.time() + 600
    while not list(partial.glob("*/last.ckpt")) and time.time() < deadline and job.poll() is None:
        time.sleep(0.2)
    return partial


@pytest.mark.slow
def test_killed_finetune_resumes_from_checkpoint(tmp_path: Path) -> None:
    first = _launch(tmp_path, "first")
    partial = _wait_for_checkpoint(tmp_path, first)
    time.sleep(1.0)  # let a few more epochs finish
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    assert first.returncode == -signal.SIGKILL, "the job finished before it could be killed"
    killed = json.loads((tmp_path / "outputs" / "first" / "results.json").read_text())
    assert killed["status"] == "running"  # written at the start; a kill -9 leaves it unfinished

    second = _launch(tmp_path, "second")
    out, _ = second.communicate(timeout=900)
    assert second.returncode == 0, out
    resumed = re.search(r"resuming from the checkpoint after epoch (\d+) of 30", out)
    assert resumed, out
    print(f"resumed after epoch {resumed.group(1)} of 30")
    assert 1 <= int(resumed.group(1)) < 30
    assert "reusing cached teacher" in out  # the teachers were not retrained either
    results = json.loads((tmp_path / "outputs" / "second" / "results.json").read_text())
    assert results["status"] == "ok"
    assert not list(partial.glob("*/last.ckpt"))  # cleaned up once finished
    # the same job, never interrupted, with a cache of its own: bit for bit the same network
    whole = _launch(tmp_path, "whole", "paths.cache_dir=outputs/cache_whole")
    out, _ = whole.communicate(timeout=900)
    assert whole.returncode == 0, out
    assert "resuming" not in out
    uninterrupted = json.loads((tmp_path / "outputs" / "whole" / "results.json").read_text())
    assert measured(results) == measured(uninterrupted)
    assert same_network(tmp_path / "outputs" / "second" / "model.pt",
                        tmp_path / "outputs" / "whole" / "model.pt")


PRUNE = ["pruner=taylor", "finetune.epochs=1", "pruner.schedule.step=0.02", "pruner.schedule.max_step=0.02",
         "pruner.schedule.tolerance=1.0", "pruner.schedule.max_steps=40"]


@pytest.mark.slow
def test_killed_pruning_resumes_after_its_last_step(tmp_path: Path) -> None:
    first = _launch(tmp_path, "first", *PRUNE)
    partial = tmp_path / "outputs" / "cache" / "partial" / "prune"
    deadline, saves, last = time.time() + 600, 0, None
    while time.time() < deadline and first.poll() is None and saves < 3:  # the start and two steps
        try:
            stamp = next(partial.glob("*/schedule.pt")).stat().st_mtime_ns
        except (StopIteration, OSError):  # not written yet (or the job just finished)
            stamp = None
        if stamp is not None and stamp != last:
            saves, last = saves + 1, stamp
        time.sleep(0.05)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    assert first.returncode == -signal.SIGKILL, "the job finished before it could be killed"
    second = _launch(tmp_path, "second", *PRUNE)
    out, _ = second.communicate(timeout=900)
    assert second.returncode == 0, out
    resumed = re.search(r"resuming pruning after step (\d+)", out)
    assert resumed and 1 <= int(resumed.group(1)) < 40, out
    assert not list(partial.glob("*/schedule.pt"))  # cleaned up once finished
    whole = _launch(tmp_path, "whole", *PRUNE, "paths.cache_dir=outputs/cache_whole")
    out, _ = whole.communicate(timeout=900)
    assert whole.returncode == 0 and "resuming" not in out, out
    results, uninterrupted = (json.loads((tmp_path / "outputs" / r / "results.json").read_text())
                              for r in ("second", "whole"))
    assert measured(results) == measured(uninterrupted)
    assert results["trajectory"] == uninterrupted["trajectory"]


@pytest.mark.slow
def test_ctrl_c_records_interrupted(tmp_path: Path) -> None:
    job = _launch(tmp_path, "job", "finetune.epochs=1000")  # still training when Ctrl-C comes
    _wait_for_checkpoint(tmp_path, job)
    assert job.poll() is None, "the job ended before it could be interrupted"
    os.killpg(job.pid, signal.SIGINT)
    out, _ = job.communicate(timeout=300)
    assert job.returncode == 130, out
    assert "mergeprune: interrupted" in out and "Traceback" not in out
    results = json.loads((tmp_path / "outputs" / "job" / "results.json").read_text())
    assert results["status"] == "interrupted" and "finetune" in results["error"]
