"""pruner=vib: VIBNet's KL reaches the right tasks, folding mu is exact, the threshold removes noisy
neurons, no KL prunes nothing, and a VIB-pruned grouped network exports at the cost it reports."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from hydra.utils import instantiate

from conftest import DIGITS_LAYERS, make_cfg
from mergeprune.errors import ConfigError
from mergeprune.export import count_program_flops
from mergeprune.models.grouped import GroupedNet, all_subsets, subset_key
from mergeprune.models.spec import build_spec
from mergeprune.pipeline import run_job
from mergeprune.pruner.vib import VibPruner
from mergeprune.pruner.vib_gates import VibGates, gated_loss, neuron_weights, readout, task_kl
from mergeprune.tasks import build_tasks
from test_export import computed_positions

SPLIT2 = {"lo": {"kind": "attributes", "classes": [0, 1, 2, 3, 4]},
          "hi": {"kind": "attributes", "classes": [5, 6, 7, 8, 9]}}
# conv1 shared; conv2 and fc1 with shared (3), lo-only (1) and hi-only (2) groups
GROUPS = [[3] * 6, [3, 3, 3, 1, 1, 2, 2, 2], [3] * 4 + [1] * 6 + [2] * 6]


def grouped() -> GroupedNet:
    """A two-task grouped LeNet-5 for 8x8 inputs with shared and exclusive groups."""
    torch.manual_seed(0)
    spec = build_spec("lenet5", DIGITS_LAYERS, in_channels=1, in_hw=(8, 8))
    return GroupedNet(spec, ["lo", "hi"], {"lo": 5, "hi": 5}, GROUPS)


def test_shared_kl_reaches_every_task_exclusive_only_its_own() -> None:
    """d(task t's loss)/d(mu) is non-zero for shared and t-only neurons and exactly 0 for the other
    task's exclusive ones; the KL sums match a count over the task sets."""
    net, tasks = grouped(), build_tasks(SPLIT2, 10)
    gates = VibGates(net)
    weights = neuron_weights(net, {"conv1": 1.0, "conv2": 1.0, "fc1": 1.0})
    x, labels = torch.randn(16, 1, 8, 8), torch.randint(0, 10, (16,))
    targets = [t.targets(labels) for t in tasks]
    positions = list(enumerate(tasks))
    kl = {n: v.detach() for n, v in gates.kl().items()}
    for k, task in enumerate(("lo", "hi")):
        bit = 1 << k
        want = sum(float((kl[n] * weights[n] * ((net.groups(n) & bit) != 0)).sum()) for n in gates.names)
        assert float(task_kl(net, gates, weights)[task]) == pytest.approx(want, rel=1e-6)
        gates.zero_grad()
        gated_loss(net, gates, positions, weights, 1e-3, x, targets, task=k).backward()
        for name, bits in zip(gates.names, GROUPS, strict=True):
            grad = gates.mu[name].grad
            for i, b in enumerate(bits):
                if b & bit:
                    assert grad[i] != 0, (task, name, i)
                else:
                    assert grad[i] == 0, (task, name, i)


def test_folding_mu_keeps_the_outputs() -> None:
    """The read-out (mu folded into the next layer, nothing removed) computes what the gated network
    computes at test time, for every subset, with negative mu as well."""
    net = grouped()
    gates = VibGates(net).eval()
    with torch.no_grad():
        for n in gates.names:
            gates.mu[n].copy_(torch.linspace(-1.5, 2.0, len(gates.mu[n])))
    x = torch.randn(7, 1, 8, 8)
    with torch.no_grad():
        gated = net(x, scales=gates.scales(len(x)))
        plain = net(x)
    out, keep = readout(net, gates, threshold=math.inf)
    assert all(bool(k.all()) for k in keep.values())
    with torch.no_grad():
        folded = out(x)
        for t in net.tasks:
            assert torch.allclose(folded[t], gated[t], atol=1e-5)
            assert not torch.allclose(plain[t], gated[t], atol=1e-3)  # the gates did change the outputs
        for bits in all_subsets(2):
            key = subset_key(net.tasks, bits)
            part = out(x, tasks=key)
            for t, v in part.items():
                assert torch.allclose(v, gated[t], atol=1e-5)


def test_a_neuron_above_the_threshold_is_removed() -> None:
    """log alpha >= threshold removes exactly that neuron; below it every neuron stays."""
    net = grouped()
    gates = VibGates(net)
    with torch.no_grad():
        gates.log_d["conv2"][4] = 1.0        # log alpha = 1 - log mu^2 ~ 1 > 0.01
        gates.mu["fc1"][7] = 1e-3            # log alpha = -9 - log 1e-6 ~ 4.8
    alpha = gates.log_alpha()
    assert alpha["conv2"][4] > 0.01 and alpha["fc1"][7] > 0.01
    out, _ = readout(net, gates, threshold=0.01)
    for name in gates.names:
        alive = out.alive(name)
        gone = {"conv2": {4}, "fc1": {7}}.get(name, set())
        assert {i for i in range(len(alive)) if not alive[i]} == gone, name


@pytest.fixture
def vib_node():
    """The composed pruner=vib node (the real config), as a function of overrides."""
    def node(tmp_path, *overrides):
        return make_cfg(tmp_path, ["pruner=vib", *overrides]).pruner
    return node


def test_no_kl_prunes_nothing_and_kl_prunes(digits_teacher, vib_node, tmp_path) -> None:
    """kl_factor = 0: every stage removes nothing; a strong KL (the positive control) removes neurons."""
    ctx = digits_teacher.job
    quiet = ["pruner.epochs=1", "pruner.max_stages=2", "pruner.finetune_epochs=0"]
    zero = instantiate(vib_node(tmp_path, *quiet, "pruner.kl_factor=0"))
    net = copy.deepcopy(digits_teacher.teacher)
    before = {n: int(net.alive(n).sum()) for n in net.names[:-1]}
    built = zero(net, ctx, "vib0")
    assert {n: int(net.alive(n).sum()) for n in net.names[:-1]} == before
    assert [s["accepted"] for s in built.report["stages"]] == [None, None]
    assert len(built.report["trajectory"]) == 1
    strong = instantiate(vib_node(tmp_path, *quiet, "pruner.kl_factor=0.05", "pruner.gate_lr=0.1",
                                   "pruner.tolerance=1.0"))
    net = copy.deepcopy(digits_teacher.teacher)
    built = strong(net, ctx, "vib1")
    after = {n: int(net.alive(n).sum()) for n in net.names[:-1]}
    assert sum(after.values()) < sum(before.values())
    assert built.report["trajectory"][-1]["kl_factor"] > 0


@pytest.mark.parametrize(("override", "key"), [
    ("pruner.phase=both", "pruner.phase"), ("pruner.kl_growth=0.5", "pruner.kl_growth"),
    ("pruner.layer_weights=area", "pruner.layer_weights"), ("+pruner.init.sigma=1", "pruner.init"),
])
def test_bad_knobs_fail_at_start_up(tiny, tmp_path, override: str, key: str) -> None:
    """A wrong value fails before anything trains, with one line naming the key and what is allowed."""
    with pytest.raises(ConfigError) as err:
        run_job(tiny("pruner=vib", override), tmp_path / "job")
    assert key in str(err.value) and "allowed" in str(err.value)
    assert not (tmp_path / "cache").exists()


def test_missing_layer_weight_names_the_layer(digits_teacher, tmp_path) -> None:
    """Per-layer weights that leave out a hidden layer fail before training, naming it."""
    pruner = VibPruner(layer_weights={"conv1": 0.01, "conv2": 0.05})
    with pytest.raises(ConfigError, match="fc1"):
        pruner(copy.deepcopy(digits_teacher.teacher), digits_teacher.job, "vib")


@pytest.mark.slow
def test_vib_job_exports_at_the_reported_cost(tiny, tmp_path) -> None:
    """merger=pam pruner=vib end to end: the trajectory grows with the KL, every task keeps its accuracy
    within the test, and each exported subset program counts the FLOPs results.json reports."""
    cfg = tiny("debug=fast", "merger=pam", "pruner=vib", "pruner.max_stages=3", "pruner.epochs=1",
               "finetune.epochs=1")
    res = run_job(cfg, tmp_path / "job")
    assert res["status"] == "ok"
    curve = res["trajectory"]["lo+hi"]
    kls = [p["kl_factor"] for p in curve]
    assert kls == sorted(kls) and kls[0] == 0.0
    net = GroupedNet.load(tmp_path / "job" / "model.pt")
    for bits in all_subsets(2):
        key = subset_key(net.tasks, bits)
        program = torch.export.load(res["export"][key]["path"])
        counted = count_program_flops(program, torch.randn(1, 1, 8, 8))
        assert counted == res["cost"][key]["flops"] + computed_positions(net, bits)
