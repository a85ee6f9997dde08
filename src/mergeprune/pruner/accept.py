"""The accuracy test every pruning schedule judges a step by (noise-aware, the same for any network).

A step is accepted when no task of the network lost more than ``tolerance`` of accuracy against its
reference (the accuracy before pruning), plus ``z`` standard errors of that reference measured on a
validation set of n images: se = sqrt(p (1 - p) / n). With z = 0 the test is the plain tolerance.
On 500 validation images at 99% accuracy one image is 0.2 points and se is 0.44 points, so z = 1
keeps a single unlucky image or two from rejecting a step that did not hurt the task.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from mergeprune.errors import check_number


@dataclass(frozen=True)
class Acceptance:
    """Tolerance on each task's accuracy drop, widened by z standard errors of the validation estimate."""

    tolerance: float = 0.01
    z: float = 1.0
    prefix: str = "pruner"  # the config node named in errors (`<prefix>.tolerance`, `<prefix>.noise_z`)

    def __post_init__(self) -> None:
        check_number(self.tolerance, f"{self.prefix}.tolerance", low=0.0, high=1.0)
        check_number(self.z, f"{self.prefix}.noise_z", low=0.0)

    def allowed_drop(self, reference: float, n: int) -> float:
        """The largest accuracy drop accepted for a task whose reference accuracy is measured on n images."""
        se = math.sqrt(max(reference * (1.0 - reference), 0.0) / max(int(n), 1))
        return self.tolerance + self.z * se

    def broken(self, reference: Mapping[str, float], acc: Mapping[str, float],
               n: Mapping[str, int] | int) -> dict[str, float]:
        """Tasks whose drop exceeds what is allowed, with their drop (empty: the step is accepted)."""
        out = {}
        for task, ref in reference.items():
            size = n if isinstance(n, int) else n[task]
            drop = ref - acc[task]
            if drop > self.allowed_drop(ref, size) + 1e-12:
                out[task] = drop
        return out
