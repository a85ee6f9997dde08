"""The page's sections of the presets that sweep a setting the jobs do not record in results.json
(PAM's MI thresholds, the relatedness step), so its value is read from each job's Hydra overrides.
"""

from __future__ import annotations

from collections.abc import Callable

from mergeprune import report as rp
from mergeprune.reproduce.presets import TOLERANCE
from mergeprune.reproduce.sections import eligible, mean_cost, ratio


def overrides_of(run: rp.Run) -> dict[str, str]:
    """A job's Hydra overrides as key -> value."""
    pairs = (item.split("=", 1) for item in rp.job_override_list(run.path.parent) if "=" in item)
    return {k.lstrip("+"): v for k, v in pairs}


def sweep_table(runs: list[rp.Run], keys: list[str], subsets: list[str],
                extra: Callable[[list[rp.Run]], list[str]], extra_headers: list[str]) -> rp.Table:
    """One row per value of the swept override keys: FLOPs per subset and accuracy, mean over runs."""
    groups: dict[tuple[str, ...], list[rp.Run]] = {}
    for run in (r for r in runs if r.ok):
        ov = overrides_of(run)
        groups.setdefault(tuple(ov.get(k, "default") for k in keys), []).append(run)
    rows = []
    for values in sorted(groups, key=lambda v: tuple(float(x) if _is_num(x) else x for x in v)):
        rs = groups[values]
        tasks = rs[0].tasks
        rows.append(list(values) + [str(len(rs))]
                    + [rp.fmt_stat((rp.cost(r, s, "flops") for r in rs), rp.fmt_count) for s in subsets]
                    + [rp.fmt_stat((rp.accuracy(r, t) for r in rs), rp.fmt_pct) for t in tasks] + extra(rs))
    tasks = next((r.tasks for r in runs if r.ok), [])
    return rp.Table(keys + ["n"] + subsets + [f"{t} (%)" for t in tasks] + extra_headers, rows)


def _is_num(text: str) -> bool:
    """Whether text parses as a float."""
    try:
        float(text)
    except ValueError:
        return False
    return True


def alpha_section(runs: list[rp.Run]) -> list[rp.Block]:
    """Cost, accuracy and regrouping per (alpha_conv, alpha_fc)."""
    subsets = rp.subset_order(tuple(next((r.tasks for r in runs if r.ok), [])))

    def shared(rs: list[rp.Run]) -> list[str]:
        full = "+".join(rs[0].tasks)
        merged = [sum(v.get(full, 0) for v in (r.data.get("groups_merged") or {}).values()) for r in rs]
        excl = [sum(n for v in (r.data.get("groups_merged") or {}).values() for k, n in v.items()
                    if "+" not in k) for r in rs]
        return [rp.fmt_stat(merged, rp.fmt_count), rp.fmt_stat(excl, rp.fmt_count),
                f"{sum(rp.tolerance_reason(r, TOLERANCE) is None for r in rs)}/{len(rs)}"]

    return [sweep_table(runs, ["merger.alpha_conv", "merger.alpha_fc"], subsets, shared,
                        ["shared neurons after merging", "exclusive neurons", "meets accuracy"])]


def relatedness_section(runs: list[rp.Run]) -> list[rp.Block]:
    """Per relatedness step: cost of none and pam per subset, and none / pam."""
    by: dict[str, dict[str, list[rp.Run]]] = {}
    for run in eligible(runs):
        step = overrides_of(run).get("relatedness", "0")
        by.setdefault(step, {}).setdefault(run.method[0], []).append(run)
    rows = []
    for step in sorted(by, key=float):
        none, pam = by[step].get("none", []), by[step].get("pam", [])
        tasks = (none or pam)[0].tasks
        subsets = rp.subset_order(tuple(tasks))
        rows.append([step] + [rp.fmt_ratio(ratio(mean_cost(none, s), mean_cost(pam, s))) for s in subsets]
                    + [rp.fmt_count(mean_cost(pam, subsets[-1]) or 0), f"{len(none)}/{len(pam)}"])
    tasks = next((r.tasks for r in runs if r.ok), ["a", "b"])
    subsets = rp.subset_order(tuple(tasks))
    return [rp.Text("Step k: task b has k of task a's five digits swapped for others (0 = identical "
                    "tasks, 5 = disjoint digits). Only runs within the tolerance count."),
            rp.Table(["step"] + [f"none / pam, {s}" for s in subsets]
                     + [f"pam FLOPs, {subsets[-1]}", "runs none/pam"], rows)]
