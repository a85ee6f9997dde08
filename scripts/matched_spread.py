"""Seed spread of every method's cost at matched accuracy in one or more sweeps.

    python scripts/matched_spread.py outputs/multirun/split2_seeds [--tolerance 1.0] [--noise-z 1.0] [--by merger.grouping]

Prints, per comparison, method (and `--by` override values) and task subset, the matched FLOPs of
every seed (the cheapest trajectory point within the tolerance, plus noise_z standard errors, of the
teachers on validation, as the report reads it), their mean, std and coefficient of variation; `--json` writes the rows too.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from mergeprune.report.curves import Rule
from mergeprune.report.runs import gather
from mergeprune.report.spread import spread_markdown, spread_rows


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, gather the runs, print the table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dirs", nargs="+", type=Path)
    ap.add_argument("--tolerance", type=float, default=1.0, help="accuracy points below the teachers (default 1)")
    ap.add_argument("--noise-z", type=float, default=1.0, dest="noise_z",
                    help="standard errors of the teachers' validation accuracy also allowed (default 1, as the pruners)")
    ap.add_argument("--by", nargs="*", default=[], help="launch overrides that split a method (merger.grouping)")
    ap.add_argument("--metric", default="flops", choices=["flops", "params"])
    ap.add_argument("--json", type=Path, help="also write the rows here")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    rows = spread_rows(gather(args.dirs), Rule(args.tolerance, args.noise_z), args.by, args.metric)
    logging.info(spread_markdown(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
