"""The page's sections of the presets that sweep a setting the jobs do not record in results.json
(PAM's MI thresholds, the relatedness step), so its value is read from each job's Hydra overrides.
Both answer a question with the seed spread beside the answer: does PAM's cost change monotonically
with alpha (pam_alpha), and how does PAM's gain over no merging change with relatedness
(pam_relatedness).
"""

from __future__ import annotations

from mergeprune import report as rp
from mergeprune.report.matched_tables import fmt_matched
from mergeprune.reproduce.presets import PLAIN, RULE, TOLERANCE


def overrides_of(run: rp.Run) -> dict[str, str]:
    """A job's Hydra overrides as key -> value."""
    pairs = (item.split("=", 1) for item in rp.job_override_list(run.path.parent) if "=" in item)
    return {k.lstrip("+"): v for k, v in pairs}


def by_setting(runs: list[rp.Run], keys: list[str]) -> dict[tuple[float, ...], list[rp.Run]]:
    """Finished runs grouped by the numeric values of the swept override keys, in order."""
    groups: dict[tuple[float, ...], list[rp.Run]] = {}
    for run in (r for r in runs if r.ok):
        ov = overrides_of(run)
        groups.setdefault(tuple(float(ov.get(k, "nan")) for k in keys), []).append(run)
    return dict(sorted(groups.items()))


def step_words(a: rp.SeedStat, b: rp.SeedStat) -> tuple[int, bool | None]:
    """Direction of the mean from a to b (-1, 0, 1) and whether the gap exceeds both seed stds."""
    if a.mean is None or b.mean is None:
        return 0, None
    diff = b.mean - a.mean
    sign = (diff > 0) - (diff < 0)
    if a.std is None or b.std is None:
        return sign, None
    return sign, abs(diff) > max(a.std, b.std)


def trend_sentence(name: str, values: list[float], stats: list[rp.SeedStat], subset: str) -> str:
    """Whether the matched cost moves one way along a swept value, and how much of it is signal."""
    steps = [step_words(a, b) for a, b in zip(stats, stats[1:], strict=False)]
    signs = {s for s, _ in steps if s}
    shape = ("constant" if not signs else "monotonically increasing" if signs == {1}
             else "monotonically decreasing" if signs == {-1} else "not monotone")
    beyond = sum(1 for _, big in steps if big)
    path = " → ".join(fmt_matched(s) for s in stats)
    return (f"{name} {' → '.join(f'{v:g}' for v in values)}: {subset} costs {path}; {shape} in the "
            f"mean, {beyond} of {len(steps)} step(s) larger than the seed spread")


def alpha_section(runs: list[rp.Run]) -> list[rp.Block]:
    """Matched cost, groups and accuracy per (alpha_conv, alpha_fc), and the monotonicity answer."""
    ok = [r for r in runs if r.ok]
    if not ok:
        return []
    subsets = rp.subset_order(tuple(ok[0].tasks))
    full = subsets[-1]
    groups = by_setting(ok, ["merger.alpha_conv", "merger.alpha_fc"])
    stats = {k: {s: rp.matched_stat(rs, s, RULE, "flops") for s in subsets} for k, rs in groups.items()}
    rows = [[f"{k[0]:g}", f"{k[1]:g}", str(len(rs))] + [fmt_matched(stats[k][s]) for s in subsets]
            + neuron_cells(rs) + [fmt_live(rs, full)] for k, rs in groups.items()]
    plain = {k: rp.matched_stat(rs, full, PLAIN, "flops") for k, rs in groups.items()}
    return [rp.Text("Matched cost (FLOPs) per setting, mean ± std (CV) over seeds; a step counts as "
                    "larger than the seed spread when the means differ by more than either std. The last "
                    "column shows what sets each seed's matched cost: its live neurons per layer there."),
            rp.Table(["alpha_conv", "alpha_fc", "n"] + subsets
                     + ["shared neurons after merging", "exclusive neurons", "final within tolerance",
                        live_header(ok)], rows),
            rp.Heading(4, "Does the cost change monotonically with alpha?"),
            rp.Bullets(alpha_trends({k: v[full] for k, v in stats.items()}, full)),
            rp.Text(f"Read with {PLAIN.words()} alone (the rule of the pages before the second pass):"),
            rp.Bullets(alpha_trends(plain, full))]


def alpha_trends(stats: dict[tuple[float, ...], rp.SeedStat], subset: str) -> list[str]:
    """One trend sentence per line of the (alpha_conv, alpha_fc) grid with the other alpha fixed."""
    names, answers = ("alpha_conv", "alpha_fc"), []
    for axis, other in ((0, 1), (1, 0)):
        for fixed in sorted({k[other] for k in stats}):
            line = sorted(k for k in stats if k[other] == fixed)
            if len(line) > 1:
                answers.append(f"at {names[other]} {fixed:g}, " + trend_sentence(
                    names[axis], [k[axis] for k in line], [stats[k] for k in line], subset))
    return answers


