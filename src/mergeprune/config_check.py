"""Start-up checks of a composed config against its schema (`config_schema`, `component_schema`).

Unknown keys are refused: Hydra refuses `foo=1` for a key that does not exist, but `+foo=1` adds
one, which would change the job's cache key without changing what it computes. Every node with a
schema is checked for its keys, the type of every value and, for the nodes the pipeline reads
itself, the ranges the schema gives; a component's ranges are checked by its constructor.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any, Union

from omegaconf import DictConfig, ListConfig, OmegaConf

from mergeprune.component_schema import BY_TARGET, COMPONENTS, NODES
from mergeprune.config_schema import STAGES
from mergeprune.errors import ConfigError
from mergeprune.training.optim import check_optimizer

__all__ = ["STAGES", "check_config", "check_node"]


def check_config(cfg: DictConfig) -> None:
    """Fail on the first unknown key or wrongly typed or out-of-range value, before anything is built."""
    for where, schema in NODES.items():
        node = _node(cfg, where)
        if node is not None:
            check_node(node, schema, where)
    for group in COMPONENTS:
        node = _node(cfg, group)
        schema = BY_TARGET.get(str(node.get("_target_"))) if node is not None else None
        if schema is not None:
            check_node(node, schema, group, ranges=False)
    check_optimizer(cfg.teachers.optimizer, "teachers.optimizer")


def check_node(node: Mapping[str, Any], schema: type, where: str, ranges: bool = True) -> None:
    """Check a node's keys, value types and (with `ranges`) the schema's ranges."""
    fields = {f.name: f for f in dataclasses.fields(schema)}
    unknown = sorted(str(k) for k in node.keys() if k not in fields)
    if unknown:
        name = f"{where}.{unknown[0]}" if where else unknown[0]
        raise ConfigError(f"{name}: unknown key (added with +{name}=...?); allowed keys"
                          f"{' of ' + where if where else ''}: {', '.join(sorted(fields))}")
    hints = typing.get_type_hints(schema)
    for name, f in fields.items():
        if name not in node:
            continue
        key = f"{where}.{name}" if where else name
        if dataclasses.is_dataclass(hints[name]):
            if isinstance(node[name], Mapping) and where:  # a component's nested node
                check_node(node[name], hints[name], key, ranges)
            continue  # the config's own nested nodes are checked as nodes of their own
        part = BY_TARGET.get(str(node[name].get("_target_"))) if isinstance(node[name], Mapping) else None
        if part is not None:
            check_node(node[name], part, key, ranges)
            continue
        value = node[name]
        if isinstance(value, (DictConfig, ListConfig)):
            value = OmegaConf.to_container(value, resolve=True)
        meta = dict(f.metadata) if ranges else {}
        _check_value(value, hints[name], f"{where}.{name}" if where else name, meta)


def _check_value(value: Any, tp: Any, key: str, meta: Mapping[str, Any]) -> None:
    """Raise a one-line ConfigError unless value has type tp and lies in the field's range."""
    choices = meta.get("choices")
    if choices and isinstance(value, list):
        bad = [v for v in value if v not in choices]
        if bad or not value:
            raise ConfigError(f"{key}={value} (bad: {bad or 'empty'}); allowed: any of {list(choices)}")
        return
    if not _type_ok(value, tp) or not _in_range(value, meta):
        raise ConfigError(f"{key}={value}; allowed: {_describe(tp, meta)}")


def _type_ok(value: Any, tp: Any) -> bool:
    """Whether value fits the annotation (int, float, bool, str, Optional, list[...], dict[...], Any)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return True
    if origin in (Union, types.UnionType):
        return any(_type_ok(value, a) for a in args)
    if tp is type(None):
        return value is None
    if origin is list:
        return isinstance(value, list) and all(_type_ok(v, args[0]) for v in value)
    if origin is dict:
        return isinstance(value, dict) and all(_type_ok(v, args[1]) for v in value.values())
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, tp)


def _in_range(value: Any, meta: Mapping[str, Any]) -> bool:
    """Whether a number lies within the field's low..high (None and non-numbers pass)."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return value is None or not meta.get("choices") or value in meta["choices"]
    low, high = meta.get("low"), meta.get("high")
    if low is not None and (value < low or (meta.get("strict") and value == low)):
        return False
    return high is None or value <= high


def _describe(tp: Any, meta: Mapping[str, Any]) -> str:
    """What a field allows, in words ('an integer >= 0', 'null or a number in 0..1', ...)."""
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (Union, types.UnionType) and type(None) in args:
        inner = next(a for a in args if a is not type(None))
        return f"null or {_describe(inner, meta)}"
    if meta.get("choices"):
        choices = ", ".join(meta["choices"])
        return f"a list of any of {choices}" if typing.get_origin(tp) is list else f"one of {choices}"
    low, high = meta.get("low"), meta.get("high")
    bound = (f" in {low}..{high}" if low is not None and high is not None
             else f" {'>' if meta.get('strict') else '>='} {low}" if low is not None
             else f" <= {high}" if high is not None else "")
    words = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}
    if tp in words:
        return words[tp] + bound
    plural = {int: "integers", float: "numbers", bool: "booleans", str: "strings"}
    if typing.get_origin(tp) is list:
        return f"a list of {plural.get(args[0], 'values')}"
    if typing.get_origin(tp) is dict:
        return f"a map to {plural.get(args[1], 'values')}"
    return str(tp)


def _node(cfg: Mapping[str, Any], where: str) -> Mapping[str, Any] | None:
    """The sub-config at a dotted path, or None if absent or not a mapping."""
    node: Any = cfg
    for part in filter(None, where.split(".")):
        node = node.get(part) if isinstance(node, Mapping) else None
    return node if isinstance(node, Mapping) else None
