"""mergeprune.reproduce (`mergeprune-reproduce`, or scripts/reproduce.py): the results page is
generated from sweep folders and traces to their results.json.

The fast tests feed the page generator the report fixtures (tests/fixtures/report, described in
test_report.py) placed as a preset's sweep folder; the slow one runs a real preset end to end on
tiny data.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from conftest import REPORT_FIXTURES, make_cfg
from mergeprune import report as rp
from mergeprune.config_check import check_config
from mergeprune.finished import job_payload
from mergeprune.pruner.accept import Acceptance
from mergeprune.report import SeedStat, fmt_count, gather, matched
from mergeprune.reproduce import PRESETS, write_page
from mergeprune.reproduce.archive import archive_sweep, restore_sweep
from mergeprune.reproduce.claims import matched_ratio, pam_checks, with_plain
from mergeprune.reproduce.presets import NOISE_Z, TOLERANCE, Preset, preset_of
from mergeprune.reproduce.readings import (
    climb_sentence,
    edge_count,
    edge_drops,
    edge_sentence,
    finding,
    first_rungs,
    stem_sentence,
)
from mergeprune.reproduce.sections import grouping_finding
from mergeprune.reproduce.sweeps import (
    alpha_section,
    both_share,
    gain_answer,
    live_at_matched,
    relatedness_section,
    trend_sentence,
)
from mergeprune.reproduce.variant import drop_blocks, variant_section

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = REPORT_FIXTURES


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The mnist fixtures as the pam_split2 sweep, and the page written from them (nothing run)."""
    tmp = tmp_path_factory.mktemp("repro")
    shutil.copytree(FIXTURES / "sweep_mnist", tmp / "sweeps" / "pam_split2")
    (tmp / "docs" / "results" / "pam_split5").mkdir(parents=True)  # a figure of an earlier pass
    (tmp / "docs" / "results" / "pam_split5" / "old_cost.png").write_bytes(b"png")
    out = write_page(tmp / "sweeps", tmp / "docs" / "RESULTS.md")
    return tmp, out.read_text()


def test_page_names_its_sweep_folder_and_every_preset(page: tuple[Path, str]) -> None:
    tmp, text = page
    assert str(tmp / "sweeps" / "pam_split2") in text
    for name in ("admm_lenet5", "pam_split5", "pam_overlap3", "pam_alpha", "pam_relatedness"):
        assert f"## {name}" in text
        assert f"Not run yet. Run it with `python scripts/reproduce.py {name}`" in text
    assert "## Fidelity" in text and "Machine:" in text
    assert not (tmp / "docs" / "results" / "pam_split5").exists()  # not run: no stale figures
    jobs = row_of(text, "- Jobs: ")  # pam_split2 defines 4 mergers x 2 pruners x 3 seeds
    launched = sum(1 for p in (tmp / "sweeps" / "pam_split2").iterdir() if p.is_dir())
    assert f"of {launched} (the preset defines 24; {24 - launched} not launched yet)" in jobs
    assert "pruners run: admm (" in jobs


