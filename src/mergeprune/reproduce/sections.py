"""The page's sections of the presets that compare methods: ADMM's weight compression next to the
ADMM papers' (admm), merger costs and headline ratios next to PAM's (mergers), and PAM's star
grouping against one group per task subset (grouping); each adds its rows to the checks table.
"""

from __future__ import annotations

from collections.abc import Iterable

from mergeprune import report as rp
from mergeprune.reproduce.presets import TOLERANCE, Preset

Checks = list[list[str]]  # rows: preset, claim, measured, paper, target, verdict


def eligible(runs: Iterable[rp.Run]) -> list[rp.Run]:
    """Finished runs whose every task is within the tolerance of its teacher."""
    return [r for r in runs if r.ok and rp.tolerance_reason(r, TOLERANCE) is None]


def mean_cost(runs: Iterable[rp.Run], subset: str) -> float | None:
    """Mean FLOPs of a subset over runs."""
    return rp.mean_of(rp.cost(r, subset, "flops") for r in runs)


def ratio(a: float | None, b: float | None) -> float | None:
    """a / b when both are known and b > 0."""
    return a / b if a is not None and b else None


def check(ok: bool | None) -> str:
    """'met', 'not met', or '—' when it could not be measured."""
    return "—" if ok is None else ("met" if ok else "**not met**")


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
                     f"{paper:g}x" if paper else "—", f"{ratio(c, paper):.2f}" if paper and c else "—"])
        if pruner in preset.target:
            need, within = preset.target[pruner]["compression"], preset.target[pruner]["within"]
            ok = None if c is None or drop is None else (c >= need and drop <= within)
            checks.append([preset.name, f"{pruner}: weight compression within {within:g} pt",
                           f"{c:.1f}x at {change} pt" if c and drop is not None else "—",
                           f"{paper:g}x", f">= {need:g}x", check(ok)])
    return [rp.Table(["pruner", "n", "compression (weights)", "test accuracy", "dense teacher",
                      "change (pt)", "paper", "ours / paper"], rows)]


def _compression(run: rp.Run) -> float:
    """A run's weight compression (0 when unknown)."""
    return rp.number((run.data.get("compression") or {}).get("weights")) or 0.0


def mergers_section(comp: rp.Comparison, checks: Checks, preset: Preset) -> list[rp.Block]:
    """Cost per subset per merger (mean ± std over seeds), accuracy, and the headline ratios."""
    blocks: list[rp.Block] = [rp.Heading(4, "Cost of every task subset (FLOPs, mean ± std over seeds, "
                                            "all finished runs)"),
                              subset_cost_table(comp),
                              rp.Heading(4, "Test accuracy (%)"), rp.accuracy_table(comp, TOLERANCE)]
    heads, excluded = rp.headlines(comp, TOLERANCE, "flops")
    for head in heads:
        blocks.append(rp.Heading(4, f"Headline ratios, pruner {head.family} (runs within "
                                    f"{rp.fmt_points(TOLERANCE)} of their teachers)"))
        blocks.append(rp.Text("Runs used: " + ", ".join(f"{m} n={head.counts.get(m, 0)}"
                                                        for m in head.mergers) + "."))
        if head.ratios:
            blocks.append(rp.headline_table(head))
            blocks.append(paper_table(head, preset.paper))
        pam_checks(head, comp, checks, preset)
    if excluded:
        blocks += [rp.Text("Runs left out of the ratios:"),
                   rp.Bullets([f"{r.label}: {why}" for r, why in excluded])]
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


def paper_table(head: rp.Headline, papers: dict[str, float]) -> rp.Table:
    """Our 'up to' ratios next to the paper's headline numbers."""
    rows = []
    for num, den in head.ratios:
        best = head.up_to((num, den))
        paper = papers.get(num) if den == "pam" else None
        rows.append([f"{num} / {den}", f"{best[0]:.2f}x ({best[1]})" if best else "—",
                     f"{paper:g}x" if paper else "—"])
    return rp.Table(["ratio", "ours: up to (subset)", "paper: up to"], rows)


