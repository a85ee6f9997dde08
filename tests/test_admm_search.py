"""pruner=admm_neurons: the keep-scale search (ladder + bisection) reaches the accuracy target."""

from __future__ import annotations

import copy
from pathlib import Path
from types import SimpleNamespace

import pytest
import pytorch_lightning as pl

from conftest import make_cfg
from mergeprune.cost import subset_cost
from mergeprune.errors import ConfigError
from mergeprune.models.grouped import GroupedNet
from mergeprune.pipeline import build
from mergeprune.pruner.admm_ladder import ScaleSearch
from mergeprune.pruner.admm_search import AdmmSearchPruner

# one short ADMM iteration and one retraining epoch a rung; keep half of every layer at s = 1
FAST = ["pruner.iterations=1", "pruner.epochs_per_iteration=1", "pruner.retrain_epochs=1",
        "pruner.rho=0.05", "pruner.keep.conv1=0.5", "pruner.keep.conv2=0.5", "pruner.keep.fc1=0.5",
        "pruner.max_rungs=6"]
FIELDS = {"step", "tried", "cost", "val", "test", "live"}


@pytest.fixture(scope="module")
def setup(digits_teacher: SimpleNamespace) -> SimpleNamespace:
    """The shared digits 'lo' teacher, its data, spec and context (conftest)."""
    return digits_teacher


def pruner(root: Path, *overrides: str) -> AdmmSearchPruner:
    """pruner=admm_neurons composed from the real config, on the fast schedule, with overrides."""
    cfg = make_cfg(root, ["pruner=admm_neurons", *FAST, *overrides])
    built = build(cfg.pruner)
    assert isinstance(built, AdmmSearchPruner)
    return built


def run(setup: SimpleNamespace, *overrides: str) -> tuple[GroupedNet, dict]:
    """Prune a copy of the teacher with the search; returns the net and its report."""
    pl.seed_everything(1, verbose=False)
    net = copy.deepcopy(setup.teacher)
    return net, pruner(setup.root, *overrides)(net, setup.job, "test").report


@pytest.fixture(scope="module")
def default_run(setup: SimpleNamespace) -> tuple[GroupedNet, dict]:
    """The search at the default tolerance (0.01 + 1 standard error)."""
    return run(setup)


def trained(report: dict) -> list[dict]:
    """The trained trials of a search report."""
    return [t for t in report["search"]["tried"] if t["trained"]]


# ----- the ladder alone (no training) -----------------------------------------------------------------
def ladder(threshold: float, **kw: object) -> ScaleSearch:
    """A search over a 100-unit layer whose judge accepts every budget of at least `threshold` units."""
    return ScaleSearch(lambda s: {"fc1": max(1, min(100, round(s * 20)))}, lambda c: c["fc1"] >= 100,
                       lambda s, c, p: (c["fc1"] >= threshold, {"flops": c["fc1"]}), 5.0, **kw)


@pytest.mark.parametrize("threshold", [1, 3, 7, 12, 20, 35, 100])
def test_ladder_brackets_the_threshold(threshold: int) -> None:
    search = ladder(threshold, ladder_factor=0.7, bisect_steps=2, max_rungs=20)
    chosen = search.run(1.0)
    below = [t for t in search.trials if t.scale < chosen]
    assert all(t.accepted for t in search.trials if t.scale >= chosen)
    assert not any(t.accepted for t in below)
    assert search.counts_of(chosen)["fc1"] >= threshold
    if below:  # the bracket [rejected, chosen] is at most one ladder step wide
        assert max(t.scale for t in below) / chosen >= 0.7 - 1e-9
    else:
        assert search.stopped == "floor"
    once = [tuple(t.counts.items()) for t in search.trials if t.trained and t.phase != "descend"]
    assert len(set(once)) == len(once)  # only the descent after a climb retrains a judged budget


