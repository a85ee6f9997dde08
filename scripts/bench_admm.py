"""Benchmark the weight pruners on LeNet-5 / MNIST (mnist5k, tasks=all10), the ADMM papers' setting.

From one dense teacher (the project's teachers stage, reused from its cache when present), runs:
iterative magnitude pruning at a few compression targets (the best one within the accuracy
tolerance is marked), one-shot ADMM and progressive ADMM, each on a copy of the teacher, with the
settings of conf/pruner/*.yaml. Writes a table (method, compression, test accuracy, change vs the
dense teacher, wall time) to stdout and to a markdown file, and measures the wall time of one ADMM
training epoch (penalty + callback, Z/U update every epoch) against one plain epoch.

    python scripts/bench_admm.py                       # everything, docs/bench_admm.md
    python scripts/bench_admm.py --methods admm        # one method
    python scripts/bench_admm.py --quick --out /tmp/b.md   # tiny smoke run (digits, 1-2 epochs)
    python scripts/bench_admm.py --override pruner.rho=1e-2   # any Hydra override, every method
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from mergeprune.cost import dense_weights, nonzero_weights  # noqa: E402
from mergeprune.models.grouped import GroupedNet  # noqa: E402
from mergeprune.pipeline import Job, build, prepare  # noqa: E402
from mergeprune.pruner.admm import AdmmCallback, AdmmState  # noqa: E402
from mergeprune.pruner.masks import train_phase  # noqa: E402
from mergeprune.stages.teachers import train_teachers  # noqa: E402
from mergeprune.training.fit import accuracy  # noqa: E402

METHODS = ("magnitude", "admm", "admm_progressive")
BASE = ["model=lenet5", "tasks=all10", "dataset=mnist5k", "logger=none", "trainer.progress_bar=false"]
QUICK = ["dataset=digits", "teachers.epochs=1"]
QUICK_PRUNER = {"magnitude": ["pruner.retrain_epochs=1", "pruner.fraction=0.8"],
                "admm": ["pruner.iterations=2", "pruner.epochs_per_iteration=1",
                         "pruner.retrain_epochs=1"],
                "admm_progressive": ["pruner.iterations=2", "pruner.epochs_per_iteration=1",
                                     "pruner.retrain_epochs=1", "pruner.targets=[20,40]"]}


def compose_cfg(overrides: list[str]) -> DictConfig:
    """The project's Hydra config (conf/config.yaml) with overrides, as `mergeprune` composes it."""
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("config", overrides=overrides)


