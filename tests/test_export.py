"""Compact export: per-subset programs equal the grouped network and cost what the cost rule says.

FLOP relation checked here (per example, batch 1). torch.utils.flop_counter counts 2 FLOPs per
multiply-add of conv/linear and nothing for biases, ReLU, pooling or concatenation; the cost rule
(docs/architecture.md#cost-of-a-task-subset) charges 2*n_in - 1 per output. A compact program computes exactly the
multiply-adds the cost rule counts, so

    counter = subset_cost(net, bits)["flops"] + sum over computed neurons of their output positions

(output positions: H*W of the conv output before pooling, 1 for linear and head units), and the
program's conv/linear weights (biases excluded) = subset_cost(net, bits)["params"].
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from conftest import LENET5_LAYERS as LENET5
from mergeprune.cost import subset_cost
from mergeprune.export import (
    CompactNet,
    ExportError,
    count_program_flops,
    export_all,
    export_subset,
)
from mergeprune.models.grouped import GroupedNet, all_subsets, subset_key
from mergeprune.models.spec import build_spec

SPEC8 = build_spec("lenet5", LENET5, in_channels=1, in_hw=(8, 8))  # 8x8 digits: padded convs, 2x2 flatten
FAST = {"repeats": 1, "repeats_batch256": 1, "warmup": 0}


@pytest.fixture(autouse=True)
def one_thread():
    """Run single-threaded: tiny ops on a busy shared CPU stall for ms in OpenMP barriers otherwise."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make_net(tasks: list[str], layer_groups: list[list[int]], seed: int = 0) -> GroupedNet:
    """A randomly initialised grouped lenet5 on 8x8 inputs, neurons in a shuffled group order."""
    gen = torch.Generator().manual_seed(seed)
    shuffled = [[g[i] for i in torch.randperm(len(g), generator=gen).tolist()] for g in layer_groups]
    torch.manual_seed(seed)
    return GroupedNet(SPEC8, tasks, {t: 3 + i for i, t in enumerate(tasks)}, shuffled)


def side_by_side() -> GroupedNet:
    """Two teachers side by side: per-task groups only."""
    return make_net(["lo", "hi"], [[1] * w + [2] * w for w in (4, 5, 8)])


def star2() -> GroupedNet:
    """PAM's star grouping for two tasks: one shared group and one exclusive group per task."""
    return make_net(["lo", "hi"], [[3] * 3 + [1] * 2 + [2] * 2, [3] * 4 + [1] * 2 + [2] * 3,
                                   [3] * 6 + [1] * 3 + [2] * 4])


def star3() -> GroupedNet:
    """The star grouping for three tasks."""
    return make_net(["a", "b", "c"], [[7] * 3 + [1, 2, 4] * 2, [7] * 4 + [1, 2, 4] * 2,
                                      [7] * 6 + [1, 2, 4] * 3])


def subsets3() -> GroupedNet:
    """Three tasks with groups for several task subsets ({a}, {a,b}, {a,b,c}, {c}, ...)."""
    return make_net(["a", "b", "c"], [[7] * 3 + [3] * 2 + [4] * 2,
                                      [1] * 2 + [3] * 3 + [7] * 2 + [4] * 2,
                                      [1] * 3 + [2] * 2 + [3] * 3 + [4] * 2 + [6] * 3])


def pruned3() -> GroupedNet:
    """subsets3 with random neurons pruned and random weights masked."""
    net = subsets3()
    gen = torch.Generator().manual_seed(1)
    for name in net.names[:-1]:
        n = len(net.groups(name))
        net.prune_neurons(name, torch.rand(n, generator=gen) > 0.3)
    for name in net.names:
        shape = net.mask(name).shape
        net.restrict_mask(name, torch.rand(shape, generator=gen) > 0.5)
    net.apply_masks()
    return net


def dead_inputs() -> GroupedNet:
    """subsets3 where every conv1 neuron that conv2's {c} group may read lost all its weights.

    conv2's {c} neurons stay alive (their own weights are kept) but read no live channel, so the
    compact program computes them as bias only, and the cost rule charges them -H*W FLOPs each.
    """
    net = subsets3()
    groups = net.groups("conv1")
    readable = (groups & 4) != 0  # task sets containing c: {a,b,c} and {c}
    keep = torch.ones_like(net.mask("conv1"))
    keep[readable] = 0
    net.restrict_mask("conv1", keep)
    net.apply_masks()
    return net


