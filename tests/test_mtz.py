"""merger=mtz: zipping layout, the MTZ merge formula, exactness at share 0 and for identical teachers
(order independence, compensation, the share by accuracy and the retraining steps: test_mtz_zip.py)."""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from hydra.utils import instantiate

from conftest import LENET5_LAYERS as LAYERS
from conftest import SPLIT2 as TASKS
from conftest import make_cfg
from mergeprune.context import Context
from mergeprune.cost import all_costs, group_sizes
from mergeprune.data.datamodule import MultiTaskDataModule
from mergeprune.errors import ConfigError
from mergeprune.merger.mtz import MtzMerger
from mergeprune.merger.mtz_zip import (
    damped,
    greedy_match,
    inverse,
    layer_hessian,
    merge_weights,
    neuron_vectors,
    pair_costs,
)
from mergeprune.merger.none import NoMerger
from mergeprune.models.grouped import GroupedNet
from mergeprune.models.spec import build_spec
from mergeprune.tasks import build_tasks
from mergeprune.training.fit import accuracy, fit
from mergeprune.training.module import MultiTaskModule


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """Digits, the 8x8 LeNet-5 and two teachers trained for 3 epochs, plus a stand-in job."""
    root = tmp_path_factory.mktemp("mtz")
    tasks = build_tasks(TASKS, 10)
    dm = MultiTaskDataModule(tasks, source="digits", val_size=200, test_size=300, batch_size=64)
    spec = build_spec("lenet5", LAYERS, in_channels=1, in_hw=(8, 8))
    teachers = []
    for i, task in enumerate(tasks):
        torch.manual_seed(i)
        net = GroupedNet.single(spec, task.name, task.n_outputs)
        fit(MultiTaskModule(net, tasks, {"_target_": "torch.optim.Adam", "lr": 3e-3}, 3), dm, 3,
            {"progress_bar": False}, False, root)
        teachers.append(net.eval())
    job = Context(tasks, dm, {"accelerator": "cpu", "devices": 1, "progress_bar": False}, False, root)
    return SimpleNamespace(tasks=tasks, dm=dm, spec=spec, teachers=teachers, job=job)