class EpochTimer(pl.Callback):
    """Wall time of each training epoch, validation excluded, callbacks before it included."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self.start = 0.0
        self.paused = 0.0

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.start, self.paused = time.perf_counter(), 0.0

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._val = time.perf_counter()

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.paused += time.perf_counter() - self._val

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.times.append(time.perf_counter() - self.start - self.paused)


def epoch_times(teacher: GroupedNet, job: Job, admm_cfg: DictConfig | None, epochs: int) -> list[float]:
    """Per-epoch training times (first epoch dropped) of plain training or ADMM training."""
    net, timer = copy.deepcopy(teacher), EpochTimer()
    callbacks: list[pl.Callback] = [timer]
    optimizer = {"_target_": "torch.optim.Adam", "lr": 1e-3}
    if admm_cfg is not None:
        pruner = build(admm_cfg)
        counts = pruner.budget.counts(net, pruner.granularity)
        state = AdmmState(net, counts, pruner.granularity, pruner.settings.rho,
                          pruner.settings.rho_multiplier, pruner.settings.rho_max)
        callbacks = [AdmmCallback(state, 1), timer]  # a Z/U update every epoch: the worst case
        optimizer = pruner.settings.optimizer
    train_phase(net, job.context, optimizer, epochs, "bench/timing", callbacks=callbacks)
    return timer.times[1:]


def time_ratio(teacher: GroupedNet, job: Job, admm_cfg: DictConfig, repeats: int,
               epochs: int) -> dict[str, float]:
    """Median ADMM epoch / median plain epoch, alternating the two to share machine noise."""
    plain, admm = [], []
    for _ in range(repeats):
        plain += epoch_times(teacher, job, None, epochs)
        admm += epoch_times(teacher, job, admm_cfg, epochs)
    p, a = statistics.median(plain), statistics.median(admm)
    return {"plain_s": p, "admm_s": a, "ratio": a / p, "samples": len(plain)}


def paper_proportions() -> str:
    """conf/pruner/admm.yaml's per-layer keep ratios as a Hydra dict literal (the search's split)."""
    keep = compose_cfg(["pruner=admm"]).pruner.keep
    return "{" + ", ".join(f"{k}: {v}" for k, v in keep.items()) + "}"


def run_pruner(teacher: GroupedNet, job: Job, cfg: DictConfig, label: str) -> dict[str, Any]:
    """Prune a copy of the teacher with the configured pruner; accuracy, compression, wall time."""
    net = copy.deepcopy(teacher)
    pruner = build(cfg.pruner)
    pl.seed_everything(int(cfg.seed), verbose=False)
    start = time.perf_counter()
    pruner(net, job.context, f"bench/{label}")
    seconds = time.perf_counter() - start
    acc = accuracy(net, job.tasks, job.data, "test")
    return {"method": label, "compression": dense_weights(net) / max(1, nonzero_weights(net)),
            "nonzero": nonzero_weights(net), "accuracy": sum(acc.values()) / len(acc),
            "seconds": seconds, "report": pruner.report}


def table(rows: list[dict[str, Any]], dense_acc: float, tolerance: float) -> str:
    """Markdown table of the runs."""
    lines = ["| method | compression | non-zero weights | test acc (%) | vs dense (pt) | within tol | wall (s) |",
             "| --- | ---: | ---: | ---: | ---: | :---: | ---: |"]
    for r in rows:
        delta = 100 * (r["accuracy"] - dense_acc)
        ok = "yes" if delta >= -tolerance else "no"
        lines.append(f"| {r['method']} | {r['compression']:.1f}x | {r['nonzero']} | "
                     f"{100 * r['accuracy']:.2f} | {delta:+.2f} | {ok} | {r['seconds']:.0f} |")
    return "\n".join(lines)


def layer_table(rows: list[dict[str, Any]]) -> str:
    """Per-layer kept fraction of every run."""
    names = list(rows[0]["report"]["layers"]) if rows else []
    lines = ["| method | " + " | ".join(f"{n} kept %" for n in names) + " |",
             "| --- | " + " | ".join("---:" for _ in names) + " |"]
    for r in rows:
        layers = r["report"]["layers"]
        cells = [f"{100 * (1 - layers[n]['achieved_sparsity']):.2f}" for n in names]
        lines.append(f"| {r['method']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def stage_notes(rows: list[dict[str, Any]]) -> list[str]:
    """Validation accuracy before hard pruning, right after it, and after retraining, per ADMM stage."""
    lines = ["Validation accuracy (%) per ADMM stage: end of ADMM -> hard-pruned -> retrained:", ""]
    for r in rows:
        rep = r["report"]
        stages = rep.get("stages") or ([rep["admm"]] if "admm" in rep else [])
        for i, st in enumerate(stages):
            if st.get("val_acc_before_prune") is None:
                continue
            lines.append(f"- {r['method']}, stage {i} ({st['compression']:.1f}x): "
                         f"{100 * st['val_acc_before_prune']:.1f} -> {100 * st['val_acc_hard_pruned']:.1f}"
                         f" -> {100 * st['val_acc_retrained']:.1f} ({st['seconds']:.0f} s)")
        if "settings" in rep and "(default" in r["method"]:
            knobs = {k: v for k, v in rep["settings"].items() if k != "granularity"}
            lines.append(f"  - settings: {knobs}")
    return [*lines, ""] if len(lines) > 2 else []


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--methods", default=",".join(METHODS),
                    help=f"comma-separated subset of {','.join(METHODS)}, plus 'timing'")
    ap.add_argument("--targets", default="71.2,110,125,140",
                    help="compression targets searched for iterative magnitude pruning and for "
                         "one-shot ADMM (same per-layer proportions as conf/pruner/admm.yaml's keep)")
    ap.add_argument("--tolerance", type=float, default=0.5,
                    help="accuracy drop (points) that still counts as 'within tolerance'")
    ap.add_argument("--timing-repeats", type=int, default=5)
    ap.add_argument("--timing-epochs", type=int, default=4)
    ap.add_argument("--override", action="append", default=[],
                    help="extra Hydra override (repeatable); 'METHOD:pruner.key=value' applies to "
                         "one method only, 'pruner.key=value' to every method")
    ap.add_argument("--threads", type=int, default=0,
                    help="torch intra-op threads (0: torch's default); 1 is steadier on a shared box")
    ap.add_argument("--quick", action="store_true", help="tiny smoke run (digits, 1-2 epochs)")
    ap.add_argument("--out", default=str(ROOT / "docs" / "bench_admm.md"))
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and write the table."""
    args = parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    methods = [m for m in args.methods.split(",") if m]
    unknown = [m for m in methods if m not in (*METHODS, "timing")]
    if unknown:
        sys.exit(f"bench_admm: unknown methods {unknown}; allowed: {', '.join(METHODS)}, timing")
    extra = [o for o in args.override if o.split(":")[0] not in METHODS and not o.startswith("pruner.")]
    targets = [float(t) for t in args.targets.split(",") if t]
    workdir = Path(tempfile.mkdtemp(prefix="bench_admm_"))
    if args.quick:
        extra = [*QUICK, f"paths.output_dir={workdir}", *extra]
        targets, args.timing_repeats, args.timing_epochs = targets[:1], 1, 2
    base = compose_cfg([*BASE, *extra])
    job = prepare(base, workdir / "job", "bench_admm", "bench")
    pl.seed_everything(int(base.seed), verbose=False)
    t0 = time.perf_counter()
    teachers = train_teachers(job)
    teacher = next(iter(teachers.values())).net
    teacher_s = time.perf_counter() - t0
    dense_acc = sum(accuracy(teacher, job.tasks, job.data, "test").values()) / len(job.tasks)
    rows = [{"method": "dense teacher", "compression": 1.0, "nonzero": nonzero_weights(teacher),
             "accuracy": dense_acc, "seconds": teacher_s,
             "report": {"layers": {n: {"achieved_sparsity": 0.0} for n in teacher.names}}}]
    print(f"dense teacher: test acc {100 * dense_acc:.2f}% ({teacher_s:.0f} s)", flush=True)

    def cfg_for(method: str, *more: str) -> DictConfig:
        quick = QUICK_PRUNER[method] if args.quick else []
        mine = [o.split(":", 1)[1] for o in args.override if o.split(":")[0] == method]
        common = [o for o in args.override if o.startswith("pruner.")]
        return compose_cfg([*BASE, f"pruner={method}", *extra, *quick, *common, *mine, *more])

    best: dict[str, dict[str, Any]] = {}

    def record(row: dict[str, Any], family: str) -> None:
        rows.append(row)
        print(table([row], dense_acc, args.tolerance).splitlines()[-1], flush=True)
        within = 100 * (row["accuracy"] - dense_acc) >= -args.tolerance
        if within and row["compression"] > best.get(family, {}).get("compression", 0.0):
            best[family] = row

    proportions = paper_proportions()
    if "magnitude" in methods:
        for t in targets:
            record(run_pruner(teacher, job, cfg_for("magnitude", f"pruner.target_compression={t}",
                                                    f"pruner.proportions={proportions}"),
                              f"magnitude iterative (target {t:g}x)"), "magnitude iterative")
    if "admm" in methods:
        default = run_pruner(teacher, job, cfg_for("admm"), "ADMM one-shot (default: paper keep)")
        record(default, "ADMM one-shot")
        search = [] if args.quick else targets
        for t in [t for t in search if abs(t - default["compression"]) > 0.01 * t]:
            record(run_pruner(teacher, job, cfg_for("admm", "pruner.keep=null",
                                                    f"pruner.target_compression={t}",
                                                    f"pruner.proportions={proportions}"),
                              f"ADMM one-shot (target {t:g}x)"), "ADMM one-shot")
    if "admm_progressive" in methods:
        record(run_pruner(teacher, job, cfg_for("admm_progressive"), "ADMM progressive (default)"),
               "ADMM progressive")
    timing = None
    if "timing" in methods or set(METHODS) <= set(methods):
        timing = time_ratio(teacher, job, cfg_for("admm").pruner, args.timing_repeats,
                            args.timing_epochs)
        print(f"epoch time: plain {timing['plain_s']:.3f} s, ADMM {timing['admm_s']:.3f} s, "
              f"ratio {timing['ratio']:.3f} (median of {timing['samples']})", flush=True)
    write_report(args, rows, dense_acc, best, timing, argv)


