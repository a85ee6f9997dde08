"""mergeprune-report along pruning trajectories: frontiers, cost at matched accuracy, seed statistics,
the matched-accuracy headline, tables and figures.

Fixtures (tests/fixtures/report_curves; mnist5k, tasks lo+hi, lenet5, pruner taylor/neurons;
reference: lo 0.98, hi 0.97 on validation). Drops below are in points, cost in flops, tolerance 1:
  pam_0 (part lo+hi) steps 0..4: lo+hi 1600/1200/900/700/500, worst drops -0.5/0.2/0.8/2.0/3.0;
        lo 1000/700/500/400/300 (lo drops -0.5/0.2/0.5/2.0/3.0), hi 1000/800/600/400/300
        (hi drops -0.5/-0.2/0.8/0.2/2.0); test accuracy at steps 0, 2 and 4 only.
  pam_1 (lo+hi) steps 0..3: lo+hi 1600/1300/1100/800, worst drops -0.4/0.1/0.7/1.2.
  none_0 parts lo (1000/800/600/450/350, drops -0.2/0.1/0.6/1.2/3.0) and
         hi (1100/900/700/600, drops -0.2/0.1/1.5/2.0).
  none_1 parts lo (1000/850/700, drops -0.1/0.5/1.5) and hi (1100/850/650, drops -0.1/0.8/1.5).
  mtz_0 lo+hi 1400/800/600 (drops 0.2/0.7/2.0); mtz_1 1500/1000/700 (0.3/0.8/1.5);
  mtz_2 lo+hi 1450/900 (drops 1.5/2.5: never within 1 point on lo; hi alone 0.2/1.0).
"""

from __future__ import annotations

import csv
import itertools
import json
import math
import shutil
import struct
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from conftest import REPORT_FIXTURES
from mergeprune.report import (
    Options,
    comparisons,
    cost_sentence,
    frontier,
    gather,
    main,
    matched,
    matched_sentences,
    matched_stats,
    seed_stat,
)
from mergeprune.report.curve_figures import allowance_top
from mergeprune.report.curves import band, front_at, reference

FIXTURES = Path(__file__).parent / "fixtures" / "report_curves"
SEVEN = math.sqrt(20000)  # sample std of two values 100 apart on either side: 141.42...


def runs_by_name() -> dict:
    """The fixture runs keyed by folder name."""
    return {r.path.parent.name: r for r in gather([FIXTURES])}


