"""What may be compared and how: comparisons (same dataset, tasks and model), methods and their
order, the accuracy tolerance and why a run is left out, and the headline cost ratios between
the mergers of one (pruner, granularity) family.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from mergeprune.report.curves import Rule
from mergeprune.report.runs import Method, Run
from mergeprune.report.values import (
    accuracy,
    cost,
    fmt_count,
    fmt_pct,
    fmt_points,
    mean_std,
    present,
    teacher_accuracy,
)

MERGER_ORDER = ("none", "concat", "mtz", "pam")
METRIC_NAMES = {"flops": "FLOPs", "params": "parameters", "nonzero_flops": "non-zero FLOPs",
                "nonzero_params": "non-zero parameters"}


@dataclass
class Options:
    """What the report is asked for."""

    dirs: list[str]
    out: Path
    tolerance: float = 1.0
    metric: str = "flops"
    noise_z: float = 1.0  # matched accuracy also allows this many standard errors (pruner/accept.py)

    @property
    def rule(self) -> Rule:
        """The matched-accuracy rule of the trajectories: the tolerance plus noise_z standard errors."""
        return Rule(self.tolerance, self.noise_z)


# ----------------------------------------------------------------------------- comparisons


def subset_order(tasks: tuple[str, ...]) -> list[str]:
    """Keys of every non-empty task subset: singletons first, then by size (task order within)."""
    masks = sorted(range(1, 1 << len(tasks)), key=lambda b: (bin(b).count("1"), b))
    return ["+".join(t for i, t in enumerate(tasks) if b >> i & 1) for b in masks]


def method_sort_key(method: Method) -> tuple:
    """Order methods by pruner, granularity, then merger (none, concat, mtz, pam, others)."""
    merger, pruner, gran = method
    rank = MERGER_ORDER.index(merger) if merger in MERGER_ORDER else len(MERGER_ORDER)
    return pruner, gran, rank, merger


def method_label(method: Method) -> str:
    """'merger/pruner/granularity' (granularity left out when unknown)."""
    return "/".join(p for p in method if p != "-")


@dataclass
class Comparison:
    """Runs that may be compared: the same dataset, task list and model."""

    dataset: str
    tasks: tuple[str, ...]
    model: str
    runs: list[Run]
    slug: str = ""

    @property
    def title(self) -> str:
        """Human-readable name."""
        return f"{self.dataset} / tasks {'+'.join(self.tasks)} / {self.model}"

    def subsets(self) -> list[str]:
        """Subset keys in canonical order, plus any other keys the runs' costs use."""
        keys = subset_order(self.tasks)
        extra = {s for r in self.runs for s in (r.data.get("cost") or {}) if s not in keys}
        return keys + sorted(extra)

    def methods(self) -> dict[Method, list[Run]]:
        """Finished runs grouped by method, in method order."""
        groups: dict[Method, list[Run]] = {}
        for run in self.runs:
            if run.ok:
                groups.setdefault(run.method, []).append(run)
        return {m: groups[m] for m in sorted(groups, key=method_sort_key)}


def slugify(text: str) -> str:
    """A file-name-safe version of text."""
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-") or "comparison"


def comparisons(runs: list[Run]) -> list[Comparison]:
    """Runs split by (dataset, tasks, model); runs without one are left out (listed as problems)."""
    by_key: dict[tuple, list[Run]] = {}
    for run in runs:
        if run.key is not None:
            by_key.setdefault(run.key, []).append(run)
    comps, used = [], set()
    for (dataset, tasks, model), members in sorted(by_key.items()):
        slug = slugify(f"{dataset}_{'+'.join(tasks)}_{model}")
        while slug in used:
            slug += "_"
        used.add(slug)
        comps.append(Comparison(dataset, tasks, model, members, slug))
    return comps


# ----------------------------------------------------------------------------- accuracy tolerance


def tolerance_reason(run: Run, tolerance: float) -> str | None:
    """Why a run misses the accuracy tolerance (None when every task is within it)."""
    problems = []
    for task in run.tasks:
        acc, teacher = accuracy(run, task), teacher_accuracy(run, task)
        if acc is None or teacher is None:
            problems.append(f"{task}: no {'accuracy' if acc is None else 'teacher accuracy'}")
        elif 100 * (teacher - acc) > tolerance + 1e-9:
            problems.append(f"{task} is {100 * (teacher - acc):.2f} points below its teacher "
                            f"({fmt_pct(acc)} vs {fmt_pct(teacher)})")
    return "; ".join(problems) or None


def exclusion_reason(run: Run, subsets: list[str], tolerance: float, metric: str) -> str | None:
    """Why a run cannot enter the headline (None when it can)."""
    if not run.ok:
        return f"status {run.status}" + (f": {run.note}" if run.note else "")
    unmeasured = [t for t in run.tasks if accuracy(run, t) is None]
    if unmeasured:
        return f"no test accuracy for {', '.join(unmeasured)} (evaluate stage not run?)"
    reason = tolerance_reason(run, tolerance)
    if reason:
        return f"below the accuracy tolerance ({fmt_points(tolerance)}): {reason}"
    lacking = [s for s in subsets if cost(run, s, metric) is None]
    if lacking:
        return f"no '{metric}' cost for {', '.join(lacking)}"
    return None


# ----------------------------------------------------------------------------- headline


