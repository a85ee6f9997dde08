"""Numbers read from a run's results (accuracy, cost, group sizes) and how the report writes them:
counts with k/M/G, percentages, 'mean ± std' over seeds, ratios, flattened nested fields.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Iterable
from typing import Any

from mergeprune.report.runs import Run

METRICS = ("flops", "params", "nonzero_flops", "nonzero_params")


def number(value: Any) -> float | None:
    """value as a float, or None when it is not a finite number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def accuracy(run: Run, task: str) -> float | None:
    """Test accuracy of a task (a fraction)."""
    return number((run.data.get("accuracy") or {}).get(task))


def teacher_accuracy(run: Run, task: str) -> float | None:
    """Accuracy of the task's teacher (a fraction)."""
    return number(((run.data.get("teachers") or {}).get(task) or {}).get("accuracy"))


def cost(run: Run, subset: str, metric: str) -> float | None:
    """Cost of a task subset under a metric."""
    return number(((run.data.get("cost") or {}).get(subset) or {}).get(metric))


def teacher_cost(run: Run, subset: str, metric: str) -> float | None:
    """Cost of the subset's unpruned teachers run side by side (dense metric for nonzero ones)."""
    dense = metric.replace("nonzero_", "")
    values = [number(((run.data.get("teachers") or {}).get(t) or {}).get(dense))
              for t in subset.split("+")]
    return None if any(v is None for v in values) else sum(values)


def group_count(run: Run, layer: str, group: str) -> float | None:
    """Live neurons of a group in a layer (0 when the layer is listed without that group)."""
    groups = (run.data.get("groups") or {}).get(layer)
    return None if groups is None else float(groups.get(group, 0))


def present(values: Iterable[float | None]) -> list[float]:
    """The values that are numbers."""
    return [v for v in values if v is not None]


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value)."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def mean_of(values: Iterable[float | None]) -> float | None:
    """Mean of the values that are numbers, or None."""
    nums = present(values)
    return statistics.fmean(nums) if nums else None


def fmt_count(x: float) -> str:
    """A count with a k/M/G suffix, 3 significant digits."""
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= scale:
            return f"{x / scale:.3g}{suffix}"
    return f"{x:.3g}" if x != int(x) else str(int(x))


def fmt_pct(x: float) -> str:
    """A fraction in percent, 2 decimals."""
    return f"{100 * x:.2f}"


def fmt_num(x: float) -> str:
    """A number with 4 significant digits (whole numbers from 10,000 up written out)."""
    return f"{x:.0f}" if abs(x) >= 1e4 else f"{x:.4g}"


def fmt_points(tolerance: float) -> str:
    """'1 accuracy point' / '0.5 accuracy points'."""
    return f"{tolerance:g} accuracy point" + ("" if tolerance == 1 else "s")


def fmt_ratio(x: float | None) -> str:
    """A cost ratio like '2.31x' ('—' when undefined)."""
    return "—" if x is None else f"{x:.2f}x"


def fmt_stat(values: Iterable[float | None], fmt: Callable[[float], str]) -> str:
    """'mean ± std' of the numbers among values ('mean' alone for one, '—' for none)."""
    nums = present(values)
    if not nums:
        return "—"
    mean, std = mean_std(nums)
    return fmt(mean) if len(nums) == 1 else f"{fmt(mean)} ± {fmt(std)}"


def fmt_mixed(values: list[Any]) -> str:
    """Numbers as 'mean ± std', anything else as its distinct values."""
    if values and all(number(v) is not None for v in values):
        return fmt_stat(values, fmt_num)
    distinct = list(dict.fromkeys(str(v) for v in values))
    return ", ".join(distinct) or "—"


def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """Scalar leaves of nested dicts keyed by dotted path (lists become short strings)."""
    if isinstance(obj, dict):
        out: dict[str, Any] = {}
        for key, value in obj.items():
            out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    if isinstance(obj, list):
        short = len(obj) <= 8 and all(not isinstance(v, (dict, list)) for v in obj)
        return {prefix: str(obj) if short else f"[{len(obj)} items]"}
    return {prefix: obj}


def union_keys(dicts: Iterable[dict], order: Iterable[str] = (),
               last: Iterable[str] = ()) -> list[str]:
    """Keys of all dicts: those in `order` first, then the rest as met, those in `last` last."""
    seen = list(dict.fromkeys(k for d in dicts for k in d))
    order, last = list(order), list(last)
    head = [k for k in order if k in seen]
    tail = [k for k in last if k in seen and k not in head]
    return head + [k for k in seen if k not in head and k not in tail] + tail
