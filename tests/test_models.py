"""Every model builds from its layer spec at 28x28 and 8x8, with the documented weight counts."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate

from conftest import make_cfg
from mergeprune.cost import all_costs, dense_weights
from mergeprune.models.grouped import GroupedNet

# conv + linear weights of one network with a 10-way head on 28x28, counted by hand
WEIGHTS_28 = {
    "lenet5": 20 * 25 + 50 * 20 * 25 + 800 * 500 + 500 * 10,  # 430,500
    "lenet5_classic": 6 * 25 + 16 * 6 * 25 + 400 * 120 + 120 * 84 + 84 * 10,
    "lenet300_100": 784 * 300 + 300 * 100 + 100 * 10,
    "convnet_small": 16 * 9 + 16 * 16 * 9 + 16 * 32 * 9 + 32 * 32 * 9 + 32 * 7 * 7 * 128 + 128 * 10,
}


@pytest.mark.parametrize("model", sorted(WEIGHTS_28))
@pytest.mark.parametrize("size", [28, 8])
def test_model_forward_and_weights(tmp_path: Path, model: str, size: int) -> None:
    cfg = make_cfg(tmp_path, [f"model={model}"])
    spec = instantiate(cfg.model, in_channels=1, in_hw=[size, size])
    net = GroupedNet.single(spec, "digit", 10)
    out = net(torch.randn(3, 1, size, size))["digit"]
    assert out.shape == (3, 10)
    counted = sum(m.weight.numel() for _, m, _ in net.prunable())
    assert counted == spec.single_task_weights(10) == dense_weights(net)
    if size == 28:
        assert counted == WEIGHTS_28[model]


def test_lenet5_cost_hand_count(tmp_path: Path) -> None:
    spec = instantiate(make_cfg(tmp_path).model, in_channels=1, in_hw=[28, 28])
    cost = all_costs(GroupedNet.single(spec, "digit", 10))["digit"]
    # conv1 (2*25-1)*24*24*20 + conv2 (2*500-1)*8*8*50 + fc1 (2*800-1)*500 + head (2*500-1)*10
    assert cost["flops"] == 49 * 576 * 20 + 999 * 64 * 50 + 1599 * 500 + 999 * 10 == 4_570_770
    assert cost["params"] == 430_500


def test_checkpoint_roundtrip_weights_only(tmp_path: Path) -> None:
    spec = instantiate(make_cfg(tmp_path).model, in_channels=1, in_hw=[8, 8])
    net = GroupedNet(spec, ["a", "b"], {"a": 2, "b": 3},
                     [[1, 2, 3] * 4, [1, 3] * 5, [3, 2] * 10])
    net.save(tmp_path / "n.pt")
    payload = torch.load(tmp_path / "n.pt", weights_only=True)
    back = GroupedNet.from_checkpoint(payload)
    x = torch.randn(2, 1, 8, 8)
    assert torch.equal(net(x)["b"], back(x)["b"])
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(RuntimeError, match="bad.pt"):
        GroupedNet.load(tmp_path / "bad.pt")


def test_a_neuron_with_no_live_input_costs_nothing(tmp_path: Path) -> None:
    spec = instantiate(make_cfg(tmp_path).model, in_channels=1, in_hw=[28, 28])
    net = GroupedNet.single(spec, "digit", 10)
    net.restrict_mask("conv1", torch.zeros_like(net.mask("conv1")))  # every conv1 channel dead
    assert int(net.alive("conv2").sum()) == 50  # conv2 keeps its weights, but reads nothing live
    cost = all_costs(net)["digit"]
    # conv1 and conv2 compute nothing; fc1 (2*800-1)*500 and the head (2*500-1)*10 as when dense
    assert cost["flops"] == 1599 * 500 + 999 * 10
    assert cost["params"] == 800 * 500 + 500 * 10
