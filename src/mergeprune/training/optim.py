"""Optimizers and learning-rate schedules from config nodes.

An optimizer node names a `torch.optim` class and its arguments, plus the schedule of the phase:

    {_target_: torch.optim.Adam, lr: 1.0e-3, weight_decay: 0.0, schedule: cosine}

`schedule` (none | cosine | step, with `step_size` and `gamma` for step) is taken out before the
optimizer is instantiated: a schedule's length is the training phase's, known only when it runs.
Every other key is an argument of the optimizer class, with torch's defaults.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf

from mergeprune.errors import ConfigError, check_choice, check_int, check_number

SCHEDULES = ("none", "cosine", "step")
SCHEDULE_KEYS = ("schedule", "step_size", "gamma")


def adam(lr: float) -> dict[str, Any]:
    """The node of a plain Adam optimizer at a learning rate, no schedule."""
    return {"_target_": "torch.optim.Adam", "lr": lr}


def split(node: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the optimizer's node, the schedule settings) of an optimizer node."""
    plain = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node)
    schedule = {k: plain.pop(k) for k in SCHEDULE_KEYS if k in plain}
    return plain, schedule


def check_optimizer(node: Any, key: str) -> dict[str, Any]:
    """An optimizer node with valid values, as a plain dict (one-line ConfigError naming the key)."""
    if not isinstance(node, (Mapping, DictConfig)):
        raise ConfigError(f"{key}={node}; allowed: a node {{_target_: torch.optim.<class>, lr: ..., "
                          "schedule: none|cosine|step}")
    args, schedule = split(node)
    if "name" in args:
        raise ConfigError(f"{key}.name={args['name']}; allowed: no name (optimizers are config "
                          f"nodes: {key}._target_=torch.optim.Adam or another torch.optim class)")
    target = args.get("_target_")
    try:
        cls = get_class(str(target))
    except Exception:  # noqa: BLE001 - any failure to import means the same thing here
        cls = None
    if not (isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer)):
        raise ConfigError(f"{key}._target_={target}; allowed: a torch.optim optimizer class, "
                          "e.g. torch.optim.Adam or torch.optim.SGD")
    accepted = set(inspect.signature(cls).parameters) - {"params"}
    unknown = sorted(set(args) - accepted - {"_target_"})
    if unknown:
        raise ConfigError(f"{key}.{unknown[0]}: not an argument of {target}; allowed: "
                          f"{', '.join(sorted(accepted | set(SCHEDULE_KEYS)))}")
    check_number(args.get("lr", 1e-3), f"{key}.lr", low=0.0, strict=True)
    check_number(args.get("weight_decay", 0.0), f"{key}.weight_decay", low=0.0)
    check_number(args.get("momentum", 0.0), f"{key}.momentum", low=0.0, high=1.0)
    check_choice(schedule.get("schedule", "none"), f"{key}.schedule", SCHEDULES)
    if "step_size" in schedule:
        check_int(schedule["step_size"], f"{key}.step_size", 1)
    check_number(schedule.get("gamma", 0.1), f"{key}.gamma", low=0.0, strict=True)
    return args | schedule


def build_optimizer(params: Iterable[torch.nn.Parameter], node: Mapping[str, Any], epochs: int,
                    interval: str = "epoch") -> Any:
    """The optimizer a node describes and its schedule over `epochs` (Lightning's return format); with
    interval="step", `epochs` counts optimizer steps."""
    args, schedule = split(node)
    opt = instantiate(args, _partial_=True)(params)
    name = schedule.get("schedule", "none")
    if name == "none" or epochs <= 0:
        return opt
    if name == "cosine":
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(epochs, 1))
    elif name == "step":
        step = int(schedule.get("step_size", max(1, math.ceil(epochs / 3))))
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=step, gamma=float(schedule.get("gamma", 0.1)))
    else:
        raise ConfigError(f"optimizer.schedule={name!r}; allowed: {', '.join(SCHEDULES)}")
    return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": interval}}
