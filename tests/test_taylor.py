"""pruner=taylor: gate gradients, global ranking, rollback on the accuracy tolerance, heads and paths."""

from __future__ import annotations

import copy
import itertools
from pathlib import Path
from types import SimpleNamespace

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from hydra.utils import instantiate

from conftest import make_cfg
from mergeprune.context import Context
from mergeprune.cost import all_costs
from mergeprune.data.datamodule import MultiTaskDataModule
from mergeprune.errors import ConfigError
from mergeprune.models.grouped import GroupedNet
from mergeprune.models.spec import build_spec
from mergeprune.pruner.taylor import TaylorPruner, gate_gradients
from mergeprune.tasks import build_tasks
from mergeprune.training.fit import accuracy, fit
from mergeprune.training.module import MultiTaskModule

TRAINER = {"accelerator": "cpu", "devices": 1, "progress_bar": False}
WIDTHS = {"conv1": 6, "conv2": 8, "fc1": 16}
# neurons whose outgoing weights are set to zero (importance exactly 0), of the 30
ZEROED = {"conv1": [1, 4], "conv2": [0, 5], "fc1": [2, 3, 7, 9, 12, 15]}


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """Tasks, digits data, a small 8x8 LeNet-5 spec and a trained 'lo' teacher."""
    root = tmp_path_factory.mktemp("taylor")
    tasks = build_tasks({"lo": {"kind": "attributes", "classes": [0, 1, 2, 3, 4]},
                         "hi": {"kind": "attributes", "classes": [5, 6, 7, 8, 9]}}, 10)
    dm = MultiTaskDataModule(tasks, source="digits", val_size=200, test_size=300, batch_size=64)
    layers = [{"name": "conv1", "kind": "conv", "width": 6, "kernel": 5, "padding": "auto", "pool": 2},
              {"name": "conv2", "kind": "conv", "width": 8, "kernel": 5, "padding": "auto", "pool": 2},
              {"name": "fc1", "kind": "linear", "width": 16}]
    spec = build_spec("lenet5", layers, in_channels=1, in_hw=(8, 8))
    pl.seed_everything(0, verbose=False)
    teacher = GroupedNet.single(spec, "lo", 5)
    fit(MultiTaskModule(teacher, tasks, {"_target_": "torch.optim.Adam", "lr": 3e-3}, 12), dm, 12, TRAINER, False, root)
    assert accuracy(teacher, tasks, dm, "val")["lo"] > 0.92  # learned: predicting all -1 scores 0.9
    job = Context(tasks, dm, TRAINER, False, root)
    return SimpleNamespace(tasks=tasks, dm=dm, spec=spec, teacher=teacher, job=job)


def zeroed_teacher(setup: SimpleNamespace) -> GroupedNet:
    """A copy of the teacher whose ZEROED neurons have all-zero outgoing weights."""
    net = copy.deepcopy(setup.teacher)
    names = net.names
    with torch.no_grad():
        for idx, name in enumerate(names[:-1]):
            nxt, fan = net.layers[names[idx + 1]], net.layer_specs[idx + 1].fan_per_input
            for n in ZEROED[name]:
                if net.layer_specs[idx + 1].kind == "conv":
                    nxt.weight[:, n] = 0
                else:
                    nxt.weight[:, n * fan:(n + 1) * fan] = 0
    return net


def fast(**kw: object) -> TaylorPruner:
    """A pruner without finetuning between cuts."""
    return TaylorPruner(**{"finetune_epochs": 0, "batches": 10, **kw})


def zero_importance(setup: SimpleNamespace, net: GroupedNet) -> dict[str, list[int]]:
    """Neurons whose first-iteration importance is exactly 0: the zeroed ones plus any dead ReLU."""
    scores = fast(fraction=0.5).importance(net, setup.job, seed=1)
    zero = {n: (s == 0).nonzero().flatten().tolist() for n, s in scores.items()}
    for name, idx in ZEROED.items():
        assert set(idx) <= set(zero[name]), f"{name}: zero outgoing weights must give importance 0"
    return zero


