"""Pruners: exact projections, masks that survive optimizers, ADMM, progressive ADMM, magnitude."""

from __future__ import annotations

import copy
import itertools
from pathlib import Path

import pytest
import torch

from conftest import make_cfg
from mergeprune.context import Context
from mergeprune.cost import group_sizes
from mergeprune.data.datamodule import MultiTaskDataModule
from mergeprune.errors import ConfigError
from mergeprune.models.grouped import GroupedNet
from mergeprune.models.spec import build_spec
from mergeprune.pipeline import build
from mergeprune.pruner.admm import AdmmCallback, AdmmPruner, AdmmState
from mergeprune.pruner.admm_progressive import ProgressiveAdmmPruner
from mergeprune.pruner.magnitude import MagnitudePruner
from mergeprune.pruner.masks import (
    Budget,
    keep_entries,
    project_entries,
    project_rows,
    solve_ratios,
    total_units,
    train_phase,
)
from mergeprune.tasks import build_tasks
from mergeprune.training.fit import fit
from mergeprune.training.module import MultiTaskModule, build_optimizer

SMALL = [{"name": "conv1", "kind": "conv", "width": 6, "kernel": 3, "padding": "auto", "pool": 2},
         {"name": "fc1", "kind": "linear", "width": 16}]
FAST_ADMM = {"rho": 0.1, "rho_multiplier": 2.0, "rho_max": 1.0, "iterations": 4,
             "epochs_per_iteration": 1, "retrain_epochs": 1,
             "optimizer": {"_target_": "torch.optim.Adam", "lr": 2e-3}, "retrain_optimizer": {"_target_": "torch.optim.Adam", "lr": 1e-3}}


@pytest.fixture(scope="module")
def tasks():
    return build_tasks({"lo": {"kind": "attributes", "classes": [0, 1, 2, 3, 4]},
                        "hi": {"kind": "attributes", "classes": [5, 6, 7, 8, 9]}}, 10)


@pytest.fixture(scope="module")
def data(tasks):
    dm = MultiTaskDataModule(tasks, source="digits", val_size=200, test_size=300, batch_size=64,
                             train_size=640)
    dm.setup()
    return dm


@pytest.fixture(scope="module")
def spec():
    return build_spec("small", SMALL, in_channels=1, in_hw=(8, 8))


@pytest.fixture
def job(tasks, data, tmp_path: Path):
    return Context(tasks, data, {"accelerator": "cpu", "devices": 1, "progress_bar": False}, False,
                   tmp_path)


@pytest.fixture(scope="module")
def teacher(spec, tasks, data, tmp_path_factory):
    torch.manual_seed(0)
    net = GroupedNet.single(spec, "lo", 5)
    fit(MultiTaskModule(net, tasks, {"_target_": "torch.optim.Adam", "lr": 3e-3}, 2), data, 2,
        {"progress_bar": False}, False, tmp_path_factory.mktemp("teacher"))
    return net


