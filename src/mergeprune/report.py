"""`mergeprune-report DIR...`: compare the runs below directories (Markdown, CSV, HTML, PNGs).

Runs (results.json files, DESIGN.md section 5) are split into comparisons by (dataset, tasks, model)
and never mixed. Within a comparison a method is (merger, pruner, granularity); its seeds are
aggregated as mean ± std with n. The headline is PAM's: how many times less a task subset costs
with a merger than with no merging, and with PAM than with MTZ, between methods that share pruner
and granularity, counting only runs whose every task is within `--tolerance` accuracy points of its
teacher. Failed runs, unreadable files and Hydra job folders without results.json are listed, never
dropped. No torch import here: the command has to start fast.
"""

from __future__ import annotations

import argparse
import base64
import csv
import html
import math
import re
import statistics
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mergeprune.results import read_results

METRICS = ("flops", "params", "nonzero_flops", "nonzero_params")
STAGE_ORDER = ("teachers", "merge", "prune", "finetune", "evaluate")
MERGER_ORDER = ("none", "concat", "mtz", "pam")
DETAIL_FIELDS = (("export", "Compact export (latency and more)"),
                 ("pruning", "Pruning details"), ("merge", "Merging details"))
MAX_DETAIL_ROWS = 60
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">")
Method = tuple[str, str, str]


# ----------------------------------------------------------------------------- runs


@dataclass
class Run:
    """One job: its results (empty when missing or unreadable), where it lives, and a note."""

    path: Path
    label: str
    status: str
    data: dict[str, Any] = field(default_factory=dict)
    note: str = ""

    @property
    def exp(self) -> dict[str, Any]:
        """The `experiment` block."""
        return self.data.get("experiment") or {}

    @property
    def tasks(self) -> list[str]:
        """Task names in configured order."""
        return [str(t) for t in self.exp.get("tasks") or []]

    @property
    def key(self) -> tuple[str, tuple[str, ...], str] | None:
        """The comparison this run belongs to: (dataset, tasks, model), or None if unknown."""
        if not self.exp.get("dataset") or not self.tasks:
            return None
        return str(self.exp["dataset"]), tuple(self.tasks), str(self.exp.get("model", "?"))

    @property
    def method(self) -> Method:
        """(merger, pruner, granularity); '-' for a missing granularity."""
        exp = self.exp
        return (str(exp.get("merger", "?")), str(exp.get("pruner", "?")),
                str(exp.get("granularity") or "-"))

    @property
    def seed(self) -> Any:
        """The run's seed ('' when unknown)."""
        return self.exp.get("seed", "")

    @property
    def ok(self) -> bool:
        """Whether the job finished."""
        return self.status == "ok"


def find_results(dirs: Iterable[str | Path]) -> list[tuple[Path, dict]]:
    """Every results.json below the directories, with its contents (status 'unreadable' if bad)."""
    found, seen = [], set()
    for d in dirs:
        for path in sorted(Path(d).rglob("results.json")):
            if path.resolve() in seen or not path.is_file() or not_a_run(path, Path(d)):
                continue
            seen.add(path.resolve())
            data = read_results(path)
            found.append((path, data if isinstance(data, dict) else {"status": "unreadable"}))
    return found


def not_a_run(path: Path, root: Path) -> bool:
    """Whether a results.json is a copy, not a job's own: a stage-cache entry (it holds payload.json)
    or anything in a hidden folder (superseded results, moved-aside cache entries)."""
    if (path.parent / "payload.json").exists():
        return True
    try:
        rel = path.resolve().relative_to(root.resolve())
    except ValueError:
        rel = path
    return any(part.startswith(".") for part in rel.parts[:-1])


def find_missing(dirs: Iterable[str | Path]) -> list[Path]:
    """Hydra job folders (holding `.hydra/`) below the directories that have no results.json."""
    missing, seen = [], set()
    for d in dirs:
        for hydra in sorted(Path(d).rglob(".hydra")):
            job = hydra.parent
            if hydra.is_dir() and job.resolve() not in seen and not (job / "results.json").exists():
                seen.add(job.resolve())
                missing.append(job)
    return missing