@dataclass
class Headline:
    """Cost ratios between the mergers of one (pruner, granularity) family within a comparison."""

    pruner: str
    granularity: str
    subsets: list[str]
    mergers: list[str]
    costs: dict[str, dict[str, float]]
    counts: dict[str, int]
    ratios: dict[tuple[str, str], dict[str, float]]
    spreads: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def family(self) -> str:
        """'pruner/granularity'."""
        return self.pruner if self.granularity == "-" else f"{self.pruner}/{self.granularity}"

    def up_to(self, pair: tuple[str, str]) -> tuple[float, str] | None:
        """Largest ratio over subsets and the subset where it occurs."""
        values = self.ratios.get(pair) or {}
        if not values:
            return None
        best = max(values, key=values.get)
        return values[best], best


def ratio_pairs(mergers: list[str]) -> list[tuple[str, str]]:
    """(numerator, denominator) merger pairs: none over every other merger, then mtz over pam."""
    pairs = [("none", m) for m in mergers if m != "none"] if "none" in mergers else []
    if "mtz" in mergers and "pam" in mergers:
        pairs.append(("mtz", "pam"))
    return pairs


def family_headline(pruner: str, gran: str, runs: list[Run], eligible: list[Run],
                    subsets: list[str], metric: str) -> Headline:
    """Mean cost per merger over the eligible runs, and the ratios between mergers."""
    mergers = sorted({r.method[0] for r in runs}, key=lambda m: method_sort_key((m, "", "")))
    by_merger = {m: [r for r in eligible if r.method[0] == m] for m in mergers}
    stats = {m: {s: mean_std(present(cost(r, s, metric) for r in rs)) for s in subsets
                 if present(cost(r, s, metric) for r in rs)} for m, rs in by_merger.items() if rs}
    costs = {m: {s: ms[0] for s, ms in per.items()} for m, per in stats.items()}
    spreads = {m: {s: ms[1] for s, ms in per.items()} for m, per in stats.items()}
    ratios = {pair: pair_ratios(costs, pair, subsets) for pair in ratio_pairs(mergers)}
    return Headline(pruner, gran, subsets, mergers, costs,
                    {m: len(rs) for m, rs in by_merger.items()}, ratios, spreads)


def pair_ratios(costs: dict[str, dict[str, float | None]], pair: tuple[str, str],
                subsets: list[str]) -> dict[str, float]:
    """cost(numerator) / cost(denominator) per subset, where both are known."""
    num, den = (costs.get(m) or {} for m in pair)
    return {s: num[s] / den[s] for s in subsets if num.get(s) is not None and den.get(s)}


def headlines(comp: Comparison, tolerance: float,
              metric: str) -> tuple[list[Headline], list[tuple[Run, str]]]:
    """Headline of each (pruner, granularity) family, and the runs left out with their reasons."""
    subsets = comp.subsets()
    excluded: list[tuple[Run, str]] = []
    eligible: list[Run] = []
    families: dict[tuple[str, str], list[Run]] = {}
    for run in comp.runs:
        reason = exclusion_reason(run, subsets, tolerance, metric)
        if reason:
            excluded.append((run, reason))
        else:
            eligible.append(run)
        families.setdefault(run.method[1:], []).append(run)
    ids = {id(r) for r in eligible}
    heads = [family_headline(p, g, rs, [r for r in rs if id(r) in ids], subsets, metric)
             for (p, g), rs in sorted(families.items())]
    return heads, excluded


def merger_name(merger: str) -> str:
    """How a sentence names a merger ('no merging' for none)."""
    return "no merging" if merger == "none" else merger


def cost_sentence(subject: str, baseline: str, a: tuple[float, float], b: tuple[float, float],
                  metric: str, subset: str, condition: str) -> str:
    """'A needs k× fewer/more <metric> than B for <subset> <condition>' from (mean, std) of A and
    B, k >= 1, flagging a seed spread (std_A + std_B) larger than the difference of the means."""
    (mean_a, std_a), (mean_b, std_b) = a, b
    what = METRIC_NAMES.get(metric, metric)
    if mean_a > 0 and mean_b > 0 and abs(mean_b / mean_a - 1) >= 0.005:
        k = mean_b / mean_a
        amount = f"{k:.2f}x fewer" if k > 1 else f"{1 / k:.2f}x more"
        line = f"{subject} needs {amount} {what} than {baseline} for {subset} {condition}"
    else:
        line = f"{subject} needs as many {what} as {baseline} for {subset} {condition}"
    if abs(mean_a - mean_b) < std_a + std_b:
        line += (f"; the seed spread (±{fmt_count(std_a)} / ±{fmt_count(std_b)}) is larger than "
                 f"the difference")
    return line


def headline_sentences(comp: Comparison, heads: list[Headline], metric: str,
                       tolerance: float = 1.0) -> list[str]:
    """One line per merger pair, for the subset where the pair's ratio is largest."""
    lines = []
    condition = (f"(final networks within {fmt_points(tolerance)} of their teachers on test; "
                 f"the subset where it gains most)")
    for head in heads:
        for num, den in head.ratios:
            best = head.up_to((num, den))
            if best:
                subset = best[1]
                a = head.costs[den][subset], head.spreads.get(den, {}).get(subset, 0.0)
                b = head.costs[num][subset], head.spreads.get(num, {}).get(subset, 0.0)
                sentence = cost_sentence(den, merger_name(num), a, b, metric, subset, condition)
                lines.append(f"{comp.title}, {head.family}: {sentence}")
    return lines


def headline_sentences_all(comps: list[Comparison], opts: Options) -> list[str]:
    """The headline sentences of every comparison."""
    return [line for c in comps
            for line in headline_sentences(c, headlines(c, opts.tolerance, opts.metric)[0],
                                           opts.metric, opts.tolerance)]
