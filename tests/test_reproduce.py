"""mergeprune.reproduce (`mergeprune-reproduce`, or scripts/reproduce.py): the results page is
generated from sweep folders and traces to their results.json.

The fast tests feed the page generator the report fixtures (tests/fixtures/report, described in
test_report.py) placed as a preset's sweep folder; the slow one runs a real preset end to end on
tiny data.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPORT_FIXTURES, make_cfg
from mergeprune.config_check import check_config
from mergeprune.finished import job_payload
from mergeprune.report import fmt_count
from mergeprune.reproduce import PRESETS, write_page

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = REPORT_FIXTURES


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The mnist fixtures as the pam_split2 sweep, and the page written from them (nothing run)."""
    tmp = tmp_path_factory.mktemp("repro")
    shutil.copytree(FIXTURES / "sweep_mnist", tmp / "sweeps" / "pam_split2")
    out = write_page(tmp / "sweeps", tmp / "docs" / "RESULTS.md")
    return tmp, out.read_text()


def test_page_names_its_sweep_folder_and_every_preset(page: tuple[Path, str]) -> None:
    tmp, text = page
    assert str(tmp / "sweeps" / "pam_split2") in text
    for name in ("admm_lenet5", "pam_split5", "pam_overlap3", "pam_alpha", "pam_relatedness"):
        assert f"## {name}" in text
        assert f"Not run yet. Run it with `python scripts/reproduce.py {name}`" in text
    assert "## Fidelity" in text and "Machine:" in text


def test_page_ratios_trace_to_the_results_files(page: tuple[Path, str]) -> None:
    tmp, text = page
    runs = {}
    for path in (tmp / "sweeps" / "pam_split2").rglob("results.json"):
        try:
            data = json.loads(path.read_text())
        except ValueError:
            continue
        exp = data["experiment"]
        within = all(data["teachers"][t]["accuracy"] - data["accuracy"][t] <= 0.01 + 1e-12
                     for t in exp["tasks"]) if data.get("status") == "ok" else False
        if within and exp["pruner"] == "admm":
            runs.setdefault(exp["merger"], []).append(data["cost"])
    mean = {m: {s: sum(c[s]["flops"] for c in cs) / len(cs) for s in ("lo", "hi", "lo+hi")}
            for m, cs in runs.items()}
    none_pam = max(mean["none"][s] / mean["pam"][s] for s in mean["pam"])
    mtz_pam = [mean["mtz"][s] / mean["pam"][s] for s in mean["pam"]]
    row = next(line for line in text.splitlines() if "none / pam" in line and "4.87x" in line)
    assert f"{none_pam:.2f}x" in row
    checks = next(line for line in text.splitlines() if "mtz / pam, best and worst" in line)
    assert f"{max(mtz_pam):.2f}x / {min(mtz_pam):.2f}x" in checks


def test_presets_are_read_from_the_experiment_configs(tmp_path: Path) -> None:
    assert [(p.name, p.kind) for p in PRESETS] == [
        ("admm_lenet5", "admm"), ("pam_split2", "mergers"), ("pam_split5", "mergers"),
        ("pam_overlap3", "grouping"), ("pam_alpha", "alpha"), ("pam_relatedness", "relatedness"),
        ("pam_fashion2", "mergers"), ("pam_fashion5", "mergers")]
    by_name = {p.name: p for p in PRESETS}
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
    costs = {json.loads(p.read_text())["merge"]["grouping"]: json.loads(p.read_text())["cost"] for p in results}
    row = next(line for line in text.splitlines() if line.startswith("| parity+big+lo |"))
    for grouping in ("star", "subsets"):
        assert fmt_count(costs[grouping]["parity+big+lo"]["flops"]) in row
    assert (root / "pam_overlap3" / "report" / "report.md").is_file()