BUILDERS: dict[str, Callable[[], GroupedNet]] = {
    "side_by_side": side_by_side, "star2": star2, "star3": star3, "subsets3": subsets3,
    "pruned3": pruned3, "dead_inputs": dead_inputs}
# torch.export costs ~0.3 s of CPU per subset: the unpruned subsets3 grouping is exported through
# its pruned variants (same groups, shuffled neuron order), every other grouping directly.
EXPORTED = [name for name in BUILDERS if name != "subsets3"]


def computed_positions(net: GroupedNet, bits: int) -> int:
    """Sum of output positions over the neurons a subset computes that read a live input.

    torch's counter gives 2 FLOPs per multiply-add, the cost rule 2*n_in - 1 per output position, so
    the two differ by one per position of every neuron with n_in > 0; a neuron without live inputs
    costs 0 under both (a bias-only block in the program).
    """
    rows = net.neuron_index(bits, alive_only=True)
    total, prev = 0, None
    for idx, (r, sp) in enumerate(zip(rows, net.layer_specs, strict=True)):
        conn = net.connectivity(idx)[r]
        if prev is not None:
            conn = conn[:, prev]
        total += int((conn.sum(dim=1) > 0).sum()) * sp.positions
        prev = r
    return total


def reference(net: GroupedNet, bits: int, x: torch.Tensor) -> list[torch.Tensor]:
    """The grouped network's outputs for a subset, in task order."""
    with torch.no_grad():
        out = net(x, tasks=subset_key(net.tasks, bits))
    return [out[t] for i, t in enumerate(net.tasks) if bits >> i & 1]


def max_diff(got: tuple[torch.Tensor, ...], want: list[torch.Tensor]) -> float:
    """Largest absolute difference over matching outputs (shapes must agree)."""
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert g.shape == w.shape
    return max(float((g - w).abs().max()) for g, w in zip(got, want, strict=True))


