"""Jobs end to end on tiny data: teachers, cache reuse, results.json, tracking, lossless merging."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mergeprune.cache import StageCache
from mergeprune.pipeline import run_job
from mergeprune.report import gather
from mergeprune.stages import runners


def test_teachers_train_cache_and_results(tiny, tmp_path: Path) -> None:
    first = run_job(tiny("stages=[teachers]", "logger=csv"), tmp_path / "a")
    saved = json.loads((tmp_path / "a" / "results.json").read_text())
    assert saved["schema"] == 1 and saved["status"] == "ok"
    assert saved["experiment"]["tasks"] == ["lo", "hi"] and saved["experiment"]["dataset"] == "digits"
    assert {"teachers", "total"} <= set(saved["timings_s"])
    cfg = tiny("stages=[teachers]")
    assert saved["splits"]["val"] == cfg.dataset.val_size and saved["splits"]["test"] == cfg.dataset.test_size
    # the report reads the validation size the matched-accuracy rule needs from the job's own results
    assert gather([tmp_path / "a"])[0].val_size == cfg.dataset.val_size
    for name in ("lo", "hi"):
        info = saved["teachers"][name]
        assert info["accuracy"] > 0.85 and not info["reused"]
        assert info["flops"] > 0 and info["params"] > 0
    assert (tmp_path / "a" / "csv" / "metrics.csv").read_text().count("val/lo/acc") == 1
    second = run_job(tiny("stages=[teachers]", "logger=csv", "skip_finished=false"), tmp_path / "b")
    for name in ("lo", "hi"):
        assert second["teachers"][name]["reused"]
        assert second["teachers"][name]["accuracy"] == first["teachers"][name]["accuracy"]
    assert second["timings_s"]["teachers"] < first["timings_s"]["teachers"]


def test_same_task_under_another_name_gets_its_own_teacher(tiny, tmp_path: Path) -> None:
    # related2 at step 0: task a is digits 0-4, defined exactly like split2's lo; its teacher starts
    # from another seed (the name seeds it), so it must not be the cached lo teacher
    run_job(tiny("stages=[teachers]", "logger=none", "teachers.epochs=1"), tmp_path / "lohi")
    run_job(tiny("stages=[teachers]", "logger=none", "teachers.epochs=1", "tasks=related2"), tmp_path / "ab")
    saved = json.loads((tmp_path / "ab" / "results.json").read_text())
    assert saved["status"] == "ok" and not saved["teachers"]["a"]["reused"]


def test_wandb_offline_run_holds_metrics(tiny, tmp_path: Path) -> None:
    job = tmp_path / "job"
    run_job(tiny("stages=[teachers]", "logger=wandb", "teachers.epochs=1"), job)
    runs = list((job / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    records = next(runs[0].glob("run-*.wandb")).read_bytes()  # offline run: history + summary records
    assert b"val/lo/acc" in records and b"train/hi/loss" in records and b"test/hi/acc" in records
    assert b"teachers/lo/acc" in records


def test_failed_stage_writes_status(tiny, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(job, teachers) -> None:
        raise RuntimeError("merge exploded")

    monkeypatch.setattr(runners, "run_merge", boom)
    with pytest.raises(RuntimeError):
        run_job(tiny("stages=[teachers,merge]"), tmp_path / "job")
    saved = json.loads((tmp_path / "job" / "results.json").read_text())
    assert saved["status"] == "failed" and "merge exploded" in saved["error"]
    assert saved["teachers"]["lo"]["accuracy"] > 0  # the finished stage's results are kept


def test_cache_is_atomic(tmp_path: Path) -> None:
    cache = StageCache(tmp_path)

    def crash(folder: Path) -> None:
        (folder / "half.pt").write_text("partial")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        cache.get_or_build("teachers", {"x": 1}, crash)
    assert not any(p.is_dir() for p in (tmp_path / "teachers").iterdir())
    folder, reused = cache.get_or_build("teachers", {"x": 1}, lambda f: (f / "ok").write_text("1"))
    assert not reused and (folder / "ok").exists()
    assert cache.get_or_build("teachers", {"x": 1}, lambda f: None) == (folder, True)


@pytest.mark.parametrize("tasks", ["split2", "split5"])
@pytest.mark.parametrize("merger", ["none", "concat"])
def test_lossless_merge_keeps_teacher_accuracy(tiny, tmp_path: Path, merger: str, tasks: str) -> None:
    cfg = tiny(f"tasks={tasks}", f"merger={merger}", "pruner=none", "finetune.epochs=0",
               "evaluate.export=false")
    res = run_job(cfg, tmp_path / "job")
    for name, info in res["teachers"].items():
        assert res["accuracy"][name] == info["accuracy"]
    if merger == "none":  # one part per task, pruned on its own, nothing merged or cached as merged
        assert set(res["pruning"]) == set(res["experiment"]["tasks"])
        assert "merge" not in res and not (tmp_path / "cache" / "merge").exists()
        for subset, cost in res["cost"].items():
            parts = subset.split("+")
            assert cost["flops"] == sum(res["teachers"][t]["flops"] for t in parts)
            assert cost["params"] == sum(res["teachers"][t]["params"] for t in parts)
    else:
        assert res["pruning"] == {} and "layers" not in res["merge"]  # one part, one (empty) report
        # one shared group: every subset computes all hidden neurons and differs only in its heads
        every = "+".join(res["experiment"]["tasks"])
        n_in = sum(res["groups"]["fc1"].values())
        for subset, cost in res["cost"].items():
            absent = [t for t in res["experiment"]["tasks"] if t not in subset.split("+")]
            heads = sum((2 * n_in - 1) * len(cfg.tasks[t].classes) for t in absent)
            assert cost["flops"] == res["cost"][every]["flops"] - heads


SPY = """
import socket, sys
real = socket.getaddrinfo
def spy(host, *args, **kwargs):
    sys.stderr.write(f"LOOKUP {host}\\n")
    return real(host, *args, **kwargs)
socket.getaddrinfo = spy
sys.argv = ["mergeprune", *sys.argv[1:]]
from mergeprune.cli import main
main()
"""


@pytest.mark.slow
def test_offline_wandb_makes_no_network_lookups(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}  # offline by default
    done = subprocess.run([sys.executable, "-c", SPY, "dataset=digits", "debug=fast", "logger=wandb",
                           "stages=[teachers]", "teachers.epochs=3", "hydra.run.dir=outputs/job"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert list((tmp_path / "outputs" / "job" / "wandb").glob("offline-run-*"))
    lookups = [line for line in done.stderr.splitlines() if line.startswith("LOOKUP")]
    assert [x for x in lookups if x.split()[1] not in ("localhost", "127.0.0.1", "::1")] == []