def star(spec) -> GroupedNet:
    """A two-task star network: per layer a shared group and one group per task."""
    torch.manual_seed(1)
    bits = [[3] * (la.width // 2) + [1] * (la.width // 4) + [2] * (la.width - la.width // 2 - la.width // 4)
            for la in spec.layers]
    return GroupedNet(spec, ["lo", "hi"], {"lo": 5, "hi": 5}, bits)


# ----- projections -----------------------------------------------------------------------------------
def brute_force(values: torch.Tensor, k: int, allowed: torch.Tensor, rows: bool) -> float:
    """Smallest squared distance to any point with at most k non-zero entries (or rows) inside allowed."""
    units = range(values.shape[0]) if rows else allowed.flatten().nonzero().flatten().tolist()
    best = float("inf")
    for subset in itertools.combinations(units, min(k, len(units))):
        keep = torch.zeros_like(allowed)
        if rows:
            keep[list(subset)] = True
            keep &= allowed
        else:
            keep.view(-1)[list(subset)] = True
        best = min(best, float(((values - values * keep) ** 2).sum()))
    return best


@pytest.mark.parametrize("seed", range(4))
def test_entry_projection_keeps_exactly_k_and_is_nearest(seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    values = torch.randn(3, 4, generator=gen)
    values[0, :2] = 0.5  # ties
    values[1, 1] = -0.5
    allowed = torch.rand(3, 4, generator=gen) > 0.3
    for k in range(0, int(allowed.sum()) + 1):
        z = project_entries(values, k, allowed)
        kept = keep_entries(values, k, allowed)
        assert int(kept.sum()) == k and not (kept & ~allowed).any()
        assert torch.equal(z, values * kept)
        assert float(((values - z) ** 2).sum()) == pytest.approx(brute_force(values, k, allowed, False))


def test_entry_projection_budget_beyond_allowed_keeps_all_allowed() -> None:
    values, allowed = torch.randn(4, 4), torch.eye(4, dtype=torch.bool)
    assert torch.equal(keep_entries(values, 10, allowed), allowed)


@pytest.mark.parametrize("seed", range(3))
def test_row_projection_keeps_k_rows_and_is_nearest(seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    values = torch.randn(6, 2, 2, 2, generator=gen)
    allowed = torch.rand(6, 2, 2, 2, generator=gen) > 0.4
    allowed[5] = False  # a dead row never comes back
    for k in range(0, 6):
        z = project_rows(values, k, allowed)
        nonzero_rows = int(z.flatten(1).ne(0).any(dim=1).sum())
        assert nonzero_rows == k and not z[~allowed].any()
        assert float(((values - z) ** 2).sum()) == pytest.approx(brute_force(values, k, allowed, True))


def test_ties_are_deterministic() -> None:
    values = torch.ones(10)
    kept = keep_entries(values, 4)
    assert kept.tolist() == [True] * 4 + [False] * 6


def test_target_compression_with_proportions() -> None:
    units = {"a": 100, "b": 1000, "c": 10}
    ratios = solve_ratios(units, {"a": 2.0, "b": 1.0, "c": 50.0}, 10.0, "pruner.target_compression")
    assert ratios["c"] == 1.0  # capped
    assert ratios["a"] == pytest.approx(2 * ratios["b"])
    assert sum(ratios[n] * u for n, u in units.items()) == pytest.approx(111.0)


# ----- masks survive optimizers --------------------------------------------------------------------
@pytest.mark.parametrize("optimizer", [
    {"_target_": "torch.optim.SGD", "lr": 0.1, "momentum": 0.9, "weight_decay": 1e-2},
    {"_target_": "torch.optim.Adam", "lr": 1e-2, "weight_decay": 1e-2},
])
def test_masks_survive_optimizer_steps(spec, tasks, data, tmp_path: Path, optimizer) -> None:
    net = GroupedNet.single(spec, "lo", 5)
    module = MultiTaskModule(net, tasks, optimizer, 1)
    opt = build_optimizer(net.parameters(), optimizer, 1)
    batches = list(itertools.islice(iter(data.loader("train", shuffle=True)), 6))

    def step(i: int, batch) -> None:
        opt.zero_grad()
        sum(module.task_losses(*batch).values()).backward()
        opt.step()
        module.on_train_batch_end(None, batch, i)

    for i, batch in enumerate(batches[:3]):  # dense steps build momentum / Adam moments
        step(i, batch)
    for name in net.names:
        k = total_units(net, name, "unstructured") // 5
        net.restrict_mask(name, keep_entries(net.layers[name].weight, k))
    for i, batch in enumerate(batches[3:]):  # the same optimizer, its state still non-zero
        step(i, batch)
        for name in net.names:
            w, m = net.layers[name].weight, net.mask(name)
            assert (w[m == 0] == 0).all()
            assert (w[m == 1] != 0).any()
    # and through Lightning with a fresh module and optimizer
    fit(MultiTaskModule(net, tasks, optimizer, 1), data, 1, {"progress_bar": False}, False, tmp_path)
    for name in net.names:
        assert (net.layers[name].weight[net.mask(name) == 0] == 0).all()


# ----- ADMM ------------------------------------------------------------------------------------------
def test_admm_reaches_exact_budget_and_residual_falls(teacher, job) -> None:
    net = copy.deepcopy(teacher)
    keep = {"conv1": 0.3, "fc1": 0.05, "head": 0.2}
    pruner = AdmmPruner(keep=keep, **FAST_ADMM)
    report = pruner(net, job, "test").report
    for name, ratio in keep.items():
        k = round(ratio * total_units(net, name, "unstructured"))
        assert int(net.mask(name).sum()) == k
        assert int((net.layers[name].weight != 0).sum()) <= k
        layer = report["layers"][name]
        assert layer["achieved_sparsity"] == pytest.approx(layer["requested_sparsity"], abs=1 / k)
    for name, hist in report["admm"]["history"].items():
        assert len(hist["residual"]) == FAST_ADMM["iterations"] + 1
        assert hist["residual"][-1] < hist["residual"][0], name
    assert report["compression"] > 5


def test_progressive_never_revives_pruned_weights(teacher, job) -> None:
    net = copy.deepcopy(teacher)
    seen = []
    pruner = ProgressiveAdmmPruner(targets=[3, 6], proportions={"conv1": 2.0, "fc1": 1.0, "head": 2.0},
                                   **(FAST_ADMM | {"iterations": 2}))
    from mergeprune.pruner import admm_progressive

    original = admm_progressive.admm_stage

    def spy(net_, job_, tag, counts, cfg):
        seen.append({n: net_.mask(n).clone() for n in net_.names})
        out = original(net_, job_, tag, counts, cfg)
        seen.append({n: net_.mask(n).clone() for n in net_.names})
        return out

    admm_progressive.admm_stage = spy
    try:
        report = pruner(net, job, "test").report
    finally:
        admm_progressive.admm_stage = original
    # stage 2 starts from stage 1's result and only shrinks its masks
    after_first, before_second, after_second = seen[1], seen[2], seen[3]
    for name in net.names:
        assert torch.equal(after_first[name], before_second[name])
        assert not (after_second[name].bool() & ~after_first[name].bool()).any()
        assert torch.equal(net.mask(name), after_second[name])
    assert report["compression"] == pytest.approx(6, rel=0.05)
    assert [s["stage"] for s in report["stages"]] == [0, 1]


@pytest.mark.slow
def test_progressive_pool_tries_every_pooled_model(teacher, job) -> None:
    net = copy.deepcopy(teacher)
    pruner = ProgressiveAdmmPruner(targets=[2, 3, 5], pool_size=2, **(FAST_ADMM | {"iterations": 1}))
    report = pruner(net, job, "test").report
    stages = report["stages"]
    assert [s["tried"] for s in stages] == [1, 1, 2]
    assert stages[0]["start"] == stages[1]["start"] == "dense"
    assert report["compression"] == pytest.approx(5, rel=0.05)


# ----- magnitude -------------------------------------------------------------------------------------
@pytest.mark.parametrize("scope", ["layer", "global"])
def test_magnitude_iterative_reaches_target(teacher, job, scope: str) -> None:
    net = copy.deepcopy(teacher)
    pruner = MagnitudePruner(schedule="iterative", scope=scope, target_compression=8.0,
                             fraction=0.6, retrain_epochs=1)
    report = pruner(net, job, "test").report
    assert report["compression"] == pytest.approx(8.0, rel=0.02)
    comps = [r["compression"] for r in report["rounds"]]
    assert len(comps) >= 2 and comps == sorted(comps)


def test_magnitude_gradual_and_oneshot_reach_budget(teacher, job) -> None:
    keep = {"conv1": 0.5, "fc1": 0.1, "head": 0.5}
    for schedule in ("gradual", "oneshot"):
        net = copy.deepcopy(teacher)
        pruner = MagnitudePruner(schedule=schedule, keep=keep, ramp_epochs=1, retrain_epochs=1,
                                 frequency=2)
        report = pruner(net, job, "test").report
        for name, ratio in keep.items():
            assert int(net.mask(name).sum()) == round(ratio * total_units(net, name, "unstructured"))
    assert report["rounds"][0]["val_acc"] > 0.5


# ----- grouped networks, neurons ---------------------------------------------------------------------
@pytest.mark.parametrize("method", ["admm", "magnitude"])
def test_neuron_pruning_of_a_star_network(spec, job, method: str) -> None:
    net = star(spec)
    before = group_sizes(net)
    keep = {"conv1": 0.5, "fc1": 0.25, "head": 0.5}  # the head entry is ignored for neurons
    if method == "admm":
        pruner = AdmmPruner(granularity="neurons", keep=keep, **FAST_ADMM)
    else:
        pruner = MagnitudePruner(granularity="neurons", schedule="oneshot", keep=keep, retrain_epochs=1)
    report = pruner(net, job, "test").report
    after = group_sizes(net)
    for name in ("conv1", "fc1"):
        assert sum(after[name].values()) == round(keep[name] * len(net.groups(name)))
        assert sum(after[name].values()) < sum(before[name].values())
        assert not (net.mask(name).bool() & ~net.structure_mask(name).bool()).any()
    head = net.mask("head").flatten(1).any(dim=1)
    assert head.all()  # every task output keeps some input
    assert report["layers"]["head"]["requested_sparsity"] == 0.0
    dead = ~net.alive("fc1")
    assert (net.mask("head")[:, dead] == 0).all()


def test_unstructured_budget_counts_only_allowed_entries(spec) -> None:
    net = star(spec)
    counts = Budget({"fc1": 0.1}, None, None).counts(net, "unstructured")
    assert counts["fc1"] == round(0.1 * int(net.structure_mask("fc1").sum()))
    assert counts["fc1"] < round(0.1 * net.mask("fc1").numel())


# ----- config ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(("cls", "kwargs", "key"), [
    (AdmmPruner, {"keep": {"conv1": 1.5}}, "pruner.keep.conv1"),
    (AdmmPruner, {"keep": {"conv1": 0.5}, "rho": -1.0}, "pruner.rho"),
    (AdmmPruner, {"keep": {"conv1": 0.5}, "rho_multiplier": 0.5}, "pruner.rho_multiplier"),
    (AdmmPruner, {"keep": {"conv1": 0.5}, "iterations": -1}, "pruner.iterations"),
    (AdmmPruner, {"keep": {"conv1": 0.5}, "epochs_per_iteration": 0}, "pruner.epochs_per_iteration"),
    (AdmmPruner, {"keep": {"conv1": 0.5}, "granularity": "blocks"}, "pruner.granularity"),
    (AdmmPruner, {"keep": {"conv1": 0.5}, "optimizer": {"name": "rmsprop"}}, "pruner.optimizer.name"),
    (AdmmPruner, {"keep": {"conv1": 0.5}, "retrain_optimizer": {"_target_": "torch.optim.Adam", "lr": 0}},
     "pruner.retrain_optimizer.lr"),
    (AdmmPruner, {"keep": {"conv1": 0.5}, "optimizer": {"_target_": "torch.optim.Nope"}}, "pruner.optimizer._target_"),
    (AdmmPruner, {"keep": {"conv1": 0.5}, "optimizer": {"_target_": "torch.nn.Linear"}}, "pruner.optimizer._target_"),
    (AdmmPruner, {"keep": {"conv1": 0.5}, "optimizer": {"_target_": "torch.optim.Adam", "lrr": 1e-3}},
     "pruner.optimizer.lrr"),
    (AdmmPruner, {"keep": {"conv1": 0.5}, "optimizer": {"_target_": "torch.optim.Adam", "schedule": "linear"}},
     "pruner.optimizer.schedule"),
    (AdmmPruner, {}, "pruner.keep"),
    (AdmmPruner, {"target_compression": 0.5}, "pruner.target_compression"),
    (AdmmPruner, {"target_compression": 10, "proportions": {"fc1": -1}}, "pruner.proportions.fc1"),
    (ProgressiveAdmmPruner, {"targets": [50, 20]}, "pruner.targets"),
    (ProgressiveAdmmPruner, {"targets": [10], "pool_size": 0}, "pruner.pool_size"),
    (ProgressiveAdmmPruner, {"stages": [{"fc1": 2.0}]}, "pruner.stages[0].fc1"),
    (MagnitudePruner, {"keep": {"fc1": 0.1}, "schedule": "sometimes"}, "pruner.schedule"),
    (MagnitudePruner, {"keep": {"fc1": 0.1}, "scope": "world"}, "pruner.scope"),
    (MagnitudePruner, {"keep": {"fc1": 0.1}, "fraction": 0.0}, "pruner.fraction"),
    (MagnitudePruner, {"keep": {"fc1": 0.1}, "initial_sparsity": 1.0}, "pruner.initial_sparsity"),
    (MagnitudePruner, {"keep": {"fc1": 0.1}, "frequency": 0}, "pruner.frequency"),
])
def test_bad_knobs_raise_config_error(cls, kwargs, key: str) -> None:
    with pytest.raises(ConfigError) as err:
        cls(**kwargs)
    assert key in str(err.value) and "allowed" in str(err.value)


def test_unknown_layer_is_named(spec, job) -> None:
    pruner = AdmmPruner(keep={"conv9": 0.5}, **FAST_ADMM)
    with pytest.raises(ConfigError, match=r"pruner\.keep\.conv9.*allowed"):
        pruner(GroupedNet.single(spec, "lo", 5), job, "test")


@pytest.mark.parametrize(("name", "bad", "key"), [("magnitude", "pruner.scope=x", "pruner.scope"),
                                               ("admm", "pruner.rho=0", "pruner.rho"),
                                               ("admm_progressive", "pruner.targets=[]", "pruner.targets")])
def test_config_files_build(tmp_path: Path, name: str, bad: str, key: str) -> None:
    cfg = make_cfg(tmp_path, [f"pruner={name}"])
    assert cfg.pruner.name == name and cfg.pruner.granularity == "unstructured"
    pruner = build(cfg.pruner)
    assert pruner.name == name and pruner.granularity == "unstructured"
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        build(make_cfg(tmp_path, [f"pruner={name}", bad]).pruner)


def test_admm_callback_logs_per_layer_metrics(teacher, job) -> None:
    net = copy.deepcopy(teacher)
    counts = Budget({"fc1": 0.1}, None, None).counts(net, "unstructured")
    state = AdmmState(net, {"fc1": counts["fc1"]}, "unstructured", rho=0.1, rho_multiplier=2.0)
    trainer = train_phase(net, job, {"_target_": "torch.optim.Adam", "lr": 1e-3}, 2, "test",
                          callbacks=[AdmmCallback(state, 1)])
    logged = trainer.callback_metrics
    for key in ("residual", "residual_rel", "dual_residual", "z_sparsity", "rho"):
        assert f"admm/fc1/{key}" in logged
    assert float(logged["admm/fc1/z_sparsity"]) == pytest.approx(0.9, abs=0.01)
    assert float(logged["admm/fc1/rho"]) == pytest.approx(0.4)
    assert state.rho["fc1"] == pytest.approx(0.4) and state.iteration == 2