def teacher_outputs(teachers: list[GroupedNet], x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Each teacher's output for its own task."""
    return {t.tasks[0]: t(x)[t.tasks[0]] for t in teachers}


def test_share_zero_is_no_merging(setup: SimpleNamespace) -> None:
    merged = MtzMerger(share=0.0, retrain_steps=0, max_drop=None)(setup.teachers, setup.job).net
    x, _ = setup.dm.sample(64, "test")
    out, ref = merged(x), teacher_outputs(setup.teachers, x)
    for task in ("lo", "hi"):
        assert (out[task] - ref[task]).abs().max() < 1e-5
    assert all_costs(merged) == all_costs(NoMerger()(setup.teachers).net)


def test_share_one_shares_every_neuron(setup: SimpleNamespace) -> None:
    merger = MtzMerger(share=1.0, retrain_steps=0, max_drop=None)
    merged, report = merger(setup.teachers, setup.job)
    widths = {la["name"]: la["width"] for la in LAYERS}
    assert group_sizes(merged) == {name: {"lo+hi": w} for name, w in widths.items()}
    assert {n: r["zipped"] for n, r in report["layers"].items()} == widths
    cost = all_costs(merged)
    # everything hidden is computed for 'lo' alone already; 'lo+hi' adds only the hi head
    head_hi = {"flops": (2 * 500 - 1) * 5, "params": 500 * 5}
    for key, extra in head_hi.items():
        assert cost["lo+hi"][key] - cost["lo"][key] == extra
        assert cost["hi"][key] == cost["lo"][key]
    assert report["seconds"] > 0


def twin_of(teacher: GroupedNet, spec, task: str) -> GroupedNet:
    """A copy of a teacher answering another task with the same weights."""
    twin = GroupedNet.single(spec, task, teacher.n_outputs[teacher.tasks[0]])
    twin.load_state_dict(copy.deepcopy(teacher.state_dict()))
    return twin.eval()


def test_identical_teachers_zip_to_the_teacher(setup: SimpleNamespace) -> None:
    lo = setup.teachers[0]
    merger = MtzMerger(share=1.0, retrain_steps=0, max_drop=None)
    merged, report = merger([lo, twin_of(lo, setup.spec, "hi")], setup.job)
    for name, rec in report["layers"].items():
        assert all(a == b for a, b in rec["pairs"]), f"{name}: a neuron was zipped with a non-twin"
        assert rec["mean_cost"] < 1e-8
    order = torch.as_tensor([p[0] for p in report["layers"]["conv1"]["pairs"]])
    assert torch.equal(merged.layers["conv1"].weight, lo.layers["conv1"].weight.detach()[order])
    assert torch.allclose(merged.layers["conv1"].bias, lo.layers["conv1"].bias.detach()[order])
    x, _ = setup.dm.sample(64, "test")
    ref = lo(x)["lo"]
    out = merged(x)
    assert (out["lo"] - ref).abs().max() < 1e-5
    assert (out["hi"] - ref).abs().max() < 1e-5


def test_twin_pair_cost_is_zero_and_merge_keeps_weights(setup: SimpleNamespace) -> None:
    lo = setup.teachers[0]
    net = NoMerger()([lo, twin_of(lo, setup.spec, "hi")]).net  # two copies side by side
    rows = [torch.arange(20), torch.arange(20, 40)]
    shared = torch.arange(1)
    hinv = inverse(damped(layer_hessian(setup.dm.sample(64)[0], conv=True), 1e-4))
    a, b = (neuron_vectors(net, 0, r, shared) for r in rows)
    cost = pair_costs(a, b, hinv, 2 * hinv)
    assert cost.diagonal().abs().max() < 1e-9
    assert (cost + torch.eye(20) * 1e9).min() > 0
    assert torch.equal(merge_weights(a, b, hinv, 2 * hinv), a)


def test_merge_is_the_minimiser_of_the_summed_errors() -> None:
    gen = torch.Generator().manual_seed(0)
    xa = torch.randn(40, 3, generator=gen, dtype=torch.float64)
    xb = torch.randn(30, 3, generator=gen, dtype=torch.float64) * torch.tensor([2.0, 0.5, 1.0]) + 0.3
    wa, wb = torch.randn(4, generator=gen, dtype=torch.float64), torch.randn(4, generator=gen,
                                                                             dtype=torch.float64)
    ha, hb = layer_hessian(xa, conv=False), layer_hessian(xb, conv=False)
    merged = merge_weights(wa[None, None], wb[None, None], inverse(ha), inverse(hb))[0, 0]
    # independently: least squares on both data sets, each neuron's own outputs as targets,
    # i.e. minimise mean_A (x~.w - x~.wa)^2 / 2 + mean_B (x~.w - x~.wb)^2 / 2
    aug_a = torch.cat([xa, torch.ones(40, 1, dtype=torch.float64)], 1) / 40**0.5
    aug_b = torch.cat([xb, torch.ones(30, 1, dtype=torch.float64)], 1) / 30**0.5
    design = torch.cat([aug_a, aug_b])
    target = torch.cat([aug_a @ wa, aug_b @ wb])
    best = torch.linalg.lstsq(design, target[:, None]).solution[:, 0]
    assert torch.allclose(merged, best, atol=1e-9)
    summed_error = 0.5 * ((design @ best - target) ** 2).sum()
    cost = pair_costs(wa[None, None], wb[None, None], inverse(ha), inverse(hb))
    assert torch.allclose(cost[0, 0], summed_error, atol=1e-9)


def test_greedy_match_takes_cheapest_free_pairs() -> None:
    cost = torch.tensor([[1.0, 0.1, 5.0], [0.2, 0.05, 4.0], [3.0, 2.0, 0.5]])
    left, right, costs = greedy_match(cost, 2)
    assert list(zip(left.tolist(), right.tolist(), strict=True)) == [(1, 1), (2, 2)]
    assert costs == pytest.approx([0.05, 0.5])


def test_half_share_keeps_accuracy(setup: SimpleNamespace, caplog: pytest.LogCaptureFixture) -> None:
    merger = MtzMerger(share=0.5, retrain_steps=20, retrain_growth=1.0, max_drop=None)
    with caplog.at_level(logging.INFO):
        merged, report = merger(setup.teachers, setup.job)
    assert "merge/mtz: conv1 zipped 10/20 pairs" in caplog.text
    assert group_sizes(merged)["fc1"] == {"lo": 250, "hi": 250, "lo+hi": 250}
    after = accuracy(merged, setup.tasks, setup.dm)
    for t in setup.teachers:
        name = t.tasks[0]
        before = accuracy(t, setup.tasks, setup.dm)[name]
        assert after[name] > before - 0.04, f"{name}: {before:.3f} -> {after[name]:.3f}"
        print(f"{name}: teacher {before:.4f}, mtz {after[name]:.4f}")


def test_three_tasks_share_every_zipped_neuron(tmp_path: Path) -> None:
    tasks = build_tasks({"a": {"kind": "attributes", "classes": [0, 1, 2]},
                         "b": {"kind": "categorical", "classes": [3, 4, 5]},
                         "c": {"kind": "attributes", "classes": [6, 7, 8, 9]}}, 10)
    dm = MultiTaskDataModule(tasks, source="digits", val_size=200, test_size=300)
    spec = build_spec("tiny", [{"name": "conv1", "kind": "conv", "width": 6, "kernel": 3, "pool": 2},
                               {"name": "fc1", "kind": "linear", "width": 10}], 1, (8, 8))
    teachers = [GroupedNet.single(spec, t.name, t.n_outputs) for t in tasks]
    merger = MtzMerger(share={"conv1": 0.5, "fc1": 0.3}, retrain_steps=2, hessian_samples=64,
                       max_drop=None)
    merged, report = merger(teachers, Context(tasks, dm, {"progress_bar": False}))
    assert group_sizes(merged) == {"conv1": {"a": 3, "b": 3, "c": 3, "a+b+c": 3},
                                   "fc1": {"a": 7, "b": 7, "c": 7, "a+b+c": 3}}
    assert all(len(p) == 3 for r in report["layers"].values() for p in r["pairs"])
    assert set(merged(dm.sample(4)[0])) == {"a", "b", "c"}


def test_three_tasks_weigh_in_equally_with_equal_hessians(tmp_path: Path) -> None:
    # attribute tasks label every image, so the first layer's Hessians are equal for all three:
    # a zipped neuron is then the plain mean of its constituents (it was 1/6, 1/6, 2/3 by order)
    tasks = build_tasks({"a": {"kind": "attributes", "classes": [0, 1, 2]},
                         "b": {"kind": "attributes", "classes": [3, 4, 5]},
                         "c": {"kind": "attributes", "classes": [6, 7, 8, 9]}}, 10)
    dm = MultiTaskDataModule(tasks, source="digits", val_size=200, test_size=300)
    dm.setup()
    spec = build_spec("tiny", [{"name": "conv1", "kind": "conv", "width": 6, "kernel": 3, "pool": 2},
                               {"name": "fc1", "kind": "linear", "width": 10}], 1, (8, 8))
    teachers = [GroupedNet.single(spec, t.name, t.n_outputs) for t in tasks]
    x, targets = dm.sample(64, "train", seed=0)
    valid = [torch.ones(len(x), dtype=torch.bool)] * 3
    plan = MtzMerger(share=0.5).zip_layer(NoMerger()(teachers).net, 0, 3, x, valid)
    for i, pair in enumerate(plan.pairs):
        rows = [t.layers["conv1"] for t in teachers]
        mean_w = sum(r.weight[k] for r, k in zip(rows, pair, strict=True)) / 3
        mean_b = sum(r.bias[k] for r, k in zip(rows, pair, strict=True)) / 3
        torch.testing.assert_close(plan.weight[i], mean_w.detach(), atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(plan.bias[i], mean_b.detach(), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize(("kwargs", "key"), [
    ({"share": 1.5}, "merger.share"), ({"share": {"conv1": -0.1}}, "merger.share.conv1"),
    ({"retrain_steps": -1}, "merger.retrain_steps"), ({"lr": 0.0}, "merger.lr"),
    ({"damping": -1e-3}, "merger.damping"), ({"hessian_samples": 0}, "merger.hessian_samples"),
    ({"max_drop": -0.5}, "merger.max_drop"), ({"max_drop": "1"}, "merger.max_drop"),
    ({"val_samples": 0}, "merger.val_samples"), ({"retrain_growth": 0.0}, "merger.retrain_growth")])
def test_bad_knobs_fail_at_construction(kwargs: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        MtzMerger(**kwargs)


def test_unknown_layer_in_share_map(setup: SimpleNamespace) -> None:
    with pytest.raises(ConfigError, match="merger.share names unknown layers"):
        MtzMerger(share={"conv9": 0.5}, retrain_steps=0)(setup.teachers, setup.job)


def test_config_builds_the_merger(tmp_path: Path) -> None:
    merger = instantiate(make_cfg(tmp_path, ["merger=mtz"]).merger)
    assert isinstance(merger, MtzMerger) and merger.name == "mtz"
    assert merger.parts(["lo", "hi"]) == [["lo", "hi"]]


THREE = {"a": {"kind": "attributes", "classes": [0, 1, 2]},
         "b": {"kind": "categorical", "classes": [3, 4, 5]},
         "c": {"kind": "attributes", "classes": [6, 7, 8, 9]}}
TINY_LAYERS = [{"name": "conv1", "kind": "conv", "width": 6, "kernel": 3, "pool": 2},
               {"name": "fc1", "kind": "linear", "width": 10}]