def test_ladder_stops_after_max_rungs_and_climbs_to_the_whole_network() -> None:
    down = ladder(1, ladder_factor=0.7, bisect_steps=2, max_rungs=3)
    assert down.run(1.0) == pytest.approx(0.7 ** 2) and down.stopped == "max_rungs"
    assert down.trained() == 3  # s = 1 is the first rung
    up = ladder(1000, ladder_factor=0.7, bisect_steps=2, max_rungs=2)
    assert up.run(1.0) == pytest.approx(5.0) and up.stopped == "max_rungs"
    assert up.trained("rungs") == 2 and up.trained("bisect") == 2
    assert [t.scale for t in up.trials if t.accepted] == [5.0] and not up.trials[2].trained


def warm_search(descend_after_climb: bool) -> ScaleSearch:
    """A search with a path-dependent judge, as warm starts make ADMM: a rung may remove at most
    half of the network it starts from (the last accepted one), and nothing below 10 units passes."""
    start = {"fc1": 100}

    def judge(scale: float, counts: dict[str, int], phase: str) -> tuple[bool, dict]:
        ok = counts["fc1"] >= 10 and counts["fc1"] >= 0.5 * start["fc1"]
        start.update(counts if ok else {})
        return ok, {}

    return ScaleSearch(lambda s: {"fc1": max(1, min(100, round(s * 20)))}, lambda c: c["fc1"] >= 100,
                       judge, 5.0, ladder_factor=0.7, bisect_steps=2, max_rungs=12,
                       descend_after_climb=descend_after_climb)


def test_after_a_climb_the_ladder_goes_down_again_from_the_warm_start() -> None:
    search = warm_search(True)
    chosen = search.run(1.0)
    walk = [(t.phase, t.counts["fc1"], t.accepted) for t in search.trials if t.trained]
    assert walk[:4] == [("ladder", 20, False), ("climb", 29, False), ("climb", 41, False),
                        ("climb", 58, True)]
    # the budgets rejected cold on the way up pass from the climb's warm start, and the ladder
    # goes on down to the judge's floor, far below the first rung
    assert walk[4:7] == [("descend", 41, True), ("descend", 29, True), ("descend", 20, True)]
    assert search.counts_of(chosen) == {"fc1": 10} and search.stopped == "bracketed"
    assert all(not t.accepted for t in search.trials if t.counts["fc1"] < 10)
    # without the descent the search bisects between the climb's last two rungs, above s = 1
    old = warm_search(False)
    assert old.counts_of(old.run(1.0))["fc1"] > 41 and not any(t.phase == "descend" for t in old.trials)


def test_a_climb_to_the_whole_network_does_not_descend_again() -> None:
    # the unpruned network is accepted untrained: the warm start is unchanged, nothing is retried
    search = ladder(90, ladder_factor=0.7, bisect_steps=0, max_rungs=20)
    assert search.run(1.0) == pytest.approx(5.0)
    assert not any(t.phase == "descend" for t in search.trials)


# ----- the real pruner -------------------------------------------------------------------------------
def test_search_lands_within_one_ladder_step_of_the_target(setup, default_run) -> None:
    net, report = default_run
    search = report["search"]
    chosen, factor = search["chosen_scale"], search["ladder_factor"]
    tried = search["tried"]
    assert any(t["accepted"] and t["scale"] == chosen for t in tried)
    below = [t for t in tried if t["scale"] < chosen]
    assert below or search["stopped"] in ("floor", "max_rungs")
    assert not any(t["accepted"] for t in below)
    if below:
        assert max(t["scale"] for t in below) / chosen >= factor - 1e-9
    for t in trained(report):
        assert t["accepted"] == (not t["broken"]) and set(t["val"]) == {"lo"} and t["flops"] > 0
    assert search["chosen_counts"] == {n: int(net.alive(n).sum()) for n in ("conv1", "conv2", "fc1")}
    assert search["flops"] == subset_cost(net, net.full_set)["flops"]
    assert search["flops"] < subset_cost(setup.teacher, 1)["flops"]


def test_anything_accepted_goes_down_to_the_floor(setup) -> None:
    net, report = run(setup, "pruner.tolerance=1.0", "pruner.ladder_factor=0.3", "pruner.max_rungs=8")
    search = report["search"]
    assert search["stopped"] == "floor" and all(t["accepted"] for t in search["tried"])
    assert {n: int(net.alive(n).sum()) for n in ("conv1", "conv2", "fc1")} == {"conv1": 1, "conv2": 1, "fc1": 1}
    assert len(report["trajectory"]) == search["trained_rungs"] + 1


