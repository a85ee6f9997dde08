"""`mergeprune-reproduce [PRESET...] [--page-only] [--root DIR] [--archive DIR] [--out FILE] [-- OVERRIDES]`:
run the presets asked for (default all), archive every sweep folder found below --root, then write
the results page from the archive. --root, --archive and --out default to outputs/reproduce,
docs/results/runs and docs/RESULTS.md below the current directory (run it from the repository).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from mergeprune.reproduce.archive import archive_sweep
from mergeprune.reproduce.launch import run_preset
from mergeprune.reproduce.page import write_page
from mergeprune.reproduce.presets import BY_NAME

DESCRIPTION = ("Reproduce the papers: run the experiment presets, report each sweep, and write "
               "docs/RESULTS.md.")

log = logging.getLogger(__name__)


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    """Arguments, and the Hydra overrides after `--`."""
    extra: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1:]
    parser = argparse.ArgumentParser(description=DESCRIPTION)
    parser.add_argument("presets", nargs="*", metavar="PRESET",
                        help=f"presets to run (default all: {', '.join(BY_NAME)})")
    parser.add_argument("--root", type=Path, default=Path.cwd() / "outputs" / "reproduce",
                        help="folder of the sweep folders (default outputs/reproduce)")
    parser.add_argument("--archive", type=Path, default=Path.cwd() / "docs" / "results" / "runs",
                        help="where each sweep's result files are kept and the page is read from "
                             "(default docs/results/runs)")
    parser.add_argument("--out", type=Path, default=Path.cwd() / "docs" / "RESULTS.md",
                        help="the page (default docs/RESULTS.md; figures go to its folder/results)")
    parser.add_argument("--page-only", action="store_true", help="only archive the sweep folders and rewrite the page")
    args = parser.parse_args(argv)
    unknown = [p for p in args.presets if p not in BY_NAME]
    if unknown:
        parser.error(f"unknown preset(s) {', '.join(unknown)}; allowed: {', '.join(BY_NAME)}")
    return args, extra


def main(argv: list[str] | None = None) -> int:
    """Run the presets asked for, then write the page; exit 1 if a preset's sweep failed."""
    args, overrides = parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    failed = []
    if not args.page_only:
        for name in args.presets or list(BY_NAME):
            if run_preset(name, args.root, overrides, args.archive) != 0:
                failed.append(name)
    for name in BY_NAME:
        if (args.root / name).is_dir():
            archive_sweep(args.root / name, args.archive / name)
    page = write_page(args.archive, args.out)
    log.info("reproduce: wrote %s", page)
    if failed:
        log.error("reproduce: failed presets: %s (see their sweep folders)", ", ".join(failed))
    return 1 if failed else 0
