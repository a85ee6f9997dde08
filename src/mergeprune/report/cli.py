"""`mergeprune-report DIR...`: argument parsing and the console script's `main` (gather the runs,
write the report, print the headline sentences and the paths written).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mergeprune.report.compare import Options, comparisons, headline_sentences_all
from mergeprune.report.runs import gather
from mergeprune.report.values import METRICS
from mergeprune.report.writers import write_report


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
    parser.add_argument("--metric", choices=METRICS, default="flops",
                        help="cost metric of the headline, tables and figures (default flops)")
    args = parser.parse_args(argv)
    if args.tolerance < 0:
        parser.error(f"--tolerance={args.tolerance}; allowed: a number >= 0")
    return args


def main(argv: list[str] | None = None) -> int:
    """Console script: gather the runs, write the report, print the paths written."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    for d in args.dirs:
        if not Path(d).is_dir():
            print(f"warning: {d} is not a directory", file=sys.stderr)
    runs = gather(args.dirs)
    if not any(r.status != "missing" for r in runs):
        missing = len(runs)
        print("no results found" + (f" ({missing} Hydra job folders without results.json)"
                                    if missing else ""))
        return 1
    opts = Options(list(args.dirs), args.out or Path(args.dirs[0]), args.tolerance, args.metric)
    written = write_report(runs, opts)
    for line in headline_sentences_all(comparisons(runs), opts):
        print(line)
    for path in written:
        print(f"wrote {path}")
    return 0
