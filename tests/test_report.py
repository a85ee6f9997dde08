"""mergeprune-report on hand-written results.json fixtures (tests/fixtures/report).

Fixtures: sweep_mnist (mnist5k, tasks lo+hi, lenet5, pruner admm/neurons unless noted)
  0 none seed 0 | 1 mtz seed 0 | 2 pam seed 0 | 3 pam seed 1 | 4 mtz seed 2, task lo 3 points below
  its teacher | 5 mtz seed 1 failed | 6 Hydra job folder without results.json | 7 pam with pruner
  magnitude | 8 truncated JSON;
sweep_fashion (fashion_mnist, same task names and model): 0 none seed 0 | 1 pam seed 0.
"""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPORT_FIXTURES
from mergeprune.report import comparisons, gather, headlines, main

FIXTURES = REPORT_FIXTURES
# flops (lo, hi, lo+hi) of eligible runs: none 1000/1200/2200, mtz 800/900/1300,
# pam mean of seeds 0 and 1: 500/500/800 (mtz seed 2 is below the tolerance, seed 1 failed)
MNIST_RATIOS = {
    ("none", "mtz"): {"lo": 1000 / 800, "hi": 1200 / 900, "lo+hi": 2200 / 1300},
    ("none", "pam"): {"lo": 1000 / 500, "hi": 1200 / 500, "lo+hi": 2200 / 800},
    ("mtz", "pam"): {"lo": 800 / 500, "hi": 900 / 500, "lo+hi": 1300 / 800},
}
FASHION_RATIOS = {("none", "pam"): {"lo": 2500 / 1000, "hi": 2500 / 1250, "lo+hi": 5000 / 2000}}


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The fixtures copied to a temporary folder and reported on (default --out: the first DIR)."""
    root = tmp_path_factory.mktemp("report") / "runs"
    shutil.copytree(FIXTURES, root)
    assert main([str(root)]) == 0
    return root, (root / "report.md").read_text()


def family(comp_name: str, tolerance: float = 1.0, metric: str = "flops"):
    """The admm/neurons headline of a fixture comparison, and its excluded runs."""
    comp = next(c for c in comparisons(gather([FIXTURES])) if c.dataset == comp_name)
    heads, excluded = headlines(comp, tolerance, metric)
    return next(h for h in heads if (h.pruner, h.granularity) == ("admm", "neurons")), excluded


def section(markdown: str, dataset: str) -> str:
    """The Markdown section of one comparison."""
    parts = markdown.split("\n## ")
    return next(p for p in parts if p.startswith(f"Comparison: {dataset} "))


@pytest.mark.parametrize("dataset, expected", [("mnist5k", MNIST_RATIOS),
                                               ("fashion_mnist", FASHION_RATIOS)])
def test_headline_ratios_match_hand_computed(dataset: str, expected: dict) -> None:
    head, _ = family(dataset)
    assert set(head.ratios) == set(expected)
    for pair, per_subset in expected.items():
        assert head.ratios[pair] == pytest.approx(per_subset)
        best = max(per_subset.values())
        assert head.up_to(pair)[0] == pytest.approx(best)


def test_headline_up_to_in_markdown(report: tuple[Path, str]) -> None:
    mnist = section(report[1], "mnist5k")
    assert "| up to (max) | 1.69x (lo+hi) | 2.75x (lo+hi) | 1.80x (hi) |" in mnist
    # the sentences name the subset where the ratio is largest; k = mean cost(B) / mean cost(A)
    assert ("pam needs 2.75x fewer FLOPs than no merging for lo+hi (final networks within 1 "
            "accuracy point of their teachers on test; the subset where it gains most)") in report[1]
    assert "pam needs 1.80x fewer FLOPs than mtz for hi (final networks" in report[1]
    assert "needs up to" not in report[1] and "x less" not in report[1]
    assert "seed spread" not in mnist  # pam's lo+hi 800 ± 141 against none's 2200, mtz's 900 ± 0
    assert "| up to (max) | 2.50x (lo) |" in section(report[1], "fashion_mnist")


def test_below_tolerance_run_excluded_with_reason(report: tuple[Path, str]) -> None:
    head, excluded = family("mnist5k")
    reasons = {r.label: why for r, why in excluded}
    label = next(k for k in reasons if k.endswith("sweep_mnist/4"))
    assert reasons[label].startswith("below the accuracy tolerance (1 accuracy point)")
    assert "lo is 3.00 points below its teacher (95.00 vs 98.00)" in reasons[label]
    assert head.counts == {"none": 1, "mtz": 1, "pam": 2}
    mnist = section(report[1], "mnist5k")
    assert "Runs excluded from the headline" in mnist
    assert "sweep_mnist/4 (mtz/admm/neurons, seed 2): below the accuracy tolerance" in mnist


def test_tolerance_and_metric_options_change_the_headline() -> None:
    loose, excluded = family("mnist5k", tolerance=5.0)
    assert loose.counts["mtz"] == 2  # the run 3 points below its teacher now counts
    assert loose.ratios[("none", "mtz")]["lo"] == pytest.approx(1000 / ((800 + 100) / 2))
    assert all("failed" in why for _, why in excluded)
    nonzero, _ = family("mnist5k", metric="nonzero_flops")
    assert nonzero.ratios[("none", "pam")]["lo"] == pytest.approx(800 / 300)


def test_other_pruner_is_not_compared() -> None:
    comp = next(c for c in comparisons(gather([FIXTURES])) if c.dataset == "mnist5k")
    heads, _ = headlines(comp, 1.0, "flops")
    magnitude = next(h for h in heads if h.pruner == "magnitude")
    assert magnitude.ratios == {}
    assert magnitude.counts == {"pam": 1}


def test_datasets_never_mixed(report: tuple[Path, str]) -> None:
    root, markdown = report
    assert len(comparisons(gather([FIXTURES]))) == 2
    mnist, fashion = section(markdown, "mnist5k"), section(markdown, "fashion_mnist")
    assert "sweep_fashion" not in mnist and "sweep_mnist" not in fashion
    assert "Runs used: none n=1, pam n=1." in fashion
    with (root / "report.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        if "sweep_fashion" in row["run"]:
            assert row["dataset"] == "fashion_mnist"
        elif row["status"] in ("ok", "failed"):
            assert row["dataset"] == "mnist5k"


def test_seeds_aggregated_as_mean_and_std(report: tuple[Path, str]) -> None:
    mnist = section(report[1], "mnist5k")
    # pam seeds 0 and 1: flops lo 400/600, hi 500/500, lo+hi 700/900; accuracy lo 97.9/97.7
    assert "| pam/admm/neurons | 2 | 500 ± 141 | 500 ± 0 | 800 ± 141 |" in mnist
    assert "| pam/admm/neurons | 2 | 97.80 ± 0.14 | 97.25 ± 0.21 | 2/2 |" in mnist


def test_failed_missing_and_unreadable_listed(report: tuple[Path, str]) -> None:
    markdown = report[1]
    assert "### Failed runs (1)" in markdown
    assert "TrainingError: non-finite loss in stage finetune (epoch 3)" in markdown
    assert "### Missing jobs (Hydra job folder without results.json) (1)" in markdown
    assert "no result (killed?); overrides: merger=none seed=1" in markdown
    assert "### Unreadable results.json files (1)" in markdown
    assert "sweep_mnist/8" in markdown
    html = (report[0] / "report.html").read_text()
    assert "TrainingError: non-finite loss" in html and "merger=none seed=1" in html


def test_files_written(report: tuple[Path, str]) -> None:
    root = report[0]
    for name in ("report.md", "report.csv", "report.html"):
        assert (root / name).stat().st_size > 0
    pngs = sorted(root.glob("*.png"))
    kinds = {p.stem.rsplit("_", 1)[1] for p in pngs}
    assert len(pngs) == 6 and kinds == {"cost", "accuracy", "groups"}
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
    for png in pngs:
        assert f"]({png.name})" in report[1]


def test_html_self_contained(report: tuple[Path, str]) -> None:
    html = (report[0] / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 6
    assert 'src="http' not in html and "<link" not in html and "<script" not in html


def test_csv_one_row_per_run(report: tuple[Path, str]) -> None:
    with (report[0] / "report.csv").open() as handle:
        reader = csv.DictReader(handle)
        rows, columns = list(reader), reader.fieldnames
    assert len(rows) == 11  # 10 results.json files (one unreadable) + 1 missing job
    expected = {"run", "path", "status", "error", "dataset", "tasks", "model", "merger", "pruner",
                "granularity", "seed", "meets_accuracy", "acc/lo", "acc/hi", "teacher_acc/lo",
                "flops/lo", "flops/lo+hi", "params/hi", "nonzero_flops/lo", "nonzero_params/lo+hi",
                "compression/weights", "time_s/total", "latency_ms/lo/batch1"}
    assert expected <= set(columns)
    statuses = sorted(r["status"] for r in rows)
    assert statuses == ["failed", "missing"] + ["ok"] * 8 + ["unreadable"]
    failed = next(r for r in rows if r["status"] == "failed")
    assert failed["error"].startswith("TrainingError") and failed["seed"] == "1"
    below = next(r for r in rows if r["run"].endswith("sweep_mnist/4"))
    assert below["meets_accuracy"] == "no" and float(below["acc/lo"]) == 0.95


def test_empty_dir_returns_1(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main([str(tmp_path)]) == 1
    assert "no results found" in capsys.readouterr().out


def test_explicit_out_dir(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "out"
    assert main([str(FIXTURES / "sweep_fashion"), "--out", str(out), "--metric", "params"]) == 0
    printed = capsys.readouterr().out
    assert str(out / "report.html") in printed
    assert "| up to (max) | 2.50x (lo) |" in (out / "report.md").read_text()


def test_import_does_not_load_torch() -> None:
    code = "import sys, mergeprune.report; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == "False"


def test_cache_copies_and_superseded_results_are_not_runs(tmp_path: Path) -> None:
    outputs = tmp_path / "outputs"
    job = outputs / "runs" / "job"
    shutil.copytree(FIXTURES / "sweep_mnist" / "0", job)
    (job / ".hydra").mkdir()
    # what a job leaves besides its own result: the jobs-cache copy, results set aside by a relaunch
    entry = outputs / "cache" / "jobs" / "0123456789abcdef"
    shutil.copytree(job, entry)
    (entry / "payload.json").write_text("{}")
    shutil.copytree(FIXTURES / "sweep_mnist" / "2", job / ".superseded" / "20261201-000000")
    killed = outputs / "runs" / "killed"
    (killed / ".hydra").mkdir(parents=True)
    runs = gather([outputs])
    assert sorted((r.status, r.label) for r in runs) == [
        ("missing", "outputs/runs/killed"), ("ok", "outputs/runs/job")]
    assert next(r for r in runs if r.status == "missing").note == "no result (killed?)"


def pam_run(pruner_file: str, flops: int) -> dict:
    """A finished pam run whose pruner config is named 'magnitude' but was chosen as pruner_file."""
    choices = {"dataset": "mnist5k", "tasks": "split2", "model": "lenet5", "merger": "pam",
               "pruner": pruner_file, "finetune": "default"}
    return {"schema": 1, "status": "ok",
            "experiment": {"name": "variants", "dataset": "mnist5k", "tasks": ["lo", "hi"],
                           "model": "lenet5", "merger": "pam", "pruner": "magnitude",
                           "granularity": "unstructured", "seed": 0, "choices": choices},
            "teachers": {"lo": {"accuracy": 0.98, "flops": 1200, "params": 600},
                         "hi": {"accuracy": 0.975, "flops": 1300, "params": 650}},
            "accuracy": {"lo": 0.978, "hi": 0.972},
            "cost": {s: {"flops": n * flops, "params": n * flops // 2, "nonzero_flops": n * flops // 2,
                         "nonzero_params": n * flops // 4}
                     for s, n in (("lo", 1), ("hi", 1), ("lo+hi", 2))},
            "compression": {"weights": 6000 / flops}, "timings_s": {"total": 1.0}}


def test_pruner_variants_are_told_apart_by_hydra_choices(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    for i, (pruner_file, flops) in enumerate((("magnitude", 400), ("magnitude_71x", 100))):
        (runs / str(i)).mkdir(parents=True)
        (runs / str(i) / "results.json").write_text(json.dumps(pam_run(pruner_file, flops)))
    (comp,) = comparisons(gather([runs]))
    methods = comp.methods()
    assert list(methods) == [("pam", "magnitude", "unstructured"),
                             ("pam", "magnitude_71x", "unstructured")]
    assert [len(rs) for rs in methods.values()] == [1, 1]
    assert main([str(runs)]) == 0
    markdown = (runs / "report.md").read_text()
    assert "| pam/magnitude/unstructured | 1 | 400 | 400 | 800 |" in markdown
    assert "| pam/magnitude_71x/unstructured | 1 | 100 | 100 | 200 |" in markdown
    assert "| pam/magnitude/unstructured | 2 |" not in markdown
    with (runs / "report.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert sorted(r["choice/pruner"] for r in rows) == ["magnitude", "magnitude_71x"]
    assert {r["pruner"] for r in rows} == {"magnitude"}


def test_merge_evidence_table_shows_pam_measurements(report: tuple[Path, str]) -> None:
    """PAM runs (seeds 0, 1: layer MI 0.40 and 0.50 nats) get one evidence row per layer and task."""
    text = section(report[1], "mnist5k")
    assert "Merge evidence per layer and task" in text
    rows = [line for line in text.splitlines() if line.startswith("| fc1 |") and "| lo |" in line]
    assert len(rows) == 1, rows
    cells = [c.strip() for c in rows[0].strip("|").split("|")]
    assert cells[3] == "0.45 ± 0.07071"  # layer MI: mean ± std of the two seeds
    assert cells[-2:] == ["150 ± 0", "147 ± 0"]  # exclusive group and how much of it comes from lo's teacher