def pam_checks(head: rp.Headline, comp: rp.Comparison, checks: Checks, preset: Preset) -> None:
    """The issue's PAM criteria for one pruner family, as rows of the checks table."""
    tasks, fam, name = list(comp.tasks), head.family, preset.name
    full = "+".join(tasks)
    vs_none = head.ratios.get(("none", "pam")) or {}
    if vs_none:
        all_ratio = vs_none.get(full)
        checks.append([name, f"{fam}: pam vs no merging, all tasks ({full})", rp.fmt_ratio(all_ratio),
                       best_setting(preset.paper, "none"), ">= 3x" if len(tasks) == 5 else "—",
                       check(all_ratio >= 3) if len(tasks) == 5 and all_ratio else "—"])
        single = {t: 1 / vs_none[t] for t in tasks if vs_none.get(t)}
        worst = max(single, key=single.get) if single else None
        checks.append([name, f"{fam}: worst single task, pam / individually pruned",
                       f"{single[worst]:.2f} ({worst})" if worst else "—", "—", "<= 1.2",
                       check(single[worst] <= 1.2) if worst else "—"])
    vs_mtz = head.ratios.get(("mtz", "pam")) or {}
    if vs_mtz:
        best, worst = max(vs_mtz.values()), min(vs_mtz.values())
        checks.append([name, f"{fam}: mtz / pam, best and worst subset", f"{best:.2f}x / {worst:.2f}x",
                       best_setting(preset.paper, "mtz"), ">= 1.3x / >= 1.0x", check(best >= 1.3 and worst >= 1.0)])


def best_setting(papers: dict[str, float], merger: str) -> str:
    """The paper's 'up to' ratio of pam against a merger, e.g. '4.87x (best setting)'."""
    paper = papers.get(merger)
    return f"{paper:g}x (best setting)" if paper else "—"


def grouping_of(run: rp.Run) -> str:
    """PAM's grouping of a run (from its merge report), '?' when unknown."""
    return str((run.data.get("merge") or {}).get("grouping", "?"))


def grouping_section(comp: rp.Comparison, checks: Checks, preset: Preset) -> list[rp.Block]:
    """Per-subset cost of PAM star against subsets (all finished runs), their ratio over the runs
    within the tolerance, and accuracy."""
    subsets, finished, ok = comp.subsets(), [r for r in comp.runs if r.ok], eligible(comp.runs)
    groupings = ("star", "subsets")
    every = {g: [r for r in finished if grouping_of(r) == g] for g in groupings}
    within = {g: [r for r in ok if grouping_of(r) == g] for g in groupings}
    rows, ratios = [], {}
    for s in subsets:
        ratios[s] = ratio(mean_cost(within["star"], s), mean_cost(within["subsets"], s))
        rows.append([s] + [rp.fmt_stat((rp.cost(r, s, "flops") for r in every[g]), rp.fmt_count)
                           for g in groupings] + [rp.fmt_ratio(ratios[s])])
    known = [v for v in ratios.values() if v is not None]
    noisy = spread_exceeds_difference(within["star"], within["subsets"], subsets[-1])
    caveat = " (seed spread larger than the difference)" if known and noisy else ""
    checks.append([preset.name, "subsets costs no more than star on every subset, less on one",
                   f"star / subsets from {min(known):.2f}x to {max(known):.2f}x" if known else "—", "—",
                   ">= 1.0x everywhere, > 1.0x once",
                   check(min(known) >= 1.0 and max(known) > 1.0) + caveat if known else "—"])
    acc = [[g, str(len(rs))] + [rp.fmt_stat((rp.accuracy(r, t) for r in rs), rp.fmt_pct) for t in comp.tasks]
           for g, rs in every.items()]
    return [rp.Text(f"FLOPs: mean ± std over all finished runs (star n={len(every['star'])}, subsets "
                    f"n={len(every['subsets'])}); the ratio uses only the runs within "
                    f"{rp.fmt_points(TOLERANCE)} of their teachers (star n={len(within['star'])}, "
                    f"subsets n={len(within['subsets'])})."),
            rp.Table(["subset", "star (FLOPs)", "subsets (FLOPs)", "star / subsets (within tolerance)"], rows),
            rp.Table(["grouping", "n"] + [f"{t} (%)" for t in comp.tasks], acc)]


def spread_exceeds_difference(a: list[rp.Run], b: list[rp.Run], subset: str) -> bool:
    """Whether the seeds' standard deviation of either group exceeds the gap between their mean FLOPs."""
    va, vb = (rp.present(rp.cost(r, subset, "flops") for r in rs) for rs in (a, b))
    if not va or not vb:
        return False
    (ma, sa), (mb, sb) = rp.mean_std(va), rp.mean_std(vb)
    return max(sa, sb) > abs(ma - mb)
