"""The evidence behind PAM's groups: per layer, method and task, what the regrouping measured."""

from __future__ import annotations

from mergeprune.report.compare import Comparison, method_label
from mergeprune.report.runs import Run
from mergeprune.report.values import fmt_num, fmt_stat, union_keys

# results.json merge.layers.<layer>.tasks.<task> keys, and their column titles
COLUMNS = (("layer_mi", "layer MI"), ("threshold", "threshold"), ("irrelevant_varying", "|Irr| varying"),
           ("irrelevant_mi", "MI(Irr)"), ("null_mi", "null MI"), ("exclusive", "exclusive"),
           ("own", "from own teacher"))


def task_entries(run: Run, layer: str) -> dict[str, dict]:
    """The per-task evidence of one layer of a run's merge report ({} when the merger gives none)."""
    merge = run.data.get("merge") or {}
    return ((merge.get("layers") or {}).get(layer) or {}).get("tasks") or {}


def evidence_rows(comp: Comparison) -> tuple[list[str], list[list[str]]] | None:
    """Header and rows (layer, method, task): the MI of the whole layer, the threshold, |Irr_t|, its MI, the null MI
    of a random set of that size with shuffled labels, the exclusive group and how much of it comes
    from the task's own teacher (nats; mean ± std over seeds)."""
    ok = [r for r in comp.runs if r.ok]
    layers = union_keys((r.data.get("merge") or {}).get("layers") or {} for r in ok)
    rows = []
    for layer in layers:
        for method, rs in comp.methods().items():
            tasks = union_keys(task_entries(r, layer) for r in rs if r.ok)
            for task in tasks:
                cells = [fmt_stat((task_entries(r, layer).get(task, {}).get(key) for r in rs if r.ok), fmt_num)
                         for key, _ in COLUMNS]
                rows.append([layer, method_label(method), task] + cells)
    if not rows:
        return None
    return ["layer", "method", "task"] + [title for _, title in COLUMNS], rows