def neuron_cells(rs: list[rp.Run]) -> list[str]:
    """Shared and exclusive neurons after merging (summed over layers), and runs within the tolerance."""
    shared, excl = zip(*(merged_counts(r) for r in rs), strict=True)
    return [rp.fmt_stat(list(shared), rp.fmt_count), rp.fmt_stat(list(excl), rp.fmt_count),
            f"{sum(rp.tolerance_reason(r, TOLERANCE) is None for r in rs)}/{len(rs)}"]


def live_at_matched(run: rp.Run, subset: str) -> dict[str, int] | None:
    """Live neurons per layer at the run's matched-accuracy point of a subset (None when not reached
    or when the subset's matched cost adds up several trajectories, as no merging's does)."""
    m = rp.matched(run, subset, RULE)
    if m is None or len(m.steps) != 1:
        return None
    (part, step), = m.steps.items()
    points = (run.data.get("trajectory") or {}).get(part) or []
    live = next((p.get("live") for p in points if p.get("step") == step), None)
    return dict(live) if isinstance(live, dict) else None


def by_seed(runs: list[rp.Run]) -> list[rp.Run]:
    """The runs in seed order, those without a seed last."""
    return sorted(runs, key=lambda r: (not isinstance(r.seed, int), r.seed if isinstance(r.seed, int) else 0))


def fmt_live(runs: list[rp.Run], subset: str) -> str:
    """Each seed's live neurons per layer at its matched point, '2·2·20' in layer order ('—' if unknown)."""
    cells = []
    for r in by_seed(runs):
        live = live_at_matched(r, subset)
        cells.append("·".join(str(n) for n in live.values()) if live else "—")
    return ", ".join(cells) or "—"


def live_header(runs: list[rp.Run]) -> str:
    """The live column's header, naming the layers in the order the trajectory points list them."""
    points = (p for r in runs for part in (r.data.get("trajectory") or {}).values() for p in part)
    live = next((p["live"] for p in points if isinstance(p.get("live"), dict)), None)
    return f"live {'·'.join(live) if live else 'neurons'} at matched accuracy, per seed"


def merged_counts(run: rp.Run) -> tuple[int, int]:
    """Neurons shared by all tasks and neurons exclusive to one task right after merging (all layers)."""
    full = "+".join(run.tasks)
    layers = (run.data.get("groups_merged") or {}).values()
    return (sum(v.get(full, 0) for v in layers),
            sum(n for v in layers for k, n in v.items() if "+" not in k))


def seed_gains(none: list[rp.Run], pam: list[rp.Run], subset: str, rule: rp.Rule = RULE) -> list[float]:
    """none / pam matched cost of one subset, per seed both reached (same seed, same teachers)."""
    cost = {}
    for merger, rs in (("none", none), ("pam", pam)):
        for r in rs:
            m = rp.matched(r, subset, rule)
            if m is not None:
                cost[(merger, str(r.seed))] = m.cost
    seeds = sorted({s for _, s in cost})
    return [cost[("none", s)] / cost[("pam", s)] for s in seeds if ("none", s) in cost and ("pam", s) in cost]


def fmt_gains(gains: list[float]) -> str:
    """'1.42x ± 0.10 (n=3)'."""
    if not gains:
        return "—"
    mean, std = rp.mean_std(gains)
    return f"{mean:.2f}x" + (f" ± {std:.2f}" if len(gains) > 1 else "") + f" (n={len(gains)})"


