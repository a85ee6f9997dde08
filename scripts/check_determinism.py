"""Run one sweep twice, from a cold cache and with only the teachers cached, and compare the results.

    python scripts/check_determinism.py                       # the main sweep (four mergers, mnist5k)
    python scripts/check_determinism.py dataset=digits debug=fast   # any extra overrides

Each job's results.json numbers (times, reuse flags and paths aside) and its model.pt tensors
must be bit-identical between the two launches; the script prints one line per job and exits 1
if any differs. Outputs go to outputs/determinism/{cold,warm} with their own caches.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import subprocess
import sys
import time
from pathlib import Path

from mergeprune.results import measured, same_network

log = logging.getLogger("check_determinism")
BIN = Path(sys.executable).parent


def launch(args: list[str], sweep: Path, cache: Path) -> float:
    """Run `mergeprune` with args into a sweep folder and cache; returns the wall time."""
    start = time.perf_counter()
    cmd = [str(BIN / "mergeprune"), *args, f"hydra.sweep.dir={sweep}", f"paths.cache_dir={cache}"]
    log.info("running: %s", " ".join(cmd))
    subprocess.run(cmd, check=True)
    return time.perf_counter() - start


def compare(cold: Path, warm: Path) -> list[tuple[str, bool, bool]]:
    """(job, same numbers, same network) for every job folder of the cold sweep."""
    rows = []
    for path in sorted(cold.glob("*/results.json")):
        other = warm / path.parent.name
        a, b = json.loads(path.read_text()), json.loads((other / "results.json").read_text())
        nets = (path.parent / "model.pt", other / "model.pt")
        rows.append((path.parent.name, measured(a) == measured(b),
                     all(p.exists() for p in nets) and same_network(*nets)))
    return rows


def main() -> None:
    """Command line."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for both launches")
    parser.add_argument("--sweep", default="merger=none,concat,mtz,pam", help="the swept parameter(s)")
    parser.add_argument("--out", default="outputs/determinism")
    opts = parser.parse_args()
    out = Path(opts.out)
    shutil.rmtree(out, ignore_errors=True)
    args = ["-m", *opts.sweep.split(), "logger=none", *opts.overrides]
    t_cold = launch(args, out / "cold", out / "cache_cold")
    teachers = [a for a in args if not a.startswith("merger=")] + ["stages=[teachers]"]
    launch(teachers, out / "teachers_only", out / "cache_warm")
    t_warm = launch(args, out / "warm", out / "cache_warm")
    rows = compare(out / "cold", out / "warm")
    for job, numbers, net in rows:
        log.info("%-40s results.json numbers %s, model.pt %s", job,
                 "identical" if numbers else "DIFFER", "identical" if net else "DIFFERS")
    log.info("cold cache %.0f s, teachers cached %.0f s; %d jobs", t_cold, t_warm, len(rows))
    ok = rows and all(n and m for _, n, m in rows)
    log.info("bit-identical: %s", "yes" if ok else "NO")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
