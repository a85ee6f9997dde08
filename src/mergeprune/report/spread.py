"""How much a method's cost at matched accuracy varies over seeds: one row per method and subset.

`scripts/matched_spread.py` prints these rows for sweeps; the coefficient of variation (std / mean
over seeds) of the matched cost is the figure issue 13's done-when bounds. Runs are grouped by
method (merger, pruner, granularity) and, with `by`, by the values of some launch overrides (for
example `merger.grouping` to tell PAM's star grouping from its subsets grouping).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from mergeprune.report.compare import comparisons, subset_order
from mergeprune.report.curves import Rule, has_curves, matched, seed_stat
from mergeprune.report.runs import Run, job_override_list


def variant(run: Run, by: Sequence[str]) -> str:
    """The run's method, plus the values of the `by` overrides it was launched with."""
    merger, pruner, _ = run.method
    given = dict(o.split("=", 1) for o in job_override_list(run.path.parent) if "=" in o)
    extra = [f"{k}={given[k]}" for k in by if k in given]
    return " ".join([f"{merger}/{pruner}", *extra])


def spread_rows(runs: Iterable[Run], tolerance: float | Rule, by: Sequence[str] = (),
                metric: str = "flops") -> list[dict[str, Any]]:
    """Per comparison, variant and subset: seeds, seeds reached, mean, std and CV of the matched cost."""
    rows = []
    for comp in comparisons([r for r in runs if r.ok]):
        groups: dict[str, list[Run]] = {}
        for run in comp.runs:
            if run.ok and has_curves(run):
                groups.setdefault(variant(run, by), []).append(run)
        for name, members in sorted(groups.items()):
            for subset in subset_order(comp.tasks):
                found = [matched(r, subset, tolerance, metric) for r in members]
                stat = seed_stat([m.cost if m else None for m in found])
                rows.append({"comparison": comp.title, "variant": name, "subset": subset,
                             "seeds": [r.seed for r in members], "reached": stat.n_reached,
                             "mean": stat.mean, "std": stat.std, "cv": stat.cv,
                             "values": [m.cost if m else None for m in found]})
    return rows


def spread_markdown(rows: list[dict[str, Any]]) -> str:
    """The rows as a Markdown table."""
    lines = ["| comparison | variant | subset | seeds reached | matched FLOPs (per seed) | mean ± std | CV |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        values = " / ".join("-" if v is None else f"{v:,.0f}" for v in r["values"])
        stat = "not reached" if r["mean"] is None else f"{r['mean']:,.0f} ± {r['std']:,.0f}"
        cv = "" if r["cv"] is None else f"{100 * r['cv']:.1f}%"
        lines.append(f"| {r['comparison']} | {r['variant']} | {r['subset']} | {r['reached']}/{len(r['seeds'])} "
                     f"| {values} | {stat} | {cv} |")
    return "\n".join(lines)
