"""What the runs say about a check that is not met: the group sizes of each merger after merging
and after pruning (how much of its network all tasks share), how far below the teachers the merged
network starts (the tolerance left to pruning), and the bound that the individually pruned
networks put on any merger's gain over no merging.
"""

from __future__ import annotations

from mergeprune import report as rp
from mergeprune.report.curves import allowances, candidates, meets, pieces, reference, trajectory
from mergeprune.reproduce.claims import Check, matched_ratio
from mergeprune.reproduce.sweeps import by_seed, live_at_matched

Groups = dict[str, dict[str, int]]  # layer -> task subset -> neurons


def shared_share(groups: Groups, full: str) -> tuple[float, float] | None:
    """Neurons in all layers and the share of them in the group of every task (None when unknown)."""
    total = sum(sum(v.values()) for v in groups.values())
    if not total:
        return None
    return float(total), sum(v.get(full, 0) for v in groups.values()) / total


def start_drop(run: rp.Run) -> float | None:
    """Worst validation drop below the teachers (points) of the network pruning starts from."""
    ref, drops = reference(run), []
    for points in trajectory(run).values():
        val = points[0].get("val") or {}
        drops += [100 * (ref[t] - rp.number(a)) for t, a in val.items() if t in ref and rp.number(a) is not None]
    return max(drops) if drops else None


def group_summary(comp: rp.Comparison) -> rp.Table | None:
    """Per method: neurons after merging and after pruning, and the share all tasks share."""
    full = "+".join(comp.tasks)
    rows = []
    for method, rs in comp.methods().items():
        cells = []
        for field in ("groups_merged", "groups"):
            found = [x for r in rs if (x := shared_share(r.data.get(field) or {}, full)) is not None]
            cells += [rp.fmt_stat((n for n, _ in found), rp.fmt_count),
                      rp.fmt_stat((100 * s for _, s in found), lambda x: f"{x:.0f}%")]
        cells.append(rp.fmt_stat((start_drop(r) for r in rs), lambda x: f"{x:.2f}"))
        rows.append([rp.method_label(method), str(len(rs))] + cells)
    if not rows:
        return None
    return rp.Table(["method", "n", "neurons after merging", "of them shared by all tasks",
                     "live neurons after pruning", "of them shared by all tasks (pruned)",
                     "validation drop before pruning (worst task, points)"], rows)


def gain_bound(none: dict[str, rp.SeedStat], tasks: list[str]) -> tuple[float, str] | None:
    """The largest none / merger ratio on all tasks for a merger that costs at least the dearest
    individually pruned network (it has to do that task too): sum over tasks / their maximum."""
    single = {t: none[t].mean for t in tasks if none.get(t) and none[t].mean}
    if len(single) < len(tasks):
        return None
    dearest = max(single, key=lambda t: single[t])
    return sum(single.values()) / single[dearest], dearest


def finding(check: Check, mergers: dict[str, dict[str, rp.SeedStat]], tasks: list[str],
            starts: dict[str, str] | None = None) -> str | None:
    """A sentence of measured numbers on why a check is not met (None when met or not applicable);
    `starts` (merger -> its start drop, formatted) adds how far below the teachers pruning starts."""
    if "not met" not in check.verdict:
        return None
    text = _finding(check, mergers, tasks)
    if text is None or not starts or check.key not in ("worst_single", "mtz_pam") or "pam" not in starts:
        return text
    others = ", ".join(f"{m} {v}" for m, v in starts.items() if m != "pam")
    return (f"{text} Before pruning, pam's merged network is {starts['pam']} points below the teachers "
            f"(validation, worst task; {others}).")


