"""merger=none: no merging; every teacher is pruned and finetuned on its own.

This is the papers' no-merging baseline. Each task is its own part (`parts`), so the pipeline
never calls the merger and carries the teachers through the stages one by one; at evaluation the
parts are placed side by side (`alongside`): cost(S) is the sum of the parts' costs over S, and
each task's outputs are its own part's.
"""

from __future__ import annotations

from collections.abc import Sequence

from mergeprune.context import Built, Context
from mergeprune.merger.assemble import alongside
from mergeprune.models.grouped import GroupedNet


class NoMerger:
    """Keep every teacher apart: one part per task."""

    def __init__(self, name: str = "none"):
        self.name = name

    @staticmethod
    def parts(tasks: Sequence[str]) -> list[list[str]]:
        """One part per task."""
        return [[t] for t in tasks]

    def __call__(self, teachers: Sequence[GroupedNet], ctx: Context | None = None) -> Built:
        """The teachers side by side with no links (what the parts make together at evaluation)."""
        return Built(alongside(teachers), {})
