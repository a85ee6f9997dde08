"""Same command, same numbers: stages independent of the cache, stale folders, corrupt files."""

from __future__ import annotations

import json
import logging
import os
import pickle
from pathlib import Path

import pytest
import torch

from mergeprune import cache
from mergeprune.cache import StageCache
from mergeprune.pipeline import run_job
from mergeprune.results import measured, same_network

JOB = ["pruner=taylor", "pruner.schedule.max_steps=3", "finetune.epochs=1", "evaluate.export=false"]


@pytest.mark.parametrize("merger", ["pam", "none"])
def test_cold_and_warm_cache_give_identical_jobs(tiny, tmp_path: Path, merger: str) -> None:
    cold = run_job(tiny(*JOB, f"merger={merger}", f"paths.cache_dir={tmp_path / 'c1'}"), tmp_path / "cold")
    # the other cache holds only the teachers, trained by a job that did nothing else
    run_job(tiny("stages=[teachers]", f"paths.cache_dir={tmp_path / 'c2'}"), tmp_path / "teachers")
    warm = run_job(tiny(*JOB, f"merger={merger}", f"paths.cache_dir={tmp_path / 'c2'}"), tmp_path / "warm")
    assert all(t["reused"] for t in warm["teachers"].values())
    assert measured(cold) == measured(warm)
    assert same_network(tmp_path / "cold" / "model.pt", tmp_path / "warm" / "model.pt")


def test_a_stage_does_not_depend_on_the_random_state_before_it(tiny, tmp_path: Path) -> None:
    cfg = tiny(*JOB, "merger=concat")
    first = run_job(cfg, tmp_path / "a")
    for stage in ("prune", "finetune", "jobs"):
        for entry in (tmp_path / "cache" / stage).iterdir():
            if entry.is_dir():
                os.rename(entry, entry.with_name(f".{entry.name}.old"))
    torch.manual_seed(12345)  # whatever ran before must not matter
    torch.rand(1000)
    second = run_job(cfg, tmp_path / "b")
    assert measured(first) == measured(second)


