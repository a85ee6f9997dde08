"""The builders of the report's blocks (report/blocks.py): overview, problems, and per comparison
its runs, cost at matched accuracy (report/matched_tables.py), headline ratios of the final
networks, accuracy, cost, compression, group sizes, timings and nested details.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

from mergeprune.report.blocks import (
    Block,
    Bullets,
    Heading,
    Table,
    Text,
    figure_blocks,
    optional_table,
)
from mergeprune.report.compare import (
    Comparison,
    Headline,
    Options,
    headlines,
    method_label,
    method_sort_key,
    tolerance_reason,
)
from mergeprune.report.evidence import evidence_rows
from mergeprune.report.matched import summary_sentences
from mergeprune.report.matched_tables import matched_blocks
from mergeprune.report.runs import Run
from mergeprune.report.values import (
    accuracy,
    cost,
    flatten,
    fmt_count,
    fmt_mixed,
    fmt_num,
    fmt_pct,
    fmt_points,
    fmt_ratio,
    fmt_stat,
    group_count,
    number,
    teacher_accuracy,
    teacher_cost,
    union_keys,
)

STAGE_ORDER = ("teachers", "merge", "prune", "finetune", "evaluate")
DETAIL_FIELDS = (("export", "Compact export (latency and more)"),
                 ("pruning", "Pruning details"), ("merge", "Merging details"))
MAX_DETAIL_ROWS = 60


def method_rows(comp: Comparison, cells: Callable[[list[Run]], list[str]]) -> list[list[str]]:
    """One row per method: label, n, then the given cells computed from its runs."""
    return [[method_label(m), str(len(rs))] + cells(rs) for m, rs in comp.methods().items()]


def runs_table(comp: Comparison, tolerance: float) -> Table:
    """Every run of the comparison: method, seed, status, accuracy check, note."""
    rows = []
    for run in sorted(comp.runs, key=lambda r: (method_sort_key(r.method), str(r.seed), r.label)):
        below = tolerance_reason(run, tolerance) if run.ok else None
        meets = "—" if not run.ok else ("no" if below else "yes")
        rows.append([run.label, method_label(run.method), str(run.seed), run.status, meets,
                     run.note or below or ""])
    return Table(["run", "method", "seed", "status", "meets accuracy", "note"], rows)


def headline_blocks(comp: Comparison, heads: list[Headline], excluded: list[tuple[Run, str]],
                    opts: Options) -> list[Block]:
    """Cost ratio tables per (pruner, granularity) family and the runs excluded from them."""
    blocks: list[Block] = [Heading(3, f"Final networks: how many times less {opts.metric}"),
                           Text(f"Ratio of mean {opts.metric} per task subset (A / B = B costs "
                                f"that many times less than A), between methods with the same "
                                f"pruner and granularity, over the final networks of runs within "
                                f"{fmt_points(opts.tolerance)} of their teachers on every task "
                                f"(test accuracy).")]
    for head in heads:
        blocks.append(Heading(4, f"Pruner {head.family}"))
        used = ", ".join(f"{m} n={head.counts.get(m, 0)}" for m in head.mergers)
        blocks.append(Text(f"Runs used: {used}."))
        if not head.ratios:
            blocks.append(Text("No ratio: this family lacks the no-merging baseline and the "
                               "mtz/pam pair."))
            continue
        blocks.append(headline_table(head))
    if excluded:
        blocks += [Text("Runs excluded from the headline:"),
                   Bullets([f"{r.label} ({method_label(r.method)}, seed {r.seed}): {why}"
                            for r, why in excluded])]
    return blocks


def headline_table(head: Headline) -> Table:
    """Subsets as rows, merger ratios as columns, the 'up to' maximum as the last row."""
    pairs = list(head.ratios)
    rows = [[s] + [fmt_ratio(head.ratios[p].get(s)) for p in pairs] for s in head.subsets]
    best = [head.up_to(p) for p in pairs]
    rows.append(["up to (max)"] + [f"{b[0]:.2f}x ({b[1]})" if b else "—" for b in best])
    return Table(["subset"] + [f"{a} / {b}" for a, b in pairs], rows)


def accuracy_table(comp: Comparison, tolerance: float) -> Table:
    """Test accuracy (%) per task per method, teachers first, and runs meeting the tolerance."""
    tasks = list(comp.tasks)
    ok = [r for r in comp.runs if r.ok]
    teacher = [[fmt_stat((teacher_accuracy(r, t) for r in ok), fmt_pct) for t in tasks]]
    rows = [["teacher", str(len(ok))] + teacher[0] + ["—"]]
    rows += method_rows(comp, lambda rs: [fmt_stat((accuracy(r, t) for r in rs), fmt_pct)
                                          for t in tasks]
                        + [f"{sum(tolerance_reason(r, tolerance) is None for r in rs)}/{len(rs)}"])
    return Table(["method", "n"] + [f"{t} (%)" for t in tasks] + ["meets accuracy"], rows)


def cost_table(comp: Comparison, metric: str) -> Table:
    """Cost of every task subset per method, the unpruned teachers side by side as reference."""
    subsets, ok = comp.subsets(), [r for r in comp.runs if r.ok]
    ref = ["teachers (unpruned, side by side)", str(len(ok))]
    ref += [fmt_stat((teacher_cost(r, s, metric) for r in ok), fmt_count) for s in subsets]
    rows = [ref] + method_rows(comp, lambda rs: [fmt_stat((cost(r, s, metric) for r in rs),
                                                          fmt_count) for s in subsets])
    return Table(["method", "n"] + subsets, rows)


def field_table(comp: Comparison, name: str, fmt: Callable[[float], str],
                order: Iterable[str] = (), last: Iterable[str] = ()) -> Table | None:
    """Methods as rows, the keys of a flat numeric field (compression, timings_s) as columns."""
    keys = union_keys((r.data.get(name) or {} for r in comp.runs if r.ok), order, last)
    if not keys:
        return None
    rows = method_rows(comp, lambda rs: [fmt_stat((number((r.data.get(name) or {}).get(k))
                                                   for r in rs), fmt) for k in keys])
    return Table(["method", "n"] + keys, rows)


def groups_table(comp: Comparison) -> Table | None:
    """Live neurons per group (task subset) for every layer and method, and their total."""
    layers = union_keys(r.data.get("groups") or {} for r in comp.runs if r.ok)
    if not layers:
        return None
    groups = union_keys(((r.data.get("groups") or {}).get(lay) or {} for r in comp.runs if r.ok
                         for lay in layers), comp.subsets())
    rows = []
    for layer in layers:
        for method, rs in comp.methods().items():
            cells = [fmt_stat((group_count(r, layer, g) for r in rs), fmt_num) for g in groups]
            totals = [sum(((r.data.get("groups") or {}).get(layer) or {}).values()) for r in rs
                      if layer in (r.data.get("groups") or {})]
            rows.append([layer, method_label(method), str(len(rs))] + cells
                        + [fmt_stat(totals, fmt_num)])
    return Table(["layer", "method", "n"] + groups + ["total"], rows)


def evidence_table(comp: Comparison) -> Table | None:
    """What PAM's regrouping measured per layer, method and task (see report/evidence.py)."""
    found = evidence_rows(comp)
    return None if found is None else Table(*found)


