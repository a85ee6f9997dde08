"""The page's sections of the presets that compare methods: ADMM's weight compression next to the
ADMM papers' (admm), merger costs and headline ratios next to PAM's (mergers), and PAM's star
grouping against one group per task subset (grouping); each adds its rows to the checks table.
"""

from __future__ import annotations

from dataclasses import replace

from mergeprune import report as rp
from mergeprune.report.matched_tables import fmt_matched
from mergeprune.report.tables import evidence_table, groups_table
from mergeprune.reproduce.claims import (
    Check,
    Checks,
    Ratio,
    family_name,
    family_stats,
    matched_ratio,
    pair_ratios,
    pam_checks,
    ratio_table,
    verdict,
    with_plain,
)
from mergeprune.reproduce.presets import PLAIN, RULE, TOLERANCE, Preset
from mergeprune.reproduce.readings import (
    climb_sentence,
    edge_sentence,
    finding,
    group_summary,
    start_drop,
    stem_sentence,
)
from mergeprune.reproduce.sweeps import by_seed, fmt_live, live_header


def admm_section(runs: list[rp.Run], checks: Checks, preset: Preset) -> list[rp.Block]:
    """Weight compression and accuracy per pruner, next to the ADMM papers' numbers."""
    rows = []
    by: dict[str, list[rp.Run]] = {}
    for run in (r for r in runs if r.ok):  # rows by the pruner config the job ran (magnitude_71x too)
        by.setdefault(run.method[1], []).append(run)
    for pruner, mine in sorted(by.items(), key=lambda kv: min(_compression(r) for r in kv[1])):
        comp = [_compression(r) for r in mine]
        drops = [100 * (rp.teacher_accuracy(r, t) - rp.accuracy(r, t)) for r in mine for t in r.tasks
                 if rp.accuracy(r, t) is not None and rp.teacher_accuracy(r, t) is not None]
        c = rp.mean_of(comp)
        drop = max(drops) if drops else None
        change = "—" if drop is None else f"{0.0 - drop:+.2f}"  # 0.0 - x: no '-0.00'
        paper = preset.paper.get(pruner)
        rows.append([pruner, str(len(mine)), rp.fmt_stat(comp, lambda x: f"{x:.1f}x"),
                     rp.fmt_stat((rp.accuracy(r, t) for r in mine for t in r.tasks), rp.fmt_pct),
                     rp.fmt_stat((rp.teacher_accuracy(r, t) for r in mine for t in r.tasks), rp.fmt_pct),
                     change,
                     f"{paper:g}x" if paper else "—", f"{c / paper:.2f}" if paper and c else "—"])
        if pruner in preset.target:
            need, within = preset.target[pruner]["compression"], preset.target[pruner]["within"]
            ok = None if c is None or drop is None else (c >= need and drop <= within)
            checks.append(Check(preset.name, pruner, "compression",
                                f"{pruner}: weight compression within {within:g} pt",
                                f"{c:.1f}x at {change} pt" if c and drop is not None else "—",
                                f"{paper:g}x", f">= {need:g}x", verdict(ok), c))
    return [rp.Table(["pruner", "n", "compression (weights)", "test accuracy", "dense teacher",
                      "change (pt)", "paper", "ours / paper"], rows)]


def _compression(run: rp.Run) -> float:
    """A run's weight compression (0 when unknown)."""
    return rp.number((run.data.get("compression") or {}).get("weights")) or 0.0


