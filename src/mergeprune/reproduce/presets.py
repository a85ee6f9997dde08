"""The reproduction presets: every conf/experiment/<name>.yaml with a `preset:` block, in the order
the results page lists them, with what each shows, how its section is written (its kind) and the
papers' numbers it is set against. The jobs ignore that block; only this driver reads it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mergeprune.report.curves import Rule

TOLERANCE = 1.0  # accuracy points a task may lose against its teacher (the report's default)
NOISE_Z = 1.0  # and standard errors of the teacher's validation accuracy: the pruners' noise_z
RULE = Rule(TOLERANCE, NOISE_Z)  # matched accuracy as the pruners accept a step (pruner/accept.py)
PLAIN = Rule(TOLERANCE)  # the tolerance alone, shown beside each check
REPORT_ARGS = ["--tolerance", str(TOLERANCE), "--noise-z", str(NOISE_Z)]  # mergeprune-report by RULE
# the config folder the jobs read (as mergeprune.cli finds it)
CONF_DIR = Path(os.environ.get("MERGEPRUNE_CONF", Path(__file__).resolve().parents[3] / "conf"))
KINDS = ("admm", "mergers", "grouping", "alpha", "relatedness", "variant")


@dataclass(frozen=True)
class Preset:
    """One reproduction preset: what it shows, and how its section of the page is written."""

    name: str
    what: str
    kind: str  # admm | mergers | grouping | alpha | relatedness | variant
    order: float = float("inf")  # place on the page
    paper: dict[str, float] = field(default_factory=dict)  # the papers' numbers, by method
    target: dict[str, dict[str, float]] = field(default_factory=dict)  # what a check requires
    base: str = ""  # variant: the preset whose runs it is set beside


def preset_of(path: Path) -> Preset | None:
    """The preset an experiment config describes (None when it has no `preset:` block)."""
    block: Any = (yaml.safe_load(path.read_text()) or {}).get("preset")
    if block is None:
        return None
    if not isinstance(block, dict) or block.get("kind") not in KINDS or not block.get("what"):
        raise ValueError(f"{path}: preset needs `what` and `kind` (one of {', '.join(KINDS)}); "
                         f"got {block!r}")
    if block["kind"] == "variant" and not block.get("base"):
        raise ValueError(f"{path}: a variant preset needs `base`, the preset it is set beside")
    return Preset(path.stem, str(block["what"]), str(block["kind"]),
                  float(block.get("order", float("inf"))), dict(block.get("paper") or {}),
                  dict(block.get("target") or {}), str(block.get("base") or ""))


def load_presets(conf_dir: Path = CONF_DIR) -> list[Preset]:
    """The presets of every experiment config below conf_dir, by `order`, then by name."""
    found = (preset_of(p) for p in sorted((conf_dir / "experiment").glob("*.yaml")))
    return sorted((p for p in found if p is not None), key=lambda p: (p.order, p.name))


PRESETS = load_presets()
BY_NAME = {p.name: p for p in PRESETS}


def planned_jobs(name: str, conf_dir: Path = CONF_DIR) -> int:
    """How many jobs a preset's sweep defines: the product of its sweeper's comma lists."""
    config = yaml.safe_load((conf_dir / "experiment" / f"{name}.yaml").read_text()) or {}
    params = ((config.get("hydra") or {}).get("sweeper") or {}).get("params") or {}
    n = 1
    for value in params.values():
        n *= len(str(value).split(","))
    return n