def test_no_loss_allowed_keeps_the_start_or_more(setup) -> None:
    # hard pruning only (no ADMM, no retraining): every cut loses accuracy, nothing is accepted
    net, report = run(setup, "pruner.tolerance=0", "pruner.noise_z=0", "pruner.iterations=0",
                      "pruner.retrain_epochs=0", "pruner.max_rungs=2")
    search = report["search"]
    assert search["chosen_scale"] >= 1.0
    assert all(int(net.alive(n).sum()) >= round(0.5 * w) for n, w in (("conv1", 6), ("conv2", 8), ("fc1", 16)))
    assert search["epochs"] == 0


def test_trajectory_points_have_the_schema_and_falling_flops(default_run) -> None:
    _, report = default_run
    points = report["trajectory"]
    assert len(points) >= 2 and points[0]["step"] == 0 and points[0]["test"] is not None
    for p in points:
        assert set(p) == FIELDS and set(p["cost"]) == {"lo"} and set(p["val"]) == {"lo"}
        assert set(p["live"]) == {"conv1", "conv2", "fc1"}
    flops = [p["cost"]["lo"]["flops"] for p in points]
    assert all(b < a for a, b in zip(flops, flops[1:], strict=False))
    assert [p["step"] for p in points] == list(range(len(points)))
    assert [p["tried"] for p in points[1:]] == [t["tried"] for t in trained(report) if t["accepted"]]


def test_trajectory_of_a_two_task_star_network(setup) -> None:
    spec = setup.teacher.spec
    bits = [[3] * (la.width // 2) + [1] * (la.width // 4) + [2] * (la.width - la.width // 2 - la.width // 4)
            for la in spec.layers]  # per layer: shared by lo+hi, lo only, hi only
    pl.seed_everything(2, verbose=False)
    net = GroupedNet(spec, ["lo", "hi"], {"lo": 5, "hi": 5}, bits)
    report = pruner(setup.root, "pruner.tolerance=1.0", "pruner.ladder_factor=0.3")(net, setup.job, "star").report
    points = report["trajectory"]
    assert len(points) == report["search"]["trained_rungs"] + 1 >= 3
    for p in points:
        assert set(p) == FIELDS and set(p["cost"]) == {"lo", "hi", "lo+hi"} and set(p["val"]) == {"lo", "hi"}
    flops = [p["cost"]["lo+hi"]["flops"] for p in points]
    assert all(b < a for a, b in zip(flops, flops[1:], strict=False))
    assert [t["flops"] for t in report["search"]["tried"] if t["trained"]] == flops[1:]


def test_search_false_is_plain_one_shot_admm(setup) -> None:
    net, report = run(setup, "pruner.search=false")
    assert "search" not in report and "trajectory" not in report
    assert {n: int(net.alive(n).sum()) for n in ("conv1", "conv2", "fc1")} == {"conv1": 3, "conv2": 4, "fc1": 8}


@pytest.mark.parametrize(("bad", "key"), [("pruner.ladder_factor=1.0", "pruner.ladder_factor"),
                                          ("pruner.ladder_factor=0", "pruner.ladder_factor"),
                                          ("pruner.bisect_steps=-1", "pruner.bisect_steps"),
                                          ("pruner.max_rungs=0", "pruner.max_rungs"),
                                          ("pruner.tolerance=2", "pruner.tolerance"),
                                          ("pruner.noise_z=-1", "pruner.noise_z"),
                                          ("pruner.test_every=-1", "pruner.test_every"),
                                          ("pruner.search=maybe", "pruner.search")])
def test_bad_search_knobs_raise_config_error(tmp_path: Path, bad: str, key: str) -> None:
    with pytest.raises(ConfigError) as err:
        pruner(tmp_path, bad)
    assert key in str(err.value) and "allowed" in str(err.value)