def job_override_list(job_dir: Path) -> list[str]:
    """The Hydra overrides a job was launched with (empty if unknown)."""
    try:
        lines = (job_dir / ".hydra" / "overrides.yaml").read_text().splitlines()
    except OSError:
        return []
    return [line.strip()[2:].strip() for line in lines if line.strip().startswith("- ")]


def job_overrides(job_dir: Path) -> str:
    """The Hydra overrides a job was launched with, space-separated ('' if unknown)."""
    return " ".join(job_override_list(job_dir))


def run_label(job_dir: Path, root: Path) -> str:
    """A short job name: its path below the searched directory, prefixed with that one's name."""
    try:
        rel = job_dir.resolve().relative_to(root.resolve())
    except ValueError:
        return str(job_dir)
    name = root.resolve().name
    return str(Path(name) / rel) if str(rel) != "." else name


def root_of(path: Path, dirs: list[Path]) -> Path:
    """The given directory a found path lies below (the first given one if none)."""
    for d in dirs:
        try:
            path.resolve().relative_to(d.resolve())
            return d
        except ValueError:
            continue
    return dirs[0]


def make_run(path: Path, data: dict[str, Any], dirs: list[Path]) -> Run:
    """A Run from one results.json."""
    status = str(data.get("status", "unknown"))
    label = run_label(path.parent, root_of(path, dirs))
    if status == "unreadable":
        return Run(path, label, status, {}, "not valid JSON (or not a JSON object)")
    note = str(data.get("error", "")) if status != "ok" else ""
    if status not in ("ok", "failed") and not note:
        note = "job did not finish (still running, or killed)"
    return Run(path, label, status, data, note)


def gather(dirs: Iterable[str | Path]) -> list[Run]:
    """Every run below the directories: found results.json files, then job folders without one."""
    roots = [Path(d) for d in dirs]
    runs = [make_run(path, data, roots) for path, data in find_results(roots)]
    for job in find_missing(roots):
        overrides = job_overrides(job)
        note = "no result (killed?)" + (f"; overrides: {overrides}" if overrides else "")
        runs.append(Run(job, run_label(job, root_of(job, roots)), "missing", {}, note))
    return runs


# ----------------------------------------------------------------------------- comparisons


def subset_order(tasks: tuple[str, ...]) -> list[str]:
    """Keys of every non-empty task subset: singletons first, then by size (task order within)."""
    masks = sorted(range(1, 1 << len(tasks)), key=lambda b: (bin(b).count("1"), b))
    return ["+".join(t for i, t in enumerate(tasks) if b >> i & 1) for b in masks]


def method_sort_key(method: Method) -> tuple:
    """Order methods by pruner, granularity, then merger (none, concat, mtz, pam, others)."""
    merger, pruner, gran = method
    rank = MERGER_ORDER.index(merger) if merger in MERGER_ORDER else len(MERGER_ORDER)
    return pruner, gran, rank, merger


def method_label(method: Method) -> str:
    """'merger/pruner/granularity' (granularity left out when unknown)."""
    return "/".join(p for p in method if p != "-")


@dataclass
class Comparison:
    """Runs that may be compared: the same dataset, task list and model."""

    dataset: str
    tasks: tuple[str, ...]
    model: str
    runs: list[Run]
    slug: str = ""

    @property
    def title(self) -> str:
        """Human-readable name."""
        return f"{self.dataset} / tasks {'+'.join(self.tasks)} / {self.model}"

    def subsets(self) -> list[str]:
        """Subset keys in canonical order, plus any other keys the runs' costs use."""
        keys = subset_order(self.tasks)
        extra = {s for r in self.runs for s in (r.data.get("cost") or {}) if s not in keys}
        return keys + sorted(extra)

    def methods(self) -> dict[Method, list[Run]]:
        """Finished runs grouped by method, in method order."""
        groups: dict[Method, list[Run]] = {}
        for run in self.runs:
            if run.ok:
                groups.setdefault(run.method, []).append(run)
        return {m: groups[m] for m in sorted(groups, key=method_sort_key)}


def slugify(text: str) -> str:
    """A file-name-safe version of text."""
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-") or "comparison"


