"""The report's PNG figures per comparison: cost of every task subset per method (one row of
panels per subset size when there are many subsets), accuracy against cost per task, live neurons
per group and layer, and (report/curve_figures.py) the pruning frontiers. No figure is wider than
MAX_WIDTH_PX (report/plotting.py).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from mergeprune.report.compare import Comparison, Options, method_label
from mergeprune.report.curve_figures import draw_curve_figures
from mergeprune.report.plotting import (
    MARKERS,
    MAX_WIDTH_IN,
    grid,
    legend_entries,
    method_colors,
    pyplot,
    save,
    size_chunks,
    sizes_text,
    wide,
)
from mergeprune.report.values import (
    accuracy,
    cost,
    group_count,
    mean_of,
    mean_std,
    present,
    teacher_accuracy,
    teacher_cost,
    union_keys,
)

ONE_PANEL_SUBSETS = 8  # up to this many subsets share one panel; more get a panel per size
Series = tuple[str, str, list[list[float | None]]]  # label, colour, values per subset and run


def subset_panels(subsets: list[str]) -> list[list[str]]:
    """The subsets drawn together: all in one panel when few, else panels by subset size."""
    return [subsets] if len(subsets) <= ONE_PANEL_SUBSETS else size_chunks(subsets, 10)


def cost_series(comp: Comparison, subsets: list[str], metric: str) -> list[Series]:
    """The teachers side by side and every method: its runs' cost of each subset."""
    ok = [r for r in comp.runs if r.ok]
    series = [("teachers (unpruned)", "lightgrey",
               [[teacher_cost(r, s, metric) for r in ok] for s in subsets])]
    colors = method_colors(comp)
    series += [(method_label(m), colors[m], [[cost(r, s, metric) for r in rs] for s in subsets])
               for m, rs in comp.methods().items()]
    return [(n, c, v) for n, c, v in series if any(present(x) for x in v)]


def bars_axis(ax: Any, series: list[Series], subsets: list[str], index: list[int], metric: str,
              log: bool) -> None:
    """Grouped bars (mean ± std over runs) of the subsets at positions `index` of each series."""
    width = 0.8 / len(series)
    for i, (name, color, per_subset) in enumerate(series):
        stats = [mean_std(present(per_subset[j])) if present(per_subset[j]) else (math.nan, 0.0)
                 for j in index]
        xs = [j + (i - (len(series) - 1) / 2) * width for j in range(len(index))]
        ax.bar(xs, [m for m, _ in stats], width, yerr=[s for _, s in stats], color=color,
               label=name, capsize=2)
    ax.set_xticks(range(len(index)), [subsets[j] for j in index],
                  rotation=30 if len(index) > 4 else 0, ha="right" if len(index) > 4 else "center",
                  fontsize="small")
    ax.set_ylabel(metric)
    if log:
        ax.set_yscale("log")


def cost_figure(comp: Comparison, metric: str, path: Path) -> Path | None:
    """Grouped bars: the cost of every task subset per method (teachers as a grey reference),
    one row of panels per subset size when there are many subsets."""
    subsets = comp.subsets()
    series = cost_series(comp, subsets, metric)
    if not comp.methods() or not series:
        return None
    panels = subset_panels(subsets)
    most = max(len(p) for p in panels)
    fig, axes = grid(len(panels), min(MAX_WIDTH_IN, 2.0 + max(4.0, 0.3 * most * len(series))),
                     3.4, max_cols=1, legend=[name for name, _, _ in series])
    log = wide(v for _, _, vs in series for x in vs for v in x)
    for ax, panel in zip(axes, panels, strict=True):
        bars_axis(ax, series, subsets, [subsets.index(s) for s in panel], metric, log)
        ax.set_title("task subsets" if len(panels) == 1 else f"subsets of {sizes_text(panel)}",
                     fontsize="medium")
    fig.suptitle(comp.title)
    return save(fig, path, *legend_entries(axes))