def test_gate_gradient_identity_matches_explicit_gates(setup: SimpleNamespace) -> None:
    torch.manual_seed(1)
    net = GroupedNet(setup.spec, ["lo", "hi"], {"lo": 5, "hi": 5},
                     [[1, 2, 3] * 2, [3, 1, 2, 3] * 2, [1, 3, 2, 3] * 4])
    x, targets = setup.dm.sample(32, "train", seed=3)
    tgt = {"lo": targets[0], "hi": targets[1]}
    gates = [torch.ones(len(net.groups(n)), requires_grad=True) for n in net.names[:-1]]
    h = x
    for idx, (name, sp) in enumerate(zip(net.names, net.layer_specs, strict=True)):
        layer = net.layers[name]
        if sp.kind == "conv":
            h = F.conv2d(h, layer.weight, layer.bias, padding=sp.padding)
        else:
            h = F.linear(h.flatten(1), layer.weight, layer.bias)
        if idx < len(gates):
            g = gates[idx][:, None, None] if sp.kind == "conv" else gates[idx]
            h = F.relu(h * g)
            h = F.max_pool2d(h, sp.pool) if sp.pool > 1 else h
    parts = net.head_slices()
    loss = sum(t.loss(h[:, parts[t.name]], tgt[t.name]) for t in setup.tasks)
    explicit = torch.autograd.grad(loss, gates)
    derived = gate_gradients(net, setup.tasks, x, tgt)
    for name, want in zip(net.names[:-1], explicit, strict=True):
        assert torch.allclose(derived[name], want, rtol=1e-4, atol=1e-6), name
        assert want.abs().sum() > 0


def test_least_important_neurons_go_first(setup: SimpleNamespace) -> None:
    net = zeroed_teacher(setup)
    zero = zero_importance(setup, net)
    n_zero = sum(len(v) for v in zero.values())
    pruner = fast(fraction=n_zero / 30, max_iterations=1, tolerance=1.0)
    report = pruner(net, setup.job, "t").report
    for name, idx in zero.items():
        dead = (~net.alive(name)).nonzero().flatten().tolist()
        assert dead == idx, name
        assert report["layers"][name]["achieved_sparsity"] == pytest.approx(len(idx) / WIDTHS[name])
    assert report["iterations"][0]["removed"] == n_zero
    assert report["stopped"] == "max_iterations"


def test_tolerance_stop_rolls_back_to_the_previous_cut(setup: SimpleNamespace) -> None:
    net = zeroed_teacher(setup)
    zero = zero_importance(setup, net)
    expected = copy.deepcopy(net)
    for name, idx in zero.items():
        keep = torch.ones(WIDTHS[name], dtype=torch.bool)
        keep[idx] = False
        expected.prune_neurons(name, keep)
    base = accuracy(net, setup.tasks, setup.dm, "val")
    pruner = fast(fraction=sum(len(v) for v in zero.values()) / 30, max_iterations=5, tolerance=0.0)
    out, report = pruner(net, setup.job, "t")
    its = report["iterations"]
    assert out is net and report["stopped"] == "tolerance"
    assert its[0]["val_acc"] == base and not its[0]["rolled_back"]  # the zero-importance cut is free
    assert len(its) == 2 and its[1]["rolled_back"] and its[1]["val_acc"]["lo"] < base["lo"]
    for key, value in expected.state_dict().items():
        assert torch.equal(net.state_dict()[key], value), key


def test_first_cut_beyond_tolerance_leaves_the_net_unchanged(setup: SimpleNamespace) -> None:
    net = copy.deepcopy(setup.teacher)
    before = copy.deepcopy(net.state_dict())
    pruner = fast(fraction=0.6, tolerance=0.0)
    report = pruner(net, setup.job, "t").report
    assert report["stopped"] == "tolerance" and len(report["iterations"]) == 1
    for key, value in before.items():
        assert torch.equal(net.state_dict()[key], value), key
    assert all(v["achieved_sparsity"] == 0 for v in report["layers"].values())


def task_path(net: GroupedNet, task: int) -> bool:
    """Whether some chain of unmasked weights links the input to the task's head."""
    reach = torch.ones(net.spec.in_channels, dtype=torch.bool)
    for idx, name in enumerate(net.names):
        sp, mask = net.layer_specs[idx], net.mask(name) != 0
        per_channel = mask.flatten(2).any(2) if sp.kind == "conv" else \
            mask.view(len(mask), -1, sp.fan_per_input).any(2)
        rows = (net.groups(name) >> task & 1) == 1
        reach = rows & per_channel[:, reach].any(1)
    return bool(reach.any())


