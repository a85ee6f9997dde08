"""Shared test helpers: compose the real Hydra configs and run jobs on tiny data."""

from __future__ import annotations

import os
import signal
import warnings
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")

# LeNet-5 (20-50-500) layer list and the split2 tasks, for tests that build networks directly
LENET5_LAYERS = [{"name": "conv1", "kind": "conv", "width": 20, "kernel": 5, "padding": "auto", "pool": 2},
                 {"name": "conv2", "kind": "conv", "width": 50, "kernel": 5, "padding": "auto", "pool": 2},
                 {"name": "fc1", "kind": "linear", "width": 500}]
SPLIT2 = {"lo": {"kind": "attributes", "classes": [0, 1, 2, 3, 4]},
          "hi": {"kind": "attributes", "classes": [5, 6, 7, 8, 9]}}

# tiny and fast: 8x8 digits, LeNet-5 built for 8x8, one short epoch, no progress bars
TINY = ["dataset=digits", "model=lenet5", "teachers.epochs=2", "trainer.progress_bar=false",
        "logger=none", "evaluate.latency_repeats=2"]


def make_cfg(tmp_path: Path, overrides: list[str] = ()) -> DictConfig:
    """Compose conf/config.yaml with overrides, writing outputs and cache under tmp_path."""
    with initialize_config_dir(str(CONF), version_base="1.3"):
        return compose("config", overrides=[f"paths.output_dir={tmp_path}", *overrides])


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
