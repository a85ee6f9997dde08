"""Samples per second of the project's training against a plain PyTorch loop, side by side.

Two phases, each timed for the project's code path and for a plain loop doing the same work (same
network and initial weights, batches sliced from the same in-memory tensors in the same order, the
same optimizer and learning-rate schedule, the same torch threads), alternating R times:

- teacher: a single-task teacher trained as the teachers stage does (MultiTaskModule + Lightning,
  validation after every epoch); the plain loop trains and validates the same epochs.
- prune: the finetuning inside pruning, as the pruning schedule runs it after a step
  (training.loop.masked_finetune on a two-task network of concatenated teachers' widths with half its
  neurons pruned, a fresh optimizer every time, `--steps` optimizer steps, masks enforced after every
  step); the plain loop does the same steps with the same masks. `--lightning` times the schedule's
  former path instead (train_phase: a fresh LightningModule and Trainer per finetuning).

    python scripts/bench_training.py                          # full Fashion-MNIST (55,000 train)
    python scripts/bench_training.py --dataset mnist5k --model lenet5 --epochs 2
    python scripts/bench_training.py --quick                  # digits, seconds (a smoke run)

Each line gives samples/s of both and their ratio (project / plain); the summary is the median ratio
over the repeats. Absolute numbers on a shared machine are noisy; the ratio is what to read.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from mergeprune.data.datamodule import EpochShuffle  # noqa: E402
from mergeprune.models.grouped import GroupedNet  # noqa: E402
from mergeprune.pipeline import Job, prepare  # noqa: E402
from mergeprune.pruner.masks import train_phase  # noqa: E402
from mergeprune.seeding import draw_seed  # noqa: E402
from mergeprune.training.fit import accuracy  # noqa: E402
from mergeprune.training.loop import masked_finetune  # noqa: E402
from mergeprune.training.module import MultiTaskModule  # noqa: E402
from mergeprune.training.optim import adam, build_optimizer  # noqa: E402

log = logging.getLogger("bench_training")
BASE = ["tasks=split2", "logger=none", "trainer.progress_bar=false"]


def compose_cfg(overrides: list[str], out: Path) -> DictConfig:
    """The project's config with overrides, outputs under out."""
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("config", overrides=[*BASE, f"paths.output_dir={out}", *overrides])


def plain_epochs(net: GroupedNet, job: Job, optimizer: dict, epochs: int, seed: int,
                 steps: int | None = None, validate: bool = True) -> int:
    """Train net in a plain loop over the project's in-memory batches; returns the samples seen."""
    data, tasks = job.data, job.tasks
    train = data.splits["train"]
    pos = [i for i, t in enumerate(tasks) if t.name in net.tasks]
    built = build_optimizer(net.parameters(), optimizer, steps or epochs, "step" if steps else "epoch")
    opt, sched = (built["optimizer"], built["lr_scheduler"]["scheduler"]) if isinstance(built, dict) \
        else (built, None)
    order, seen, epoch = EpochShuffle(train, seed), 0, 0
    net.train()
    while (steps is None and epoch < epochs) or (steps is not None and seen < steps * data.batch_size):
        order.set_epoch(epoch)
        idx = list(order)
        for start in range(0, len(idx), data.batch_size):
            x, targets = train.__getitems__(idx[start:start + data.batch_size])
            out = net(x)
            loss = sum(tasks[i].loss(out[tasks[i].name], targets[i]) for i in pos)
            opt.zero_grad()
            loss.backward()
            opt.step()
            net.apply_masks()
            seen += len(x)
            if sched is not None and steps is not None:
                sched.step()
            if steps is not None and seen >= steps * data.batch_size:
                break
        if sched is not None and steps is None:
            sched.step()
        if validate:
            accuracy(net, tasks, data, "val")
            net.train()
        epoch += 1
    return seen


def teacher_pair(job: Job, epochs: int) -> tuple[float, float]:
    """Samples/s of the project's teacher training and of the plain loop, from the same initial net."""
    task = job.tasks[0]
    pl.seed_everything(0, verbose=False)
    start = GroupedNet.single(job.spec, task.name, task.n_outputs)
    optimizer = dict(job.cfg.teachers.optimizer)
    net = copy.deepcopy(start)
    t0 = time.perf_counter()
    job.context.fit(MultiTaskModule(net, job.tasks, optimizer, epochs, stage="bench/teacher"), epochs)
    project = epochs * len(job.data.splits["train"]) / (time.perf_counter() - t0)
    net = copy.deepcopy(start)
    t0 = time.perf_counter()
    seen = plain_epochs(net, job, optimizer, epochs, draw_seed())
    return project, seen / (time.perf_counter() - t0)