def test_a_new_cache_version_retires_entries_without_reseeding(tiny, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    first = run_job(tiny(*JOB, "merger=concat"), tmp_path / "a")
    monkeypatch.setattr(cache, "CACHE_VERSION", cache.CACHE_VERSION + 1)
    second = run_job(tiny(*JOB, "merger=concat"), tmp_path / "b")
    assert not any(t["reused"] for t in second["teachers"].values())  # the old entries are retired
    first.pop("job_key"), second.pop("job_key")  # the job's own key names the cache version
    assert measured(first) == measured(second)  # but every stage is seeded as before
    assert same_network(tmp_path / "a" / "model.pt", tmp_path / "b" / "model.pt")


def test_finished_folder_is_reused_only_for_the_same_config(tiny, tmp_path: Path,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    base = ["merger=concat", "pruner=none", "finetune.epochs=0", "evaluate.export=false"]
    job = tmp_path / "job"
    run_job(tiny(*base), job)
    with caplog.at_level(logging.INFO):
        again = run_job(tiny(*base), job)
    assert "already finished" in caplog.text and again["experiment"]["merger"] == "concat"
    caplog.clear()
    with caplog.at_level(logging.INFO):
        edited = run_job(tiny(*base[:-2], "finetune.epochs=1", "evaluate.export=false", "merger=none"), job)
    assert "already finished" not in caplog.text
    assert "moved them to" in caplog.text and "finetune.epochs" in caplog.text and "merger" in caplog.text
    saved = json.loads((job / "results.json").read_text())
    assert saved["experiment"]["merger"] == "none" == edited["experiment"]["merger"]
    old = list((job / ".superseded").glob("*/results.json"))
    assert len(old) == 1 and json.loads(old[0].read_text())["experiment"]["merger"] == "concat"


def test_bad_value_in_a_finished_folder_keeps_the_finished_result(tiny, tmp_path: Path) -> None:
    job = tmp_path / "job"
    run_job(tiny("stages=[teachers]"), job)
    with pytest.raises(Exception, match="finetune.epochs"):
        run_job(tiny("stages=[teachers]", "finetune.epochs=-1"), job)
    assert json.loads((job / "results.json").read_text())["status"] == "failed"
    kept = list((job / ".superseded").glob("*/results.json"))
    assert len(kept) == 1 and json.loads(kept[0].read_text())["status"] == "ok"


def _entries(cache: Path, stage: str) -> list[Path]:
    """The complete entries of one stage."""
    return [p for p in (cache / stage).iterdir() if p.is_dir() and not p.name.startswith(".")]


@pytest.mark.parametrize(("stage", "name"), [("teachers", "info.json"), ("merge", "report.json"),
                                             ("teachers", "net.pt"), ("merge", "net.pt")])
def test_corrupt_cache_entry_is_moved_aside_and_rebuilt(tiny, tmp_path: Path, stage: str, name: str,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    args = ["stages=[teachers,merge]", "merger=concat", "skip_finished=false"]
    first = run_job(tiny(*args), tmp_path / "a")
    target = _entries(tmp_path / "cache", stage)[0] / name
    data = target.read_bytes()
    target.write_bytes(data[: len(data) // 2])  # truncated
    with caplog.at_level(logging.WARNING):
        second = run_job(tiny(*args), tmp_path / "b")
    assert "unreadable" in caplog.text and "rebuilt" in caplog.text and str(target.parent) in caplog.text
    assert list((tmp_path / "cache" / stage).glob(".*.corrupt-*"))
    assert measured(second) == measured(first)  # rebuilt, and bit-identical to the first build


def test_planted_pickle_in_the_cache_is_never_executed(tiny, tmp_path: Path,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    run_job(tiny("stages=[teachers]"), tmp_path / "a")
    marker = tmp_path / "executed"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    entry = _entries(tmp_path / "cache", "teachers")[0]
    (entry / "net.pt").write_bytes(pickle.dumps(Payload()))
    with caplog.at_level(logging.WARNING):
        run_job(tiny("stages=[teachers]", "skip_finished=false"), tmp_path / "b")
    assert not marker.exists()
    assert "weights_only=True" in caplog.text and "weights_only=False" not in caplog.text


def test_stale_temporary_folders_are_removed(tmp_path: Path) -> None:
    cache = StageCache(tmp_path)
    dead = tmp_path / "teachers" / ".abc.tmp-99999999-deadbeef"  # no such pid
    dead.mkdir(parents=True)
    alive = tmp_path / "teachers" / f".abc.tmp-{os.getpid()}-cafe"
    alive.mkdir()
    cache.get_or_build("teachers", {"x": 1}, lambda f: None)
    assert not dead.exists() and alive.exists()


def test_corrupt_jobs_cache_entry_is_rebuilt(tiny, tmp_path: Path) -> None:
    run_job(tiny("stages=[teachers]"), tmp_path / "a")
    entry = _entries(tmp_path / "cache", "jobs")[0]
    (entry / "results.json").write_text('{"status": "ok", "teach')
    again = run_job(tiny("stages=[teachers]"), tmp_path / "b")
    assert again["status"] == "ok"
    assert json.loads((_entries(tmp_path / "cache", "jobs")[0] / "results.json").read_text())["status"] == "ok"


@pytest.mark.parametrize("damage", ["truncated", "pickle", "foreign"])
def test_unusable_resume_checkpoint_is_discarded(tiny, tmp_path: Path, damage: str,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    args = ["merger=concat", "pruner=none", "finetune.epochs=2", "evaluate.export=false",
            "skip_finished=false"]
    first = run_job(tiny(*args), tmp_path / "a")
    entry = _entries(tmp_path / "cache", "finetune")[0]
    os.rename(entry, entry.with_name(f".{entry.name}.old"))
    last = tmp_path / "cache" / "partial" / "finetune" / entry.name / "last.ckpt"
    last.parent.mkdir(parents=True)
    if damage == "truncated":
        last.write_bytes(b"PK\x03\x04 half a zip")
    elif damage == "pickle":
        last.write_bytes(pickle.dumps({"epoch": 0, "state_dict": {}, "hook": print}))
    else:  # loads, but is not a training checkpoint of this network
        torch.save({"epoch": 0, "state_dict": {"w": torch.zeros(3)}, "optimizer_states": [],
                    "loops": {}, "callbacks": {}}, last)
    with caplog.at_level(logging.WARNING):
        second = run_job(tiny(*args), tmp_path / "b")
    assert "unusable" in caplog.text and "discarded" in caplog.text and str(last) in caplog.text
    assert "\n" not in caplog.records[-1].getMessage()
    assert measured(second) == measured(first)


def test_waiting_on_a_lock_names_the_holder(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import threading

    from mergeprune.cache import cache_key

    holder = StageCache(tmp_path, owner="outputs/runs/other-job")
    key = cache_key({"x": 1})
    locked, release = threading.Event(), threading.Event()

    def hold() -> None:
        with holder.lock("teachers", key):
            locked.set()
            release.wait(10)

    thread = threading.Thread(target=hold)
    thread.start()
    locked.wait(10)
    threading.Timer(0.5, release.set).start()
    with caplog.at_level(logging.INFO):
        StageCache(tmp_path, owner="me").get_or_build("teachers", {"x": 1}, lambda f: None)
    thread.join()
    assert "waiting for outputs/runs/other-job" in caplog.text