def flat(front: list[tuple[float, float]]) -> list[float]:
    """A frontier as a flat list, for pytest.approx."""
    return [x for pair in front for x in pair]


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The curve fixtures copied to a temporary folder and reported on."""
    root = tmp_path_factory.mktemp("curves") / "runs"
    shutil.copytree(FIXTURES, root)
    assert main([str(root)]) == 0
    return root, (root / "report.md").read_text()


def test_merged_part_matched_equals_hand_computation() -> None:
    run = runs_by_name()["pam_0"]
    assert flat(frontier(run, "lo+hi")) == pytest.approx(
        [-0.5, 1600, 0.2, 1200, 0.8, 900, 2.0, 700, 3.0, 500])
    both = matched(run, "lo+hi", 1.0)
    assert (both.cost, both.steps, both.tried) == (900, {"lo+hi": 2}, {"lo+hi": 3})
    assert both.drop == pytest.approx(0.8)
    assert both.test == pytest.approx({"lo": 0.972, "hi": 0.965})
    lo, hi = matched(run, "lo", 1.0), matched(run, "hi", 1.0)
    assert (lo.cost, lo.steps) == (500, {"lo+hi": 2})
    # hi alone may go one step further (its drop there is 0.2), where no test accuracy was taken
    assert (hi.cost, hi.steps, hi.test) == (400, {"lo+hi": 3}, {"hi": None})
    assert matched(run, "lo+hi", 2.0).cost == 700  # the --tolerance option moves the point


def test_none_matched_takes_each_teacher_at_its_own_step() -> None:
    run = runs_by_name()["none_0"]
    # sum over the parts of each part's cheapest cost within d, at every part's drop
    assert flat(frontier(run, "lo+hi")) == pytest.approx(
        [-0.2, 2100, 0.1, 1700, 0.6, 1500, 1.2, 1350, 1.5, 1150, 2.0, 1050, 3.0, 950])
    both = matched(run, "lo+hi", 1.0)
    assert both.cost == 600 + 900
    assert both.steps == {"lo": 2, "hi": 1} and both.tried == {"lo": 2, "hi": 2}
    assert both.test == pytest.approx({"lo": 0.970, "hi": 0.967})
    assert both.val == pytest.approx({"lo": 0.974, "hi": 0.969})
    assert matched(run, "lo+hi", 2.0).cost == 450 + 600
    assert matched(runs_by_name()["none_1"], "lo+hi", 1.0).cost == 850 + 850


def test_not_reached_and_the_tolerance_boundary() -> None:
    run = runs_by_name()["mtz_2"]
    assert matched(run, "lo+hi", 1.0) is None and matched(run, "lo", 1.0) is None
    assert matched(run, "hi", 1.0).cost == 600  # hi drops exactly 1.0 point there: it counts
    assert front_at(frontier(run, "lo+hi"), 1.0) is None


def test_matched_is_the_frontier_at_the_tolerance() -> None:
    for run in runs_by_name().values():
        for subset, tolerance in itertools.product(("lo", "hi", "lo+hi"), (0.0, 0.5, 1.0, 2.5)):
            found = matched(run, subset, tolerance)
            assert (found.cost if found else None) == front_at(frontier(run, subset), tolerance)


def test_seed_statistics_equal_hand_computation() -> None:
    (comp,) = comparisons(gather([FIXTURES]))
    stats = {m[0]: per for m, per in matched_stats(comp, 1.0, "flops").items()}
    pam, none, mtz = stats["pam"]["lo+hi"], stats["none"]["lo+hi"], stats["mtz"]["lo+hi"]
    assert (pam.n_runs, pam.n_reached, pam.mean) == (2, 2, 1000)  # 900 and 1100
    assert pam.std == pytest.approx(SEVEN) and pam.cv == pytest.approx(SEVEN / 1000)
    assert (none.mean, none.std, none.cv) == pytest.approx((1600, SEVEN, SEVEN / 1600))
    assert (mtz.n_runs, mtz.n_reached, mtz.mean) == (3, 2, 900)  # 800, 1000, not reached
    assert mtz.std == pytest.approx(SEVEN)
    assert (stats["none"]["lo"].mean, stats["none"]["lo"].std) == pytest.approx(
        (725, math.sqrt(2 * 125 ** 2)))  # none_0 600, none_1 850
    one, empty = seed_stat([5.0, None]), seed_stat([None])
    assert (one.n_runs, one.n_reached, one.mean, one.std, one.cv) == (2, 1, 5.0, 0.0, 0.0)
    assert (empty.n_reached, empty.mean, empty.std, empty.cv) == (0, None, None, None)


def test_band_over_seeds_equals_hand_computation() -> None:
    runs = runs_by_name()
    found = band([frontier(runs[n], "lo+hi") for n in ("pam_0", "pam_1")], top=3.0)
    assert found.drops == pytest.approx([-0.4, 0.1, 0.2, 0.7, 0.8, 1.2, 2.0, 3.0])
    assert found.mean == pytest.approx([1600, 1450, 1250, 1150, 1000, 850, 750, 650])
    assert found.low == pytest.approx([1600, 1300, 1200, 1100, 900, 800, 700, 500])
    assert found.high == pytest.approx([1600, 1600, 1300, 1200, 1100, 900, 800, 800])


def test_cost_sentence_fewer_more_and_spread() -> None:
    fewer = cost_sentence("pam", "no merging", (1000, 100), (1600, 100), "flops", "lo+hi", "here")
    assert fewer == "pam needs 1.60x fewer FLOPs than no merging for lo+hi here"
    more = cost_sentence("pam", "mtz", (1000, 150), (900, 100), "flops", "lo+hi", "here")
    assert more.startswith("pam needs 1.11x more FLOPs than mtz for lo+hi here; ")
    assert more.endswith("the seed spread (±150 / ±100) is larger than the difference")
    assert "spread" not in cost_sentence("a", "b", (100, 10), (200, 89), "params", "x", "")


def test_matched_headline_sentences() -> None:
    (comp,) = comparisons(gather([FIXTURES]))
    lines = matched_sentences(comp, 1.0, "flops")
    at = "for lo+hi at matched accuracy (within 1 point of the teachers on validation)"
    prefix = "mnist5k / tasks lo+hi / lenet5, taylor/neurons: "
    assert lines == [
        f"{prefix}mtz needs 1.78x fewer FLOPs than no merging {at}; mtz reached it in 2 of its "
        f"3 seeds",
        f"{prefix}pam needs 1.60x fewer FLOPs than no merging {at}",
        f"{prefix}pam needs 1.11x more FLOPs than mtz {at}; the seed spread (±141 / ±141) is "
        f"larger than the difference; mtz reached it in 2 of its 3 seeds"]
    strict = matched_sentences(comp, 0.0, "flops")  # only step 0 of some runs is that close
    assert all("needs up to" not in s and "x less" not in s for s in lines + strict)


def test_matched_tables_in_report(report: tuple[Path, str]) -> None:
    markdown = report[1]
    assert "### Cost at matched accuracy (flops)" in markdown
    assert "| method | n | lo | hi | lo+hi |" in markdown
    assert ("| pam/taylor/neurons | 2 | 550 ± 70.7 (CV 13%) | 450 ± 70.7 (CV 16%) | "
            "1k ± 141 (CV 14%) |") in markdown
    assert "| mtz/taylor/neurons | 3 | 650 ± 70.7 (CV 11%) [2/3 seeds] |" in markdown
    row = next(line for line in markdown.splitlines()
               if line.startswith("| lo+hi | none/taylor/neurons |"))
    assert "seed 0: lo step 2, hi step 1; seed 1: lo step 1, hi step 1" in row
    assert row.endswith("| 97.15 ± 0.21 | 96.35 ± 0.49 |")  # test accuracy at the chosen points
    hi_pam = next(line for line in markdown.splitlines() if line.startswith("| hi | pam/"))
    assert hi_pam.endswith("|  | not measured |")
    headline = markdown.split("## Comparison")[0]
    assert "pam needs 1.60x fewer FLOPs than no merging for lo+hi at matched accuracy" in headline
    assert "](mnist5k-lo-hi-lenet5_curves.png)" in markdown and "Pruning frontiers" in markdown


def test_csv_has_matched_columns(report: tuple[Path, str]) -> None:
    with (report[0] / "report.csv").open() as handle:
        rows = {Path(r["path"]).parent.name: r for r in csv.DictReader(handle)}
    none = rows["none_0"]
    assert float(none["matched_flops/lo+hi"]) == 1500 and float(none["matched_params/lo"]) == 300
    assert none["matched_steps/lo+hi"] == "lo:2 hi:1" and none["matched_tried/lo+hi"] == "lo:2 hi:2"
    assert float(none["matched_test/lo+hi/hi"]) == 0.967
    assert rows["mtz_2"]["matched_flops/lo+hi"] == "" and rows["pam_0"]["matched_test/hi/hi"] == ""


def test_old_results_are_reported_without_curves(tmp_path: Path) -> None:
    assert main([str(REPORT_FIXTURES), "--out", str(tmp_path)]) == 0
    markdown = (tmp_path / "report.md").read_text()
    assert "matched accuracy (within" not in markdown and "Cost at matched accuracy" not in markdown
    assert not list(tmp_path.glob("*curves*.png"))
    assert "| up to (max) | 1.69x (lo+hi) | 2.75x (lo+hi) | 1.80x (hi) |" in markdown


# ----------------------------------------------------------------------------- five tasks

TASKS = ("a", "b", "c", "d", "e")


def subsets_of(tasks: tuple[str, ...]) -> list[str]:
    """Every non-empty subset key of the tasks."""
    return ["+".join(c) for k in range(1, len(tasks) + 1) for c in itertools.combinations(tasks, k)]


def five_task_part(tasks: tuple[str, ...], scale: float, seed: int) -> list[dict]:
    """Six points of one part: every cost shrinks by a quarter a step, accuracy falls 0.3 points."""
    return [{"step": s, "tried": s + seed, "live": {"fc1": 100 - 10 * s},
             "cost": {k: {"flops": int(scale * (200 + 300 * k.count("+") + 300) * 0.75 ** s),
                          "params": int(scale * 100 * 0.75 ** s)} for k in subsets_of(tasks)},
             "val": {t: 0.97 - 0.003 * s * (1 + 0.1 * i + 0.05 * seed) for i, t in enumerate(tasks)},
             "test": {t: 0.96 for t in tasks} if s % 2 == 0 else None} for s in range(6)]


def five_task_run(merger: str, seed: int) -> dict:
    """A finished five-task run with trajectories (one part per task with merger=none)."""
    scale = {"none": 1.0, "mtz": 0.7, "pam": 0.5}[merger] * (1 + 0.1 * seed)
    traj = ({t: five_task_part((t,), scale, seed) for t in TASKS} if merger == "none"
            else {"+".join(TASKS): five_task_part(TASKS, scale, seed)})
    final = {k: {"flops": 1000 * (k.count("+") + 1), "params": 500, "nonzero_flops": 400,
                 "nonzero_params": 200} for k in subsets_of(TASKS)}
    return {"schema": 1, "status": "ok",
            "experiment": {"dataset": "digits", "tasks": list(TASKS), "model": "mlp",
                           "merger": merger, "pruner": "taylor", "granularity": "neurons",
                           "seed": seed},
            "teachers": {t: {"accuracy": 0.96, "flops": 800, "params": 400} for t in TASKS},
            "accuracy": {t: 0.955 for t in TASKS}, "cost": final,
            "groups": {layer: {k: 3 for k in subsets_of(TASKS)} for layer in ("fc1", "fc2")},
            "trajectory": traj, "reference": {t: 0.97 for t in TASKS}}


def png_width(path: Path) -> int:
    """Width in pixels from a PNG's IHDR header."""
    data = path.read_bytes()[:24]
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">I", data[16:20])[0]


