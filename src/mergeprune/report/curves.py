"""Pruning trajectories read out (pure functions, no I/O): for a run and a task subset, the frontier
of cost against the worst validation drop, the cost at matched accuracy with the points it chose,
and statistics over seeds.

A drop is in accuracy points below the task's teacher on validation (results.json `reference`); a
subset's drop is the worst (largest) over its tasks. A run's trajectory has one curve per part: one
for a merged network (`lo+hi`), one per teacher with merger=none (`lo`, `hi`). The cost of a subset
is the sum over the parts holding its tasks, each at its own point, so a part's cheapest point
within a drop d can be chosen independently of the others: the sum of those minima is the exact
cheapest combination whose worst drop is at most d.

Matched accuracy follows a Rule: each task may lose `points` against its teacher plus `noise_z`
standard errors of the teacher's validation accuracy, the acceptance test the pruners stop by
(pruner/accept.py); noise_z = 0 is the plain tolerance.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from mergeprune.pruner.accept import Acceptance
from mergeprune.report.runs import Run
from mergeprune.report.values import number

EPS = 1e-9  # drops are compared with this slack, as the final-accuracy tolerance is
CURVE_METRICS = ("flops", "params")
Point = dict[str, Any]
Front = list[tuple[float, float]]  # (drop in points, cost): drops ascending, costs descending


@dataclass(frozen=True)
class Piece:
    """The share of a subset one part holds: the part's key, those tasks and their subset key."""

    part: str
    tasks: tuple[str, ...]
    key: str


@dataclass(frozen=True)
class Rule:
    """Matched accuracy: a task's drop may reach `points` plus `noise_z` standard errors of its teacher."""

    points: float = 1.0
    noise_z: float = 0.0

    def allowed(self, ref: float, n: int | None) -> float:
        """Largest drop (points) for a task whose teacher scores ref on n validation images (n unknown: plain)."""
        if not n or not self.noise_z:
            return self.points
        return 100 * Acceptance(self.points / 100, self.noise_z, prefix="report").allowed_drop(ref, n)

    def words(self) -> str:
        """'1 point + 1 standard error', as the page states the rule."""
        base = f"{self.points:g} point{'' if self.points == 1 else 's'}"
        errors = f"{self.noise_z:g} standard error{'' if self.noise_z == 1 else 's'}"
        return base if not self.noise_z else f"{base} + {errors}"


def as_rule(tolerance: float | Rule) -> Rule:
    """A Rule from a plain tolerance in points, or the rule itself."""
    return tolerance if isinstance(tolerance, Rule) else Rule(float(tolerance))


@dataclass
class Matched:
    """The cheapest points meeting the tolerance on every task of a subset, chosen on validation."""

    subset: str
    cost: float
    drop: float
    steps: dict[str, int]
    tried: dict[str, int | None]
    val: dict[str, float]
    test: dict[str, float | None]


@dataclass
class SeedStat:
    """Matched cost over a method's seeds: mean, sample std and CV over the seeds that reached it."""

    n_runs: int
    n_reached: int
    mean: float | None
    std: float | None
    cv: float | None


@dataclass
class Band:
    """Frontiers of several seeds on a common grid of drops: mean, min and max cost at each."""

    drops: list[float]
    mean: list[float]
    low: list[float]
    high: list[float]


def curve_metric(metric: str) -> str:
    """The trajectory's cost metric for a report metric (trajectories count flops and params only)."""
    return metric.replace("nonzero_", "")


def trajectory(run: Run) -> dict[str, list[Point]]:
    """The run's pruning curve per part ({} when it records none)."""
    traj = run.data.get("trajectory")
    if not isinstance(traj, dict):
        return {}
    return {str(part): [p for p in points if isinstance(p, dict)]
            for part, points in traj.items() if isinstance(points, list) and points}


def reference(run: Run) -> dict[str, float]:
    """Validation accuracy of each task's teacher, the accuracy matched against."""
    ref = run.data.get("reference")
    if not isinstance(ref, dict):
        return {}
    values = {str(t): number(a) for t, a in ref.items()}
    return {t: a for t, a in values.items() if a is not None}


def has_curves(run: Run) -> bool:
    """Whether the run records a trajectory and the reference accuracies to read it with."""
    return bool(trajectory(run)) and bool(reference(run))


def join_tasks(tasks: Iterable[str], order: Sequence[str]) -> str:
    """The subset key of some tasks: their names joined by '+' in the job's task order."""
    chosen = set(tasks)
    return "+".join(t for t in order if t in chosen)


def pieces(run: Run, subset: str) -> list[Piece] | None:
    """The parts holding the subset's tasks (None unless every task is held by exactly one part)."""
    wanted = subset.split("+")
    order = run.tasks + [t for t in wanted if t not in run.tasks]
    found, held = [], []
    for part in trajectory(run):
        mine = [t for t in part.split("+") if t in wanted]
        if mine:
            key = join_tasks(mine, order)
            found.append(Piece(part, tuple(key.split("+")), key))
            held += mine
    return found if sorted(held) == sorted(wanted) else None


def task_drops(point: Point, tasks: Iterable[str], ref: dict[str, float]) -> dict[str, float] | None:
    """Validation drop (points) of a point per task (None where one is unknown)."""
    val = point.get("val") if isinstance(point.get("val"), dict) else {}
    drops = {}
    for task in tasks:
        acc = number(val.get(task))
        if acc is None or task not in ref:
            return None
        drops[task] = 100 * (ref[task] - acc)
    return drops