def comparisons(runs: list[Run]) -> list[Comparison]:
    """Runs split by (dataset, tasks, model); runs without one are left out (listed as problems)."""
    by_key: dict[tuple, list[Run]] = {}
    for run in runs:
        if run.key is not None:
            by_key.setdefault(run.key, []).append(run)
    comps, used = [], set()
    for (dataset, tasks, model), members in sorted(by_key.items()):
        slug = slugify(f"{dataset}_{'+'.join(tasks)}_{model}")
        while slug in used:
            slug += "_"
        used.add(slug)
        comps.append(Comparison(dataset, tasks, model, members, slug))
    return comps


# ----------------------------------------------------------------------------- values


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


# ----------------------------------------------------------------------------- accuracy tolerance


def tolerance_reason(run: Run, tolerance: float) -> str | None:
    """Why a run misses the accuracy tolerance (None when every task is within it)."""
    problems = []
    for task in run.tasks:
        acc, teacher = accuracy(run, task), teacher_accuracy(run, task)
        if acc is None or teacher is None:
            problems.append(f"{task}: no {'accuracy' if acc is None else 'teacher accuracy'}")
        elif 100 * (teacher - acc) > tolerance + 1e-9:
            problems.append(f"{task} is {100 * (teacher - acc):.2f} points below its teacher "
                            f"({fmt_pct(acc)} vs {fmt_pct(teacher)})")
    return "; ".join(problems) or None


def exclusion_reason(run: Run, subsets: list[str], tolerance: float, metric: str) -> str | None:
    """Why a run cannot enter the headline (None when it can)."""
    if not run.ok:
        return f"status {run.status}" + (f": {run.note}" if run.note else "")
    unmeasured = [t for t in run.tasks if accuracy(run, t) is None]
    if unmeasured:
        return f"no test accuracy for {', '.join(unmeasured)} (evaluate stage not run?)"
    reason = tolerance_reason(run, tolerance)
    if reason:
        return f"below the accuracy tolerance ({fmt_points(tolerance)}): {reason}"
    lacking = [s for s in subsets if cost(run, s, metric) is None]
    if lacking:
        return f"no '{metric}' cost for {', '.join(lacking)}"
    return None


# ----------------------------------------------------------------------------- headline


@dataclass
class Headline:
    """Cost ratios between the mergers of one (pruner, granularity) family within a comparison."""

    pruner: str
    granularity: str
    subsets: list[str]
    mergers: list[str]
    costs: dict[str, dict[str, float]]
    counts: dict[str, int]
    ratios: dict[tuple[str, str], dict[str, float]]

    @property
    def family(self) -> str:
        """'pruner/granularity'."""
        return self.pruner if self.granularity == "-" else f"{self.pruner}/{self.granularity}"

    def up_to(self, pair: tuple[str, str]) -> tuple[float, str] | None:
        """Largest ratio over subsets and the subset where it occurs."""
        values = self.ratios.get(pair) or {}
        if not values:
            return None
        best = max(values, key=values.get)
        return values[best], best


def ratio_pairs(mergers: list[str]) -> list[tuple[str, str]]:
    """(numerator, denominator) merger pairs: none over every other merger, then mtz over pam."""
    pairs = [("none", m) for m in mergers if m != "none"] if "none" in mergers else []
    if "mtz" in mergers and "pam" in mergers:
        pairs.append(("mtz", "pam"))
    return pairs


def family_headline(pruner: str, gran: str, runs: list[Run], eligible: list[Run],
                    subsets: list[str], metric: str) -> Headline:
    """Mean cost per merger over the eligible runs, and the ratios between mergers."""
    mergers = sorted({r.method[0] for r in runs}, key=lambda m: method_sort_key((m, "", "")))
    by_merger = {m: [r for r in eligible if r.method[0] == m] for m in mergers}
    costs = {m: {s: mean_of(cost(r, s, metric) for r in rs) for s in subsets}
             for m, rs in by_merger.items() if rs}
    ratios = {pair: pair_ratios(costs, pair, subsets) for pair in ratio_pairs(mergers)}
    return Headline(pruner, gran, subsets, mergers, costs,
                    {m: len(rs) for m, rs in by_merger.items()}, ratios)


