"""The page's checks of the papers' claims, read at matched accuracy: each method's cheapest
trajectory point within the tolerance of the teachers on validation, plus one standard error as the
pruners' acceptance test allows (presets.RULE, report/curves.py), over its seeds, and ratios between methods with their seed spread, so a verdict can say whether the gap it
rests on is larger than the noise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from mergeprune import report as rp
from mergeprune.report.compare import ratio_pairs
from mergeprune.reproduce.presets import RULE

# family ("taylor/neurons") -> merger -> subset -> matched cost over seeds
FamilyStats = dict[str, dict[str, dict[str, rp.SeedStat]]]


@dataclass
class Check:
    """One row of the headline checks: a claim, our value, the paper's, the target and the verdict."""

    preset: str
    family: str  # pruner family ("taylor/neurons"), the pruner config for admm, "" when none
    key: str  # which claim: compression, none_pam_all, worst_single, mtz_pam, star_subsets
    claim: str
    ours: str
    paper: str
    target: str
    verdict: str
    value: float | None = None  # the number the verdict rests on
    where: str = ""  # the task or subset that number is read at
    plain: str = "—"  # ours and the verdict under the tolerance alone (presets.PLAIN)


Checks = list[Check]


@dataclass(frozen=True)
class Ratio:
    """a / b of two matched costs, with its spread from the seeds' CVs (None when unknown)."""

    value: float
    spread: float | None

    def text(self) -> str:
        """'1.60x ± 0.21'."""
        return f"{self.value:.2f}x" + ("" if self.spread is None else f" ± {self.spread:.2f}")

    def beyond(self, level: float) -> bool | None:
        """Whether the ratio differs from level by more than its spread (None when unknown)."""
        return None if self.spread is None else abs(self.value - level) > self.spread


def verdict(ok: bool | None) -> str:
    """'met', 'not met', or '—' when it could not be measured."""
    return "—" if ok is None else ("met" if ok else "**not met**")


def family_name(pruner: str, gran: str) -> str:
    """'taylor/neurons', or the pruner alone without a granularity."""
    return pruner if gran == "-" else f"{pruner}/{gran}"


def family_stats(comp: rp.Comparison, rule: rp.Rule = RULE) -> FamilyStats:
    """Matched cost per family, merger and subset (methods whose runs record trajectories)."""
    out: FamilyStats = {}
    for (merger, pruner, gran), per in rp.matched_stats(comp, rule, "flops").items():
        out.setdefault(family_name(pruner, gran), {})[merger] = per
    return out


def matched_ratio(a: rp.SeedStat | None, b: rp.SeedStat | None) -> Ratio | None:
    """a / b of the mean matched costs; spread from both CVs (unknown when a side has one seed)."""
    if a is None or b is None or not a.n_reached or not b.n_reached or not a.mean or not b.mean:
        return None
    value = a.mean / b.mean
    if a.cv is None or b.cv is None or a.n_reached < 2 or b.n_reached < 2:
        return Ratio(value, None)
    return Ratio(value, value * math.sqrt(a.cv ** 2 + b.cv ** 2))


def pair_ratios(mergers: dict[str, dict[str, rp.SeedStat]], subsets: list[str]
                ) -> dict[tuple[str, str], dict[str, Ratio | None]]:
    """The report's merger pairs (none / x, mtz / pam) per subset, where both mergers ran."""
    order = sorted(mergers, key=lambda m: rp.method_sort_key((m, "", "")))
    return {(num, den): {s: matched_ratio(mergers[num][s], mergers[den][s]) for s in subsets}
            for num, den in ratio_pairs(order)}


