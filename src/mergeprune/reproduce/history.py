"""The page's section "what changed since the first pass": each headline number of the first pass
(docs/results/first_pass.yaml, quoted from the page at the commit it names) beside the same check
of this pass, with the changes that moved it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from mergeprune import report as rp
from mergeprune.reproduce.claims import Checks

FIRST_PASS = Path(__file__).resolve().parents[3] / "docs" / "results" / "first_pass.yaml"
INTRO = ("The first pass (docs/RESULTS.md at commit 93f18c6) read every ratio from the final networks "
         "of the runs within 1 point of their teachers on test; this pass reads them at matched "
         "accuracy from the pruning trajectories, with the seed spread, by the test the pruners accept "
         "a step by (1 point + 1 standard error of the teacher's validation accuracy; the checks table "
         "shows the 1 point alone beside it). 'first / now' is the ratio of the two headline values.")


def load_first_pass(path: Path = FIRST_PASS) -> list[dict[str, Any]]:
    """The first pass's entries (empty when the file is absent)."""
    if not path.is_file():
        return []
    entries = yaml.safe_load(path.read_text()) or []
    if not isinstance(entries, list) or not all(isinstance(e, dict) and {"preset", "key", "shown"} <= e.keys()
                                                for e in entries):
        raise ValueError(f"{path}: expected a list of entries with preset, family, key, shown, fix")
    return entries


def history_blocks(checks: Checks, path: Path = FIRST_PASS) -> list[rp.Block]:
    """The table of first-pass numbers beside this pass's."""
    entries = load_first_pass(path)
    if not entries:
        return []
    now = {(c.preset, c.family, c.key): c for c in checks}
    rows = []
    for e in entries:
        c = now.get((e["preset"], str(e.get("family", "")), e["key"]))
        moved = (f"{float(e['value']) / c.value:.2f}" if c and c.value and e.get("value") is not None else "—")
        label = c.claim if c else ": ".join(x for x in (str(e.get("family") or ""), e["key"]) if x)
        rows.append([e["preset"], label, str(e["shown"]),
                     f"{c.ours} ({c.verdict})" if c else "not run in this pass", moved, str(e.get("fix", ""))])
    return [rp.Heading(2, "What changed since the first pass"), rp.Text(INTRO),
            rp.Table(["preset", "check", "first pass", "this pass", "first / now", "what moved it"], rows)]