def pair_ratios(costs: dict[str, dict[str, float | None]], pair: tuple[str, str],
                subsets: list[str]) -> dict[str, float]:
    """cost(numerator) / cost(denominator) per subset, where both are known."""
    num, den = (costs.get(m) or {} for m in pair)
    return {s: num[s] / den[s] for s in subsets if num.get(s) is not None and den.get(s)}


def headlines(comp: Comparison, tolerance: float,
              metric: str) -> tuple[list[Headline], list[tuple[Run, str]]]:
    """Headline of each (pruner, granularity) family, and the runs left out with their reasons."""
    subsets = comp.subsets()
    excluded: list[tuple[Run, str]] = []
    eligible: list[Run] = []
    families: dict[tuple[str, str], list[Run]] = {}
    for run in comp.runs:
        reason = exclusion_reason(run, subsets, tolerance, metric)
        if reason:
            excluded.append((run, reason))
        else:
            eligible.append(run)
        families.setdefault(run.method[1:], []).append(run)
    ids = {id(r) for r in eligible}
    heads = [family_headline(p, g, rs, [r for r in rs if id(r) in ids], subsets, metric)
             for (p, g), rs in sorted(families.items())]
    return heads, excluded


def headline_sentences(comp: Comparison, heads: list[Headline], metric: str) -> list[str]:
    """One line per ratio that could be computed: 'up to Nx less <metric>'."""
    lines = []
    for head in heads:
        for num, den in head.ratios:
            best = head.up_to((num, den))
            if best:
                what = "no merging" if num == "none" else num
                lines.append(f"{comp.title}, {head.family}: {den} needs up to {best[0]:.2f}x "
                             f"less {metric} than {what} (subset {best[1]})")
    return lines


# ----------------------------------------------------------------------------- report blocks


@dataclass
class Heading:
    """A section title."""

    level: int
    text: str


@dataclass
class Text:
    """A paragraph."""

    text: str


@dataclass
class Bullets:
    """A bulleted list."""

    items: list[str]


@dataclass
class Table:
    """A table with a header row."""

    headers: list[str]
    rows: list[list[str]]


@dataclass
class Figure:
    """A PNG figure written next to the report."""

    path: Path
    caption: str


Block = Heading | Text | Bullets | Table | Figure


@dataclass
class Options:
    """What the report is asked for."""

    dirs: list[str]
    out: Path
    tolerance: float = 1.0
    metric: str = "flops"


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
    blocks: list[Block] = [Heading(3, f"Headline: how many times less {opts.metric}"),
                           Text(f"Ratio of mean {opts.metric} per task subset (A / B = B costs "
                                f"that many times less than A), between methods with the same "
                                f"pruner and granularity, over runs within "
                                f"{fmt_points(opts.tolerance)} of their teachers on every task.")]
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


def union_keys(dicts: Iterable[dict], order: Iterable[str] = (),
               last: Iterable[str] = ()) -> list[str]:
    """Keys of all dicts: those in `order` first, then the rest as met, those in `last` last."""
    seen = list(dict.fromkeys(k for d in dicts for k in d))
    order, last = list(order), list(last)
    head = [k for k in order if k in seen]
    tail = [k for k in last if k in seen and k not in head]
    return head + [k for k in seen if k not in head and k not in tail] + tail


def field_table(comp: Comparison, name: str, fmt: Callable[[float], str],
                order: Iterable[str] = (), last: Iterable[str] = ()) -> Table | None:
    """Methods as rows, the keys of a flat numeric field (compression, timings_s) as columns."""
    keys = union_keys((r.data.get(name) or {} for r in comp.runs if r.ok), order, last)
    if not keys:
        return None
    rows = method_rows(comp, lambda rs: [fmt_stat((number((r.data.get(name) or {}).get(k))
                                                   for r in rs), fmt) for k in keys])
    return Table(["method", "n"] + keys, rows)