@pytest.mark.parametrize("name", list(BUILDERS))
def test_compact_equals_grouped_and_matches_cost(name: str) -> None:
    """Every subset: outputs equal the grouped net; FLOPs and weights follow the cost rule exactly."""
    net = BUILDERS[name]()
    x = torch.randn(5, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    for bits in all_subsets(len(net.tasks)):
        compact = CompactNet(net, bits)
        with torch.no_grad():
            assert max_diff(compact(x), reference(net, bits, x)) <= 1e-5
        cost = subset_cost(net, bits)
        counted = count_program_flops(compact, x[:1])
        assert counted == cost["flops"] + computed_positions(net, bits), subset_key(net.tasks, bits)
        assert compact.weight_count() == cost["params"]


def test_dead_inputs_use_bias_only_blocks() -> None:
    """The dead_inputs fixture really has a live group with no live input (the bias-only path)."""
    net = dead_inputs()
    compact = CompactNet(net, 4)  # subset {c}
    c_block = compact.hidden[1][compact.group_bits[1].index(4)]
    assert c_block.reads == () and c_block.weight.shape[1] == 0
    assert bool(net.alive("conv2")[net.groups("conv2") == 4].all())


@pytest.mark.parametrize("name", EXPORTED)
def test_export_all_roundtrip(name: str, tmp_path) -> None:
    """Every subset's saved .pt2 reloads, equals the grouped net at batch 1 and 7, and counts right."""
    net = BUILDERS[name]()
    results = export_all(net, (1, 8, 8), tmp_path, **FAST)
    keys = [subset_key(net.tasks, b) for b in all_subsets(len(net.tasks))]
    assert list(results) == keys
    gen = torch.Generator().manual_seed(3)
    for bits, key in zip(all_subsets(len(net.tasks)), keys, strict=True):
        res = results[key]
        assert res["path"] == str(tmp_path / f"{key}.pt2")
        assert res["max_abs_diff"] <= 1e-5
        assert res["latency_ms"]["batch1"] > 0 and res["latency_ms"]["batch256"] > 0
        program = torch.export.load(res["path"])
        for batch in (1, 7):
            x = torch.randn(batch, 1, 8, 8, generator=gen)
            with torch.no_grad():
                assert max_diff(program.module()(x), reference(net, bits, x)) <= 1e-5
        counted = count_program_flops(program, torch.randn(1, 1, 8, 8, generator=gen))
        assert counted == subset_cost(net, bits)["flops"] + computed_positions(net, bits)


def test_lenet5_hand_count(tmp_path) -> None:
    """Single-task LeNet-5 on 28x28 with 10 outputs: the published counts and the counter relation."""
    spec = build_spec("lenet5", LENET5, in_channels=1, in_hw=(28, 28))
    net = GroupedNet.single(spec, "lo", 10)
    # conv1: 20 filters 5x5x1, 24x24 out; conv2: 50 filters 5x5x20, 8x8 out; fc1 800 -> 500; head 500 -> 10
    flops = (2 * 25 - 1) * 576 * 20 + (2 * 500 - 1) * 64 * 50 + (2 * 800 - 1) * 500 + (2 * 500 - 1) * 10
    params = 25 * 20 + 500 * 50 + 800 * 500 + 500 * 10
    assert (flops, params) == (4_570_770, 430_500)
    cost = subset_cost(net, 1)
    assert (cost["flops"], cost["params"]) == (flops, params)
    positions = 20 * 576 + 50 * 64 + 500 + 10
    counter = 2 * (25 * 20 * 576 + 500 * 50 * 64 + 800 * 500 + 500 * 10)  # 2 per multiply-add
    assert counter == flops + positions == 4_586_000
    x = torch.randn(4, 1, 28, 28)
    res = export_subset(net, 1, x, tmp_path / "lo.pt2", **FAST)
    assert res["max_abs_diff"] <= 1e-5
    assert count_program_flops(torch.export.load(res["path"]), x[:1]) == counter
    assert count_program_flops(CompactNet(net, 1), x) == 4 * counter  # scales with the batch


def test_pruned_program_is_smaller() -> None:
    """Pruning neurons shrinks every subset's compact program."""
    dense, pruned = subsets3(), pruned3()
    for bits in all_subsets(3):
        n_dense = sum(p.numel() for p in CompactNet(dense, bits).parameters())
        n_pruned = sum(p.numel() for p in CompactNet(pruned, bits).parameters())
        assert n_pruned < n_dense, subset_key(dense.tasks, bits)


def test_unapplied_masks_are_reported(tmp_path) -> None:
    """A network whose weights disagree with its masks fails the check, naming the subset."""
    net = star2()
    net.restrict_mask("fc1", torch.zeros_like(net.mask("fc1")))  # masks not applied to the weights
    with pytest.raises(ExportError, match=r"subset 'lo\+hi'.*differs"):
        export_subset(net, 3, torch.randn(2, 1, 8, 8), tmp_path / "lo+hi.pt2", **FAST)


def test_rejects_bad_subset() -> None:
    """A bitmask outside the tasks is refused."""
    with pytest.raises(ValueError, match="bitmask"):
        CompactNet(star2(), 4)


def test_fully_pruned_layer_leaves_bias_only_heads(tmp_path) -> None:
    """With every fc1 neuron pruned the heads read nothing: outputs are the (zeroed) head biases."""
    net = star2()
    net.prune_neurons("fc1", torch.zeros(len(net.groups("fc1")), dtype=torch.bool))
    x = torch.randn(3, 1, 8, 8)
    for bits in all_subsets(2):
        compact = CompactNet(net, bits)
        assert all(head.reads == () for head in compact.heads)
        with torch.no_grad():
            assert max_diff(compact(x), reference(net, bits, x)) <= 1e-5
        cost = subset_cost(net, bits)
        assert count_program_flops(compact, x[:1]) == cost["flops"] + computed_positions(net, bits)
    res = export_subset(net, 3, x, tmp_path / "lo+hi.pt2", **FAST)
    out = torch.export.load(res["path"]).module()(torch.randn(1, 1, 8, 8))
    assert [tuple(o.shape) for o in out] == [(1, 3), (1, 4)]
