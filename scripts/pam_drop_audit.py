"""Which of PAM's drops costs accuracy before training: each layer's MI drop against random drops of its size.

    python scripts/pam_drop_audit.py experiment=pam_fashion2 seed=0        # any Hydra overrides
    python scripts/pam_drop_audit.py experiment=pam_split2 seed=0 --draws 5 --json out.json

PAM removes, before any training, the neurons irrelevant to every task (``Dropped_l``), their output
replaced by its batch mean (``compensate``). This script isolates that step: per hidden layer it
builds the network in which only that layer loses PAM's dropped neurons and every other neuron stays
shared by all tasks (no exclusive groups, so each task is exact up to the drop), and reports each
task's validation accuracy next to its teacher's. The null is the same network with as many neurons
dropped at random: PAM's drops of neurons constant on its batch are kept, its drops of varying neurons
are replaced by random varying neurons (``--draws`` draws). A selection rule that means something loses
less than the null. It also counts the neurons constant on PAM's batch that vary on the validation set
(a neuron dead on 128 images need not be dead).
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
from pathlib import Path

import torch

from mergeprune.merger.mi import varying
from mergeprune.merger.pam import PamMerger, PamPlan, teacher_activations
from mergeprune.merger.pam_groups import kept_sources

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pam_audit import pam_job  # noqa: E402  (the sibling script: same job, teachers and copies)

log = logging.getLogger("pam_drop_audit")


def drop_only(plan: PamPlan, layer: int, dropped: torch.Tensor, full: int) -> PamPlan:
    """The plan in which only `layer` loses the `dropped` candidates and every other neuron is shared."""
    sets = [torch.full_like(s, full) for s in plan.sets]
    sets[layer][dropped] = 0
    sources = [kept_sources(s, o) for s, o in zip(sets, plan.owners, strict=True)]
    layers = {name: {"tasks": {t: {} for t in entry["tasks"]}} for name, entry in plan.layers.items()}
    return PamPlan(sets, plan.owners, sources, plan.means, layers, plan.started)


def random_drop(pam_dropped: torch.Tensor, live: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """PAM's drops of constant neurons, and as many random varying neurons as it drops varying ones."""
    out = pam_dropped & ~live
    pool = live.nonzero().flatten()
    k = int((pam_dropped & live).sum())
    out[pool[torch.randperm(len(pool), generator=gen)[:k]]] = True
    return out


def audit(overrides: list[str], draws: int) -> dict:
    """Per hidden layer: neurons PAM drops, val accuracy after PAM's drop and after random drops."""
    with pam_job(overrides, "pam_drop_audit") as (job, teachers, names, nets):
        merger: PamMerger = job.components["merger"]
        ctx = job.context
        plan = merger.plan(nets, ctx)
        x, _ = ctx.sample(merger.samples, "train", merger.seed)
        xv, _ = ctx.sample(ctx.split_size("val"), "val", 0)
        acts = [teacher_activations(n, x)[0] for n in nets]
        val_acts = [teacher_activations(n, xv)[0] for n in nets]
        full = (1 << len(names)) - 1
        gen = torch.Generator().manual_seed(0)
        result = {"overrides": overrides, "teachers": {t: teachers[t].accuracy for t in names},
                  "teachers_val": {t: ctx.accuracy(n, "val")[t] for t, n in zip(names, nets, strict=True)},
                  "layers": {}}
        for idx, layer in enumerate(plan.layers):
            live = torch.cat([varying(a[idx]) for a in acts])
            live_val = torch.cat([varying(a[idx]) for a in val_acts])
            dropped = plan.sets[idx] == 0
            pam_acc = ctx.accuracy(merger.build(nets, drop_only(plan, idx, dropped, full)).net, "val")
            nulls = [ctx.accuracy(merger.build(nets, drop_only(plan, idx, random_drop(dropped, live, gen),
                                                               full)).net, "val") for _ in range(draws)]
            result["layers"][layer] = {
                "candidates": len(dropped), "dropped": int(dropped.sum()),
                "dropped_varying": int((dropped & live).sum()),
                "constant_on_batch_varying_on_val": int((~live & live_val).sum()),
                "pam": pam_acc,
                "random": {t: [n[t] for n in nulls] for t in names}}
            log.info(line(layer, result["layers"][layer], result["teachers_val"]))
    return result


def line(layer: str, entry: dict, teachers: dict[str, float]) -> str:
    """One layer's drop against its null, per task, in points below the teacher (validation)."""
    parts = []
    for t, ref in teachers.items():
        rnd = [100 * (ref - a) for a in entry["random"][t]]
        spread = f" ± {statistics.stdev(rnd):.2f}" if len(rnd) > 1 else ""
        null = f"{statistics.mean(rnd):.2f}{spread}" if rnd else "-"
        parts.append(f"{t}: PAM {100 * (ref - entry['pam'][t]):.2f}, random {null}")
    return (f"{layer}: drops {entry['dropped']}/{entry['candidates']} ({entry['dropped_varying']} varying on "
            f"the batch; {entry['constant_on_batch_varying_on_val']} constant on it vary on val); "
            f"val points below the teacher: " + "; ".join(parts))


def main() -> None:
    """Command line."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="*", help="Hydra overrides (merger=pam is set)")
    parser.add_argument("--draws", type=int, default=5, help="random drops per layer (the null)")
    parser.add_argument("--json", type=Path, help="also write the full result here")
    opts = parser.parse_args()
    result = audit(opts.overrides, opts.draws)
    if opts.json:
        opts.json.write_text(json.dumps(result, indent=1, default=str))


if __name__ == "__main__":
    main()