def details_table(comp: Comparison, name: str) -> Table | None:
    """A nested field (export, pruning, merge) flattened: dotted keys as rows, methods columns."""
    methods = comp.methods()
    flat = {m: [flatten(r.data[name]) for r in rs if isinstance(r.data.get(name), dict)]
            for m, rs in methods.items()}
    keys = union_keys(d for ds in flat.values() for d in ds)
    if not keys:
        return None
    rows = [[k] + [fmt_mixed([d[k] for d in flat[m] if k in d]) if flat[m] else "—"
                   for m in methods] for k in keys[:MAX_DETAIL_ROWS]]
    if len(keys) > MAX_DETAIL_ROWS:
        rows.append([f"... {len(keys) - MAX_DETAIL_ROWS} more keys in results.json"]
                    + [""] * len(methods))
    return Table(["key"] + [method_label(m) for m in methods], rows)


def comparison_blocks(comp: Comparison, opts: Options, figures: dict[str, Path]) -> list[Block]:
    """The report section of one comparison."""
    heads, excluded = headlines(comp, opts.tolerance, opts.metric)
    blocks: list[Block] = [Heading(2, f"Comparison: {comp.title}"),
                           Heading(3, "Runs"), runs_table(comp, opts.tolerance)]
    blocks += matched_blocks(comp, opts, figures)
    blocks += headline_blocks(comp, heads, excluded, opts)
    blocks += [Heading(3, "Accuracy per task"), accuracy_table(comp, opts.tolerance)]
    blocks += figure_blocks(figures, "accuracy",
                            f"Accuracy against {opts.metric} of each task alone (mean ± std over "
                            f"seeds); line: teacher, band: {opts.tolerance:g}-point tolerance.")
    blocks += [Heading(3, f"Cost of every task subset ({opts.metric})"),
               cost_table(comp, opts.metric)]
    blocks += figure_blocks(figures, "cost", f"{opts.metric} of every task subset per method.")
    blocks += optional_table("Compression", field_table(comp, "compression", fmt_num))
    blocks += optional_table("Group sizes per layer (live neurons per task subset)",
                             groups_table(comp))
    blocks += figure_blocks(figures, "groups", "Live neurons per group, per layer and method.")
    blocks += optional_table("Merge evidence per layer and task (PAM; MI in nats, null: shuffled labels, "
                             "random set of the size of Irr)", evidence_table(comp))
    blocks += optional_table("Timings (s)", field_table(comp, "timings_s", fmt_num, STAGE_ORDER,
                                                         ("total",)))
    for name, title in DETAIL_FIELDS:
        blocks += optional_table(title, details_table(comp, name))
    return blocks


