"""Neuron pruning = importance + the shared schedule (pruner.importance, pruner.steps, pruner.schedule)
on a small 8x8 LeNet-5 trained on sklearn's digits."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from types import SimpleNamespace

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from hydra.utils import instantiate

from conftest import make_cfg
from mergeprune.context import Context
from mergeprune.cost import all_costs, subset_cost
from mergeprune.errors import ConfigError
from mergeprune.models.grouped import GroupedNet
from mergeprune.pruner.accept import Acceptance
from mergeprune.pruner.importance import (
    MagnitudeImportance,
    TaylorImportance,
    per_sample_gate_grads,
)
from mergeprune.pruner.neurons import NeuronPruner
from mergeprune.pruner.savings import unit_savings
from mergeprune.pruner.schedule import Schedule
from mergeprune.pruner.steps import apply_keep
from mergeprune.training.fit import accuracy

WIDTHS = {"conv1": 6, "conv2": 8, "fc1": 16}
# neurons whose outgoing weights are set to zero (importance exactly 0), of the 30
ZEROED = {"conv1": [1, 4], "conv2": [0, 5], "fc1": [2, 3, 7, 9, 12, 15]}
TAYLOR = TaylorImportance(batches=4)


@pytest.fixture(scope="module")
def setup(digits_teacher: SimpleNamespace) -> SimpleNamespace:
    """The shared digits 'lo' teacher, its data, spec and context (conftest)."""
    return digits_teacher


def grouped(setup: SimpleNamespace, seed: int = 1) -> GroupedNet:
    """A random two-task grouped net: exclusive groups (1 = lo, 2 = hi) and a shared one (3) per layer."""
    torch.manual_seed(seed)
    return GroupedNet(setup.spec, ["lo", "hi"], {"lo": 5, "hi": 5},
                      [[1, 2, 3] * 2, [3, 1, 2, 3] * 2, [1, 3, 2, 3] * 4])


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


def schedule(**kw: object) -> Schedule:
    """A schedule without finetuning between steps, by default."""
    return Schedule(**{"finetune_epochs": 0, "recovery_epochs": 0, **kw})


class Fixed:
    """An importance function that returns given scores (a case whose right answer is known)."""

    name = "fixed"

    def __init__(self, scores: dict[str, torch.Tensor]):
        self.scores = scores

    def __call__(self, net: GroupedNet, ctx: Context, seed: int) -> dict[str, torch.Tensor]:
        return {k: v.clone() for k, v in self.scores.items()}


# ----- importance ---------------------------------------------------------------------------------
def test_per_sample_gate_gradients_match_explicit_gates_sample_by_sample(setup: SimpleNamespace) -> None:
    net = grouped(setup)
    x, targets = setup.dm.sample(6, "train", seed=3)
    tgt = {"lo": targets[0], "hi": targets[1]}
    derived = per_sample_gate_grads(net, setup.tasks, x, tgt)
    for n in range(len(x)):  # one sample at a time, gates as explicit tensors on the pre-activations
        gates = [torch.ones(len(net.groups(name)), requires_grad=True) for name in net.names[:-1]]
        h = x[n:n + 1]
        for idx, (name, sp) in enumerate(zip(net.names, net.layer_specs, strict=True)):
            layer = net.layers[name]
            h = F.conv2d(h, layer.weight, layer.bias, padding=sp.padding) if sp.kind == "conv" \
                else F.linear(h.flatten(1), layer.weight, layer.bias)
            if idx < len(gates):
                h = F.relu(h * (gates[idx][:, None, None] if sp.kind == "conv" else gates[idx]))
                h = F.max_pool2d(h, sp.pool) if sp.pool > 1 else h
        parts = net.head_slices()
        loss = sum(t.loss(h[:, parts[t.name]], tgt[t.name][n:n + 1]) for t in setup.tasks)
        for name, want in zip(net.names[:-1], torch.autograd.grad(loss, gates), strict=True):
            assert torch.allclose(derived[name][n], want, rtol=1e-4, atol=1e-6), (n, name)


def test_taylor_importance_is_zero_exactly_for_neurons_nothing_reads(setup: SimpleNamespace) -> None:
    scores = TAYLOR(zeroed_teacher(setup), setup.job, seed=1)
    for name, idx in ZEROED.items():
        assert torch.all(scores[name][idx] == 0), name
        others = [i for i in range(WIDTHS[name]) if i not in idx]
        assert scores[name][others].gt(0).sum() >= len(others) - 2, name  # at most a dead ReLU or two


def test_per_sample_taylor_does_not_cancel_where_the_batch_mean_does(setup: SimpleNamespace) -> None:
    """Near convergence the batch-mean gate gradient is small; its per-sample square is not."""
    net = setup.teacher
    x, targets = setup.dm.sample(256, "train", seed=5)
    g = per_sample_gate_grads(net, setup.tasks[:1], x, {"lo": targets[0]})["fc1"]
    per_sample, batch_mean = g.pow(2).mean(0), g.mean(0).pow(2)
    assert torch.all(per_sample >= batch_mean - 1e-9)
    assert per_sample.sum() > 4 * batch_mean.sum()


def test_magnitude_importance_is_the_row_norm(setup: SimpleNamespace) -> None:
    net = grouped(setup)
    scores = MagnitudeImportance()(net, setup.job, seed=0)
    w = net.layers["conv2"].weight * net.mask("conv2")
    assert torch.allclose(scores["conv2"], w.flatten(1).norm(dim=1))


# ----- what a neuron is charged --------------------------------------------------------------------
def test_savings_equal_the_cost_drop_of_removing_each_neuron_alone(setup: SimpleNamespace) -> None:
    net = grouped(setup)
    savings, before = unit_savings(net), subset_cost(net, net.full_set)["flops"]
    for name in net.names[:-1]:
        for i in range(len(net.groups(name))):
            probe = copy.deepcopy(net)
            keep = torch.ones(len(net.groups(name)), dtype=torch.bool)
            keep[i] = False
            probe.prune_neurons(name, keep)
            drop = before - subset_cost(probe, probe.full_set)["flops"]
            assert savings[name][i].item() == drop, (name, i)


def test_savings_follow_the_groups_a_neuron_connects_to(setup: SimpleNamespace) -> None:
    net = grouped(setup)
    s = unit_savings(net)["conv2"]
    # conv2 groups [3, 1, 2, 3, ...]: a shared (3) neuron is read by every fc1 neuron, an exclusive
    # one only by fc1 neurons of its own task or... fc1 holds 1, 3, 2, 3: exclusive lo (1) is read by
    # fc1's lo neurons alone, so it saves less than a shared conv2 neuron, which only reads shared conv1 ones
    assert s[1] > 0 and s[0] > 0 and s[1] != s[0]


# ----- acceptance ----------------------------------------------------------------------------------
def test_acceptance_allows_the_tolerance_plus_z_standard_errors() -> None:
    test = Acceptance(tolerance=0.01, z=1.0)
    se = (0.99 * 0.01 / 500) ** 0.5  # 0.00445
    assert test.allowed_drop(0.99, 500) == pytest.approx(0.01 + se)
    assert test.broken({"lo": 0.99}, {"lo": 0.99 - 0.014}, 500) == {}
    assert set(test.broken({"lo": 0.99}, {"lo": 0.99 - 0.0146}, 500)) == {"lo"}
    assert set(Acceptance(0.01, 0.0).broken({"lo": 0.99, "hi": 0.98}, {"lo": 0.985, "hi": 0.965}, 500)) == {"hi"}


# ----- the schedule --------------------------------------------------------------------------------
def test_an_unremovable_first_ranked_neuron_is_protected_and_pruning_goes_on(setup: SimpleNamespace) -> None:
    """The neuron ranked first for removal breaks the accuracy test; the rest is pruned all the same."""
    net = zeroed_teacher(setup)
    probe = copy.deepcopy(net)
    keep = torch.ones(6, dtype=torch.bool)
    keep[0] = False
    probe.prune_neurons("conv1", keep)
    base = accuracy(net, setup.tasks, setup.dm, "val")["lo"]
    assert accuracy(probe, setup.tasks, setup.dm, "val")["lo"] < base  # precondition: conv1[0] matters
    scores = {n: torch.ones(w) for n, w in WIDTHS.items()}
    for name, idx in ZEROED.items():
        scores[name][idx] = 0.5
    scores["conv1"][0] = 0.0  # ranked first, and unremovable
    start = subset_cost(net, net.full_set)["flops"]
    # steps of 1% of the FLOPs: one conv neuron at a time (a conv neuron saves more than that)
    report = schedule(tolerance=0.0, noise_z=0.0, normalize="none", step=0.01, max_step=1.0,
                      min_step=0.01, growth=1.0).run(net, setup.job, "t", Fixed(scores))
    steps = report["steps"]
    assert not steps[0]["accepted"] and steps[0]["removed"] == 1  # conv1[0] alone, rejected
    assert bool(net.alive("conv1")[0])
    assert report["accepted"] >= 1
    for name, idx in ZEROED.items():
        assert not net.alive(name)[idx].any(), name
    assert report["cost_all"] <= 0.75 * start
    assert accuracy(net, setup.tasks, setup.dm, "val")["lo"] >= base  # tolerance 0


def test_neurons_larger_than_the_largest_step_go_alone_and_last(setup: SimpleNamespace) -> None:
    net = copy.deepcopy(setup.teacher)
    saved, flops = unit_savings(net), subset_cost(net, net.full_set)["flops"]
    small = max(saved["conv2"].max(), saved["fc1"].max()).item()
    assert saved["conv1"].min().item() > 1.2 * small  # precondition: every conv1 filter is the largest
    cap = 1.1 * small / flops  # conv1 filters are oversized at the start (and stay so as the net shrinks)
    scores = {n: torch.ones(w) for n, w in WIDTHS.items()}
    scores["conv1"][:] = 0.0  # ranked first for removal
    report = schedule(tolerance=1.0, normalize="none", step=cap / 2, min_step=cap / 4, max_step=cap,
                      max_steps=60).run(net, setup.job, "t", Fixed(scores))
    steps = report["steps"]
    first_conv1 = next(i for i, st in enumerate(steps) if st["live"]["conv1"] < 6)
    assert first_conv1 > 0 and all(not st["oversized"] for st in steps[:first_conv1])
    assert steps[first_conv1]["oversized"] and steps[first_conv1]["removed"] == 1
    assert all(st["removed"] == 1 for st in steps if st["oversized"])
    assert steps[first_conv1 - 1]["live"]["fc1"] < 16 and steps[first_conv1 - 1]["live"]["conv2"] < 8


def test_rejections_reset_then_halve_the_step_and_accepts_grow_it(setup: SimpleNamespace) -> None:
    net = copy.deepcopy(setup.teacher)
    report = schedule(tolerance=0.0, noise_z=0.0, step=0.1, max_step=0.4, min_step=0.02, growth=2.0,
                      patience=3, max_steps=12).run(net, setup.job, "t", TAYLOR)
    steps, base = report["steps"], report["base_val_acc"]
    assert steps[0]["share"] == 0.1
    for prev, nxt in zip(steps, steps[1:], strict=False):
        if prev["accepted"]:  # tolerance 0: any loss counts as near the target (slow_at 0.5 of 0)
            near = base["lo"] - prev["val"]["lo"] >= 0
            assert nxt["share"] == pytest.approx(0.1 if near else min(prev["share"] * 2, 0.4))
        else:
            assert nxt["share"] == pytest.approx(0.1 if prev["share"] > 0.1 else max(prev["share"] / 2, 0.02))
    if report["stopped"] == "tolerance":
        assert [s["accepted"] for s in steps[-3:]] == [False] * 3
    assert all(p["val"]["lo"] >= base["lo"] for p in report["trajectory"])  # tolerance 0: no kept step loses


def test_steps_beyond_the_tolerance_get_recovery_epochs_before_they_are_judged(setup: SimpleNamespace) -> None:
    net = copy.deepcopy(setup.teacher)
    report = schedule(tolerance=0.005, noise_z=0.0, step=0.3, max_step=0.3, recovery_epochs=1,
                      max_steps=6).run(net, setup.job, "t", TAYLOR)
    base = report["base_val_acc"]["lo"]
    assert any(s["recovered"] for s in report["steps"])
    for s in report["steps"]:
        before = s["val_before_recovery"]["lo"] if s["recovered"] else s["val"]["lo"]
        assert s["recovered"] == (base - before > 0.005)  # recovery exactly when beyond the tolerance
        assert s["accepted"] == (base - s["val"]["lo"] <= 0.005 + 1e-12)  # judged after it


def test_trajectory_records_every_accepted_step(setup: SimpleNamespace) -> None:
    net = grouped(setup, seed=2)
    report = schedule(tolerance=1.0, max_steps=5, test_every=2).run(net, setup.job, "t", TAYLOR)
    traj = report["trajectory"]
    assert [p["step"] for p in traj] == list(range(len(traj))) and len(traj) == report["accepted"] + 1
    assert [p["tried"] for p in traj[1:]] == [s["tried"] for s in report["steps"] if s["accepted"]]
    flops = [p["cost"]["lo+hi"]["flops"] for p in traj]
    assert all(a > b for a, b in zip(flops, flops[1:], strict=False))
    assert traj[-1]["cost"] == {k: {"flops": c["flops"], "params": c["params"]} for k, c in all_costs(net).items()}
    assert [p["test"] is not None for p in traj] == [i % 2 == 0 for i in range(len(traj))]
    assert set(traj[0]["val"]) == {"lo", "hi"} and set(traj[0]["live"]) == {"conv1", "conv2", "fc1"}


def test_heads_keep_outputs_tasks_keep_paths_costs_shrink(setup: SimpleNamespace) -> None:
    net = grouped(setup, seed=2)
    with torch.no_grad():
        net.layers["head"].weight[:5] = 0  # lo's head reads nothing: lo's own neurons score 0
    before = all_costs(net)
    report = schedule(tolerance=1.0, max_steps=40, step=0.5, max_step=0.5).run(net, setup.job, "t", TAYLOR)
    assert torch.equal(net.mask("head").flatten(1).any(1), torch.ones(10, dtype=torch.bool))
    for task in (0, 1):
        assert task_path(net, task), f"task {task} lost its path"
    after = all_costs(net)
    for key, cost in before.items():
        assert after[key]["flops"] <= cost["flops"] and after[key]["params"] <= cost["params"], key
    assert report["stopped"] == "nothing_left"
    assert sum(int(net.alive(n).sum()) for n in net.names[:-1]) <= 6


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


def run_seeded(setup: SimpleNamespace, sched: Schedule, resume: Path | None = None,
               importance: object = TAYLOR) -> tuple[GroupedNet, dict]:
    """Prune a copy of the teacher from the same seed (what the prune stage does)."""
    net = copy.deepcopy(setup.teacher)
    pl.seed_everything(7, verbose=False)
    return net, sched.run(net, setup.job, "t", importance, resume)


def test_max_steps_at_a_points_tried_rebuilds_that_point(setup: SimpleNamespace) -> None:
    sched = dict(finetune_epochs=1, tolerance=0.02, step=0.2, max_step=0.4)
    _, full = run_seeded(setup, Schedule(max_steps=6, **sched))
    point = full["trajectory"][2]
    net, _ = run_seeded(setup, Schedule(max_steps=point["tried"], **sched))
    assert all_costs(net)["lo"]["flops"] == point["cost"]["lo"]["flops"]
    assert accuracy(net, setup.tasks, setup.dm, "val")["lo"] == point["val"]["lo"]


class Killed(Exception):
    """Stands for the process being killed."""


class DiesAt:
    """Taylor importance that raises at one step (a kill between two steps)."""

    name = "taylor"

    def __init__(self, step: int):
        self.step = step

    def __call__(self, net: GroupedNet, ctx: Context, seed: int) -> dict[str, torch.Tensor]:
        if seed == self.step:
            raise Killed
        return TAYLOR(net, ctx, seed)


def test_a_killed_run_resumes_after_its_last_step_with_the_same_result(setup: SimpleNamespace,
                                                                      tmp_path: Path) -> None:
    sched = Schedule(finetune_epochs=1, tolerance=0.02, step=0.2, max_step=0.4, max_steps=5)
    whole_net, whole = run_seeded(setup, sched)
    with pytest.raises(Killed):
        run_seeded(setup, sched, tmp_path / "resume", DiesAt(4))
    assert (tmp_path / "resume" / "schedule.pt").exists()
    net, resumed = run_seeded(setup, sched, tmp_path / "resume")
    timeless = [[{k: v for k, v in s.items() if k != "seconds"} for s in r["steps"]] for r in (resumed, whole)]
    assert resumed["trajectory"] == whole["trajectory"] and timeless[0] == timeless[1]
    assert len(whole["steps"]) >= 4
    for key, value in whole_net.state_dict().items():
        assert torch.equal(net.state_dict()[key], value), key
    assert not (tmp_path / "resume").exists()  # finished: the partial state is removed


def test_a_corrupt_pruning_checkpoint_is_discarded_with_a_warning(setup: SimpleNamespace, tmp_path: Path,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "resume").mkdir()
    (tmp_path / "resume" / "schedule.pt").write_bytes(b"not a checkpoint")
    _, report = run_seeded(setup, schedule(tolerance=1.0, max_steps=1), tmp_path / "resume")
    assert report["tried"] == 1 and "unusable" in caplog.text


# ----- config --------------------------------------------------------------------------------------
@pytest.mark.parametrize(("knob", "value"), [
    ("step", 0.0), ("step", 1.5), ("min_step", 0.5), ("max_step", 0.01), ("growth", 0.5), ("slow_at", 1.5),
    ("patience", 0),
    ("finetune_epochs", -1), ("recovery_epochs", -1), ("max_steps", 1.5), ("tolerance", -0.1), ("noise_z", -1.0),
    ("optimizer", {"_target_": "torch.optim.Adam", "lr": 0}), ("final_epochs", -2), ("normalize", "l1"),
    ("optimizer", "rmsprop"), ("test_every", -1),
])
def test_bad_knobs_raise_config_error(knob: str, value: object) -> None:
    key = "pruner.schedule.optimizer.lr" if isinstance(value, dict) else f"pruner.schedule.{knob}"
    with pytest.raises(ConfigError, match=f"{key}="):
        NeuronPruner("taylor", {"_target_": "mergeprune.pruner.importance.TaylorImportance"}, {knob: value})


@pytest.mark.parametrize(("choice", "kind"), [("taylor", TaylorImportance), ("magnitude_neurons", MagnitudeImportance)])
def test_config_files_build_the_pruners(tmp_path: Path, choice: str, kind: type) -> None:
    cfg = make_cfg(tmp_path, [f"pruner={choice}", "pruner.schedule.step=0.1"])
    pruner = instantiate(cfg.pruner)
    assert isinstance(pruner, NeuronPruner) and isinstance(pruner.importance, kind)
    assert (pruner.name, pruner.granularity, pruner.schedule.step) == (choice, "neurons", 0.1)


def test_apply_keep_removes_orphans_and_dangling_neurons(setup: SimpleNamespace) -> None:
    net = grouped(setup)
    keep = {n: net.alive(n).clone() for n in net.names[:-1]}
    keep["conv2"][:] = False
    keep["conv2"][0] = True  # one shared conv2 neuron left: exclusive fc1 neurons still read it
    apply_keep(net, keep)
    assert int(net.alive("conv2").sum()) == 1
    assert all((net.mask("fc1")[i] != 0).any() == net.alive("fc1")[i] for i in range(16))


def zeroed_first(setup: SimpleNamespace) -> tuple[GroupedNet, Fixed]:
    """The zeroed teacher and scores ranking its zeroed neurons first (removing them changes nothing)."""
    scores = {n: torch.ones(w) for n, w in WIDTHS.items()}
    for name, idx in ZEROED.items():
        scores[name][idx] = 0.0
    return zeroed_teacher(setup), Fixed(scores)


def test_steps_are_judged_against_the_reference_not_the_start(setup: SimpleNamespace) -> None:
    net, scores = zeroed_first(setup)
    own = accuracy(net, setup.tasks, setup.dm, "val")["lo"]
    fc1, flops = unit_savings(net)["fc1"][ZEROED["fc1"]].max().item(), subset_cost(net, net.full_set)["flops"]
    share = 3.5 * fc1 / flops  # four of the six zeroed fc1 neurons (conv neurons are oversized)
    knobs = {"tolerance": 0.01, "noise_z": 0.0, "normalize": "none", "step": share, "max_step": share,
             "min_step": share, "growth": 1.0, "max_steps": 1}
    free = schedule(**knobs).run(net, setup.job, "t", scores)
    assert free["steps"][0]["removed"] == 4 and not net.alive("fc1")[ZEROED["fc1"]].all()
    assert free["accepted"] == 1 and free["base_val_acc"] == {"lo": own}  # outputs unchanged: accepted
    held = dataclasses.replace(setup.job, reference={"lo": own + 0.03})  # teachers 3 points better
    net, scores = zeroed_first(setup)
    report = schedule(**knobs).run(net, held, "t", scores)
    assert report["accepted"] == 0 and report["base_val_acc"] == {"lo": own + 0.03}
    assert not report["warm_start"]  # recovery_epochs=0: no warm start
    assert all(bool(net.alive(n).all()) for n in ZEROED)  # every step undone


def test_a_start_beyond_the_tolerance_recovers_before_the_first_step(setup: SimpleNamespace) -> None:
    net, scores = zeroed_first(setup)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    held = dataclasses.replace(setup.job, reference={"lo": 1.0})
    report = schedule(tolerance=0.01, recovery_epochs=1, max_steps=1).run(net, held, "t", scores)
    assert report["warm_start"]
    assert report["trajectory"][0]["tried"] == 0
    trained = [k for k, v in net.state_dict().items() if k.endswith("weight") and not torch.equal(v, before[k])]
    assert trained  # the start point is the recovered network