def write_report(args: argparse.Namespace, rows: list[dict[str, Any]], dense_acc: float,
                 best: dict[str, dict[str, Any]], timing: dict[str, float] | None,
                 argv: list[str] | None) -> None:
    """Print the tables and write them to the markdown file."""
    cmd = "python scripts/bench_admm.py " + " ".join(argv if argv is not None else sys.argv[1:])
    parts = ["# Pruning benchmark: LeNet-5 on mnist5k (tasks=all10)", "",
             f"Command: `{cmd.strip()}`", "",
             f"Accuracy tolerance: {args.tolerance} points below the dense teacher "
             f"({100 * dense_acc:.2f}%; progressive ADMM's requirement is 1.0). Compression = dense "
             "conv+linear weights / non-zero weights. Magnitude and the ADMM searches use "
             "conf/pruner/admm.yaml's per-layer split (scaled to the target); magnitude's schedule "
             "is conf/pruner/magnitude.yaml's (iterative).",
             "", table(rows, dense_acc, args.tolerance), "", "Kept fraction per layer:", "",
             layer_table(rows), ""]
    parts += stage_notes(rows)
    for family, row in best.items():
        parts += [f"- best {family} within tolerance: **{row['compression']:.1f}x** "
                  f"({100 * row['accuracy']:.2f}%, {row['method']})"]
    parts += [""]
    if timing is not None:
        parts += [f"Epoch wall time (training only, median of {timing['samples']} epochs): plain "
                  f"{timing['plain_s']:.3f} s, ADMM (penalty + callback, Z/U update every epoch) "
                  f"{timing['admm_s']:.3f} s, ratio **{timing['ratio']:.3f}**.", ""]
    text = "\n".join(parts)
    print("\n" + text)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(f"written to {out}")


if __name__ == "__main__":
    main()
