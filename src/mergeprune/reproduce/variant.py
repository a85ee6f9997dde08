"""The page's section of a diagnostic variant preset (kind `variant`): one merger run with a changed
setting, set beside its base preset's mergers at matched accuracy (same data, tasks, model, pruner and
seeds), and the base's PAM checks recomputed with the variant in PAM's place. The variant's checks are
not headline checks: they say what the base's unmet targets depend on. Also PAM's drop audit of any
preset (scripts/pam_drop_audit.py: each layer's MI drop against random drops of its size, before any
training) when its results are kept in docs/results/diagnostics/<preset>/.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from mergeprune import report as rp
from mergeprune.report.matched_tables import fmt_matched
from mergeprune.reproduce.claims import family_name, family_stats, pam_checks
from mergeprune.reproduce.presets import Preset
from mergeprune.reproduce.sections import MATCHED_TEXT, group_blocks
from mergeprune.reproduce.sweeps import fmt_gains, seed_gains

DROP_FILES = "pam_drops_seed*.json"


def base_comparison(comp: rp.Comparison, base_runs: list[rp.Run]) -> rp.Comparison | None:
    """The base preset's comparison of the same dataset, tasks and model (None when it has none)."""
    same = [c for c in rp.comparisons(base_runs) if (c.dataset, c.tasks, c.model) == (comp.dataset, comp.tasks,
                                                                                       comp.model)]
    return same[0] if same else None


def variant_section(runs: list[rp.Run], preset: Preset, root: Path) -> list[rp.Block]:
    """Matched cost of the variant beside the base's mergers, and the base's checks with it as pam."""
    base_dir = root / preset.base
    base_runs = rp.gather([base_dir]) if base_dir.is_dir() else []
    blocks: list[rp.Block] = []
    for comp in rp.comparisons(runs):
        base = base_comparison(comp, base_runs)
        subsets = rp.subset_order(comp.tasks)
        theirs = family_stats(base) if base else {}
        for family, mine in family_stats(comp).items():
            rows = [(f"{m} ({preset.base})", per) for m, per in theirs.get(family, {}).items()]
            rows += [(f"{m} ({preset.name})", per) for m, per in mine.items()]
            checks = pam_checks(preset.name, family, {**theirs.get(family, {}), **mine}, list(comp.tasks), {})
            blocks += [
                rp.Heading(3, f"{comp.title}, pruner {family}"),
                rp.Heading(4, "Cost at matched accuracy (FLOPs, mean ± std (CV) over seeds)"),
                rp.Text(MATCHED_TEXT + f" Rows marked ({preset.base}) are read from that preset's archive."),
                rp.Table(["method"] + subsets, [[name] + [fmt_matched(per[s]) for s in subsets]
                                                for name, per in rows]),
                rp.Heading(4, f"{preset.base}'s checks with this variant as pam"),
                rp.Table(["claim", "ours", "target", "verdict"],
                         [[c.claim, c.ours, c.target, c.verdict] for c in checks])
                if checks else rp.Text(f"{preset.base} has no runs to set the variant against yet.")]
            blocks += paired_blocks(comp, base, family, preset)
        blocks += group_blocks(comp)
    return blocks


def family_runs(comp: rp.Comparison | None, family: str) -> dict[str, list[rp.Run]]:
    """Finished runs of one pruner family by merger."""
    methods = comp.methods().items() if comp else []
    return {m[0]: rs for m, rs in methods if family_name(m[1], m[2]) == family}


def paired_blocks(comp: rp.Comparison, base: rp.Comparison | None, family: str, preset: Preset) -> list[rp.Block]:
    """Per subset, matched-cost ratios of the same seed (same teachers): base pam / variant, mtz / variant."""
    mine, theirs = family_runs(comp, family), family_runs(base, family)
    pairs = [(f"{m} ({preset.base}) / {v} ({preset.name})", theirs[m], rs)
             for v, rs in mine.items() for m in ("pam", "mtz", "none") if m in theirs]
    if not pairs:
        return []
    rows = []
    for s in rp.subset_order(comp.tasks):
        rows.append([s] + [fmt_gains(g) + (f": {', '.join(f'{x:.2f}' for x in g)}" if len(g) > 1 else "")
                           for _, a, b in pairs for g in [seed_gains(a, b, s)]])
    return [rp.Heading(4, "Same seed, same teachers: matched-cost ratios per seed"),
            rp.Text("Each seed's ratio of matched costs (both runs use that seed's teachers and MI batch), "
                    "mean ± std over the seeds both reached, then the ratio of each seed in order. Pairing "
                    "removes the spread that comes from the teachers."),
            rp.Table(["subset"] + [name for name, _, _ in pairs], rows)]


def beats_random(pam: list[float], rnd: list[float]) -> bool:
    """Whether PAM's mean loss is below the random drops' mean by more than their std."""
    mean, std = rp.mean_std(rnd)
    return len(rnd) > 1 and mean - rp.mean_std(pam)[0] > std


def count_range(values: Iterable[int]) -> str:
    """'3' when every seed gives the same count, else 'lowest-highest'."""
    found = sorted(set(values))
    return str(found[0]) if len(found) == 1 else f"{found[0]}-{found[-1]}"


def drop_blocks(folder: Path, shown: str) -> list[rp.Block]:
    """The drop audit table of the JSON files in folder, shown as `shown` (nothing when there are none)."""
    files = sorted(folder.glob(DROP_FILES)) if folder.is_dir() else []
    results = [json.loads(f.read_text()) for f in files]
    if not results:
        return []
    rows, better, not_better = [], [], []
    for layer, first in results[0]["layers"].items():
        entries = [r["layers"][layer] for r in results if layer in r["layers"]]
        cells = [str(first["candidates"]),
                 count_range(e["dropped"] for e in entries), count_range(e["dropped_varying"] for e in entries)]
        for task in results[0]["teachers_val"]:
            pam = [100 * (r["teachers_val"][task] - r["layers"][layer]["pam"][task]) for r in results]
            rnd = [100 * (r["teachers_val"][task] - a) for r in results for a in r["layers"][layer]["random"][task]]
            cells += [rp.fmt_stat(pam, lambda x: f"{x:.2f}"), rp.fmt_stat(rnd, lambda x: f"{x:.2f}")]
            (better if beats_random(pam, rnd) else not_better).append(f"{layer} ({task})")
        rows.append([layer] + cells)
    tasks = list(results[0]["teachers_val"])
    seeds = ", ".join(f.stem.rsplit("seed", 1)[-1] for f in files)
    return [rp.Heading(3, "PAM's drop before training, layer by layer, against random drops of its size"),
            rp.Text(f"Read from `{shown}/{DROP_FILES}` (seeds {seeds}), written by "
                    "`python scripts/pam_drop_audit.py experiment=<preset> seed=<k> --json <file>`. Per layer, "
                    "only that layer loses PAM's dropped neurons (their output replaced by its batch mean), "
                    "every other neuron stays shared, and each task's validation accuracy is compared "
                    "with its teacher's (points below, mean ± std over seeds). Random: the same number of "
                    "the layer's varying neurons dropped at random (PAM's drops of neurons constant on its "
                    "batch kept), 5 draws per seed. A selection rule that means something loses less "
                    "than random."),
            rp.Text("PAM's drop loses less than a random drop, by more than the random drops' spread, in: "
                    f"{', '.join(better) or 'no layer'}; it does not in: {', '.join(not_better) or 'no layer'}."),
            rp.Table(["layer", "candidates", "dropped", "of them varying"]
                     + [x for t in tasks for x in (f"{t}: PAM's drop (points)", f"{t}: random drop (points)")],
                     rows)]
