"""Time one small sweep run sequentially and with the joblib launcher, side by side.

Both runs start from the same cache holding only the trained teachers (so neither run reuses the
other's merge/prune/finetune results) and run the same jobs. Prints and writes the wall times and
the speed-up ratio.

    python scripts/bench_launchers.py [--jobs merger=concat,pam] [--out docs/bench_launchers.md]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

EXE = Path(sys.executable).with_name("mergeprune")
COMMON = ["trainer.progress_bar=false", "logger=none", "evaluate.latency_repeats=3"]


def sweep(work: Path, name: str, cache: Path, jobs: str, extra: list[str]) -> float:
    """Run one multirun with its own copy of the teacher cache; return its wall time in seconds."""
    mine = work / f"cache_{name}"
    shutil.copytree(cache, mine)
    cmd = [str(EXE), "-m", *jobs.split(), *COMMON, f"paths.cache_dir={mine}",
           f"hydra.sweep.dir={work / name}", *extra]
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=work, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"{name} sweep failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return seconds


def main() -> None:
    """Parse arguments, train the teachers once, time both launchers."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", default="merger=concat,pam", help="sweep overrides (two jobs)")
    parser.add_argument("--work", default="outputs/bench_launchers")
    parser.add_argument("--out", default="docs/bench_launchers.md")
    parser.add_argument("--extra", nargs="*", default=[], help="more overrides for every job")
    args = parser.parse_args()
    work = Path(args.work).resolve()
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    teachers = work / "teachers_cache"
    subprocess.run([str(EXE), "stages=[teachers]", *COMMON, f"paths.cache_dir={teachers}",
                    f"hydra.run.dir={work / 'teachers'}", *args.extra], cwd=work, check=True,
                   capture_output=True)
    sequential = sweep(work, "sequential", teachers, args.jobs, args.extra)
    parallel = sweep(work, "joblib", teachers, args.jobs,
                     ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2", *args.extra])
    ratio = sequential / parallel
    table = ("| launcher | jobs | wall time (s) |\n|---|---|---|\n"
             f"| basic (sequential) | {args.jobs} | {sequential:.1f} |\n"
             f"| joblib, n_jobs=2 | {args.jobs} | {parallel:.1f} |\n\n"
             f"Speed-up of joblib over sequential: **{ratio:.2f}x** (same jobs, same starting cache, "
             f"measured one after the other by `python scripts/bench_launchers.py "
             f"--jobs \"{args.jobs}\"`).\n")
    print(table)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("# Sweep launchers: sequential vs joblib\n\n" + table)


if __name__ == "__main__":
    main()
