"""The report's matched-accuracy blocks of a comparison: what is compared, the headline sentences,
the matched cost per method and subset (mean ± std (CV) over seeds), the test accuracy and steps of
the chosen points, and the frontier figures.
"""

from __future__ import annotations

from pathlib import Path

from mergeprune.report.blocks import Block, Bullets, Figure, Heading, Table, Text
from mergeprune.report.compare import Comparison, Options, method_label
from mergeprune.report.curves import Rule, SeedStat, curve_metric, matched
from mergeprune.report.matched import (
    curve_methods,
    matched_sentences,
    matched_stats,
    matched_subsets,
)
from mergeprune.report.runs import Run
from mergeprune.report.values import fmt_count, fmt_pct, fmt_stat


def fmt_matched(stat: SeedStat) -> str:
    """'mean ± std (CV n%)' of a matched cost, the seeds that reached it when not all did."""
    if not stat.n_reached or stat.mean is None:
        return f"not reached (0/{stat.n_runs})"
    if stat.n_reached == 1:
        text = f"{fmt_count(stat.mean)} (1 seed)"
    else:
        cv = "—" if stat.cv is None else f"{100 * stat.cv:.0f}%"
        text = f"{fmt_count(stat.mean)} ± {fmt_count(stat.std or 0.0)} (CV {cv})"
    if stat.n_reached < stat.n_runs:
        text += f" [{stat.n_reached}/{stat.n_runs} seeds]"
    return text


def matched_table(comp: Comparison, tolerance: float | Rule, metric: str) -> Table | None:
    """Methods as rows, task subsets as columns: the matched cost over seeds."""
    stats = matched_stats(comp, tolerance, metric)
    if not stats:
        return None
    subsets = matched_subsets(comp)
    runs = curve_methods(comp)
    rows = [[method_label(m), str(len(runs[m]))] + [fmt_matched(per[s]) for s in subsets]
            for m, per in stats.items()]
    return Table(["method", "n"] + subsets, rows)


def steps_text(run: Run, chosen: dict[str, int]) -> str:
    """'seed 0: lo step 2, hi step 1'."""
    return f"seed {run.seed}: " + ", ".join(f"{part} step {step}" for part, step in chosen.items())


def chosen_row(subset: str, method_runs: tuple[str, list[Run]], tasks: tuple[str, ...],
             tolerance: float | Rule, metric: str) -> list[str]:
    """One (subset, method) row: seeds reached, cost, worst val drop, steps, test accuracy."""
    label, runs = method_runs
    found = [(r, matched(r, subset, tolerance, metric)) for r in runs]
    hits = [(r, m) for r, m in found if m is not None]
    cells = [subset, label, f"{len(hits)}/{len(runs)}",
             fmt_stat((m.cost for _, m in hits), fmt_count),
             fmt_stat((m.drop for _, m in hits), lambda x: f"{x:.2f}"),
             "; ".join(steps_text(r, m.steps) for r, m in hits) or "—"]
    members = subset.split("+")
    for task in tasks:
        values = [m.test.get(task) for _, m in hits]
        if task not in members:
            cells.append("")
        elif hits and all(v is None for v in values):
            cells.append("not measured")
        else:
            cells.append(fmt_stat(values, fmt_pct))
    return cells


def matched_test_table(comp: Comparison, tolerance: float | Rule, metric: str) -> Table | None:
    """Per subset and method: the chosen points' steps, worst validation drop and test accuracy."""
    runs = curve_methods(comp)
    if not runs:
        return None
    metric = curve_metric(metric)
    rows = [chosen_row(s, (method_label(m), rs), comp.tasks, tolerance, metric)
            for s in matched_subsets(comp) for m, rs in runs.items()]
    return Table(["subset", "method", "seeds reached", f"matched {metric}",
                  "worst val drop (points)", "steps chosen (on validation)"]
                 + [f"{t} test (%)" for t in comp.tasks], rows)


def explanation(opts: Options) -> str:
    """What the matched cost is."""
    metric = curve_metric(opts.metric)
    text = (f"For each run and task subset: the cheapest point of its pruning trajectory whose "
            f"validation accuracy is within {opts.rule.words()} of the teacher's "
            f"(results.json `reference`; the standard error on the run's validation images) on every task of the subset. With merger=none each teacher is pruned on its "
            f"own, so the subset's cost is the sum over its teachers, each at its own cheapest "
            f"step. Cells: {metric}, mean ± std (CV) over the seeds that reached it; 'not "
            f"reached' when no point meets the tolerance; n: runs that record a trajectory.")
    if metric != opts.metric:
        text += f" Trajectories count flops and params only, so {opts.metric} is read as {metric}."
    return text


def curve_caption(kind: str, opts: Options) -> str:
    """What a frontier figure plots."""
    metric = curve_metric(opts.metric)
    sizes = kind.rsplit("-k", 1)[-1]
    which = "every task subset" if kind == "curves" else \
        f"the subsets of {sizes} task" + ("" if sizes == "1" else "s")
    return (f"Pruning frontiers of {which}: the cheapest {metric} of the subset (x) whose worst "
            f"validation drop below the teachers, over the subset's tasks, is at most y points. "
            f"Line: mean over seeds of each method's frontier, from the smallest drop all its "
            f"seeds reach; band: min-max over seeds; dashed: "
            f"the {opts.tolerance:g}-point tolerance; shaded above it: the {opts.noise_z:g} standard "
            f"error(s) matched accuracy also allows per task, up to the largest (the matched cost is "
            f"where a line crosses the task's own allowance); dotted: the unpruned teachers side by side. Drops beyond the top are cut off.")


def matched_blocks(comp: Comparison, opts: Options, figures: dict[str, Path]) -> list[Block]:
    """The comparison's matched-accuracy section (nothing when no run records a trajectory)."""
    table = matched_table(comp, opts.rule, opts.metric)
    if table is None:
        return []
    sentences = matched_sentences(comp, opts.rule, opts.metric)
    blocks: list[Block] = [Heading(3, f"Cost at matched accuracy ({curve_metric(opts.metric)})"),
                           Text(explanation(opts))]
    blocks.append(Bullets(sentences) if sentences else
                  Text("No merger pair of one pruner reached matched accuracy for all tasks."))
    blocks += [table, Heading(4, "Test accuracy at the matched points"),
               Text("Per subset and method, over the seeds that reached matched accuracy: the "
                    "steps chosen on validation, the mean ± std of the matched cost, of the worst "
                    "validation drop and of each task's test accuracy at those points ('not "
                    "measured' where they have none; a seed whose point has none is left out).")]
    tested = matched_test_table(comp, opts.rule, opts.metric)
    blocks += [tested] if tested is not None else []
    blocks += [Figure(path, curve_caption(kind, opts)) for kind, path in figures.items()
               if kind.startswith("curves")]
    return blocks