def test_heads_keep_outputs_tasks_keep_paths_costs_shrink(setup: SimpleNamespace) -> None:
    torch.manual_seed(2)
    # exclusive groups (1 = lo, 2 = hi) and a shared one (3) in every layer
    net = GroupedNet(setup.spec, ["lo", "hi"], {"lo": 5, "hi": 5},
                     [[1, 2, 3] * 2, [3, 1, 2, 3] * 2, [1, 3, 2, 3] * 4])
    with torch.no_grad():
        net.layers["head"].weight[:5] = 0  # lo's head reads nothing: lo's own neurons score 0
    before = all_costs(net)
    pruner = fast(fraction=0.6, max_iterations=8, tolerance=1.0)
    report = pruner(net, setup.job, "t").report
    assert net.alive("head").all()
    assert torch.equal(net.mask("head").flatten(1).any(1), torch.ones(10, dtype=torch.bool))
    for task in (0, 1):
        assert task_path(net, task), f"task {task} lost its path"
    after = all_costs(net)
    for key, cost in before.items():
        assert after[key]["flops"] <= cost["flops"] and after[key]["params"] <= cost["params"], key
    assert after["lo+hi"]["flops"] < before["lo+hi"]["flops"]
    assert report["stopped"] in ("nothing_to_cut", "max_iterations")
    assert sum(int(net.alive(n).sum()) for n in net.names[:-1]) <= 6


def test_finetunes_between_cuts_and_reports(setup: SimpleNamespace) -> None:
    net = copy.deepcopy(setup.teacher)
    pruner = TaylorPruner(fraction=0.1, batches=2, finetune_epochs=1, max_iterations=2,
                          tolerance=1.0, final_epochs=1)
    report = pruner(net, setup.job, "t").report
    assert [it["iteration"] for it in report["iterations"]] == [1, 2]
    assert all(it["removed"] >= 1 and set(it["val_acc"]) == {"lo"} for it in report["iterations"])
    assert report["iterations"][1]["cost_all"] < report["iterations"][0]["cost_all"]
    assert set(report["layers"]) == {"conv1", "conv2", "fc1"}
    assert all(v["requested_sparsity"] is None for v in report["layers"].values())
    for name in net.names:  # masks enforced during finetuning
        assert torch.all(net.layers[name].weight[net.mask(name) == 0] == 0)


@pytest.mark.parametrize(("knob", "value"), [
    ("granularity", "unstructured"), ("fraction", 0.0), ("fraction", 1.0), ("batches", 0),
    ("finetune_epochs", -1), ("max_iterations", 1.5), ("tolerance", -0.1),
    ("optimizer", {"_target_": "torch.optim.Adam", "lr": 0}),
    ("final_epochs", -2), ("normalize", "l1"), ("optimizer", "rmsprop"), ("batch_size", 0),
])
def test_bad_knobs_raise_config_error(knob: str, value: object) -> None:
    key = "pruner.optimizer.lr" if isinstance(value, dict) else f"pruner.{knob}"
    with pytest.raises(ConfigError, match=f"{key}="):
        TaylorPruner(**{knob: value})


def test_config_file_builds_the_pruner(tmp_path: Path) -> None:
    cfg = make_cfg(tmp_path, ["pruner=taylor"])
    pruner = instantiate(cfg.pruner)
    assert isinstance(pruner, TaylorPruner)
    assert (pruner.name, pruner.granularity) == ("taylor", "neurons")


def test_broken_cut_is_halved_until_min_fraction(setup: SimpleNamespace) -> None:
    net = copy.deepcopy(setup.teacher)
    base = accuracy(net, setup.tasks, setup.dm, "val")
    pruner = fast(fraction=0.6, min_fraction=0.1, max_iterations=12, tolerance=0.0)
    report = pruner(net, setup.job, "t").report
    its = report["iterations"]
    assert any(it["rolled_back"] for it in its)
    for prev, nxt in itertools.pairwise(its):
        assert nxt["fraction"] == (prev["fraction"] / 2 if prev["rolled_back"] else prev["fraction"])
    if report["stopped"] == "tolerance":
        assert its[-1]["rolled_back"] and its[-1]["fraction"] / 2 < 0.1 <= its[-1]["fraction"]
    final = accuracy(net, setup.tasks, setup.dm, "val")
    assert all(final[t] >= base[t] for t in base)  # tolerance 0: no kept cut may lose accuracy


def test_min_fraction_above_fraction_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="pruner.min_fraction"):
        TaylorPruner(fraction=0.2, min_fraction=0.3)
