"""Merge the teachers of one job with PAM (no pruning) and print the evidence of every layer.

    python scripts/pam_audit.py                                  # split2, mnist5k, lenet5, defaults
    python scripts/pam_audit.py tasks=split5 merger.closure=cut  # any Hydra overrides

Teachers are trained or reused from the stage cache (``paths.cache_dir``, outputs/cache by default).
Per layer and task it prints the MI of the whole layer, the threshold, |Irr_t|, the null (shuffled-label
MI of a random set of that size), the exclusive group's size and how many of it come from the task's
own teacher; then the share of live units in exclusive groups, the cost of every task subset and the
accuracy of each task of the merged network (before any training). ``--json`` writes all of it.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir

from mergeprune.cost import all_costs
from mergeprune.pipeline import prepare
from mergeprune.stages.runners import run_teachers

log = logging.getLogger("pam_audit")
ROOT = Path(__file__).resolve().parents[1]


@contextmanager
def pam_job(overrides: list[str], name: str) -> Iterator[tuple[Any, dict[str, Any], list[str], list[Any]]]:
    """The job the overrides describe (merger=pam), its teachers (trained or cached), task names, and a
    copy of each teacher's network to merge; the job folder is temporary."""
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=["merger=pam", "logger=none", *overrides])
    with tempfile.TemporaryDirectory() as tmp:
        job = prepare(cfg, Path(tmp), name, "audit")
        teachers = run_teachers(job)
        names = [t.name for t in job.tasks]
        yield job, teachers, names, [copy.deepcopy(teachers[t].net) for t in names]


def audit(overrides: list[str]) -> dict:
    """The merge report, subset costs and accuracies of PAM on the job the overrides describe."""
    with pam_job(overrides, "pam_audit") as (job, teachers, names, nets):
        net, report = job.components["merger"](nets, job.context)
        accuracy = job.context.accuracy(net, "test")
    costs = {k: v["flops"] for k, v in all_costs(net).items()}
    return {"overrides": overrides, "report": report, "flops": costs, "accuracy": accuracy,
            "teachers": {t: teachers[t].accuracy for t in names}}


def summary(result: dict) -> list[str]:
    """Human-readable lines: per layer and task the evidence, then exclusive shares, costs, accuracy."""
    lines = []
    for name, lay in result["report"]["layers"].items():
        live = lay["candidates"] - lay["constant"]
        excl = sum(e.get("exclusive", 0) for e in lay["tasks"].values())
        lines.append(f"{name}: {lay['candidates']} candidates, {lay['constant']} constant, groups {lay['groups']}, "
                     f"dropped {lay['dropped']}, exclusive {excl}/{live} live = {excl / max(live, 1):.0%}")
        for t, e in lay["tasks"].items():
            own = f"{e['own']}/{e['exclusive']}" if e.get("exclusive") else "-"
            lines.append(f"  {t}: layer MI {e['layer_mi']:.3f}, threshold {e['threshold']:.3f}, |Irr| "
                         f"{e['irrelevant']} ({e['irrelevant_varying']} varying, MI {e['irrelevant_mi']:.3f}, "
                         f"null {e['null_mi']:.3f}), exclusive own {own}")
    lines.append("flops: " + ", ".join(f"{k} {v:,}" for k, v in result["flops"].items()))
    lines.append("accuracy (merged, before training): " + ", ".join(
        f"{t} {a:.2f} (teacher {result['teachers'][t]:.2f})" for t, a in result["accuracy"].items()))
    return lines


def main() -> None:
    """Command line."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="*", help="Hydra overrides (merger=pam is set)")
    parser.add_argument("--json", type=Path, help="also write the full result here")
    opts = parser.parse_args()
    result = audit(opts.overrides)
    for line in summary(result):
        log.info(line)
    if opts.json:
        opts.json.write_text(json.dumps(result, indent=1, default=str))


if __name__ == "__main__":
    main()