def group_count(run: Run, layer: str, group: str) -> float | None:
    """Live neurons of a group in a layer (0 when the layer is listed without that group)."""
    groups = (run.data.get("groups") or {}).get(layer)
    return None if groups is None else float(groups.get(group, 0))


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
    blocks += optional_table("Timings (s)", field_table(comp, "timings_s", fmt_num, STAGE_ORDER,
                                                         ("total",)))
    for name, title in DETAIL_FIELDS:
        blocks += optional_table(title, details_table(comp, name))
    return blocks


def optional_table(title: str, table: Table | None) -> list[Block]:
    """A titled table, or nothing when there is no data."""
    return [] if table is None else [Heading(3, title), table]


def figure_blocks(figures: dict[str, Path], kind: str, caption: str) -> list[Block]:
    """The figure of a kind, if it was drawn."""
    return [Figure(figures[kind], caption)] if kind in figures else []


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
    blocks = overview_blocks(runs, comps, opts, headline_sentences_all(comps, opts))
    blocks += problem_blocks(runs)
    for comp in comps:
        blocks += comparison_blocks(comp, opts, figures.get(comp.slug, {}))
    return blocks


# ----------------------------------------------------------------------------- rendering


def md_cell(text: str) -> str:
    """A table cell safe for Markdown."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def md_block(block: Block, out: Path) -> str:
    """One block as Markdown."""
    if isinstance(block, Heading):
        return f"{'#' * block.level} {block.text}"
    if isinstance(block, Text):
        return block.text
    if isinstance(block, Bullets):
        return "\n".join(f"- {md_cell(item)}" for item in block.items)
    if isinstance(block, Table):
        lines = [block.headers, ["---"] * len(block.headers)] + block.rows
        return "\n".join("| " + " | ".join(md_cell(c) for c in line) + " |" for line in lines)
    return f"![{block.caption}]({block.path.relative_to(out).as_posix()})\n\n*{block.caption}*"


def to_markdown(blocks: list[Block], out: Path) -> str:
    """The report as Markdown (figures referenced by relative path)."""
    return "\n\n".join(md_block(b, out) for b in blocks) + "\n"


CSS = """body{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em;font-size:.9em}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th{background:#f0f0f0}td:first-child,th:first-child{text-align:left}
tr:nth-child(even) td{background:#fafafa}figure{margin:1em 0}img{max-width:100%}
figcaption{font-style:italic;color:#555}h2{border-bottom:2px solid #ddd;margin-top:2em}"""


def data_uri(path: Path) -> str:
    """A PNG file as a base64 data URI."""
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def html_block(block: Block) -> str:
    """One block as HTML."""
    esc = html.escape
    if isinstance(block, Heading):
        return f"<h{block.level}>{esc(block.text)}</h{block.level}>"
    if isinstance(block, Text):
        return f"<p>{esc(block.text)}</p>"
    if isinstance(block, Bullets):
        return "<ul>" + "".join(f"<li>{esc(i)}</li>" for i in block.items) + "</ul>"
    if isinstance(block, Table):
        head = "".join(f"<th>{esc(h)}</th>" for h in block.headers)
        body = "".join("<tr>" + "".join(f"<td>{esc(str(c))}</td>" for c in row) + "</tr>"
                       for row in block.rows)
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    return (f'<figure><img alt="{esc(block.caption)}" src="{data_uri(block.path)}">'
            f"<figcaption>{esc(block.caption)}</figcaption></figure>")


def to_html(blocks: list[Block]) -> str:
    """The report as one self-contained HTML page (figures embedded, no external resources)."""
    body = "\n".join(html_block(b) for b in blocks)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>mergeprune report</title><style>{CSS}</style></head>\n"
            f"<body>\n{body}\n</body></html>\n")


# ----------------------------------------------------------------------------- CSV


def csv_row(run: Run, tolerance: float) -> dict[str, Any]:
    """One run as a flat dict: identity, status, accuracy, cost, compression, timings, latency."""
    exp = run.exp
    row: dict[str, Any] = {
        "run": run.label, "path": str(run.path), "status": run.status, "error": run.note,
        "name": exp.get("name", ""), "dataset": exp.get("dataset", ""),
        "tasks": "+".join(run.tasks), "model": exp.get("model", ""),
        "merger": exp.get("merger", ""), "pruner": exp.get("pruner", ""),
        "granularity": exp.get("granularity") or "", "seed": exp.get("seed", ""),
        "meets_accuracy": "" if not run.ok else "no" if tolerance_reason(run, tolerance) else "yes"}
    for task in run.tasks:
        row[f"acc/{task}"] = accuracy(run, task)
        row[f"teacher_acc/{task}"] = teacher_accuracy(run, task)
    for subset, values in (run.data.get("cost") or {}).items():
        row.update({f"{m}/{subset}": (values or {}).get(m) for m in METRICS})
    row.update({f"compression/{k}": v for k, v in (run.data.get("compression") or {}).items()})
    row.update({f"time_s/{k}": v for k, v in (run.data.get("timings_s") or {}).items()})
    for subset, info in (run.data.get("export") or {}).items():
        latency = (info or {}).get("latency_ms") if isinstance(info, dict) else None
        if isinstance(latency, dict):
            row.update({f"latency_ms/{subset}/{b}": v for b, v in latency.items()})
    return row


def write_csv(runs: list[Run], path: Path, tolerance: float) -> None:
    """One row per run, every column any run has (blank where a run has none)."""
    rows = [csv_row(r, tolerance) for r in runs]
    columns = union_keys(rows)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, restval="")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if v is None else v for k, v in row.items()})