def mergers_section(comp: rp.Comparison, checks: Checks, preset: Preset) -> list[rp.Block]:
    """Matched cost per subset and merger with seed spread, the headline ratios and checks per
    pruner family, the final networks' accuracy and cost, and PAM's groups with their MI evidence."""
    subsets = rp.subset_order(comp.tasks)
    table = rp.matched_table(comp, RULE, "flops")
    blocks: list[rp.Block] = [
        rp.Heading(4, "Cost at matched accuracy (FLOPs, mean ± std (CV) over seeds)"),
        rp.Text(MATCHED_TEXT),
        table if table is not None else rp.Text("No run records a pruning trajectory.")]
    if table is not None:
        blocks += [rp.Heading(4, "Each seed's matched cost of all tasks, and what is live there"),
                   seed_table(comp)]
    plain = family_stats(comp, PLAIN)
    for family, mergers in family_stats(comp).items():
        blocks += [rp.Heading(4, f"Headline ratios at matched accuracy, pruner {family}"),
                   rp.Text(RATIO_TEXT), ratio_table(pair_ratios(mergers, subsets), subsets, preset.paper)]
        mine = with_plain(pam_checks(preset.name, family, mergers, list(comp.tasks), preset.paper),
                          pam_checks(preset.name, family, plain.get(family, {}), list(comp.tasks), preset.paper))
        checks += mine
        runs = {m[0]: rs for m, rs in comp.methods().items() if family_name(m[1], m[2]) == family}
        starts = {m: rp.fmt_stat((start_drop(r) for r in rs), lambda x: f"{x:.2f}")
                  for m, rs in runs.items()}
        why = [f for c in mine if (f := finding(c, mergers, list(comp.tasks), starts))]
        if why:  # what the searches and the tolerance did, beside the unmet checks
            why += [s for s in (stem_sentence(family, runs, "+".join(comp.tasks)), climb_sentence(family, runs),
                                edge_sentence(family, runs, list(comp.tasks), RULE)) if s]
        blocks += [rp.Text("Checks not met, read from the runs:"), rp.Bullets(why)] if why else []
    return blocks + [rp.Heading(4, "Final networks: test accuracy (%)"), rp.accuracy_table(comp, TOLERANCE),
                     rp.Heading(4, "Final networks: cost of every task subset (FLOPs, mean ± std, all "
                                   "finished runs)"), subset_cost_table(comp)] + group_blocks(comp)


def seed_table(comp: rp.Comparison) -> rp.Table:
    """Per method, each seed's matched cost of all tasks and its live neurons per layer at that point."""
    every = "+".join(comp.tasks)
    rows = []
    for method, runs in comp.methods().items():
        ordered = by_seed(runs)
        costs = [m.cost if (m := rp.matched(r, every, RULE)) else None for r in ordered]
        rows.append([rp.method_label(method), ", ".join(str(r.seed) for r in ordered),
                     ", ".join("—" if c is None else rp.fmt_count(c) for c in costs),
                     fmt_live(ordered, every)])
    return rp.Table(["method", "seeds", f"{every} (FLOPs)", live_header(comp.runs)], rows)


MATCHED_TEXT = (f"Per run and task subset, the cheapest point of its pruning trajectory whose validation "
                f"accuracy is within {RULE.words()} of every teacher's (the test the pruners accept a step "
                "by); merger=none adds up each teacher's own cheapest point. Mean ± std (CV) over the seeds "
                "that reached it.")
RATIO_TEXT = ("A / B: how many times less B costs than A at matched accuracy (ratio of the mean matched "
              "costs); ± is the ratio's spread from the two methods' seed CVs (added in quadrature). "
              "The paper's numbers are its best settings ('up to').")


def group_blocks(comp: rp.Comparison, which: str = "") -> list[rp.Block]:
    """Live neurons per group and layer, and PAM's merge evidence (MI per layer and task)."""
    blocks: list[rp.Block] = []
    summary, groups, evidence = group_summary(comp), groups_table(comp), evidence_table(comp)
    if summary is not None:
        blocks += [rp.Heading(4, f"How much all tasks share{which} (neurons over every layer, mean ± "
                                 "std over seeds)"), summary]
    if groups is not None:
        blocks += [rp.Heading(4, f"Group sizes of the final networks{which} (live neurons per task "
                                 "subset)"), groups]
    if evidence is not None:
        blocks += [rp.Heading(4, f"MI evidence of PAM's regrouping{which} (nats; null: shuffled "
                                 "labels, a random set of the size of Irr)"), evidence]
    return blocks


def subset_cost_table(comp: rp.Comparison) -> rp.Table:
    """FLOPs of every task subset (rows) per method (columns), unpruned teachers first."""
    methods = comp.methods()
    ok = [r for r in comp.runs if r.ok]
    rows = []
    for s in comp.subsets():
        rows.append([s, rp.fmt_stat((rp.teacher_cost(r, s, "flops") for r in ok[:1]), rp.fmt_count)]
                    + [rp.fmt_stat((rp.cost(r, s, "flops") for r in rs), rp.fmt_count) for rs in methods.values()])
    return rp.Table(["subset", "teachers, unpruned"]
                    + [f"{rp.method_label(m)} (n={len(rs)})" for m, rs in methods.items()], rows)


def grouping_of(run: rp.Run) -> str:
    """PAM's grouping of a run (from its merge report), '?' when unknown."""
    return str((run.data.get("merge") or {}).get("grouping", "?"))


