"""merger=concat: every neuron of every teacher in one group shared by all tasks.

Cross-teacher connections are allowed but start at zero, so before any training each task's
outputs equal its teacher's (the no-regrouping baseline of the PAM code). Every task subset then
costs as much as all tasks together.
"""

from __future__ import annotations

from collections.abc import Sequence

from mergeprune.context import Built, Context, together
from mergeprune.merger.assemble import assemble, side_by_side
from mergeprune.models.grouped import GroupedNet


class ConcatMerger:
    """Concatenate the teachers into one shared group per layer."""

    def __init__(self, name: str = "concat"):
        self.name = name

    parts = staticmethod(together)

    def __call__(self, teachers: Sequence[GroupedNet], ctx: Context | None = None) -> Built:
        sources = side_by_side(teachers)
        full = (1 << len(teachers)) - 1
        return Built(assemble(teachers, sources, [[full] * len(layer) for layer in sources]), {})
