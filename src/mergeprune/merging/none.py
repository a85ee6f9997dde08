"""merger=none: the teachers side by side, one group per task and no links between them.

This is the papers' no-merging baseline: cost(S) is the sum of the teachers' costs over S, and
each task's outputs equal its teacher's.
"""

from __future__ import annotations

from collections.abc import Sequence

from mergeprune.context import Context
from mergeprune.merging.assemble import assemble, side_by_side
from mergeprune.models.grouped import GroupedNet


class NoMerge:
    """Place the teachers side by side."""

    def __init__(self, name: str = "none"):
        self.name = name

    separate = True  # with no merging, prune and finetune each teacher separately

    def __call__(self, teachers: Sequence[GroupedNet], ctx: Context | None = None) -> GroupedNet:
        sources = side_by_side(teachers)
        return assemble(teachers, sources, [[1 << k for k, _ in layer] for layer in sources])
