"""Every config composes; semantically wrong values fail at start-up with a one-line message."""

from __future__ import annotations

import json
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


def _flat(node: dict, prefix: str = "") -> dict[str, object]:
    """Dotted key -> leaf value."""
    out: dict[str, object] = {}
    for key, value in node.items():
        if isinstance(value, dict):
            out |= _flat(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out


def test_debug_and_experiment_override_the_top_level_keys(tmp_path: Path) -> None:
    import yaml

    debug = yaml.safe_load((CONF / "debug" / "fast.yaml").read_text())
    for name in options("experiment"):
        cfg = make_cfg(tmp_path, [f"experiment={name}"])
        assert cfg.name == name  # the preset names its W&B group and report
    # through the command line, as a user would check it
    shown = _cli(tmp_path, "debug=fast", "experiment=pam_split2", "--cfg", "job")
    assert shown.returncode == 0, shown.stderr
    job = yaml.safe_load(shown.stdout)
    assert job["name"] == "pam_split2"
    for key, value in _flat(debug).items():
        node = job
        for part in key.split("."):
            node = node[part]
        assert node == value, key


@pytest.mark.parametrize(("override", "key"), [
    ("pruner.schedule.tolerance=2", "pruner.schedule.tolerance"),
    ("dataset.train_size=-5", "dataset.train_size"),
    ("+foo=1", "foo"),
    ("+teachers.foo=1", "teachers.foo"),
    ("+trainer.gpus=1", "trainer.gpus"),
    ("seed=abc", "seed"),
    ("seed=-1", "seed"),
    ("merger.samples=abc", "merger.samples"),  # the component schemas type the knobs
    ("+merger.foo=1", "merger.foo"),
    ("pruner.schedule.optimizer=adam", "pruner.schedule.optimizer"),
    ("trainer.num_nodes=0", "trainer.num_nodes"),
    ("evaluate.export=maybe", "evaluate.export"),
    ("dataset.batch_size=0", "dataset.batch_size"),
    ("teachers.epochs=2.0", "teachers.epochs"),  # checked, not silently converted
    ("finetune.alternate=1", "finetune.alternate"),
])
def test_more_bad_values_fail_at_start_up(tiny, tmp_path: Path, override: str, key: str) -> None:
    with pytest.raises(ConfigError) as err:
        run_job(tiny(override), tmp_path / "job")
    message = str(err.value)
    assert key in message and "allowed" in message and "\n" not in message
    assert not (tmp_path / "cache").exists()
    saved = (tmp_path / "job" / "results.json").read_text()
    assert '"failed"' in saved and key in saved


def _readonly(folder: Path) -> bool:
    """Make folder unwritable (chmod, or chattr +i as root); False if this system cannot."""
    folder.chmod(0o555)
    try:
        (folder / "probe").touch()
    except OSError:
        return True
    (folder / "probe").unlink()
    folder.chmod(0o755)
    return subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode == 0


def _writable(folder: Path) -> None:
    """Undo _readonly."""
    subprocess.run(["chattr", "-i", str(folder)], capture_output=True)
    folder.chmod(0o755)


@pytest.mark.slow
def test_user_errors_are_one_line_with_exit_status_2(tmp_path: Path) -> None:
    fast = ["dataset=digits", "debug=fast", "logger=none", "stages=[teachers]"]
    bad_seed = _cli(tmp_path, *fast, "seed=abc", "hydra.run.dir=outputs/seed")
    assert bad_seed.returncode == 2
    assert bad_seed.stderr.strip().count("\n") == 0 and "seed=abc" in bad_seed.stderr
    assert '"failed"' in (tmp_path / "outputs" / "seed" / "results.json").read_text()
    sweep = _cli(tmp_path, "-m", *fast, "seed=0,abc", "hydra.sweep.dir=outputs/sweep")
    assert sweep.returncode != 0 and "Traceback" not in sweep.stderr
    assert "mergeprune: error: seed=abc" in sweep.stderr
    for folder, args in (("outputs_ro", ["hydra.run.dir=outputs_ro/run"]),
                         ("cache_ro", ["paths.cache_dir=cache_ro/c", "hydra.run.dir=outputs/c"])):
        (tmp_path / folder).mkdir()
        if not _readonly(tmp_path / folder):
            pytest.skip("cannot make a folder read-only here (neither chmod nor chattr works)")
        try:
            done = _cli(tmp_path, *fast, *args)
        finally:
            _writable(tmp_path / folder)
        assert done.returncode == 2, done.stderr
        assert done.stderr.strip().count("\n") == 0 and folder in done.stderr, done.stderr
        assert "writable" in done.stderr
    assert "cannot write" in (tmp_path / "outputs" / "c" / "results.json").read_text()


@pytest.mark.slow
def test_job_log_holds_stage_messages_and_choices_name_the_method(tmp_path: Path) -> None:
    done = _cli(tmp_path, "dataset=digits", "debug=fast", "logger=none", "stages=[teachers]",
                "pruner=magnitude_71x", "hydra.run.dir=outputs/job")
    assert done.returncode == 0, done.stderr
    log = (tmp_path / "outputs" / "job" / "mergeprune.log").read_text()
    assert "teachers: training 'lo'" in log and "teachers: 'hi' test accuracy" in log
    res = json.loads((tmp_path / "outputs" / "job" / "results.json").read_text())
    assert res["experiment"]["pruner"] == "magnitude"  # the config's name: field ...
    assert res["experiment"]["choices"]["pruner"] == "magnitude_71x"  # ... and the variant chosen


def test_help_names_the_app_its_groups_and_examples(tmp_path: Path) -> None:
    shown = _cli(tmp_path, "--help")
    assert shown.returncode == 0
    text = shown.stdout
    assert text.startswith("mergeprune: merge single-task networks") and "powered by Hydra" not in text
    for group in GROUPS:
        assert f"\n  {group} " in text, group
    assert text.count("\n  mergeprune") >= 3  # example commands


def test_every_config_file_fits_its_schema(tmp_path: Path) -> None:
    from hydra.core.config_store import ConfigStore

    from mergeprune.component_schema import BY_TARGET
    from mergeprune.config_check import check_config

    stored = set(ConfigStore.instance().list(""))
    assert {"schema_config.yaml", "schema_merger_pam.yaml", "schema_pruner_neurons.yaml"} <= stored
    for group in ("merger", "pruner", "dataset", "experiment", "trainer", "finetune"):
        for path in sorted((CONF / group).glob("*.yaml")):
            cfg = make_cfg(tmp_path, [f"{group}={path.stem}"])
            check_config(cfg)  # every key of every shipped variant is known and well typed
            if group in ("merger", "pruner"):
                assert cfg[group]._target_ in BY_TARGET, path  # each component class has a schema
