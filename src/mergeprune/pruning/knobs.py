"""Checks of the pruners' shared knobs (keep ratios, optimizer settings) with one-line errors."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from mergeprune.errors import ConfigError, check_choice, check_number

OPTIMIZERS = ("adam", "sgd")
SCHEDULES = ("none", "cosine", "step")


def plain(node: Any) -> Any:
    """A config node (DictConfig / ListConfig) as plain Python data; anything else unchanged."""
    if isinstance(node, (DictConfig, ListConfig)):
        return OmegaConf.to_container(node, resolve=True)
    return node


def check_ratios(values: Any, key: str) -> dict[str, float]:
    """A dict layer -> keep ratio in (0, 1]."""
    if not isinstance(values, Mapping) or not values:
        raise ConfigError(f"{key}={values}; allowed: a non-empty dict layer -> keep ratio in 0..1")
    out = {}
    for name, r in values.items():
        ok = isinstance(r, (int, float)) and not isinstance(r, bool) and 0 < r <= 1
        if not ok:
            raise ConfigError(f"{key}.{name}={r}; allowed: 0..1 (a kept fraction > 0)")
        out[str(name)] = float(r)
    return out


def check_optimizer(cfg: Any, key: str) -> dict[str, Any]:
    """An optimizer dict {name, lr, weight_decay, momentum, schedule} with valid values."""
    cfg = plain(cfg)
    if not isinstance(cfg, Mapping):
        raise ConfigError(f"{key}={cfg}; allowed: a dict with name, lr, weight_decay, schedule")
    cfg = dict(cfg)
    check_choice(cfg.get("name", "adam"), f"{key}.name", OPTIMIZERS)
    check_number(cfg.get("lr", 1e-3), f"{key}.lr", low=0.0, strict=True)
    check_number(cfg.get("weight_decay", 0.0), f"{key}.weight_decay", low=0.0)
    check_number(cfg.get("momentum", 0.9), f"{key}.momentum", low=0.0, high=1.0)
    check_choice(cfg.get("schedule", "none"), f"{key}.schedule", SCHEDULES)
    return cfg