def test_five_task_figures_at_most_1600_px_wide(tmp_path: Path) -> None:
    for i, (merger, seed) in enumerate(itertools.product(("none", "mtz", "pam"), (0, 1))):
        (tmp_path / str(i)).mkdir()
        (tmp_path / str(i) / "results.json").write_text(json.dumps(five_task_run(merger, seed)))
    assert main([str(tmp_path)]) == 0
    pngs = sorted(tmp_path.glob("*.png"))
    kinds = {p.stem.rsplit("_", 1)[1] for p in pngs}
    # frontiers: one figure per subset size, sizes 4 (5 subsets) and 5 (1) sharing one
    assert kinds == {"cost", "accuracy", "groups", "curves-k1", "curves-k2", "curves-k3",
                     "curves-k4-5"}
    widths = {p.name: png_width(p) for p in pngs}
    assert all(w <= 1600 for w in widths.values()), widths
    markdown = (tmp_path / "report.md").read_text()
    header = next(line for line in markdown.splitlines() if line.startswith("| method | n | a |"))
    assert header.count("|") == 2 + 31 + 1  # method, n and the 31 subsets
    # pam: step 2 of its merged part (478, 525); none: step 3 of each teacher (5 x 210, 5 x 232)
    assert "pam needs 2.20x fewer FLOPs than no merging for a+b+c+d+e at matched accuracy" in markdown