def ratio_table(ratios: dict[tuple[str, str], dict[str, Ratio | None]], subsets: list[str],
                papers: dict[str, float]) -> rp.Table:
    """Subsets as rows, merger pairs as columns; the 'up to' maximum and the paper's below."""
    pairs = list(ratios)
    rows = [[s] + [r.text() if (r := ratios[p][s]) else "—" for p in pairs] for s in subsets]
    best = [max(((r.value, s) for s, r in ratios[p].items() if r), default=None) for p in pairs]
    rows.append(["up to (max)"] + [f"{b[0]:.2f}x ({b[1]})" if b else "—" for b in best])
    rows.append(["paper: up to"] + [f"{papers[a]:g}x" if b == "pam" and a in papers else "—"
                                    for a, b in pairs])
    return rp.Table(["subset"] + [f"{a} / {b}" for a, b in pairs], rows)


def spread_note(ok: bool | None, decisive: Ratio | None, level: float) -> str:
    """' (within the seed spread)' when the ratio a verdict rests on is within its spread of the level."""
    if ok is None or decisive is None or decisive.beyond(level) is not False:
        return ""
    return " (within the seed spread)"


def pam_checks(preset: str, family: str, mergers: dict[str, dict[str, rp.SeedStat]],
               tasks: list[str], papers: dict[str, float]) -> Checks:
    """The issue's PAM targets for one family at matched accuracy: none / pam >= 3x on five tasks;
    worst single task <= 1.2x and mtz / pam >= 1.3x / 1.0x on two (elsewhere shown without a target)."""
    out: Checks = []
    full = "+".join(tasks)
    five, two = len(tasks) == 5, len(tasks) == 2
    if "none" in mergers and "pam" in mergers:
        r = matched_ratio(mergers["none"][full], mergers["pam"][full])
        ok = (r.value >= 3) if five and r else None
        out.append(Check(preset, family, "none_pam_all", f"{family}: none / pam, all tasks ({full})",
                         r.text() if r else "—", paper_text(papers, "none"), ">= 3x" if five else "—",
                         verdict(ok) + spread_note(ok, r, 3.0) if five else "—", r.value if r else None))
        single = {t: matched_ratio(mergers["pam"][t], mergers["none"][t]) for t in tasks}
        known = {t: v for t, v in single.items() if v}
        worst = max(known, key=lambda t: known[t].value) if known else None
        ok = known[worst].value <= 1.2 if worst and two else None
        out.append(Check(preset, family, "worst_single",
                         f"{family}: worst single task, pam / individually pruned",
                         f"{known[worst].text()} ({worst})" if worst else "—", "—", "<= 1.2" if two else "—",
                         verdict(ok) + spread_note(ok, known[worst] if worst else None, 1.2) if two else "—",
                         known[worst].value if worst else None, worst or ""))
    if "mtz" in mergers and "pam" in mergers:
        subsets = rp.subset_order(tuple(tasks))
        rs = {s: matched_ratio(mergers["mtz"][s], mergers["pam"][s]) for s in subsets}
        known = {s: v for s, v in rs.items() if v}
        if known:
            hi = max(known, key=lambda s: known[s].value)
            lo = min(known, key=lambda s: known[s].value)
            ok = known[hi].value >= 1.3 and known[lo].value >= 1.0
            note = spread_note(ok, known[lo], 1.0) or spread_note(ok, known[hi], 1.3)
            out.append(Check(preset, family, "mtz_pam", f"{family}: mtz / pam, best and worst subset",
                             f"{known[hi].text()} ({hi}) / {known[lo].text()} ({lo})",
                             paper_text(papers, "mtz"), ">= 1.3x / >= 1.0x" if two else "—",
                             verdict(ok) + note if two else "—",
                             known[hi].value))
    return out


def with_plain(checks: Checks, plain: Checks) -> Checks:
    """The checks, each carrying the same check's value and verdict under the tolerance alone."""
    by_key = {(c.family, c.key): c for c in plain}
    for c in checks:
        if (other := by_key.get((c.family, c.key))) is not None:
            c.plain = other.ours if other.verdict == "—" else f"{other.ours}: {other.verdict}"
    return checks


def paper_text(papers: dict[str, float], merger: str) -> str:
    """The paper's 'up to' ratio of pam against a merger, e.g. '4.87x (best setting)'."""
    paper = papers.get(merger)
    return f"{paper:g}x (best setting)" if paper else "—"