def pruned_concat(job: Job) -> GroupedNet:
    """A two-task network of two concatenated teachers' widths with every other neuron pruned."""
    a, b = job.tasks[0], job.tasks[1]
    widths = [layer.width for layer in job.spec.layers]
    pl.seed_everything(1, verbose=False)
    net = GroupedNet(job.spec, [a.name, b.name], {a.name: a.n_outputs, b.name: b.n_outputs},
                     [[1] * w + [2] * w for w in widths])
    for name in net.names[:-1]:
        keep = torch.ones(len(net.groups(name)), dtype=torch.bool)
        keep[1::2] = False
        net.prune_neurons(name, keep)
    return net


def prune_pair(job: Job, steps: int, lightning: bool = False) -> tuple[float, float]:
    """Samples/s of the schedule's finetuning (`steps` optimizer steps; with `lightning`, one epoch of
    train_phase) and of the plain loop doing the same steps."""
    start, optimizer = pruned_concat(job), adam(1e-3)
    if lightning:
        steps = len(job.data.train_dataloader())
    samples = min(steps * job.data.batch_size, len(job.data.splits["train"])) if lightning \
        else steps * job.data.batch_size
    net = copy.deepcopy(start)
    t0 = time.perf_counter()
    if lightning:
        train_phase(net, job.context, optimizer, 1, "bench/prune")
    else:
        masked_finetune(net, job.tasks, job.data, optimizer, 1, "bench/prune", steps_per_epoch=steps)
    project = samples / (time.perf_counter() - t0)
    net = copy.deepcopy(start)
    t0 = time.perf_counter()
    seen = plain_epochs(net, job, optimizer, 1, draw_seed(), steps=steps, validate=False)
    return project, seen / (time.perf_counter() - t0)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="fashion_mnist")
    p.add_argument("--model", default="lenet5_classic")
    p.add_argument("--epochs", type=int, default=3, help="teacher epochs per timing (a Trainer's start-up is paid once per fit)")
    p.add_argument("--steps", type=int, default=100, help="optimizer steps per pruning finetune timing")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--lightning", action="store_true",
                   help="time the pruning finetune through train_phase (a Trainer per finetuning)")
    p.add_argument("--quick", action="store_true", help="digits data, 1 repeat, 20 steps (smoke run)")
    p.add_argument("--override", action="append", default=[], help="any Hydra override (repeatable)")
    p.add_argument("--json", type=Path, default=None, help="also write the figures here")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run both phases R times, alternating project and plain; log the figures and the median ratios."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = parse_args(argv)
    if args.quick:
        args.dataset, args.model, args.repeats, args.steps = "digits", "lenet5", 1, 20
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(tempfile.mkdtemp(prefix="bench_training_"))
    cfg = compose_cfg([f"dataset={args.dataset}", f"model={args.model}", *args.override], out)
    job = prepare(cfg, out / "job", "bench", "bench")
    log.info("bench_training: %s, %s, %d train images, batch %d, %d torch threads", args.dataset,
             args.model, len(job.data.splits["train"]), job.data.batch_size, torch.get_num_threads())
    rows = []
    for r in range(args.repeats):
        for phase, pair in (("teacher", lambda: teacher_pair(job, args.epochs)),
                            ("prune", lambda: prune_pair(job, args.steps, args.lightning))):
            project, plain = pair()
            rows.append({"repeat": r, "phase": phase, "project": project, "plain": plain,
                         "ratio": project / plain})
            log.info("%-8s repeat %d: project %8.0f samples/s, plain %8.0f samples/s, ratio %.3f",
                     phase, r, project, plain, project / plain)
    summary = {phase: statistics.median(x["ratio"] for x in rows if x["phase"] == phase)
               for phase in ("teacher", "prune")}
    log.info("median ratio (project / plain): teacher %.3f, prune %.3f", summary["teacher"], summary["prune"])
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                         "threads": torch.get_num_threads(), "rows": rows,
                                         "median_ratio": summary}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