def test_spread_script_rows_equal_the_hand_computed_seed_statistics(tmp_path: Path) -> None:
    from mergeprune.report.spread import spread_rows

    rows = spread_rows(gather([FIXTURES]), 1.0)
    by = {(r["variant"].split("/")[0], r["subset"]): r for r in rows}
    pam, mtz = by[("pam", "lo+hi")], by[("mtz", "lo+hi")]
    assert sorted(pam["values"]) == [900, 1100] and pam["cv"] == pytest.approx(SEVEN / 1000)
    assert (mtz["reached"], len(mtz["seeds"]), mtz["mean"]) == (2, 3, 900)
    out = tmp_path / "rows.json"
    script = Path(__file__).parents[1] / "scripts" / "matched_spread.py"
    done = subprocess.run([sys.executable, str(script), str(FIXTURES), "--json", str(out)],
                          capture_output=True, text=True, check=True)
    assert "| pam/" in done.stdout and json.loads(out.read_text())


def test_figures_shade_up_to_the_largest_allowance_of_the_comparison() -> None:
    runs = [replace(r, val_size=400) for r in gather([FIXTURES]) if r.ok]
    comp = comparisons(runs)[0]
    refs = [p for r in comp.runs if r.ok for p in reference(r).values()]
    worst = max(100 * math.sqrt(p * (1 - p) / 400) for p in refs)
    assert allowance_top(comp, Options([], Path("."), 1.0)) == pytest.approx(1.0 + worst)
    assert allowance_top(comp, Options([], Path("."), 1.0, noise_z=0.0)) == 1.0
    assert allowance_top(comparisons(list(gather([FIXTURES])))[0], Options([], Path("."), 1.0)) == 1.0  # sizes unknown