def problem_blocks(runs: list[Run]) -> list[Block]:
    """Failed, unfinished, unreadable, missing and unassignable runs, each listed explicitly."""
    kinds = [("Failed runs", lambda r: r.status == "failed"),
             ("Unfinished runs",
              lambda r: r.status not in ("ok", "failed", "unreadable", "missing")),
             ("Unreadable results.json files", lambda r: r.status == "unreadable"),
             ("Missing jobs (Hydra job folder without results.json)",
              lambda r: r.status == "missing"),
             ("Finished runs without dataset/tasks (not compared)",
              lambda r: r.ok and r.key is None)]
    blocks: list[Block] = []
    for title, match in kinds:
        hits = [r for r in runs if match(r)]
        if hits:
            blocks += [Heading(3, f"{title} ({len(hits)})"), Table(
                ["run", "method", "seed", "path", "error / note"],
                [[r.label, method_label(r.method) if r.exp.get("merger") else "?", str(r.seed),
                  str(r.path), r.note] for r in hits])]
    return [Heading(2, "Problems")] + blocks if blocks else []


def overview_blocks(runs: list[Run], comps: list[Comparison], opts: Options,
                    summary: list[str]) -> list[Block]:
    """Title, what was read, counts per status and the headline sentences."""
    counts: dict[str, int] = {}
    for run in runs:
        counts[run.status] = counts.get(run.status, 0) + 1
    status = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    return [Heading(1, "mergeprune report"),
            Text(f"Directories: {', '.join(opts.dirs)}. Cost metric: {opts.metric}. Accuracy "
                 f"tolerance: {fmt_points(opts.tolerance)} below the teacher, per task."),
            Text(f"{len(runs)} runs ({status}) in {len(comps)} comparison(s); runs of different "
                 f"datasets, task sets or models are never mixed."),
            Heading(2, "Headline"),
            Bullets(summary) if summary else Text("No headline ratio could be computed (it needs "
                                                  "eligible runs of no merging and a merger, or of "
                                                  "mtz and pam, with the same pruner).")]


def build_report(runs: list[Run], comps: list[Comparison], opts: Options,
                 figures: dict[str, dict[str, Path]]) -> list[Block]:
    """All report blocks: overview, problems, then one section per comparison."""
    blocks = overview_blocks(runs, comps, opts, summary_sentences(comps, opts))
    blocks += problem_blocks(runs)
    for comp in comps:
        blocks += comparison_blocks(comp, opts, figures.get(comp.slug, {}))
    return blocks

