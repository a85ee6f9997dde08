"""pruner=none: keep every weight (the dense reference)."""

from __future__ import annotations

from pathlib import Path

from mergeprune.context import Built, Context
from mergeprune.models.grouped import GroupedNet


class NoPruner:
    """Leave the network dense."""

    def __init__(self, name: str = "none", granularity: str = "unstructured"):
        self.name, self.granularity = name, granularity

    def __call__(self, net: GroupedNet, ctx: Context, tag: str, resume_dir: Path | None = None) -> Built:
        """The network as it is, with an empty report."""
        return Built(net, {})