def _finding(check: Check, mergers: dict[str, dict[str, rp.SeedStat]], tasks: list[str]) -> str | None:
    """The sentence of `finding` without the start drops."""
    full = "+".join(tasks)
    if check.key == "none_pam_all" and "none" in mergers:
        bound = gain_bound(mergers["none"], tasks)
        pam, none = mergers["pam"][full], mergers["none"]
        if bound is None or pam.mean is None:
            return None
        value, dearest = bound
        own = matched_ratio(pam, none[dearest])
        return (f"{check.family}: with no merging the dearest task alone ({dearest}) costs "
                f"{rp.fmt_count(none[dearest].mean or 0)} at matched accuracy, so a merged network that "
                f"costs at least as much as that one task can be at most {value:.2f}x cheaper than no "
                f"merging on {full}; pam costs {own.text() if own else '—'} of it.")
    if check.key == "worst_single" and "pam" in mergers:
        task = check.where
        pam_t, none_t = mergers["pam"].get(task), mergers["none"].get(task)
        if pam_t is None or none_t is None or pam_t.mean is None or none_t.mean is None:
            return None
        return (f"{check.family}: pam's {task} alone costs {rp.fmt_count(pam_t.mean)} at matched "
                f"accuracy against {rp.fmt_count(none_t.mean)} for its individually pruned teacher (the "
                f"part of pam's network that {task} runs is its own group and every group it shares; the "
                "group sizes below show how much of it is shared).")
    if check.key == "mtz_pam" and "mtz" in mergers:
        mtz, pam = mergers["mtz"][full], mergers["pam"][full]
        if mtz.mean is None or pam.mean is None:
            return None
        return (f"{check.family}: on {full} mtz costs {rp.fmt_count(mtz.mean)} and pam "
                f"{rp.fmt_count(pam.mean)} at matched accuracy; the group sizes below compare how much "
                "of each merged network all tasks share before and after pruning.")
    return None


def conv_stem(run: rp.Run, subset: str) -> str | None:
    """The live filters of each conv layer at the run's matched point of a subset ('2·2'), None if unknown."""
    live = live_at_matched(run, subset)
    convs = [str(n) for layer, n in (live or {}).items() if layer.startswith("conv")]
    return "·".join(convs) if convs else None


def stem_sentence(family: str, runs: dict[str, list[rp.Run]], subset: str) -> str | None:
    """Per merged method, the conv filters each seed keeps at its matched point of the subset, and
    how many seeds of all merged methods end on the most common stem (None without merged runs)."""
    stems = {m: [conv_stem(r, subset) or "—" for r in by_seed(rs)] for m, rs in runs.items() if m != "none"}
    known = [s for ss in stems.values() for s in ss if s != "—"]
    if not known:
        return None
    common = max(set(known), key=known.count)
    per = "; ".join(f"{m} {', '.join(ss)}" for m, ss in stems.items())
    return (f"{family}: at matched accuracy on {subset} the merged networks keep these conv filters per "
            f"seed (conv layers in order): {per}. {known.count(common)} of {len(known)} end on {common}; "
            "runs on one stem differ only in their fully connected neurons, so their costs are close "
            "whatever the merger.")


def searches(run: rp.Run) -> dict[str, dict]:
    """The ADMM search reports of a run ('' for the merged network, the task for no merging's teachers)."""
    pruning = run.data.get("pruning") or {}
    parts = {"": pruning} if "search" in pruning else {
        k: v for k, v in pruning.items() if isinstance(v, dict)}
    return {part: search for part, report in parts.items()
            if (search := report.get("search") or {}).get("tried")}


def first_accepted(search: dict) -> bool:
    """Whether a search's first rung (s = 1) was accepted."""
    return bool(search["tried"][0].get("accepted"))


def first_rungs(run: rp.Run) -> dict[str, bool]:
    """Per ADMM search of the run: whether its first rung (s = 1) was accepted."""
    return {part: first_accepted(search) for part, search in searches(run).items()}


