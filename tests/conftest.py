"""Shared test helpers: compose the real Hydra configs and run jobs on tiny data."""

from __future__ import annotations

import os
import signal
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
REPORT_FIXTURES = Path(__file__).parent / "fixtures" / "report"  # results.json of finished sweeps
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")

# LeNet-5 (20-50-500) layer list and the split2 tasks, for tests that build networks directly
LENET5_LAYERS = [{"name": "conv1", "kind": "conv", "width": 20, "kernel": 5, "padding": "auto", "pool": 2},
                 {"name": "conv2", "kind": "conv", "width": 50, "kernel": 5, "padding": "auto", "pool": 2},
                 {"name": "fc1", "kind": "linear", "width": 500}]
SPLIT2 = {"lo": {"kind": "attributes", "classes": [0, 1, 2, 3, 4]},
          "hi": {"kind": "attributes", "classes": [5, 6, 7, 8, 9]}}

# LeNet-5 built for 8x8 digits and narrow (6-8-16), for tests that prune a trained teacher
DIGITS_LAYERS = [{"name": "conv1", "kind": "conv", "width": 6, "kernel": 5, "padding": "auto", "pool": 2},
                 {"name": "conv2", "kind": "conv", "width": 8, "kernel": 5, "padding": "auto", "pool": 2},
                 {"name": "fc1", "kind": "linear", "width": 16}]
CPU_TRAINER = {"accelerator": "cpu", "devices": 1, "progress_bar": False}

# tiny and fast: 8x8 digits, LeNet-5 built for 8x8, one short epoch, no progress bars
TINY = ["dataset=digits", "model=lenet5", "teachers.epochs=2", "trainer.progress_bar=false",
        "logger=none", "evaluate.latency_repeats=2"]


def make_cfg(tmp_path: Path, overrides: list[str] = ()) -> DictConfig:
    """Compose conf/config.yaml with overrides, writing outputs and cache under tmp_path."""
    with initialize_config_dir(str(CONF), version_base="1.3"):
        return compose("config", overrides=[f"paths.output_dir={tmp_path}", *overrides])


@pytest.fixture(scope="session")
def digits_teacher(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """split2 tasks on digits (200 val, 300 test), the narrow 8x8 LeNet-5 spec, a 'lo' teacher trained
    12 epochs and its context; tests prune copies of the teacher (session-wide: trained once)."""
    import pytorch_lightning as pl

    from mergeprune.context import Context
    from mergeprune.data.datamodule import MultiTaskDataModule
    from mergeprune.models.grouped import GroupedNet
    from mergeprune.models.spec import build_spec
    from mergeprune.tasks import build_tasks
    from mergeprune.training.fit import fit
    from mergeprune.training.module import MultiTaskModule

    root = tmp_path_factory.mktemp("digits_teacher")
    tasks = build_tasks(SPLIT2, 10)
    dm = MultiTaskDataModule(tasks, source="digits", val_size=200, test_size=300, batch_size=64)
    spec = build_spec("lenet5", DIGITS_LAYERS, in_channels=1, in_hw=(8, 8))
    pl.seed_everything(0, verbose=False)
    teacher = GroupedNet.single(spec, "lo", 5)
    fit(MultiTaskModule(teacher, tasks, {"_target_": "torch.optim.Adam", "lr": 3e-3}, 12), dm, 12,
        CPU_TRAINER, False, root)
    job = Context(tasks, dm, CPU_TRAINER, False, root)
    assert job.accuracy(teacher, "val")["lo"] > 0.93  # learned: predicting all -1 scores 0.9
    return SimpleNamespace(tasks=tasks, dm=dm, spec=spec, teacher=teacher, job=job, root=root)


@pytest.fixture
def tiny(tmp_path: Path):
    """A function composing a tiny config under this test's tmp dir."""
    return lambda *overrides: make_cfg(tmp_path, [*TINY, *overrides])


@pytest.fixture(autouse=True)
def keep_sigint_handler(request: pytest.FixtureRequest):
    """Restore the SIGINT handler after each test: Lightning sets it to SIG_IGN when a fit ends in
    KeyboardInterrupt, and jobs that later tests launch would inherit the ignored Ctrl-C (as they do
    when pytest itself runs as a background job of a script, where the shell ignores SIGINT)."""
    before = signal.getsignal(signal.SIGINT)
    yield
    if signal.getsignal(signal.SIGINT) != before:
        warnings.warn(f"{request.node.nodeid} changed the SIGINT handler; restored", stacklevel=1)
        signal.signal(signal.SIGINT, before)
