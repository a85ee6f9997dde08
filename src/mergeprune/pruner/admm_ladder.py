"""The search for the keep scale of pruner=admm_neurons: a geometric ladder, then bisection in log s.

A scale s gives every layer the budget min(1, s * ratio_l) (`counts_of(s)`, monotone in s). The
search tries s = 1, then walks down a geometric ladder (s *= ``ladder_factor``) while rungs are
accepted; if s = 1 itself is rejected it climbs instead (s /= ``ladder_factor``) until a rung is
accepted or the budget keeps the network whole (``ceiling``: the unpruned network, accepted by
definition). A trained rung accepted on the climb is a new warm start, from which the budgets
rejected on the way up may now pass (a rung then removes only the neurons between two budgets), so
the search walks down the ladder again from it (phase ``descend``), retrying those budgets, while
rungs are accepted. Then it bisects in log s between the smallest accepted and the largest rejected
scale for ``bisect_steps`` trained steps. ``max_rungs`` caps the trained ladder rungs (down, up, and
down again). ``descend_after_climb: false`` skips the descent (the search before 2026-12-06).

A scale whose per-layer budget equals one already judged gets that verdict without training
(``trained: false``, ``same_as``), so rungs that round to the same counts cost nothing; only the
descent after a climb retrains budgets rejected before (from a larger warm start). `stopped` says
how the ladder ended: ``bracketed`` (an accepted and a rejected rung one ladder step apart;
bisection follows), ``floor`` (the budget of one unit per layer was accepted) or ``max_rungs``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

Counts = Mapping[str, int]
FREE_STEPS = 4  # bisection ends after this many untrained steps in a row (no new budget in between)
Judge = Callable[[float, Counts, str], tuple[bool, dict[str, Any]]]


@dataclass
class Trial:
    """One scale tried: its budget, its verdict, whether it was trained, and what the judge said."""

    scale: float
    phase: str
    counts: dict[str, int]
    accepted: bool
    trained: bool
    details: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """The trial as plain data (for the report)."""
        return {"scale": self.scale, "phase": self.phase, "counts": dict(self.counts),
                "accepted": self.accepted, "trained": self.trained, **self.details}


@dataclass
class ScaleSearch:
    """Ladder + bisection over the keep scale; `judge` trains and tests one budget."""

    counts_of: Callable[[float], dict[str, int]]
    is_whole: Callable[[Counts], bool]
    judge: Judge
    ceiling: float
    ladder_factor: float = 0.7
    bisect_steps: int = 2
    max_rungs: int = 8
    descend_after_climb: bool = True
    trials: list[Trial] = field(default_factory=list)
    stopped: str = ""

    def run(self, start: float = 1.0) -> float:
        """Search from `start`; returns the chosen (smallest accepted) scale."""
        rejected: float | None
        if self._try(start, "ladder"):
            accepted, rejected = self._descend(start, "ladder")
        else:
            accepted, rejected = self._climb(start)
            if self.descend_after_climb and self.trials[-1].trained and self.trials[-1].accepted:
                accepted, rejected = self._descend(accepted, "descend", below=rejected)
        if rejected is not None:
            accepted = self._bisect(accepted, rejected)
        return accepted

    def trained(self, phase: str | None = None) -> int:
        """Trained trials so far (of one phase, or of the ladder's three walks for 'rungs')."""
        phases = ("ladder", "climb", "descend") if phase == "rungs" else (phase,)
        return sum(t.trained and (phase is None or t.phase in phases) for t in self.trials)

    def _descend(self, accepted: float, phase: str,
                 below: float | None = None) -> tuple[float, float | None]:
        """Walk down while rungs are accepted; returns (smallest accepted, first rejected; `below`
        when no rung was tried)."""
        floor, start = self.counts_of(0.0), accepted
        while True:
            if self.counts_of(accepted) == floor:
                self.stopped = "floor"
                return accepted, None
            if self.trained("rungs") >= self.max_rungs:
                self.stopped = "max_rungs"
                return accepted, below if accepted == start else None
            scale = accepted * self.ladder_factor
            if not self._try(scale, phase):
                self.stopped = "bracketed"
                return accepted, scale
            accepted = scale

    def _climb(self, rejected: float) -> tuple[float, float]:
        """Walk up from a rejected start until a rung is accepted; `ceiling` (the whole network) ends it."""
        while self.trained("rungs") < self.max_rungs:
            scale = min(rejected / self.ladder_factor, self.ceiling)
            if self._try(scale, "climb"):
                self.stopped = "bracketed"
                return scale, rejected
            rejected = scale
        self.stopped = "max_rungs"
        self._try(self.ceiling, "climb")
        return self.ceiling, rejected

    def _bisect(self, accepted: float, rejected: float) -> float:
        """Bisect in log s for `bisect_steps` trained steps; returns the smallest accepted scale."""
        free = 0  # steps to budgets already judged narrow the bracket at no cost, a few in a row
        while self.trained("bisect") < self.bisect_steps and free < FREE_STEPS:
            mid = math.sqrt(accepted * rejected)
            if self._try(mid, "bisect"):
                accepted = mid
            else:
                rejected = mid
            free = 0 if self.trials[-1].trained else free + 1
        return accepted

    def _try(self, scale: float, phase: str) -> bool:
        """The verdict on one scale: the latest one for a budget already judged (the descent after a
        climb reuses only acceptances), true for the whole network."""
        counts = self.counts_of(scale)
        retry = phase == "descend"  # rejections came from an earlier, larger warm start
        same = next((t for t in reversed(self.trials)
                     if t.counts == counts and (t.accepted or not retry)), None)
        if same is not None:
            details = {k: v for k, v in same.details.items() if k in ("val", "flops", "live")}
            self.trials.append(Trial(scale, phase, counts, same.accepted, False,
                                     {**details, "same_as": same.scale}))
        elif self.is_whole(counts):
            self.trials.append(Trial(scale, phase, counts, True, False, {"whole": True}))
        else:
            ok, details = self.judge(scale, counts, phase)
            self.trials.append(Trial(scale, phase, counts, ok, True, details))
        return self.trials[-1].accepted
