"""Reproduce the papers: the same as `mergeprune-reproduce` (see mergeprune.reproduce)."""
from mergeprune.reproduce.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
