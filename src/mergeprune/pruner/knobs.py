"""Checks of the pruners' shared knobs (keep ratios) with one-line errors."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from mergeprune.errors import ConfigError


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