def climb_path(search: dict) -> str:
    """Where a search that climbed ended: its chosen scale, and how its walk down after the climb went."""
    chosen = rp.number(search.get("chosen_scale"))
    down = [t for t in search["tried"] if t.get("phase") == "descend" and t.get("trained")]
    if any(t.get("accepted") for t in down):
        walk = "down again"
    else:
        walk = "first step down rejected" if down else "no descent"
    return (f"s = {chosen:.2g}" if chosen is not None else "s unknown") + f", {walk}"


def climb_sentence(family: str, runs: dict[str, list[rp.Run]]) -> str | None:
    """Which ADMM searches rejected their first rung and climbed, and where each ended (None if none did)."""
    up, down = [], []
    for merger, rs in runs.items():
        for r in by_seed(rs):
            for part, search in searches(r).items():
                name = f"{merger} seed {r.seed}" + (f" ({part})" if part else "")
                if first_accepted(search):
                    down.append(name)
                else:
                    up.append(f"{name}: {climb_path(search)}")
    if not up:
        return None
    return (f"{family}: the search rejected its first rung (s = 1) and climbed on {'; '.join(up)} "
            "(the scale it chose, and its walk down again from the climb's accepted rung, warm-started, "
            "while rungs pass; 'no descent': the search predates that walk or had no rungs left)"
            + (f"; on {', '.join(down)} the ladder went down from s = 1" if down else "")
            + " (docs/methods.md, 'What the search does to a merged network').")


def allowance_text(runs: list[rp.Run], rule: rp.Rule) -> str | None:
    """The matched allowance over the runs' tasks: '1 point + 1 standard error = 1.32-1.38 points (500
    validation images)', None when no finished run records its teachers and validation size."""
    sizes, allowed = set(), []
    for run in (r for r in runs if r.ok and r.val_size):
        sizes.add(run.val_size)
        allowed += allowances(run, rule).values()
    if not allowed:
        return None
    n = " or ".join(f"{s:,}" for s in sorted(sizes))
    return f"{rule.words()} = {min(allowed):.2f}-{max(allowed):.2f} points ({n} validation images)"


def edge_count(runs: list[rp.Run], rule: rp.Rule) -> tuple[int, int]:
    """How many (run, task) trajectories have their cheapest pruned point outside the rule, of how many."""
    pairs = [(r, t) for r in runs if r.ok and trajectory(r) and reference(r) for t in r.tasks]
    return sum(edge_drops(r, t, rule) is not None for r, t in pairs), len(pairs)


def edge_drops(run: rp.Run, task: str, rule: rp.Rule) -> tuple[float, float, float | None] | None:
    """When a task's cheapest pruned point is outside the rule's allowance on validation: its drop, its
    cost and the task's matched cost (an earlier point, the unpruned network, or None); None otherwise."""
    found = pieces(run, task)
    if not found:
        return None
    pruned = [o for o in candidates(run, found[0], "flops") if (rp.number(o[2].get("step")) or 0) > 0]
    if not pruned:
        return None
    drop, cost, point = min(pruned, key=lambda o: (o[1], o[0]))
    if meets(point, [task], reference(run), allowances(run, rule)):
        return None
    reached = rp.matched(run, task, rule)
    return drop, cost, reached.cost if reached else None


def edge_sentence(family: str, runs: dict[str, list[rp.Run]], tasks: list[str],
                  rule: rp.Rule) -> str | None:
    """Which runs' cheapest pruned points sit outside the matched allowance, and what that costs."""
    named = []
    for merger, rs in runs.items():
        for r in by_seed(rs):
            for task in tasks:
                if (edge := edge_drops(r, task, rule)) is None:
                    continue
                drop, cost, at = edge
                named.append(f"{merger} seed {r.seed} ({task}: {drop:.2f} points at {rp.fmt_count(cost)}, "
                             f"matched {'none' if at is None else rp.fmt_count(at)})")
    if not named:
        return None
    return (f"{family}: the cheapest pruned point is beyond the matched allowance ({rule.words()}) "
            f"on validation on {'; '.join(named)}, so there the task's matched cost is an earlier, "
            "dearer point (or the unpruned network, or none).")