# ----------------------------------------------------------------------------- figures


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


# ----------------------------------------------------------------------------- command line


def write_report(runs: list[Run], opts: Options) -> list[Path]:
    """Write report.md, report.csv, report.html and the figures; return the paths written."""
    opts.out.mkdir(parents=True, exist_ok=True)
    comps = comparisons(runs)
    figures = {c.slug: draw_figures(c, opts) for c in comps}
    blocks = build_report(runs, comps, opts, figures)
    md, csv_path, html_path = (opts.out / f"report.{ext}" for ext in ("md", "csv", "html"))
    md.write_text(to_markdown(blocks, opts.out))
    write_csv(runs, csv_path, opts.tolerance)
    html_path.write_text(to_html(blocks))
    return [md, csv_path, html_path] + [p for figs in figures.values() for p in figs.values()]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line arguments."""
    parser = argparse.ArgumentParser(
        prog="mergeprune-report",
        description="Compare the runs (results.json files) below directories: report.md, "
                    "report.csv, report.html and PNG figures.")
    parser.add_argument("dirs", nargs="+", metavar="DIR", help="directories searched recursively")
    parser.add_argument("--out", type=Path, default=None,
                        help="output folder (default: the first DIR)")
    parser.add_argument("--tolerance", type=float, default=1.0,
                        help="accuracy points a task may lose against its teacher and still count "
                             "in the headline (default 1.0)")
    parser.add_argument("--metric", choices=METRICS, default="flops",
                        help="cost metric of the headline, tables and figures (default flops)")
    args = parser.parse_args(argv)
    if args.tolerance < 0:
        parser.error(f"--tolerance={args.tolerance}; allowed: a number >= 0")
    return args


def main(argv: list[str] | None = None) -> int:
    """Console script: gather the runs, write the report, print the paths written."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    for d in args.dirs:
        if not Path(d).is_dir():
            print(f"warning: {d} is not a directory", file=sys.stderr)
    runs = gather(args.dirs)
    if not any(r.status != "missing" for r in runs):
        missing = len(runs)
        print("no results found" + (f" ({missing} Hydra job folders without results.json)"
                                    if missing else ""))
        return 1
    opts = Options(list(args.dirs), args.out or Path(args.dirs[0]), args.tolerance, args.metric)
    written = write_report(runs, opts)
    for line in headline_sentences_all(comparisons(runs), opts):
        print(line)
    for path in written:
        print(f"wrote {path}")
    return 0


def headline_sentences_all(comps: list[Comparison], opts: Options) -> list[str]:
    """The headline sentences of every comparison."""
    return [line for c in comps
            for line in headline_sentences(c, headlines(c, opts.tolerance, opts.metric)[0],
                                           opts.metric)]
