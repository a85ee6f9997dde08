"""The report's PNG figures per comparison: cost of every task subset per method, accuracy against
cost per task, and live neurons per group and layer (matplotlib, imported only when drawing).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from mergeprune.report.compare import Comparison, Options, method_label
from mergeprune.report.runs import Method
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

MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">")


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend (imported only when drawing)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def wide(values: Iterable[float | None], factor: float = 20.0) -> bool:
    """Whether positive values span more than `factor` (then a log axis reads better)."""
    nums = [v for v in present(values) if v > 0]
    return len(nums) > 1 and max(nums) / min(nums) > factor


def save(fig: Any, path: Path) -> Path:
    """Write a figure as PNG and close it."""
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    pyplot().close(fig)
    return path


def method_colors(comp: Comparison) -> dict[Method, str]:
    """A fixed colour per method, shared by every figure of the comparison."""
    return {m: f"C{i % 10}" for i, m in enumerate(comp.methods())}


def cost_figure(comp: Comparison, metric: str, path: Path) -> Path | None:
    """Grouped bars: the cost of every task subset per method (teachers as a grey reference)."""
    methods, subsets = comp.methods(), comp.subsets()
    ok = [r for r in comp.runs if r.ok]
    series = [("teachers (unpruned)", "lightgrey", [[teacher_cost(r, s, metric) for r in ok]
                                                   for s in subsets])]
    colors = method_colors(comp)
    series += [(method_label(m), colors[m], [[cost(r, s, metric) for r in rs] for s in subsets])
               for m, rs in methods.items()]
    series = [(n, c, v) for n, c, v in series if any(present(x) for x in v)]
    if not methods or not series:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(3.0 + max(4.0, 0.35 * len(subsets) * len(series)), 4.2))
    width = 0.8 / len(series)
    for i, (name, color, per_subset) in enumerate(series):
        stats = [mean_std(present(v)) if present(v) else (math.nan, 0.0) for v in per_subset]
        xs = [j + (i - (len(series) - 1) / 2) * width for j in range(len(subsets))]
        ax.bar(xs, [m for m, _ in stats], width, yerr=[s for _, s in stats], color=color,
               label=name, capsize=2)
    ax.set_xticks(range(len(subsets)), subsets)
    ax.set_xlabel("task subset")
    ax.set_ylabel(metric)
    if wide(v for _, _, vs in series for x in vs for v in x):
        ax.set_yscale("log")
    ax.set_title(comp.title)
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return save(fig, path)


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
    ax.set_title(f"task {task}")
    ax.set_xlabel(f"{metric} of {task} alone")
    ax.set_ylabel("test accuracy (%)")


def accuracy_figure(comp: Comparison, metric: str, tolerance: float, path: Path) -> Path | None:
    """Accuracy against cost, one panel per task."""
    if not comp.methods():
        return None
    plt = pyplot()
    n = len(comp.tasks)
    fig, axes = plt.subplots(1, n, figsize=(4.6 * n, 4.0), squeeze=False)
    for ax, task in zip(axes[0], comp.tasks, strict=True):
        accuracy_axis(ax, comp, task, metric, tolerance)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 5), fontsize="small",
               bbox_to_anchor=(0.5, 0.0))
    fig.suptitle(comp.title)
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def groups_figure(comp: Comparison, path: Path) -> Path | None:
    """Stacked bars per layer: for each method, its live neurons split by group."""
    methods = {m: rs for m, rs in comp.methods().items() if any(r.data.get("groups") for r in rs)}
    layers = union_keys(r.data.get("groups") or {} for rs in methods.values() for r in rs)
    if not layers:
        return None
    groups = union_keys(((r.data.get("groups") or {}).get(lay) or {} for rs in methods.values()
                         for r in rs for lay in layers), comp.subsets())
    plt = pyplot()
    cmap = plt.get_cmap("tab20")
    width = max(3.5, 0.9 * len(methods)) * len(layers)
    fig, axes = plt.subplots(1, len(layers), figsize=(width, 4.2), squeeze=False)
    for ax, layer in zip(axes[0], layers, strict=True):
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
    axes[0][-1].legend(title="group", fontsize="small")
    fig.suptitle(comp.title)
    return save(fig, path)


def draw_figures(comp: Comparison, opts: Options) -> dict[str, Path]:
    """Draw the comparison's figures into the output folder; kind -> path for those drawn."""
    drawn = {"cost": cost_figure(comp, opts.metric, opts.out / f"{comp.slug}_cost.png"),
             "accuracy": accuracy_figure(comp, opts.metric, opts.tolerance,
                                         opts.out / f"{comp.slug}_accuracy.png"),
             "groups": groups_figure(comp, opts.out / f"{comp.slug}_groups.png")}
    return {kind: p for kind, p in drawn.items() if p is not None}
