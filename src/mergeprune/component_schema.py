"""Schemas of the components' config nodes (mergers, pruners, finetune): their keys and types.

One dataclass per component class, found by the node's `_target_`; ranges are the component's own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore

from mergeprune.config_schema import (
    Config,
    DatasetConf,
    EvaluateConf,
    PathsConf,
    TeachersConf,
    TrainerConf,
)


@dataclass
class NoMergerConf:
    """merger=none."""

    _target_: str = "mergeprune.merger.none.NoMerger"
    name: str = "none"


@dataclass
class ConcatMergerConf:
    """merger=concat."""

    _target_: str = "mergeprune.merger.concat.ConcatMerger"
    name: str = "concat"


@dataclass
class MtzMergerConf:
    """merger=mtz."""

    _target_: str = "mergeprune.merger.mtz.MtzMerger"
    name: str = "mtz"
    share: Any = 1.0  # a fraction, or {layer: fraction}; the largest share tried with max_drop
    max_drop: float | None = 1.0  # accuracy drop allowed per layer (points); None = fixed share
    val_samples: int = 512  # held-out batch that scores the shares
    retrain_steps: int = 50  # after the first hidden layer
    retrain_growth: float = 2.0  # steps multiplied by this per layer
    lr: float = 1e-3
    hessian_samples: int = 512
    damping: float = 1e-4
    seed: int = 0


@dataclass
class PamMergerConf:
    """merger=pam."""

    _target_: str = "mergeprune.merger.pam.PamMerger"
    name: str = "pam"
    alpha_conv: float = 0.1
    alpha_fc: float = 0.1
    estimator: str = "calibrated"
    threshold: str | None = None
    sigma2: float | None = None
    samples: int = 128
    seed: int = 0
    null_draws: int = 8
    grouping: str = "star"
    closure: str = "widen"
    compensate: bool = True
    layers: list[str] | None = None
    threads: int = 1
    chunk: int = 256


@dataclass
class NoPrunerConf:
    """pruner=none."""

    _target_: str = "mergeprune.pruner.none.NoPruner"
    name: str = "none"
    granularity: str = "unstructured"


@dataclass
class AdmmKnobs:
    """The knobs every ADMM pruner has (one-shot: admm; searched: admm_neurons; admm_progressive)."""

    _recursive_: bool = False
    granularity: str = "unstructured"
    proportions: dict[str, float] | None = None
    rho: float = 1e-3
    rho_multiplier: float = 1.5
    rho_max: float = 1.0
    iterations: int = 15
    epochs_per_iteration: int = 2
    optimizer: Any = None
    retrain_epochs: int = 20
    retrain_optimizer: Any = None


@dataclass
class AdmmPrunerConf(AdmmKnobs):
    """pruner=admm."""

    _target_: str = "mergeprune.pruner.admm.AdmmPruner"
    name: str = "admm"
    keep: dict[str, float] | None = None
    target_compression: float | None = None


@dataclass
class AdmmSearchPrunerConf(AdmmPrunerConf):
    """pruner=admm_neurons: one-shot ADMM with its keep scale searched for the accuracy target."""

    _target_: str = "mergeprune.pruner.admm_search.AdmmSearchPruner"
    name: str = "admm_neurons"
    search: bool = True
    ladder_factor: float = 0.7
    bisect_steps: int = 2
    max_rungs: int = 8
    descend_after_climb: bool = True
    tolerance: float = 0.01
    noise_z: float = 1.0
    test_every: int = 1


@dataclass
class ProgressiveAdmmPrunerConf(AdmmKnobs):
    """pruner=admm_progressive."""

    _target_: str = "mergeprune.pruner.admm_progressive.ProgressiveAdmmPruner"
    name: str = "admm_progressive"
    targets: list[float] | None = None
    stages: list[Any] | None = None
    pool_size: int = 1


@dataclass
class MagnitudePrunerConf:
    """pruner=magnitude (and magnitude_71x)."""

    _target_: str = "mergeprune.pruner.magnitude.MagnitudePruner"
    _recursive_: bool = False
    name: str = "magnitude"
    granularity: str = "unstructured"
    schedule: str = "iterative"
    scope: str = "layer"
    keep: dict[str, float] | None = None
    target_compression: float | None = None
    proportions: dict[str, float] | None = None
    fraction: float = 0.5
    retrain_epochs: int = 4
    frequency: int = 10
    ramp_epochs: int = 10
    initial_sparsity: float = 0.0
    optimizer: Any = None


@dataclass
class ScheduleConf:
    """pruner.schedule (pruner/schedule/accuracy.yaml)."""

    step: float = 0.05
    min_step: float = 0.0125
    max_step: float = 0.25
    growth: float = 1.5
    slow_at: float = 0.5
    patience: int = 3
    max_steps: int = 150
    finetune_epochs: int = 1
    recovery_epochs: int = 2
    steps_per_epoch: int | None = None
    optimizer: Any = None
    tolerance: float = 0.01
    noise_z: float = 1.0
    normalize: str = "flops"
    test_every: int = 1
    final_epochs: int = 0


@dataclass
class TaylorImportanceConf:
    """pruner.importance=taylor."""

    _target_: str = "mergeprune.pruner.importance.TaylorImportance"
    batches: int = 10
    batch_size: int | None = None


@dataclass
class MagnitudeImportanceConf:
    """pruner.importance=magnitude."""

    _target_: str = "mergeprune.pruner.importance.MagnitudeImportance"


@dataclass
class NeuronPrunerConf:
    """pruner=taylor (and magnitude_neurons): an importance node and the shared schedule."""

    _target_: str = "mergeprune.pruner.neurons.NeuronPruner"
    _recursive_: bool = False
    name: str = "taylor"
    granularity: str = "neurons"
    importance: Any = None  # checked against its own _target_'s schema
    schedule: ScheduleConf = field(default_factory=ScheduleConf)


@dataclass
class VibPrunerConf:
    """pruner=vib: VIBNet in stages of growing KL strength, each read out and judged."""

    _target_: str = "mergeprune.pruner.vib.VibPruner"
    _recursive_: bool = False
    name: str = "vib"
    granularity: str = "neurons"
    kl_factor: float = 1e-5
    kl_growth: float = 2.0
    threshold: float = 0.01
    layer_weights: Any = "flops"
    phase: str = "joint"
    epochs: int = 2
    gate_lr: float = 1e-2
    init: Any = None
    optimizer: Any = None
    finetune_epochs: int = 1
    recovery_epochs: int = 2
    steps_per_epoch: int | None = None
    tolerance: float = 0.01
    noise_z: float = 1.0
    slow_at: float = 0.5
    patience: int = 2
    max_stages: int = 30
    test_every: int = 1


@dataclass
class FinetuneConf:
    """finetune=default."""

    _target_: str = "mergeprune.stages.finetune.Finetune"
    _recursive_: bool = False
    epochs: int = 8
    optimizer: Any = None
    distill_weight: float = 0.5
    temperature: float = 2.0
    alternate: bool = False
    task_weights: dict[str, float] | None = None


COMPONENTS = {"merger": (NoMergerConf, ConcatMergerConf, MtzMergerConf, PamMergerConf),
              "pruner": (NoPrunerConf, AdmmPrunerConf, AdmmSearchPrunerConf, ProgressiveAdmmPrunerConf,
                         MagnitudePrunerConf,
                         NeuronPrunerConf, VibPrunerConf),
              "finetune": (FinetuneConf,)}
PARTS = (TaylorImportanceConf, MagnitudeImportanceConf)  # nodes inside a component's node
BY_TARGET = {cls._target_: cls for group in COMPONENTS.values() for cls in group} | {
    cls._target_: cls for cls in PARTS}
NODES = {"": Config, "teachers": TeachersConf, "evaluate": EvaluateConf, "paths": PathsConf,
         "trainer": TrainerConf, "dataset": DatasetConf}


def register() -> None:
    """Store every schema in Hydra's ConfigStore as `schema_<node>` / `schema_<group>_<module>`.

    They are stored outside any config group, so `mergeprune --help` does not offer them as choices.
    """
    store = ConfigStore.instance()
    for where, cls in NODES.items():
        store.store(name=f"schema_{where or 'config'}", node=cls)
    for group, classes in COMPONENTS.items():
        for cls in classes:
            store.store(name=f"schema_{group}_{cls._target_.rsplit('.', 2)[-2]}", node=cls)


register()