def slope(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of y on x (None with fewer than two distinct x)."""
    if len({x for x, _ in points}) < 2:
        return None
    mx = sum(x for x, _ in points) / len(points)
    my = sum(y for _, y in points) / len(points)
    return sum((x - mx) * (y - my) for x, y in points) / sum((x - mx) ** 2 for x, _ in points)


def relatedness_section(runs: list[rp.Run]) -> list[rp.Block]:
    """Per relatedness step: none / pam at matched accuracy per subset (per-seed ratios), PAM's cost,
    and whether the gain shrinks as the tasks become less related."""
    groups = by_setting(runs, ["relatedness"])
    if not groups:
        return []
    subsets = rp.subset_order(tuple(next(iter(groups.values()))[0].tasks))
    full, rows, gains, plain, shares, exclusive = subsets[-1], [], {}, {}, {}, {}
    for (step,), rs in groups.items():
        none, pam = [r for r in rs if r.method[0] == "none"], [r for r in rs if r.method[0] == "pam"]
        per = {s: seed_gains(none, pam, s) for s in subsets}
        gains[step], plain[step] = per[full], seed_gains(none, pam, full, PLAIN)
        shares[step] = [x for x in (both_share(r) for r in pam) if x is not None]
        exclusive[step] = [merged_counts(r)[1] for r in pam]
        rows.append([f"{step:g}"] + [fmt_gains(per[s]) for s in subsets]
                    + [fmt_matched(rp.matched_stat(pam, full, RULE, "flops")),
                       rp.fmt_stat(exclusive[step], rp.fmt_count), rp.fmt_stat(shares[step], fmt_share),
                       fmt_live(pam, full), f"{len(none)}/{len(pam)}"])
    return [rp.Text("Step k: task b has k of task a's five digits swapped for others (0 = identical "
                    "tasks, 5 = disjoint digits). Gain: none / pam matched cost (FLOPs) of each seed "
                    "(both use that seed's teachers), mean ± std over seeds."),
            rp.Table(["step"] + [f"none / pam, {s}" for s in subsets]
                     + [f"pam matched FLOPs, {full}", "pam exclusive neurons after merging",
                        f"pam FLOPs both tasks use, share of {full}",
                        "pam " + live_header(runs), "runs none/pam"], rows),
            rp.Heading(4, "How does PAM's gain change with relatedness?"),
            rp.Text(gain_answer(gains, full)),
            rp.Text(f"Read with {PLAIN.words()} alone: " + gain_answer(plain, full)),
            rp.Text(share_answer(exclusive, shares, full))]


def both_share(run: rp.Run) -> float | None:
    """Share of a two-task run's all-tasks FLOPs at matched accuracy that both tasks compute:
    (cost(a) + cost(b) - cost(a+b)) / cost(a+b); None for other task counts or when not reached."""
    if len(run.tasks) != 2:
        return None
    costs = [rp.matched(run, s, RULE) for s in (*run.tasks, "+".join(run.tasks))]
    if any(m is None for m in costs):
        return None
    a, b, both = (m.cost for m in costs)
    return (a + b - both) / both if both else None


def fmt_share(x: float) -> str:
    """A share in percent, no decimals."""
    return f"{100 * x:.0f}%"


def share_answer(exclusive: dict[float, list[float]], shares: dict[float, list[float]], subset: str) -> str:
    """Where the gain comes from: what PAM's regrouping separates at each end of the sweep, and how
    much of the pruned network both tasks still compute."""
    steps = sorted(k for k in shares if shares[k])
    if not steps:
        return "No PAM run reached matched accuracy on every subset, so its sharing cannot be read."
    first, last = steps[0], steps[-1]
    return (f"PAM's regrouping separates {rp.fmt_stat(exclusive[first], rp.fmt_count)} exclusive neurons at "
            f"step {first:g} and {rp.fmt_stat(exclusive[last], rp.fmt_count)} at step {last:g}; at matched "
            f"accuracy the FLOPs both tasks compute are {rp.fmt_stat(shares[first], fmt_share)} of {subset} "
            f"at step {first:g} and {rp.fmt_stat(shares[last], fmt_share)} at step {last:g} (100%: the two "
            "tasks compute one network; 0%: two disjoint ones).")


def gain_answer(gains: dict[float, list[float]], subset: str) -> str:
    """The gain's least-squares slope per step and its first-to-last change against the seed spread."""
    known = {k: v for k, v in gains.items() if v}
    if len(known) < 2:
        return "Too few steps with both mergers at matched accuracy to tell."
    first, last = min(known), max(known)
    m0, m1 = rp.mean_std(known[first])[0], rp.mean_std(known[last])[0]
    k = slope([(x, y) for x, ys in known.items() for y in ys])
    beyond = step_beyond(known[first], known[last])
    verdict = ("shrinks, as the paper reports" if m1 < m0 and beyond else
               "grows, against the paper's report" if m1 > m0 and beyond else
               "changes by less than the seed spread (or the spread is unknown), so no trend can be claimed")
    steps = sorted(known)
    big = [f"{a:g} → {b:g}" for a, b in zip(steps, steps[1:], strict=False) if step_beyond(known[a], known[b])]
    return (f"On {subset}, the gain goes from {fmt_gains(known[first])} at step {first:g} to "
            f"{fmt_gains(known[last])} at step {last:g} (least-squares slope over every seed "
            f"{k:+.3f} per step): it {verdict}. Consecutive steps whose change exceeds the seed spread: "
            f"{', '.join(big) if big else 'none'} (of {len(steps) - 1}).")


def step_beyond(a: list[float], b: list[float]) -> bool:
    """Whether two steps' mean gains differ by more than either's seed std (both need two seeds)."""
    if len(a) < 2 or len(b) < 2:
        return False
    (ma, sa), (mb, sb) = rp.mean_std(a), rp.mean_std(b)
    return abs(mb - ma) > max(sa, sb)