def accuracy_axis(ax: Any, comp: Comparison, task: str, metric: str, tolerance: float) -> None:
    """One task: a marker per method at (cost of the task alone, accuracy); teacher as a line."""
    colors = method_colors(comp)
    xs = []
    for i, (method, rs) in enumerate(comp.methods().items()):
        cx, ay = present(cost(r, task, metric) for r in rs), present(accuracy(r, task) for r in rs)
        if not cx or not ay:
            continue
        (mx, sx), (my, sy) = mean_std(cx), mean_std([100 * a for a in ay])
        xs.append(mx)
        ax.errorbar(mx, my, xerr=sx, yerr=sy, fmt=MARKERS[i % len(MARKERS)], color=colors[method],
                    label=method_label(method), capsize=2, markersize=7)
    teacher = mean_of(teacher_accuracy(r, task) for r in comp.runs if r.ok)
    if teacher is not None:
        ax.axhline(100 * teacher, color="black", linestyle="--", linewidth=1, label="teacher")
        ax.axhspan(100 * teacher - tolerance, 100 * teacher, color="grey", alpha=0.15,
                   label=f"{tolerance:g}-point tolerance")
    if wide(xs):
        ax.set_xscale("log")
    else:  # a few short ticks: six-digit FLOPs at the default density run into each other
        from matplotlib.ticker import EngFormatter, MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(4))
        ax.xaxis.set_major_formatter(EngFormatter(sep=""))
    ax.set_title(f"task {task}")
    ax.set_xlabel(f"{metric} of {task} alone")
    ax.set_ylabel("test accuracy (%)")


def accuracy_figure(comp: Comparison, metric: str, tolerance: float, path: Path) -> Path | None:
    """Accuracy against cost, one panel per task (at most three panels a row)."""
    if not comp.methods():
        return None
    legend = [method_label(m) for m in comp.methods()] + ["teacher", f"{tolerance:g}-point tolerance"]
    fig, axes = grid(len(comp.tasks), 4.6, 4.0, max_cols=3, legend=legend)
    for ax, task in zip(axes, comp.tasks, strict=True):
        accuracy_axis(ax, comp, task, metric, tolerance)
    fig.suptitle(comp.title)
    return save(fig, path, *legend_entries(axes))


def groups_figure(comp: Comparison, path: Path) -> Path | None:
    """Stacked bars per layer: for each method, its live neurons split by group."""
    methods = {m: rs for m, rs in comp.methods().items() if any(r.data.get("groups") for r in rs)}
    layers = union_keys(r.data.get("groups") or {} for rs in methods.values() for r in rs)
    if not layers:
        return None
    groups = union_keys(((r.data.get("groups") or {}).get(lay) or {} for rs in methods.values()
                         for r in rs for lay in layers), comp.subsets())
    cmap = pyplot().get_cmap("tab20")
    fig, axes = grid(len(layers), max(3.5, 0.9 * len(methods)), 4.2,
                     legend=groups, ncol=8)
    for ax, layer in zip(axes, layers, strict=True):
        bottom = [0.0] * len(methods)
        for j, group in enumerate(groups):
            heights = [mean_of(group_count(r, layer, group) for r in rs) or 0.0
                       for rs in methods.values()]
            ax.bar(range(len(methods)), heights, bottom=bottom, color=cmap(j % 20), label=group)
            bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
        ax.set_xticks(range(len(methods)), [method_label(m) for m in methods], rotation=30,
                      ha="right", fontsize="small")
        ax.set_title(layer)
        ax.set_ylabel("live neurons")
    fig.suptitle(comp.title)
    return save(fig, path, *legend_entries(axes), ncol=8)


def draw_figures(comp: Comparison, opts: Options) -> dict[str, Path]:
    """Draw the comparison's figures into the output folder; kind -> path for those drawn."""
    drawn = {"cost": cost_figure(comp, opts.metric, opts.out / f"{comp.slug}_cost.png"),
             "accuracy": accuracy_figure(comp, opts.metric, opts.tolerance,
                                         opts.out / f"{comp.slug}_accuracy.png"),
             "groups": groups_figure(comp, opts.out / f"{comp.slug}_groups.png")}
    drawn.update(draw_curve_figures(comp, opts))
    return {kind: p for kind, p in drawn.items() if p is not None}