def grouping_finding(stats: dict[str, dict[str, rp.SeedStat]], runs: dict[str, list[rp.Run]]) -> str:
    """What an unmet grouping check rests on: each grouping's seed CVs and start drop."""
    parts = []
    for g, per in stats.items():
        cvs = [100 * st.cv for st in per.values() if st.cv is not None]
        cv = f"CV {min(cvs):.0f}-{max(cvs):.0f}%" if cvs else "no CV"
        drop = rp.fmt_stat((start_drop(r) for r in runs[g]), lambda x: f"{x:.2f}")
        parts.append(f"{g}: matched cost {cv} over seeds, its merged network starts {drop} points below "
                     "the teachers (validation, worst task)")
    return "; ".join(parts) + "."


def grouping_ratios(runs: dict[str, list[rp.Run]], subsets: list[str], rule: rp.Rule
                    ) -> tuple[dict[str, dict[str, rp.SeedStat]], dict[str, Ratio | None]]:
    """Matched cost per grouping and subset over seeds, and star / subsets per subset."""
    stats = {g: {s: rp.matched_stat(rs, s, rule, "flops") for s in subsets} for g, rs in runs.items()}
    return stats, {s: matched_ratio(stats["star"][s], stats["subsets"][s]) for s in subsets}


def grouping_check(preset: str, ratios: dict[str, Ratio | None]) -> Check:
    """The check: subsets costs no more than star anywhere, and less on one subset beyond the spread."""
    known = {s: r for s, r in ratios.items() if r}
    # "no more than star": not dearer beyond the spread; "less on one": cheaper beyond the spread
    no_more = all(r.value >= 1.0 or r.beyond(1.0) is False for r in known.values())
    less = [s for s, r in known.items() if r.value > 1.0 and r.beyond(1.0)]
    spread_known = any(r.spread is not None for r in known.values())
    ok = (no_more and bool(less)) if known and spread_known else None
    lo, hi = (min(known.values(), key=lambda r: r.value), max(known.values(), key=lambda r: r.value)) \
        if known else (None, None)
    return Check(preset, "", "star_subsets",
                 "subsets costs no more than star on every subset, less on one beyond the seed spread",
                 f"star / subsets from {lo.text()} to {hi.text()}" if lo and hi else "—", "—",
                 ">= 1.0x everywhere, > 1.0x beyond the spread once",
                 (verdict(ok) if ok is not None or not known else "— (one seed: no spread to judge by)")
                 + (f" (cheaper beyond the spread on {', '.join(less)})" if less else ""),
                 hi.value if hi else None)


def grouping_section(comp: rp.Comparison, checks: Checks, preset: Preset) -> list[rp.Block]:
    """PAM's star grouping against one group per task subset at matched accuracy (mean ± std over
    seeds), their ratio with its spread, the check, the final networks' accuracy and the groups."""
    subsets, finished = rp.subset_order(comp.tasks), [r for r in comp.runs if r.ok]
    groupings = ("star", "subsets")
    runs = {g: [r for r in finished if grouping_of(r) == g] for g in groupings}
    stats, ratios = grouping_ratios(runs, subsets, RULE)
    rows = [[s] + [fmt_matched(stats[g][s]) for g in groupings] + [ratios[s].text() if ratios[s] else "—"]
            for s in subsets]
    checks += with_plain([grouping_check(preset.name, ratios)],
                         [grouping_check(preset.name, grouping_ratios(runs, subsets, PLAIN)[1])])
    why = grouping_finding(stats, runs) if "not met" in checks[-1].verdict else None
    acc = [[g, str(len(rs))] + [rp.fmt_stat((rp.accuracy(r, t) for r in rs), rp.fmt_pct) for t in comp.tasks]
           for g, rs in runs.items()]
    groups = [b for g in groupings for b in group_blocks(replace(comp, runs=runs[g]), f", {g}")]
    return [rp.Text(f"{MATCHED_TEXT} Star n={len(runs['star'])}, subsets n={len(runs['subsets'])}. The "
                    "ratio's ± comes from both groupings' seed CVs; 'no more' allows a gap within it, "
                    "'less' needs one beyond it."),
            rp.Table(["subset", "star (FLOPs)", "subsets (FLOPs)", "star / subsets"], rows)] + (
            [rp.Text("Check not met, read from the runs:"), rp.Bullets([why])] if why else []) + [
            rp.Heading(4, "Final networks: test accuracy (%)"),
            rp.Table(["grouping", "n"] + [f"{t} (%)" for t in comp.tasks], acc)] + groups
