"""`mergeprune-report DIR...`: argument parsing and the console script's `main` (gather the runs,
write the report, print the headline sentences and the paths written).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mergeprune.report.compare import Options, comparisons
from mergeprune.report.matched import summary_sentences
from mergeprune.report.runs import gather
from mergeprune.report.values import METRICS
from mergeprune.report.writers import write_report

log = logging.getLogger(__name__)


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
    parser.add_argument("--noise-z", type=float, default=1.0, dest="noise_z",
                        help="matched accuracy on the trajectories also allows this many standard "
                             "errors of each teacher's validation accuracy, as the pruners' "
                             "acceptance test does (default 1.0, the pruners' noise_z; 0: the "
                             "tolerance alone)")
    parser.add_argument("--metric", choices=METRICS, default="flops",
                        help="cost metric of the headline, tables and figures (default flops)")
    args = parser.parse_args(argv)
    if args.tolerance < 0:
        parser.error(f"--tolerance={args.tolerance}; allowed: a number >= 0")
    if not args.noise_z >= 0:
        parser.error(f"--noise-z={args.noise_z}; allowed: a number >= 0")
    return args


@contextmanager
def _console() -> Iterator[None]:
    """While the command runs, its INFO messages go to stdout as plain lines, warnings to stderr."""
    out, err = logging.StreamHandler(sys.stdout), logging.StreamHandler(sys.stderr)
    out.addFilter(lambda record: record.levelno < logging.WARNING)
    err.setLevel(logging.WARNING)
    for handler in (out, err):
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(handler)
    level, propagate = log.level, log.propagate
    log.setLevel(logging.INFO)
    log.propagate = False  # printed once, even where the caller configured logging itself
    try:
        yield
    finally:
        log.removeHandler(out)
        log.removeHandler(err)
        log.setLevel(level)
        log.propagate = propagate


def main(argv: list[str] | None = None) -> int:
    """Console script: gather the runs, write the report, print the paths written."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    with _console():
        return _report(args)


def _report(args: argparse.Namespace) -> int:
    """Gather the runs below args.dirs, write the report and log the headline and paths."""
    for d in args.dirs:
        if not Path(d).is_dir():
            log.warning("warning: %s is not a directory", d)
    runs = gather(args.dirs)
    if not any(r.status != "missing" for r in runs):
        missing = len(runs)
        log.info("no results found" + (f" ({missing} Hydra job folders without results.json)"
                                       if missing else ""))
        return 1
    opts = Options(list(args.dirs), args.out or Path(args.dirs[0]), args.tolerance, args.metric, args.noise_z)
    written = write_report(runs, opts)
    for line in summary_sentences(comparisons(runs), opts):
        log.info(line)
    for path in written:
        log.info("wrote %s", path)
    return 0
