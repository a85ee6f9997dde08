"""The pruning frontiers as small multiples: one panel per task subset, x the subset's cost, y the
worst validation drop it allows, one line per method (mean over seeds of report/curves.frontier)
with a min-max band over seeds, the tolerance as a horizontal line and, shaded above it, the
standard error matched accuracy also allows (up to the largest over the comparison's tasks). Many subsets (more than
ONE_FIGURE_SUBSETS) get one figure per subset size (small sizes that fit together share one).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mergeprune.report.compare import Comparison, Options, method_label
from mergeprune.report.curves import Band, allowances, band, curve_metric, frontier
from mergeprune.report.matched import curve_methods, matched_subsets
from mergeprune.report.plotting import (
    grid,
    legend_entries,
    method_colors,
    save,
    size_chunks,
    sizes_text,
    wide,
)
from mergeprune.report.values import fmt_points, mean_of, teacher_cost

ONE_FIGURE_SUBSETS = 12
SE_LABEL = "+ standard error (matched up to here)"
PANEL_W, PANEL_H, MAX_COLS = 3.2, 2.6, 5


def drop_limit(fronts: list[list[tuple[float, float]]], tolerance: float) -> float:
    """The top of the drop axis: the largest drop seen, cut at max(10 x tolerance, 5 points)."""
    largest = max((d for f in fronts for d, _ in f), default=tolerance)
    return max(1.5 * tolerance, 0.5, min(largest, max(10 * tolerance, 5.0)))


def allowance_top(comp: Comparison, opts: Options) -> float:
    """The largest drop matched accuracy allows over the comparison's runs and tasks (the tolerance
    when no run knows its validation size)."""
    return max((a for r in comp.runs if r.ok for a in allowances(r, opts.rule).values()), default=opts.tolerance)


def staircase(b: Band, costs: list[float]) -> tuple[list[float], list[float]]:
    """(costs, drops) tracing the step function cost(drop) of a band's line or edge."""
    xs, ys = [costs[0]], [b.drops[0]]
    for i in range(1, len(b.drops)):
        xs += [costs[i - 1], costs[i]]
        ys += [b.drops[i], b.drops[i]]
    return xs, ys


def curve_axis(ax: Any, comp: Comparison, subset: str, opts: Options, top: float, allowed: float) -> None:
    """One subset: every method's mean frontier with its seed band, tolerance and teachers."""
    metric, colors, xs = curve_metric(opts.metric), method_colors(comp), []
    for method, rs in curve_methods(comp).items():
        found = band([frontier(r, subset, metric) for r in rs], top)
        if found is None:
            continue
        line_x, line_y = staircase(found, found.mean)
        low_x, _ = staircase(found, found.low)
        high_x, _ = staircase(found, found.high)
        ax.fill_betweenx(line_y, low_x, high_x, color=colors[method], alpha=0.2, linewidth=0)
        ax.plot(line_x, line_y, color=colors[method], label=method_label(method),
                marker="o" if len(found.drops) == 1 else None, linewidth=1.5)
        xs += low_x + high_x
    teacher = mean_of(teacher_cost(r, subset, metric) for r in comp.runs if r.ok)
    if teacher is not None:
        ax.axvline(teacher, color="grey", linestyle=":", linewidth=1, label="teachers (unpruned)")
        xs.append(teacher)
    ax.axhline(opts.tolerance, color="black", linestyle="--", linewidth=1,
               label=f"tolerance ({fmt_points(opts.tolerance)})")
    if allowed > opts.tolerance:
        ax.axhspan(opts.tolerance, allowed, color="black", alpha=0.08, linewidth=0, label=SE_LABEL)
    if wide(xs):
        ax.set_xscale("log")
    ax.set_ylim(top=top * 1.05)
    ax.set_title(subset, fontsize="small")
    ax.set_xlabel(metric, fontsize="x-small", labelpad=1)
    ax.tick_params(labelsize=7)


def size_groups(subsets: list[str]) -> list[tuple[str, list[str]]]:
    """(kind suffix, subsets) per figure: all together when few, else figures by subset size."""
    if len(subsets) <= ONE_FIGURE_SUBSETS:
        return [("", subsets)]
    return [("-k" + sizes_text(chunk).split()[0], chunk) for chunk in size_chunks(subsets, 10)]


def curve_figure(comp: Comparison, subsets: list[str], opts: Options, path: Path) -> Path:
    """The frontier panels of some subsets in one figure."""
    metric = curve_metric(opts.metric)
    fronts = [frontier(r, s, metric) for rs in curve_methods(comp).values() for r in rs
              for s in subsets]
    allowed = allowance_top(comp, opts)
    top = max(drop_limit(fronts, opts.tolerance), 1.2 * allowed)
    legend = [method_label(m) for m in curve_methods(comp)] + [
        "teachers (unpruned)", f"tolerance ({fmt_points(opts.tolerance)})"] + (
        [SE_LABEL] if allowed > opts.tolerance else [])
    fig, axes = grid(len(subsets), PANEL_W, PANEL_H, max_cols=MAX_COLS, legend=legend)
    for ax, subset in zip(axes, subsets, strict=True):
        curve_axis(ax, comp, subset, opts, top, allowed)
    fig.supylabel("worst validation drop (points)", fontsize="small")
    fig.suptitle(comp.title, fontsize="medium")
    return save(fig, path, *legend_entries(axes))


def draw_curve_figures(comp: Comparison, opts: Options) -> dict[str, Path]:
    """The comparison's frontier figures (none when no run records curves): kind -> path."""
    if not curve_methods(comp):
        return {}
    drawn = {}
    for suffix, subsets in size_groups(matched_subsets(comp)):
        kind = f"curves{suffix}"
        drawn[kind] = curve_figure(comp, subsets, opts, opts.out / f"{comp.slug}_{kind}.png")
    return drawn
