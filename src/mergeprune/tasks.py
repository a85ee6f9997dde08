"""Tasks: prediction problems defined from the dataset's class labels, with their loss and accuracy.

Kinds:
- ``attributes``: one +-1 output per listed class (PAM's formulation); loss = logistic (soft margin);
  accuracy = mean attribute accuracy of sign(output).
- ``categorical``: softmax over the listed classes, plus an ``other`` class when ``other: true``
  (samples outside the listed classes are ignored otherwise); accuracy = argmax accuracy.
- ``map``: an arbitrary label map, ``map[label] = class index`` (e.g. parity); softmax over its classes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.classification import BinaryAccuracy, MulticlassAccuracy

from mergeprune.errors import ConfigError

IGNORE = -100  # categorical target of a sample that is outside the task
KINDS = ("attributes", "categorical", "map")


@dataclass(frozen=True)
class Task:
    """One task on the shared input."""

    name: str
    kind: str
    classes: tuple[int, ...] = ()
    other: bool = False
    label_map: tuple[int, ...] = field(default=())

    @property
    def n_outputs(self) -> int:
        """Output units of the task's head."""
        if self.kind == "attributes":
            return len(self.classes)
        if self.kind == "categorical":
            return len(self.classes) + int(self.other)
        return max(self.label_map) + 1

    def targets(self, labels: Tensor) -> Tensor:
        """Per-sample targets from dataset class labels."""
        if self.kind == "attributes":
            cls = torch.as_tensor(self.classes)
            return (labels[:, None] == cls[None, :]).float() * 2 - 1
        if self.kind == "map":
            return torch.as_tensor(self.label_map)[labels]
        lookup = torch.full((int(labels.max()) + 1 if len(labels) else 1,),
                            len(self.classes) if self.other else IGNORE, dtype=torch.long)
        for i, c in enumerate(self.classes):
            if c < len(lookup):
                lookup[c] = i
        return lookup[labels]

    def loss(self, output: Tensor, target: Tensor) -> Tensor:
        """Training loss from labels."""
        if self.kind == "attributes":
            return F.soft_margin_loss(output, target)
        return F.cross_entropy(output, target, ignore_index=IGNORE)

    def distill_loss(self, output: Tensor, teacher: Tensor, temperature: float) -> Tensor:
        """Loss against a teacher's outputs (soft targets at the given temperature)."""
        if self.kind == "attributes":
            soft = torch.sigmoid(teacher / temperature)
            return F.binary_cross_entropy_with_logits(output / temperature, soft) * temperature**2
        soft = F.softmax(teacher / temperature, dim=1)
        logp = F.log_softmax(output / temperature, dim=1)
        return F.kl_div(logp, soft, reduction="batchmean") * temperature**2

    def new_metric(self) -> Metric:
        """A fresh torchmetrics accuracy for this task."""
        if self.kind == "attributes":
            return BinaryAccuracy()
        return MulticlassAccuracy(num_classes=self.n_outputs, average="micro", ignore_index=IGNORE)

    def update_metric(self, metric: Metric, output: Tensor, target: Tensor) -> None:
        """Feed one batch to the task's accuracy (each +-1 attribute counts once for attributes)."""
        if self.kind == "attributes":
            metric.update((output > 0).long().flatten(), (target > 0).long().flatten())
        else:
            metric.update(output, target)

    def describe(self) -> dict[str, Any]:
        """Plain-data definition (hashed into cache keys)."""
        return {"kind": self.kind, "classes": list(self.classes), "other": self.other,
                "map": list(self.label_map)}


def related_classes(step: int) -> list[int]:
    """Digits of task b in the relatedness sweep: 0-4 with the first `step` swapped for 5, 6, ..."""
    step = int(step)
    if not 0 <= step <= 5:
        raise ConfigError(f"relatedness={step}; allowed: 0..5")
    return [5 + i if i < step else i for i in range(5)]


OmegaConf.register_new_resolver("related_classes", related_classes, replace=True)


def build_tasks(cfg: Mapping[str, Any], num_classes: int) -> list[Task]:
    """Tasks from the `tasks` config group, in config order, validated against the dataset's classes."""
    if not cfg:
        raise ConfigError("tasks: at least one task is required (allowed: tasks=split2|split5|overlap3|all10)")
    return [_build_task(str(name), spec, num_classes) for name, spec in cfg.items()]


def _build_task(name: str, spec: Mapping[str, Any], num_classes: int) -> Task:
    """One task from its config entry."""
    key = f"tasks.{name}"
    if "+" in name:
        raise ConfigError(f"{key}: task names may not contain '+' (it joins subset keys)")
    kind = spec.get("kind", "attributes")
    if kind not in KINDS:
        raise ConfigError(f"{key}.kind={kind!r}; allowed: {', '.join(KINDS)}")
    allowed = f"allowed: distinct integers in 0..{num_classes - 1}"
    if kind == "map":
        mapping = _int_list(spec.get("map"), f"{key}.map", allowed)
        if len(mapping) != num_classes or min(mapping) < 0:
            raise ConfigError(f"{key}.map must give a class index >= 0 for each of the {num_classes} labels")
        if len(set(mapping)) < 2:
            raise ConfigError(f"{key}.map must use at least two classes")
        return Task(name, kind, label_map=tuple(mapping))
    classes = _int_list(spec.get("classes"), f"{key}.classes", allowed)
    bad = [c for c in classes if not 0 <= c < num_classes]
    if bad or len(set(classes)) != len(classes) or not classes:
        raise ConfigError(f"{key}.classes={classes} (bad: {bad or 'duplicates/empty'}); {allowed}")
    other = bool(spec.get("other", False))
    if kind == "categorical" and len(classes) + int(other) < 2:
        raise ConfigError(f"{key}: a categorical task needs at least two classes (or other: true)")
    return Task(name, kind, tuple(classes), other)


def _int_list(value: Any, key: str, allowed: str) -> list[int]:
    """A config value that must be a list of integers."""
    if not isinstance(value, Sequence) or isinstance(value, str):
        raise ConfigError(f"{key} must be a list; {allowed}")
    try:
        return [int(v) for v in value]
    except (TypeError, ValueError):
        raise ConfigError(f"{key}={list(value)} must hold integers; {allowed}") from None
