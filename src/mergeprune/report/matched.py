"""Methods compared at matched accuracy within a comparison: each method's matched cost per task
subset over its seeds (report/curves.py reads it from the trajectories) and the headline sentences
between the mergers of one (pruner, granularity) family, for the subset of all tasks.
"""

from __future__ import annotations

from mergeprune.report.compare import (
    Comparison,
    Options,
    cost_sentence,
    headline_sentences_all,
    merger_name,
    method_sort_key,
    ratio_pairs,
    subset_order,
)
from mergeprune.report.curves import Rule, SeedStat, as_rule, curve_metric, has_curves, matched_stat
from mergeprune.report.runs import Method, Run


def curve_methods(comp: Comparison) -> dict[Method, list[Run]]:
    """Finished runs that record curves, by method (methods without any left out)."""
    found = {m: [r for r in rs if has_curves(r)] for m, rs in comp.methods().items()}
    return {m: rs for m, rs in found.items() if rs}


def matched_subsets(comp: Comparison) -> list[str]:
    """Every task subset of the comparison, singletons first."""
    return subset_order(comp.tasks)


def matched_stats(comp: Comparison, tolerance: float | Rule,
                  metric: str) -> dict[Method, dict[str, SeedStat]]:
    """Matched cost over seeds per method and subset (only methods whose runs record curves)."""
    subsets, metric = matched_subsets(comp), curve_metric(metric)
    return {m: {s: matched_stat(rs, s, tolerance, metric) for s in subsets}
            for m, rs in curve_methods(comp).items()}


def tolerance_words(tolerance: float | Rule) -> str:
    """'within 1 point of the teachers on validation'."""
    return f"within {as_rule(tolerance).words()} of the teachers on validation"


def reached_note(merger: str, stat: SeedStat) -> str:
    """'; pam reached it in 2 of its 3 seeds' when some seed did not, else ''."""
    if stat.n_reached == stat.n_runs:
        return ""
    return f"; {merger} reached it in {stat.n_reached} of its {stat.n_runs} seeds"


def family_sentences(title: str, family: str, stats: dict[str, SeedStat], subset: str,
                     tolerance: float | Rule, metric: str) -> list[str]:
    """The matched-accuracy sentences between the mergers of one family (merger -> stat)."""
    condition = f"at matched accuracy ({tolerance_words(tolerance)})"
    mergers = sorted(stats, key=lambda m: method_sort_key((m, "", "")))
    lines = [f"{title}, {family}: {merger_name(m)} does not reach matched accuracy for {subset} "
             f"({tolerance_words(tolerance)}) in any of its {stats[m].n_runs} seed(s)"
             for m in mergers if stats[m].n_reached == 0]
    for num, den in ratio_pairs(mergers):
        a, b = stats[den], stats[num]
        if a.n_reached and b.n_reached:
            sentence = cost_sentence(den, merger_name(num), (a.mean, a.std), (b.mean, b.std),
                                     metric, subset, condition)
            notes = reached_note(den, a) + reached_note(merger_name(num), b)
            lines.append(f"{title}, {family}: {sentence}{notes}")
    return lines


def matched_sentences(comp: Comparison, tolerance: float | Rule, metric: str) -> list[str]:
    """Headline sentences at matched accuracy, per (pruner, granularity) family, for all tasks."""
    subset = "+".join(comp.tasks)
    families: dict[tuple[str, str], dict[str, SeedStat]] = {}
    for method, per_subset in matched_stats(comp, tolerance, metric).items():
        families.setdefault(method[1:], {})[method[0]] = per_subset[subset]
    lines = []
    for (pruner, gran), stats in sorted(families.items()):
        family = pruner if gran == "-" else f"{pruner}/{gran}"
        lines += family_sentences(comp.title, family, stats, subset, tolerance,
                                  curve_metric(metric))
    return lines


def summary_sentences(comps: list[Comparison], opts: Options) -> list[str]:
    """The headline: sentences at matched accuracy, then those about the final networks."""
    lines = [line for c in comps for line in matched_sentences(c, opts.rule, opts.metric)]
    return lines + headline_sentences_all(comps, opts)
