"""What every report figure shares: matplotlib on Agg (imported only when drawing), one colour per
method, a grid of panels that stays within MAX_WIDTH_PX, a legend below the panels, and saving.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from mergeprune.report.compare import Comparison
from mergeprune.report.runs import Method
from mergeprune.report.values import present

MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">")
DPI = 100
MAX_WIDTH_PX = 1600
MAX_WIDTH_IN = MAX_WIDTH_PX / DPI
LEGEND_ROW_IN = 0.28  # height of one row of a figure legend


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


def method_colors(comp: Comparison) -> dict[Method, str]:
    """A fixed colour per method, shared by every figure of the comparison."""
    return {m: f"C{i % 10}" for i, m in enumerate(comp.methods())}


def size_chunks(subsets: list[str], limit: int) -> list[list[str]]:
    """Subsets grouped by size (task count), consecutive sizes merged while they fit in `limit`."""
    chunks: list[list[str]] = []
    for k in sorted({s.count("+") + 1 for s in subsets}):
        same = [s for s in subsets if s.count("+") + 1 == k]
        if chunks and len(chunks[-1]) + len(same) <= limit:
            chunks[-1] += same
        else:
            chunks.append(same)
    return chunks


def sizes_text(subsets: list[str]) -> str:
    """'1 task', '2 tasks' or '4-5 tasks': the sizes of some subsets."""
    sizes = sorted({s.count("+") + 1 for s in subsets})
    text = str(sizes[0]) if len(sizes) == 1 else f"{sizes[0]}-{sizes[-1]}"
    return f"{text} task" + ("" if sizes == [1] else "s")


def legend_cols(width_in: float, labels: Sequence[str], ncol: int) -> int:
    """Columns of a figure legend that fit the figure's width (an entry: its handle and text)."""
    entry = 0.7 + 0.075 * max((len(label) for label in labels), default=0)
    return max(1, min(ncol, len(labels), int(width_in / entry)))


def grid(n: int, panel_w: float, panel_h: float, max_cols: int = 6,
         legend: Sequence[str] = (), ncol: int = 5) -> tuple[Any, list[Any]]:
    """A figure of n panels in rows of at most max_cols, never wider than MAX_WIDTH_IN inches, with
    room below for a legend of those labels; the unused panels are hidden."""
    panel_w = min(panel_w, MAX_WIDTH_IN)
    cols = max(1, min(n, max_cols, int(MAX_WIDTH_IN / panel_w + 1e-9)))
    rows = math.ceil(n / cols)
    width = cols * panel_w
    below = legend_rows(len(legend), legend_cols(width, legend, ncol))
    height = rows * panel_h + below * LEGEND_ROW_IN + (0.2 if below else 0.0)
    fig, axes = pyplot().subplots(rows, cols, figsize=(width, height), squeeze=False)
    flat = [ax for row in axes for ax in row]
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def legend_rows(labels: int, ncol: int = 5) -> int:
    """Rows a figure legend of that many labels takes."""
    return math.ceil(labels / ncol) if labels else 0


def save(fig: Any, path: Path, handles: list[Any] | None = None,
         labels: list[str] | None = None, ncol: int = 5) -> Path:
    """Write a figure as PNG (with its legend below the panels, if given) and close it."""
    rect = (0.0, 0.0, 1.0, 1.0)
    if labels:
        ncol = legend_cols(fig.get_figwidth(), labels, ncol)
        fig.legend(handles, labels, loc="lower center", ncol=ncol, fontsize="small",
                   bbox_to_anchor=(0.5, 0.0))
        below = legend_rows(len(labels), ncol) * LEGEND_ROW_IN + 0.12
        rect = (0.0, below / fig.get_figheight(), 1.0, 1.0)
    fig.tight_layout(rect=rect)
    fig.savefig(path, dpi=DPI)
    pyplot().close(fig)
    return path


def legend_entries(axes: list[Any]) -> tuple[list[Any], list[str]]:
    """The distinct legend handles and labels of some panels, in first-seen order."""
    seen: dict[str, Any] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            seen.setdefault(label, handle)
    return list(seen.values()), list(seen)