@pytest.fixture(scope="module")
def curves_page(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The trajectory fixtures (tests/fixtures/report_curves) as the pam_split2 archive, and its page."""
    tmp = tmp_path_factory.mktemp("repro_curves")
    shutil.copytree(ROOT / "tests" / "fixtures" / "report_curves", tmp / "runs" / "pam_split2")
    return write_page(tmp / "runs", tmp / "docs" / "RESULTS.md").read_text()


def row_of(text: str, *parts: str) -> str:
    """The first line of the page holding every part."""
    return next(line for line in text.splitlines() if all(p in line for p in parts))


def test_checks_read_the_costs_at_matched_accuracy(curves_page: str) -> None:
    # by hand from the fixtures (test_report_curves.py): lo+hi at matched accuracy is none
    # 1500 (600 + 900) and 1700 (850 + 850), pam 900 and 1100, mtz 800 and 1000 (mtz_2 never
    # reaches it): none / pam = 1600 / 1000, mtz / pam = 900 / 1000
    check = row_of(curves_page, "| pam_split2 |", "none / pam, all tasks (lo+hi)")
    assert "| 1.60x ± " in check
    spread = 1.6 * math.sqrt((math.sqrt(2e4) / 1600) ** 2 + (math.sqrt(2e4) / 1000) ** 2)
    assert f"1.60x ± {spread:.2f}" in check
    mtz = row_of(curves_page, "| pam_split2 |", "mtz / pam, best and worst subset")
    assert "0.90x" in mtz and "(lo+hi)" in mtz and "not met" in mtz
    assert "1.6k ± 141 (CV 9%)" in row_of(curves_page, "| none/taylor/neurons |", "CV")


def test_each_seeds_matched_cost_is_listed_with_its_live_neurons(curves_page: str) -> None:
    # the same points as above, per seed: pam 900 (step 2: 16 conv1, 220 fc1) and 1100; mtz 800 and
    # 1000, seed 2 never within the tolerance; none adds two teachers' points, so no live count
    assert "| 900, 1.1k | 16·220, " in row_of(curves_page, "| pam/taylor/neurons | 0, 1 |")
    assert "| 800, 1k, — |" in row_of(curves_page, "| mtz/taylor/neurons | 0, 1, 2 |")
    assert "| 1.5k, 1.7k | —, — |" in row_of(curves_page, "| none/taylor/neurons | 0, 1 |")


def test_page_shows_first_pass_beside_this_pass(curves_page: str) -> None:
    row = row_of(curves_page, "| pam_split2 |", "none / pam, all tasks", "| 1.85x |")
    assert "1.60x" in row and "| 1.16 |" in row and "4abc5e0" in row  # 1.85 / 1.60
    assert "## What changed since the first pass" in curves_page
    assert "not run in this pass" in row_of(curves_page, "| pam_split5 |", "none_pam_all")


def test_group_summary_shows_how_far_below_the_teachers_pruning_starts(curves_page: str) -> None:
    # reference lo 0.98, hi 0.97; the fixtures' step 0 is 0.5 (pam_0) and 0.4 (pam_1) points above
    # on the worst task, so the drop before pruning is -0.5 and -0.4 points: mean -0.45 ± 0.07
    # (the fixtures record no groups, hence the dashes)
    assert "| pam/taylor/neurons | 2 | — | — | — | — | -0.45 ± 0.07 |" in curves_page


def test_trade_off_curves_are_on_the_page(curves_page: str) -> None:
    assert "](results/pam_split2/mnist5k-lo-hi-lenet5_curves.png)" in curves_page
    lines = curves_page.splitlines()
    figures = [i for i, line in enumerate(lines) if line.startswith("![") and "pam_split2" in line]
    assert "_curves.png" in lines[figures[0]]  # the curves come before the other figures


def test_variant_is_set_beside_its_base_and_takes_pams_place_in_its_checks(tmp_path: Path) -> None:
    # the variant's runs are the base's own pam runs, so its recomputed checks must equal the base's:
    # mtz / pam 900 / 1000 on lo+hi (test_checks_read_the_costs_at_matched_accuracy)
    for name in ("mtz_0", "mtz_1", "mtz_2", "none_0", "none_1", "pam_0", "pam_1"):
        shutil.copytree(ROOT / "tests" / "fixtures" / "report_curves" / name, tmp_path / "runs" / "base" / name)
        if name.startswith("pam"):
            shutil.copytree(tmp_path / "runs" / "base" / name, tmp_path / "runs" / "v" / name)
    preset = Preset("v", "variant of base", "variant", base="base")
    text = rp.to_markdown(variant_section(gather([tmp_path / "runs" / "v"]), preset, tmp_path / "runs"),
                          tmp_path)
    pam = [line for line in text.splitlines() if line.startswith("| pam (")]
    assert len(pam) == 2 and pam[0].split("|")[2:] == pam[1].split("|")[2:]  # same runs, same costs
    assert "| mtz (base) |" in text and "| none (base) |" in text
    assert "0.90x" in row_of(text, "mtz / pam, best and worst subset") and "not met" in text
    paired = row_of(text, "| lo+hi |", "(n=2)")  # same seed, same runs: every ratio of pam / pam is 1
    assert paired.split("|")[2].strip() == "1.00x ± 0.00 (n=2): 1.00, 1.00"
    assert "mtz (base) / pam (v)" in text and "none (base) / pam (v)" in text


def test_drop_audit_is_read_in_points_below_the_teacher(tmp_path: Path) -> None:
    folder = tmp_path / "diagnostics" / "base"
    folder.mkdir(parents=True)
    for seed, pam in ((0, 0.97), (1, 0.96)):  # 1 and 2 points below the teacher's 0.98
        layer = {"candidates": 12, "dropped": 3, "dropped_varying": 3, "pam": {"lo": pam},
                 "random": {"lo": [0.95, 0.97]}}
        fc1 = {"candidates": 40, "dropped": 20 + seed, "dropped_varying": 5, "pam": {"lo": 0.98},
               "random": {"lo": [0.90, 0.91]}}  # PAM loses nothing, random 8 and 7 points
        (folder / f"pam_drops_seed{seed}.json").write_text(
            json.dumps({"teachers_val": {"lo": 0.98}, "layers": {"conv1": layer, "fc1": fc1}}))
    text = rp.to_markdown(drop_blocks(folder, "diag"), tmp_path)
    # PAM 1 and 2 points: 1.50 ± 0.71; random 3, 1, 3, 1 points: 2.00 ± 1.15
    assert "| conv1 | 12 | 3 | 3 | 1.50 ± 0.71 | 2.00 ± 1.15 |" in text
    assert "`diag/pam_drops_seed*.json` (seeds 0, 1)" in text
    assert "| fc1 | 40 | 20-21 | 5 | 0.00 ± 0.00 | 7.50 ± 0.58 |" in text
    assert "in: fc1 (lo); it does not in: conv1 (lo)." in text  # conv1: 2.00 - 1.50 is within 1.15
    assert drop_blocks(tmp_path / "none", "none") == []


def stat(mean: float, std: float, n: int = 3) -> SeedStat:
    """A matched cost reached by every one of n seeds."""
    return SeedStat(n, n, mean, std, std / mean)


def test_unmet_grouping_check_names_each_groupings_spread_and_start() -> None:
    pam = [r for r in gather([ROOT / "tests" / "fixtures" / "report_curves"]) if r.method[0] == "pam"]
    stats = {"star": {"a": stat(100, 40), "b": stat(100, 30)}, "subsets": {"a": stat(80, 4), "b": stat(80, 8)}}
    text = grouping_finding(stats, {"star": pam, "subsets": pam[:1]})
    # the fixtures' pam runs start 0.5 and 0.4 points above the teachers (see the group summary test)
    assert text.startswith("star: matched cost CV 30-40% over seeds, its merged network starts -0.45 ± 0.07")
    assert "subsets: matched cost CV 5-10% over seeds, its merged network starts -0.50 points" in text


def search_run(seed: int, firsts: dict[str, bool]) -> rp.Run:
    """A finished run whose ADMM searches ('' = the merged network, else a teacher) accepted or
    rejected their first rung as given."""
    def tried(ok: bool) -> list[dict]:  # a climb is followed by a trained step down (phase descend)
        return [{"scale": 1.0, "accepted": ok, "trained": True},
                {"scale": 0.7 if ok else 1.43, "accepted": True, "trained": True, "phase": "ladder" if ok else "climb"},
                *([] if ok else [{"scale": 1.0, "accepted": True, "trained": True, "phase": "descend"}])]

    report = {part: {"search": {"tried": tried(ok), "chosen_scale": 0.7 if ok else 1.0}} for part, ok in firsts.items()}
    data = {"experiment": {"seed": seed}, "pruning": report.get("", report)}
    return rp.Run(Path(f"s{seed}"), f"s{seed}", "ok", data)


def test_searches_that_climbed_from_a_rejected_first_rung_are_named() -> None:
    pam, concat = search_run(0, {"": False}), search_run(0, {"": True})
    none = search_run(0, {"lo": True, "hi": False})
    assert first_rungs(pam) == {"": False} and first_rungs(none) == {"lo": True, "hi": False}
    assert first_rungs(rp.Run(Path("t"), "t", "ok", {"pruning": {"layers": {}}})) == {}  # no search (taylor)
    text = climb_sentence("admm_neurons/neurons", {"none": [none], "concat": [concat], "pam": [pam]})
    assert "climbed on none seed 0 (hi): s = 1, down again; pam seed 0: s = 1, down again (" in text
    pam.data["pruning"]["search"]["tried"][-1]["accepted"] = False
    assert "on pam seed 0: s = 1, first step down rejected (" in climb_sentence("f", {"pam": [pam]})
    pam.data["pruning"]["search"]["tried"].pop()  # a search from before the descent after a climb
    assert "on pam seed 0: s = 1, no descent (" in climb_sentence("f", {"pam": [pam]})
    assert "on none seed 0 (lo), concat seed 0 the ladder went down" in text
    assert climb_sentence("admm_neurons/neurons", {"concat": [concat]}) is None


def edge_run(seed: int, hi_after: list[float]) -> rp.Run:
    """A merged lo+hi run: teachers at 99% on validation, then pruned points with lo at 98.5% and hi as given."""
    def at(step: int, lo: float, hi: float, flops: int) -> dict:
        return {"step": step, "val": {"lo": lo, "hi": hi},
                "cost": {k: {"flops": flops} for k in ("lo", "hi", "lo+hi")}}
    points = [at(0, 0.99, 0.99, 1000)] + [at(i + 1, 0.985, h, 100 - i) for i, h in enumerate(hi_after)]
    data = {"experiment": {"seed": seed, "tasks": ["lo", "hi"]}, "reference": {"lo": 0.99, "hi": 0.99},
            "trajectory": {"lo+hi": points}}
    return rp.Run(Path(f"e{seed}"), f"e{seed}", "ok", data)


def test_pruned_points_just_outside_the_tolerance_are_named() -> None:
    # costs fall along the points: 1000 unpruned, then 100, 99, 98
    edge, earlier = edge_run(2, [0.978, 0.9788]), edge_run(1, [0.9805, 0.978])
    inside = edge_run(0, [0.978, 0.9805])
    plain = rp.Rule(1.0)
    assert edge_drops(edge, "hi", plain) == pytest.approx((1.12, 99, 1000))  # falls back to the unpruned network
    assert edge_drops(earlier, "hi", plain) == pytest.approx((1.2, 99, 100))  # to an earlier pruned point
    assert edge_drops(edge, "lo", plain) is None and edge_drops(inside, "hi", plain) is None
    text = edge_sentence("admm", {"pam": [inside, earlier, edge]}, ["lo", "hi"], plain)
    assert text is not None and ("(1 point) on validation on pam seed 1 (hi: 1.20 points at 99, matched "
                                 "100); pam seed 2 (hi: 1.12 points at 99, matched 1k)") in text
    assert "seed 0" not in text and edge_sentence("admm", {"pam": [inside]}, ["lo", "hi"], plain) is None
    assert matched(edge, "hi", 1.0).cost == 1000
    assert edge_count([inside, earlier, edge], plain) == (2, 6)  # hi of seeds 1 and 2, of 3 runs x 2 tasks


def stem_run(seed: int, stems: list[tuple[int, int]]) -> rp.Run:
    """A merged lo+hi run whose points keep the given conv filters; the last point is the cheapest
    within 1 point of the teachers, the one after it is beyond."""
    points = [{"step": i, "val": {"lo": 0.99, "hi": 0.99}, "live": {"conv1": c1, "conv2": c2, "fc1": 20},
               "cost": {k: {"flops": 1000 - i} for k in ("lo", "hi", "lo+hi")}} for i, (c1, c2) in enumerate(stems)]
    points.append({"step": len(stems), "val": {"lo": 0.95, "hi": 0.95}, "live": {"conv1": 1, "conv2": 1, "fc1": 5},
                   "cost": {k: {"flops": 10} for k in ("lo", "hi", "lo+hi")}})
    data = {"experiment": {"seed": seed, "tasks": ["lo", "hi"]}, "reference": {"lo": 0.99, "hi": 0.99},
            "trajectory": {"lo+hi": points}}
    return rp.Run(Path(f"s{seed}"), f"s{seed}", "ok", data)


def test_stem_sentence_names_the_conv_filters_at_each_matched_point() -> None:
    runs = {"none": [stem_run(0, [(6, 16)])],
            "mtz": [stem_run(0, [(6, 16), (3, 2)]), stem_run(1, [(6, 16), (2, 2)])],
            "pam": [stem_run(1, [(6, 16), (4, 4), (2, 2)]), stem_run(0, [(6, 16), (2, 2)])]}
    text = stem_sentence("taylor/neurons", runs, "lo+hi")
    # seeds in order; no merging has no merged network; the point beyond the tolerance (1·1) is not read
    assert text is not None and "mtz 3·2, 2·2; pam 2·2, 2·2." in text and "3 of 4 end on 2·2" in text
    assert "none" not in text.split(":")[1] and "1·1" not in text
    assert stem_sentence("taylor/neurons", {"none": runs["none"]}, "lo+hi") is None


def test_matched_accuracy_allows_the_standard_error_the_pruners_allow() -> None:
    # teachers at 99% on 500 validation images: one standard error is 0.445 point, so the pruners
    # accept drops up to 1.445 points (pruner/accept.py) and the matched cost reads the same points
    se = 100 * math.sqrt(0.99 * 0.01 / 500)
    rule = rp.Rule(1.0, 1.0)
    assert rule.allowed(0.99, 500) == pytest.approx(1.0 + se)
    assert rule.allowed(0.99, None) == 1.0 and rp.Rule(1.0).allowed(0.99, 500) == 1.0
    assert 100 * Acceptance(0.01, 1.0).allowed_drop(0.99, 500) == pytest.approx(rule.allowed(0.99, 500))
    edge, earlier = (replace(edge_run(2, [0.978, 0.9788]), val_size=500),
                     replace(edge_run(1, [0.9805, 0.978]), val_size=500))
    assert edge_drops(edge, "hi", rule) is None and edge_drops(earlier, "hi", rule) is None
    assert matched(edge, "hi", rule).cost == 99 and matched(earlier, "hi", rule).cost == 99
    beyond = replace(edge_run(3, [0.9750, 0.9740]), val_size=500)  # 1.5 and 1.6 points: past 1.445
    assert matched(beyond, "hi", rule).cost == 1000
    assert edge_drops(beyond, "hi", rule) == pytest.approx((1.6, 99, 1000))
    # with the validation size unknown the rule falls back to the tolerance alone
    assert matched(edge_run(2, [0.978, 0.9788]), "hi", rule).cost == 1000


def test_a_runs_validation_size_comes_from_its_results_or_its_payload(tmp_path: Path) -> None:
    new, old, bare = (tmp_path / n for n in ("new", "old", "bare"))
    for d in (new, old, bare):
        d.mkdir()
    (new / "results.json").write_text(json.dumps({"status": "ok", "splits": {"train": 9, "val": 40, "test": 7}}))
    (old / "results.json").write_text(json.dumps({"status": "ok"}))
    (old / "job_payload.json").write_text(json.dumps({"dataset": {"val_size": 500}}))
    (bare / "results.json").write_text(json.dumps({"status": "ok"}))
    sizes = {r.path.parent.name: r.val_size for r in gather([tmp_path])}
    assert sizes == {"new": 40, "old": 500, "bare": None}


def test_the_page_matches_by_the_acceptance_test_every_pruner_config_uses(tmp_path: Path) -> None:
    # the page's rule is only the pruners' test while every pruner config keeps these defaults
    for name in ("taylor", "admm_neurons", "vib"):
        cfg = make_cfg(tmp_path, [f"pruner={name}"])
        node = cfg.pruner.get("schedule", cfg.pruner)
        assert 100 * float(node.tolerance) == pytest.approx(TOLERANCE), name
        assert float(node.noise_z) == pytest.approx(NOISE_Z), name


def test_trend_tells_a_monotone_change_from_noise() -> None:
    clear = trend_sentence("alpha_conv", [0.0, 0.1, 0.3], [stat(900, 20), stat(700, 30), stat(500, 25)], "lo+hi")
    assert "monotonically decreasing" in clear and "2 of 2 step(s) larger than the seed spread" in clear
    noisy = trend_sentence("alpha_conv", [0.0, 0.1, 0.3], [stat(900, 200), stat(850, 150), stat(800, 180)],
                           "lo+hi")
    assert "monotonically decreasing" in noisy and "0 of 2 step(s)" in noisy
    zigzag = trend_sentence("alpha_fc", [0.0, 0.1, 0.3], [stat(900, 10), stat(700, 10), stat(800, 10)], "lo+hi")
    assert "not monotone" in zigzag


def test_gain_answer_needs_a_change_beyond_the_spread() -> None:
    assert "shrinks, as the paper reports" in gain_answer({0: [2.0, 2.1, 1.9], 5: [1.1, 1.0, 1.2]}, "a+b")
    assert "grows" in gain_answer({0: [1.0, 1.1, 0.9], 5: [2.0, 2.1, 1.9]}, "a+b")
    flat = gain_answer({0: [1.5, 1.1, 1.9], 5: [1.4, 1.0, 1.8]}, "a+b")
    assert "no trend can be claimed" in flat
    assert "Too few" in gain_answer({0: [1.5]}, "a+b")
    # a shrink made by its first step alone says so
    one_step = gain_answer({0: [3.0, 3.1, 2.9], 1: [2.0, 2.05, 1.95], 5: [2.0, 2.1, 1.9]}, "a+b")
    assert "shrinks" in one_step and "exceeds the seed spread: 0 → 1 (of 2)" in one_step


def test_one_seed_has_no_spread() -> None:
    one = SeedStat(1, 1, 100.0, 0.0, 0.0)
    ratio = matched_ratio(one, stat(50, 5))
    assert ratio is not None and ratio.spread is None and ratio.text() == "2.00x"
    assert ratio.beyond(1.0) is None


def test_each_check_carries_its_reading_under_the_tolerance_alone() -> None:
    # the same family read twice: by the pruners' test (pam cheaper) and by the 1 point alone (not)
    rule = {"none": {"a": stat(100, 5), "b": stat(100, 5), "a+b": stat(200, 10)},
            "mtz": {"a": stat(100, 5), "b": stat(100, 5), "a+b": stat(200, 10)},
            "pam": {"a": stat(100, 5), "b": stat(100, 5), "a+b": stat(100, 5)}}
    plain = {m: {**per, "a+b": stat(200, 10)} for m, per in rule.items()}
    checks = with_plain(pam_checks("p", "t", rule, ["a", "b"], {}), pam_checks("p", "t", plain, ["a", "b"], {}))
    mtz = next(c for c in checks if c.key == "mtz_pam")
    assert mtz.verdict.startswith("met") and ": **not met**" in mtz.plain and "2.00x" in mtz.ours
    assert next(c for c in checks if c.key == "none_pam_all").plain.startswith("1.00x")


def test_unmet_gain_is_explained_by_the_bound_of_the_dearest_task() -> None:
    # none: a alone 100, b alone 300 FLOPs; any merger that costs at least b's 300 saves at most
    # (100 + 300) / 300 = 1.33x; pam costs 320 = 1.07x of b alone
    mergers = {"none": {"a": stat(100, 5), "b": stat(300, 10), "a+b": stat(400, 12)},
               "pam": {"a": stat(150, 5), "b": stat(310, 10), "a+b": stat(320, 10)}}
    checks = pam_checks("p", "taylor/neurons", mergers, ["a", "b", "c", "d", "e"][:2], {})
    assert [c.key for c in checks] == ["none_pam_all", "worst_single"]
    worst = checks[1]
    assert worst.value == pytest.approx(1.5) and "not met" in worst.verdict and "(a)" in worst.ours
    too_high = replace(checks[0], verdict="**not met**")
    text = finding(too_high, mergers, ["a", "b"])
    assert text is not None and "at most 1.33x" in text and "(b)" in text and "1.07x" in text
    assert "a alone costs 150" in (finding(worst, mergers, ["a", "b"]) or "")
    assert finding(replace(worst, verdict="met"), mergers, ["a", "b"]) is None
    starts = {"none": "0.00", "pam": "0.90 ± 0.17", "mtz": "0.29"}
    assert (finding(worst, mergers, ["a", "b"], starts) or "").endswith(
        "Before pruning, pam's merged network is 0.90 ± 0.17 points below the teachers (validation, "
        "worst task; none 0.00, mtz 0.29).")
    assert "Before pruning" not in (finding(too_high, mergers, ["a", "b"], starts) or "")  # a bound, not a start


def test_five_tasks_are_held_to_the_five_task_target_only() -> None:
    # the issue sets worst-single and mtz / pam targets for the two-task presets, >= 3x for five tasks
    tasks = ["a", "b", "c", "d", "e"]
    subsets = rp.subset_order(tuple(tasks))
    mergers = {"none": {s: stat(100 * (s.count("+") + 1), 5) for s in subsets},
               "pam": {s: stat(160, 5) for s in subsets}, "mtz": {s: stat(150, 5) for s in subsets}}
    checks = {c.key: c for c in pam_checks("p", "taylor/neurons", mergers, tasks, {})}
    assert checks["none_pam_all"].target == ">= 3x" and checks["none_pam_all"].verdict == "met"
    assert checks["worst_single"].value == pytest.approx(1.6)
    assert checks["worst_single"].target == "—" and checks["worst_single"].verdict == "—"
    assert checks["mtz_pam"].target == "—" and checks["mtz_pam"].verdict == "—"
    two = {c.key: c for c in pam_checks("p", "taylor/neurons", {m: {s: v[s] for s in ("a", "b", "a+b")}
                                                                for m, v in mergers.items()}, ["a", "b"], {})}
    assert two["worst_single"].verdict.startswith("**not met**") and two["mtz_pam"].target == ">= 1.3x / >= 1.0x"


def sweep_of(tmp: Path, jobs: dict[str, tuple[str, list[str]]]) -> Path:
    """A sweep folder: job name -> (curve fixture, Hydra overrides)."""
    for name, (fixture, overrides) in jobs.items():
        (tmp / name / ".hydra").mkdir(parents=True)
        shutil.copy2(ROOT / "tests" / "fixtures" / "report_curves" / fixture / "results.json", tmp / name)
        (tmp / name / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    return tmp


def test_relatedness_gain_is_read_per_seed_from_the_overrides(tmp_path: Path) -> None:
    jobs = {f"{m}_{seed}_{step}": (f"{m}_{seed}", [f"relatedness={step}", f"merger={m}", f"seed={seed}"])
            for m in ("none", "pam") for seed in (0, 1) for step in (0, 5)}
    text = rp.to_markdown(relatedness_section(gather([sweep_of(tmp_path, jobs)])), tmp_path)
    # lo+hi per seed: none 1500 / pam 900 and none 1700 / pam 1100: 1.667 and 1.545
    gains = [1500 / 900, 1700 / 1100]
    mean, std = sum(gains) / 2, math.sqrt(sum((g - sum(gains) / 2) ** 2 for g in gains))
    assert "| 0 | " in text and f"{mean:.2f}x ± {std:.2f} (n=2)" in row_of(text, "| 5 |")
    assert "no trend can be claimed" in text  # the same runs at both steps
    assert "the FLOPs both tasks compute are 0% ± 0% of lo+hi at step 0" in text  # the pam fixtures share nothing


def test_share_both_tasks_compute_is_read_at_matched_accuracy() -> None:
    runs = {(r.method[0], r.seed): r for r in gather([ROOT / "tests" / "fixtures" / "report_curves"])}
    # no merging shares nothing: lo 600 + hi 900 - lo+hi 1500 = 0
    assert both_share(runs[("none", 0)]) == 0.0
    # mtz seed 0 at matched accuracy: lo 600, hi 600, lo+hi 800, so 400 of 800 FLOPs serve both
    assert both_share(runs[("mtz", 0)]) == pytest.approx(0.5)
    assert both_share(runs[("mtz", 2)]) is None  # lo never within the tolerance


def test_live_neurons_are_read_at_the_matched_point() -> None:
    runs = {(r.method[0], r.seed): r for r in gather([ROOT / "tests" / "fixtures" / "report_curves"])}
    # pam seed 0: step 2 is the cheapest within 1 point (val lo 97.5 / hi 96.2 against the reference
    # 98.0 / 97.0); step 3 drops lo to 96.0; the point of step 2 has 16 conv1 and 220 fc1 neurons
    assert rp.matched(runs[("pam", 0)], "lo+hi", 1.0).steps == {"lo+hi": 2}
    assert live_at_matched(runs[("pam", 0)], "lo+hi") == {"conv1": 16, "fc1": 220}
    assert live_at_matched(runs[("mtz", 2)], "lo+hi") is None  # never within the tolerance
    assert live_at_matched(runs[("none", 0)], "lo+hi") is None  # two teachers' trajectories


def test_alpha_section_groups_runs_by_their_thresholds(tmp_path: Path) -> None:
    jobs = {f"pam_{seed}_{a}": (f"pam_{seed}", [f"merger.alpha_conv={a}", "merger.alpha_fc=0.1", f"seed={seed}"])
            for seed in (0, 1) for a in ("0.0", "0.3")}
    text = rp.to_markdown(alpha_section(gather([sweep_of(tmp_path, jobs)])), tmp_path)
    assert "| 0 | 0.1 | 2 |" in text and "| 0.3 | 0.1 | 2 |" in text and "1k ± 141 (CV 14%)" in text
    assert "at alpha_fc 0.1, alpha_conv 0 → 0.3: lo+hi costs" in text and "constant in the mean" in text
    assert "live conv1·fc1 at matched accuracy, per seed" in text and "16·220, 16·220" in text


def test_archive_keeps_the_result_files_and_restores_them(tmp_path: Path) -> None:
    sweep, archive = tmp_path / "sweep", tmp_path / "archive"
    for job in ("merger=none,seed=0", "merger=pam,seed=0"):
        (sweep / job / ".hydra").mkdir(parents=True)
        (sweep / job / ".hydra" / "overrides.yaml").write_text(f"- {job.replace(',', chr(10) + '- ')}\n")
        (sweep / job / "model.pt").write_bytes(b"weights")
        (sweep / job / "job_payload.json").write_text("{}")
    (sweep / "merger=none,seed=0" / "results.json").write_text('{"status": "ok"}')
    (sweep / "reproduce.json").write_text('{"launches": []}')
    (sweep / "report").mkdir()
    (sweep / "report" / "report.md").write_text("x")
    assert archive_sweep(sweep, archive) == 2
    kept = sorted(str(p.relative_to(archive)) for p in archive.rglob("*") if p.is_file())
    none, pam = "merger=none,seed=0/", "merger=pam,seed=0/"
    assert kept == [none + ".hydra/overrides.yaml", none + "job_payload.json", none + "results.json",
                    pam + ".hydra/overrides.yaml", pam + "job_payload.json", "reproduce.json"]
    fresh = tmp_path / "fresh"
    assert restore_sweep(archive, fresh) == 2
    assert (fresh / "merger=none,seed=0" / "results.json").read_text() == '{"status": "ok"}'
    assert restore_sweep(archive, fresh) == 1  # the finished job is there; the unfinished one is copied again
    assert not (fresh / "merger=none,seed=0" / "model.pt").exists()
    shutil.rmtree(sweep / "merger=pam,seed=0")  # a sweep folder that lacks a job keeps its archived copy
    (sweep / "merger=none,seed=0" / "results.json").write_text('{"status": "ok", "new": 1}')
    assert archive_sweep(sweep, archive) == 1
    assert (archive / "merger=pam,seed=0" / "job_payload.json").is_file()
    assert (archive / "merger=none,seed=0" / "results.json").read_text() == '{"status": "ok", "new": 1}'


def test_presets_are_read_from_the_experiment_configs(tmp_path: Path) -> None:
    assert [(p.name, p.kind) for p in PRESETS] == [
        ("admm_lenet5", "admm"), ("pam_split2", "mergers"), ("pam_split5", "mergers"),
        ("pam_overlap3", "grouping"), ("pam_alpha", "alpha"), ("pam_relatedness", "relatedness"),
        ("pam_fashion2", "mergers"), ("pam_fashion2_fc", "variant"), ("pam_fashion5", "mergers")]
    by_name = {p.name: p for p in PRESETS}
    assert by_name["pam_fashion2_fc"].base == "pam_fashion2"
    bad = tmp_path / "experiment" / "v.yaml"
    bad.parent.mkdir()
    bad.write_text("preset: {kind: variant, what: a variant without its base}\n")
    with pytest.raises(ValueError, match="needs `base`"):
        preset_of(bad)
    assert by_name["pam_split2"].paper == by_name["pam_split5"].paper == {"none": 4.87, "mtz": 2.01}
    assert by_name["admm_lenet5"].paper == {"admm": 71.2, "admm_progressive": 167.0}
    for preset in PRESETS:  # the jobs accept the block, and it does not enter their cache key
        cfg = make_cfg(tmp_path, [f"experiment={preset.name}"])
        check_config(cfg)
        assert cfg.preset.what == preset.what and "preset" not in job_payload(cfg)


def test_failed_and_missing_jobs_are_listed(page: tuple[Path, str]) -> None:
    _, text = page
    assert "Jobs that did not finish:" in text
    assert "failed" in text and "no result (killed?)" in text


@pytest.mark.parametrize("command", [[sys.executable, str(ROOT / "scripts" / "reproduce.py")],
                                     [str(Path(sys.executable).parent / "mergeprune-reproduce")]],
                         ids=["script", "console-script"])
def test_unknown_preset_is_refused(command: list[str]) -> None:
    proc = subprocess.run([*command, "nosuch", "--page-only"], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2 and "unknown preset(s) nosuch" in proc.stderr


@pytest.mark.slow
def test_driver_runs_a_preset_and_writes_the_page(tmp_path: Path) -> None:
    root, out = tmp_path / "sweeps", tmp_path / "docs" / "RESULTS.md"
    args = [sys.executable, str(ROOT / "scripts" / "reproduce.py"), "pam_overlap3", "--root", str(root),
            "--out", str(out), "--", "dataset=digits", "debug=fast", "logger=none", "seed=0",
            "pruner.schedule.max_steps=1", "finetune.epochs=0", "evaluate.export=false", "merger.samples=48",
            f"paths.cache_dir={tmp_path / 'cache'}"]
    proc = subprocess.run(args, capture_output=True, text=True, cwd=tmp_path, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    results = sorted((root / "pam_overlap3").rglob("results.json"))
    assert len(results) == 2  # star and subsets, seed 0
    log = json.loads((root / "pam_overlap3" / "reproduce.json").read_text())["launches"]
    assert len(log) == 1 and log[0]["returncode"] == 0 and "experiment=pam_overlap3" in log[0]["command"]
    text = out.read_text()
    assert "## pam_overlap3" in text and "Jobs: 2 finished of 2" in text
    runs = {r.data["merge"]["grouping"]: r for r in gather([root / "pam_overlap3"])}
    row = next(line for line in text.splitlines() if line.startswith("| parity+big+lo |"))
    for grouping in ("star", "subsets"):
        found = matched(runs[grouping], "parity+big+lo", 1.0)
        assert found is not None and fmt_count(found.cost) in row
    assert (root / "pam_overlap3" / "report" / "report.md").is_file()
    # a new checkout has the archive only: the relaunch restores the finished jobs and skips them
    archived = {p.relative_to(tmp_path / "docs" / "results" / "runs"): p.read_bytes()
                for p in (tmp_path / "docs" / "results" / "runs").rglob("results.json")}
    assert len(archived) == 2
    shutil.rmtree(root)
    shutil.rmtree(tmp_path / "cache")
    proc = subprocess.run(args, capture_output=True, text=True, cwd=tmp_path, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    for rel, content in archived.items():
        assert (root / rel).read_bytes() == content  # not rerun: the same file, timings and all
    assert "Jobs: 2 finished of 2" in out.read_text()
