"""The config's schema: one dataclass per kind of config node, registered in Hydra's ConfigStore.

Every field has a type and, where one applies, a range or a list of choices (`knob`). The schemas
are registered in Hydra's ConfigStore (`schema_config`, `schema_merger_pam`, ..., outside any
group), so tools and users can compose or extend them; `config_check.check_config` validates
a composed config against them at start-up, the one place where types and ranges are checked, and
reports the first bad value as one line naming the key and what is allowed. The config itself is
not retyped (an int stays an int), so what a job hashes into its cache key is what its files say.
The components' own knobs (mergers, pruners, finetune) are typed here; their ranges are checked by
the component, since components are also built from Python.
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, field
from typing import Any

STAGES = ("teachers", "merge", "prune", "finetune", "evaluate")


def knob(default: Any = MISSING, *, low: float | None = None, high: float | None = None,
         strict: bool = False, choices: tuple[str, ...] | None = None) -> Any:
    """A dataclass field with its allowed range (low..high, `strict` excludes low) or choices."""
    meta = {"low": low, "high": high, "strict": strict, "choices": choices}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: default, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class TeachersConf:
    """`teachers`: how the single-task teachers are trained."""

    epochs: int = knob(12, low=0)
    optimizer: Any = None  # an optimizer node, checked by training.optim.check_optimizer


@dataclass
class EvaluateConf:
    """`evaluate`: the compact export and its latency measurement."""

    export: bool = True
    latency_repeats: int = knob(20, low=1)


@dataclass
class PathsConf:
    """`paths`: where outputs, the stage cache and data files live."""

    output_dir: str = "outputs"
    cache_dir: str = "outputs/cache"
    data_dir: str = "data"


@dataclass
class TrainerConf:
    """`trainer`: pytorch_lightning.Trainer arguments plus progress_bar and process_group_backend."""

    _target_: str = "pytorch_lightning.Trainer"
    accelerator: str = "cpu"
    devices: Any = 1
    strategy: str = "auto"
    num_nodes: int = knob(1, low=1)
    precision: Any = "32-true"
    progress_bar: bool = True
    log_every_n_steps: int = knob(10, low=1)
    process_group_backend: str | None = None


@dataclass
class DatasetConf:
    """`dataset`: the image source, its splits and batch size."""

    _target_: str = "mergeprune.data.datamodule.MultiTaskDataModule"
    name: str = "mnist5k"
    source: str = "mnist5k"
    num_classes: int = knob(10, low=2)
    val_size: int = knob(500, low=0)
    test_size: int = knob(1000, low=0)
    train_size: int | None = knob(None, low=1)
    batch_size: int = knob(64, low=1)
    split_seed: int = 0
    download: bool = False
    verify: bool = True
    image_size: int | None = knob(None, low=1)


@dataclass
class Config:
    """The top level: groups, seed, stages and the settings the pipeline reads itself."""

    dataset: DatasetConf = field(default_factory=DatasetConf)
    tasks: Any = None
    model: Any = None
    merger: Any = None
    pruner: Any = None
    finetune: Any = None
    trainer: TrainerConf = field(default_factory=TrainerConf)
    logger: Any = None
    paths: PathsConf = field(default_factory=PathsConf)
    name: str = "mergeprune"
    seed: int = knob(0, low=0)
    stages: list[str] = knob(list(STAGES), choices=STAGES)
    skip_finished: bool = True
    teachers: TeachersConf = field(default_factory=TeachersConf)
    evaluate: EvaluateConf = field(default_factory=EvaluateConf)
    relatedness: Any = None  # the step of tasks=related2
    preset: Any = None  # a preset's description for the reproduction driver (conf/experiment)