def point_drop(point: Point, tasks: Iterable[str], ref: dict[str, float]) -> float | None:
    """Worst validation drop (points) of a point over the tasks (None where one is unknown)."""
    drops = task_drops(point, tasks, ref)
    return max(drops.values()) if drops else None


def allowances(run: Run, rule: Rule) -> dict[str, float]:
    """The largest validation drop (points) the rule allows each of the run's teachers."""
    return {t: rule.allowed(p, run.val_size) for t, p in reference(run).items()}


def meets(point: Point, tasks: Iterable[str], ref: dict[str, float], allowed: dict[str, float]) -> bool:
    """Whether every task of the point is within its allowance of its teacher on validation."""
    drops = task_drops(point, tasks, ref) or {}
    return bool(drops) and all(d <= allowed[t] + EPS for t, d in drops.items())


def point_cost(point: Point, key: str, metric: str) -> float | None:
    """Cost of a subset key at a point."""
    costs = point.get("cost") if isinstance(point.get("cost"), dict) else {}
    entry = costs.get(key)
    return number(entry.get(metric)) if isinstance(entry, dict) else None


def candidates(run: Run, piece: Piece, metric: str) -> list[tuple[float, float, Point]]:
    """(drop, cost, point) of every point of the piece's part where both are known."""
    ref, out = reference(run), []
    for point in trajectory(run).get(piece.part, []):
        drop, cost = point_drop(point, piece.tasks, ref), point_cost(point, piece.key, metric)
        if drop is not None and cost is not None:
            out.append((drop, cost, point))
    return out


def pareto(pairs: Iterable[tuple[float, float]]) -> Front:
    """The (drop, cost) pairs no other pair beats: ascending drop, strictly falling cost."""
    front: Front = []
    for drop, cost in sorted(pairs):
        if not front or cost < front[-1][1]:
            front.append((drop, cost))
    return front


def front_at(front: Front, drop: float) -> float | None:
    """The frontier's cost at a drop: the cheapest entry with at most that drop (None if none)."""
    costs = [c for d, c in front if d <= drop + EPS]
    return costs[-1] if costs else None


def combine(fronts: list[Front]) -> Front:
    """The frontier of a sum of parts: at every part's drop, the sum of each part's frontier."""
    totals = []
    for drop in sorted({d for front in fronts for d, _ in front}):
        costs = [front_at(front, drop) for front in fronts]
        if all(c is not None for c in costs):
            totals.append((drop, sum(costs)))
    return pareto(totals)


def frontier(run: Run, subset: str, metric: str = "flops") -> Front:
    """Cheapest cost of a subset against the worst validation drop allowed ([] when unknown)."""
    found = pieces(run, subset)
    if not found:
        return []
    fronts = [pareto((d, c) for d, c, _ in candidates(run, p, metric)) for p in found]
    return combine(fronts) if all(fronts) else []


def cheapest(options: list[tuple[float, float, Point]]) -> tuple[float, float, Point]:
    """The cheapest (drop, cost, point); ties go to the smaller drop, then the earlier step."""
    return min(options, key=lambda o: (o[1], o[0], number(o[2].get("step")) or 0))


def matched(run: Run, subset: str, tolerance: float | Rule,
            metric: str = "flops") -> Matched | None:
    """The subset's cost at matched accuracy and the points chosen (None when not reached)."""
    found = pieces(run, subset)
    if not found:
        return None
    ref, allowed = reference(run), allowances(run, as_rule(tolerance))
    chosen = []
    for piece in found:
        ok = [o for o in candidates(run, piece, metric) if meets(o[2], piece.tasks, ref, allowed)]
        if not ok:
            return None
        chosen.append((piece, cheapest(ok)))
    val, test = {}, {}
    for piece, (_, _, point) in chosen:
        tested = point.get("test") if isinstance(point.get("test"), dict) else {}
        for task in piece.tasks:
            val[task] = float(point["val"][task])
            test[task] = number(tested.get(task))
    return Matched(subset, sum(o[1] for _, o in chosen), max(o[0] for _, o in chosen),
                   {p.part: int(o[2].get("step", 0)) for p, o in chosen},
                   {p.part: o[2].get("tried") for p, o in chosen}, val, test)


def seed_stat(values: Sequence[float | None]) -> SeedStat:
    """Mean, sample std (0 for one seed) and CV (std / mean) of the values that are numbers."""
    nums = [v for v in values if v is not None]
    if not nums:
        return SeedStat(len(values), 0, None, None, None)
    mean = statistics.fmean(nums)
    std = statistics.stdev(nums) if len(nums) > 1 else 0.0
    return SeedStat(len(values), len(nums), mean, std, std / mean if mean else None)


def matched_stat(runs: Iterable[Run], subset: str, tolerance: float | Rule,
                 metric: str = "flops") -> SeedStat:
    """Matched cost of a subset over the runs that record curves (one value per seed)."""
    found = [matched(r, subset, tolerance, metric) for r in runs if has_curves(r)]
    return seed_stat([m.cost if m else None for m in found])


def band(fronts: list[Front], top: float) -> Band | None:
    """Mean, min and max over frontiers at every drop from where all are defined up to `top`."""
    fronts = [f for f in fronts if f]
    if not fronts:
        return None
    start = max(f[0][0] for f in fronts)
    drops = sorted({d for f in fronts for d, _ in f if start <= d <= top} | {start})
    if top > drops[-1]:
        drops.append(top)
    rows = [[front_at(f, d) for f in fronts] for d in drops]
    return Band(drops, [statistics.fmean(r) for r in rows], [min(r) for r in rows],
                [max(r) for r in rows])
