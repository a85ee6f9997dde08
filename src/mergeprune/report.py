"""`mergeprune-report DIR...`: gather results.json files below directories into a comparison report."""

from __future__ import annotations

import sys
from pathlib import Path

from mergeprune.results import read_results


def find_results(dirs: list[str]) -> list[tuple[Path, dict]]:
    """Every results.json below the given directories, with its contents."""
    found = []
    for d in dirs:
        for path in sorted(Path(d).rglob("results.json")):
            found.append((path, read_results(path) or {"status": "unreadable"}))
    return found


def main(argv: list[str] | None = None) -> int:
    """Console script."""
    args = sys.argv[1:] if argv is None else argv
    found = find_results(args or ["outputs"])
    if not found:
        print("no results found")
        return 1
    for path, res in found:
        print(f"{res.get('status', '?'):8s} {path}")
    return 0
