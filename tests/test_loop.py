"""The Trainer-free masked finetuning of the pruning schedule (training.loop)."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_post_hook

from mergeprune.errors import TrainingError
from mergeprune.models.grouped import GroupedNet
from mergeprune.pruner.masks import train_phase
from mergeprune.seeding import seed_all
from mergeprune.training.loop import masked_finetune
from mergeprune.training.optim import adam


def pruned(setup: SimpleNamespace) -> GroupedNet:
    """A copy of the digits teacher with every third neuron of each hidden layer removed."""
    net = copy.deepcopy(setup.teacher)
    for name in net.names[:-1]:
        keep = torch.ones(len(net.groups(name)), dtype=torch.bool)
        keep[::3] = False
        net.prune_neurons(name, keep)
    return net


def test_one_epoch_equals_the_lightning_training_phase(digits_teacher: SimpleNamespace) -> None:
    setup = digits_teacher
    ours, theirs = pruned(setup), pruned(setup)
    seed_all(5)
    masked_finetune(ours, setup.tasks, setup.dm, adam(1e-3), 1, "t")
    seed_all(5)
    train_phase(theirs, setup.job, adam(1e-3), 1, "t")
    moved = sum(float((a - b).abs().sum()) for a, b in zip(ours.parameters(), setup.teacher.parameters(),
                                                          strict=True))
    assert moved > 1e-3  # it trained
    for (name, a), b in zip(ours.state_dict().items(), theirs.state_dict().values(), strict=True):
        assert torch.allclose(a, b, atol=1e-5), name  # same batches, same order, same updates


def test_steps_per_epoch_counts_optimizer_steps_and_masks_hold(digits_teacher: SimpleNamespace) -> None:
    setup = digits_teacher
    net = pruned(setup)
    counted = []
    handle = register_optimizer_step_post_hook(lambda opt, args, kwargs: counted.append(1))
    try:
        masked_finetune(net, setup.tasks, setup.dm, adam(1e-3), 3, "t", steps_per_epoch=7)
    finally:
        handle.remove()
    assert len(counted) == 21
    for name in net.names:
        weight = net.layers[name].weight
        assert torch.all(weight[net.mask(name) == 0] == 0), name


def test_more_steps_than_an_epoch_wrap_into_the_next_epoch(digits_teacher: SimpleNamespace) -> None:
    setup = digits_teacher
    per_epoch = -(-len(setup.dm.splits["train"]) // setup.dm.batch_size)
    counted = []
    handle = register_optimizer_step_post_hook(lambda opt, args, kwargs: counted.append(1))
    try:
        masked_finetune(pruned(setup), setup.tasks, setup.dm, adam(1e-3), 1, "t",
                        steps_per_epoch=per_epoch + 3)
    finally:
        handle.remove()
    assert len(counted) == per_epoch + 3


def test_a_non_finite_loss_stops_with_an_error_naming_the_stage(digits_teacher: SimpleNamespace) -> None:
    net = pruned(digits_teacher)
    with torch.no_grad():
        net.layers[net.names[-1]].bias.fill_(float("nan"))
    with pytest.raises(TrainingError, match="prune/step3: training loss became nan"):
        masked_finetune(net, digits_teacher.tasks, digits_teacher.dm, adam(1e-3), 1, "prune/step3")
