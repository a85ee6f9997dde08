"""Grouped multitask network: neurons labelled by task sets, computed only for the subsets that need them.

Every hidden neuron carries a task set, stored as a bitmask over the task order. A neuron may read
a neuron of the previous layer only if the reader's task set is contained in the source's task set
(the input image belongs to every task), so executing a task subset S computes exactly the neurons
whose task set meets S, and they read only neurons that are also computed. The head is one more
layer whose neurons are the output units of each task (task set = that task). A single-task network
(a teacher) is the special case of one task and one group per layer.

The weights are stored densely; forbidden connections and pruned weights are zero under ``mask_*``
buffers, which ``apply_masks`` enforces after every optimizer step.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mergeprune.errors import one_line
from mergeprune.models.spec import LayerSpec, ModelSpec


def subset_key(tasks: Sequence[str], bits: int) -> str:
    """Name of the task subset with the given bitmask: its tasks joined by '+' in task order."""
    return "+".join(t for i, t in enumerate(tasks) if bits >> i & 1)


def all_subsets(n_tasks: int) -> list[int]:
    """Bitmasks of every non-empty task subset, singletons first, then by size."""
    return sorted(range(1, 1 << n_tasks), key=lambda b: (bin(b).count("1"), b))


def pooled(x: Tensor, pool: int) -> Tensor:
    """Max pooling by `pool` (none when pool is 1)."""
    return F.max_pool2d(x, pool) if pool > 1 else x


def run_layers(x: Tensor, specs: Sequence[LayerSpec], weights: Sequence[Tensor], biases: Sequence[Tensor],
               taps: list[tuple[Tensor, Tensor]] | None = None, head: bool = True,
               gates: Sequence[Tensor] | None = None, scales: Sequence[Tensor] | None = None) -> Tensor:
    """The forward pass of every network here: conv/linear layers with ReLU and pooling between them.

    With `head` the last layer is the linear output (no ReLU); `taps` collects every hidden layer's
    (output after ReLU, output after pooling); `gates` ([batch, neurons] per hidden layer) multiply
    each hidden layer's pre-activation (Taylor pruning differentiates the loss by them); `scales`
    ([batch or 1, neurons] per hidden layer) multiply its output after ReLU and pooling (VIB's noise).
    """
    for i, (sp, w, b) in enumerate(zip(specs, weights, biases, strict=True)):
        x = F.conv2d(x, w, b, padding=sp.padding) if sp.kind == "conv" else F.linear(x.flatten(1), w, b)
        if head and i == len(specs) - 1:
            break
        if gates is not None:
            x = x * (gates[i][:, :, None, None] if x.dim() == 4 else gates[i])
        relu = F.relu(x)
        x = pooled(relu, sp.pool)
        if scales is not None:
            x = x * (scales[i][:, :, None, None] if x.dim() == 4 else scales[i])
        if taps is not None:
            taps.append((relu, x))
    return x


class GroupedNet(nn.Module):
    """A multitask network whose neurons are grouped by the set of tasks that use them."""

    def __init__(self, spec: ModelSpec, tasks: Sequence[str], n_outputs: dict[str, int],
                 neuron_tasks: Sequence[Sequence[int]]):
        super().__init__()
        if len(neuron_tasks) != len(spec.layers):
            raise ValueError(f"need task sets for {len(spec.layers)} hidden layers, got {len(neuron_tasks)}")
        self.spec = spec
        self.tasks = list(tasks)
        self.n_outputs = {t: int(n_outputs[t]) for t in self.tasks}
        self.full_set = (1 << len(self.tasks)) - 1
        head_tasks = [1 << i for i, t in enumerate(self.tasks) for _ in range(self.n_outputs[t])]
        self.layer_specs: list[LayerSpec] = [*spec.layers, spec.head]
        self.names = [sp.name for sp in self.layer_specs]
        self.layers = nn.ModuleDict()
        fan_in = spec.in_channels
        for sp, bits in zip(self.layer_specs, [*neuron_tasks, head_tasks], strict=True):
            bits_t = torch.as_tensor(list(bits), dtype=torch.long)
            if (bits_t <= 0).any() or (bits_t > self.full_set).any():
                raise ValueError(f"layer {sp.name}: every neuron needs a non-empty task set within the tasks")
            n = len(bits_t)
            if sp.kind == "conv":
                self.layers[sp.name] = nn.Conv2d(fan_in, n, sp.kernel, padding=sp.padding)
            else:
                self.layers[sp.name] = nn.Linear(fan_in * sp.fan_per_input, n)
            self.register_buffer(f"groups_{sp.name}", bits_t)
            self.register_buffer(f"mask_{sp.name}", torch.ones_like(self.layers[sp.name].weight))
            fan_in = n
        for name in self.names:
            self.mask(name).copy_(self.structure_mask(name))
        self.apply_masks()

    # ----- structure -------------------------------------------------------------------------------
    @classmethod
    def single(cls, spec: ModelSpec, task: str, n_out: int) -> GroupedNet:
        """A single-task network (a teacher): one task, one group per layer."""
        return cls(spec, [task], {task: n_out}, [[1] * la.width for la in spec.layers])

    def groups(self, name: str) -> Tensor:
        """Task-set bitmask of every neuron of a layer."""
        return getattr(self, f"groups_{name}")

    def mask(self, name: str) -> Tensor:
        """The weight mask of a layer (structure and pruning together)."""
        return getattr(self, f"mask_{name}")

    def input_groups(self, idx: int) -> Tensor:
        """Task sets of the channels a layer reads (the image belongs to every task)."""
        if idx == 0:
            return torch.full((self.spec.in_channels,), self.full_set, dtype=torch.long)
        return self.groups(self.names[idx - 1])

    def connectivity(self, idx: int) -> Tensor:
        """Allowed (neuron, input channel) pairs of a layer: the reader's task set within the source's."""
        rows, cols = self.groups(self.names[idx]), self.input_groups(idx)
        return (rows[:, None] & ~cols[None, :]) == 0

    def expand_inputs(self, idx: int, per_channel: Tensor) -> Tensor:
        """Broadcast a [neurons, channels] tensor to the layer's weight shape."""
        sp = self.layer_specs[idx]
        if sp.kind == "conv":
            return per_channel[:, :, None, None].expand_as(self.layers[sp.name].weight)
        return per_channel.repeat_interleave(sp.fan_per_input, dim=1)

    def structure_mask(self, name: str) -> Tensor:
        """The mask that forbids connections between incompatible groups."""
        idx = self.names.index(name)
        return self.expand_inputs(idx, self.connectivity(idx)).to(self.mask(name).dtype)

    def prunable(self) -> list[tuple[str, nn.Module, bool]]:
        """(name, module, is_head) of every conv/linear layer, input to output."""
        return [(n, self.layers[n], n == self.names[-1]) for n in self.names]

    def alive(self, name: str) -> Tensor:
        """Neurons of a layer with at least one unmasked incoming weight."""
        return self.mask(name).flatten(1).any(dim=1)

    def head_slices(self) -> dict[str, slice]:
        """Rows of the head layer that belong to each task."""
        out, start = {}, 0
        for t in self.tasks:
            out[t] = slice(start, start + self.n_outputs[t])
            start += self.n_outputs[t]
        return out

    def subset_bits(self, tasks: Sequence[str] | str | None) -> int:
        """Bitmask of a task subset given as names or a 'lo+hi' key; None means all tasks."""
        if tasks is None:
            return self.full_set
        names = tasks.split("+") if isinstance(tasks, str) else list(tasks)
        unknown = [t for t in names if t not in self.tasks]
        if unknown or not names:
            raise ValueError(f"unknown task subset {names}; tasks are {self.tasks}")
        return sum(1 << self.tasks.index(t) for t in set(names))

    # ----- masks -----------------------------------------------------------------------------------
    @torch.no_grad()
    def apply_masks(self) -> None:
        """Zero every masked weight, and the bias of every neuron left without inputs."""
        for name in self.names:
            layer, mask = self.layers[name], self.mask(name)
            layer.weight.mul_(mask)
            layer.bias.mul_(mask.flatten(1).any(dim=1).to(layer.bias.dtype))

    @torch.no_grad()
    def restrict_mask(self, name: str, keep: Tensor) -> None:
        """Intersect a layer's mask with a keep mask of weight shape (pruning never revives weights)."""
        self.mask(name).mul_(keep.to(self.mask(name).dtype))

    @torch.no_grad()
    def prune_neurons(self, name: str, keep: Tensor) -> None:
        """Remove the neurons of a hidden layer where keep is False: their inputs, bias and outgoing weights."""
        idx = self.names.index(name)
        if idx == len(self.names) - 1:
            raise ValueError("task heads keep all their outputs; only hidden layers lose neurons")
        keep = keep.to(torch.bool)
        self.mask(name)[~keep] = 0
        nxt = self.names[idx + 1]
        cols = self.expand_inputs(idx + 1, keep[None, :].expand(len(self.groups(nxt)), -1))
        self.mask(nxt).mul_(cols.to(self.mask(nxt).dtype))
        self.apply_masks()

    # ----- forward ---------------------------------------------------------------------------------
    def forward(self, x: Tensor, tasks: Sequence[str] | str | None = None,
                scales: Sequence[Tensor] | None = None) -> dict[str, Tensor]:
        """Outputs per task; with a subset, only the neurons that subset needs are computed.

        `scales` (all tasks only) multiply each hidden layer's output after ReLU and pooling.
        """
        bits = self.subset_bits(tasks)
        if bits == self.full_set:
            ws = [self.layers[n].weight for n in self.names]
            bs = [self.layers[n].bias for n in self.names]
            out = run_layers(x, self.layer_specs, ws, bs, scales=scales)
            return {t: out[:, s] for t, s in self.head_slices().items()}
        if scales is not None:
            raise ValueError("scales apply to the forward pass of all tasks only")
        ws, bs = self.sliced_parameters(bits, alive_only=False)
        out = run_layers(x, self.layer_specs, ws, bs)
        return split_heads(out, [t for i, t in enumerate(self.tasks) if bits >> i & 1], self.n_outputs)

    def hidden_outputs(self, x: Tensor, layers: int | None = None) -> list[tuple[Tensor, Tensor]]:
        """(output after ReLU, output after pooling) of the first `layers` hidden layers (default all)."""
        n = len(self.names) - 1 if layers is None else layers
        names, taps = self.names[:n], []
        run_layers(x, self.layer_specs[:n], [self.layers[m].weight for m in names],
                   [self.layers[m].bias for m in names], taps, head=False)
        return taps

    def neuron_index(self, bits: int, alive_only: bool) -> list[Tensor]:
        """Per layer, the neurons computed for a subset (optionally only the unpruned ones)."""
        out = []
        for name in self.names:
            keep = (self.groups(name) & bits) != 0
            if alive_only and name != self.names[-1]:
                keep &= self.alive(name)
            out.append(keep.nonzero().flatten())
        return out

    def input_index(self, idx: int, prev: Tensor | None) -> Tensor | None:
        """Columns of a layer's weight that read the kept channels of the previous layer."""
        if prev is None:
            return None
        fan = self.layer_specs[idx].fan_per_input
        if self.layer_specs[idx].kind == "conv" or fan == 1:
            return prev
        return (prev[:, None] * fan + torch.arange(fan)[None, :]).flatten()

    def sliced_parameters(self, bits: int, alive_only: bool) -> tuple[list[Tensor], list[Tensor]]:
        """Weights and biases restricted to the neurons a subset computes."""
        ws, bs, prev = [], [], None
        for idx, (name, rows) in enumerate(zip(self.names, self.neuron_index(bits, alive_only),
                                              strict=True)):
            layer, cols = self.layers[name], self.input_index(idx, prev)
            w = layer.weight[rows] if cols is None else layer.weight[rows][:, cols]
            ws.append(w)
            bs.append(layer.bias[rows])
            prev = rows
        return ws, bs

    # ----- persistence -----------------------------------------------------------------------------
    def metadata(self) -> dict[str, Any]:
        """Plain-data description from which the network can be rebuilt."""
        return {"spec": self.spec.to_dict(), "tasks": self.tasks, "n_outputs": self.n_outputs,
                "neuron_tasks": [self.groups(n).tolist() for n in self.names[:-1]]}

    def save(self, path: str | Path) -> None:
        """Save tensors and plain metadata only (loadable with weights_only=True)."""
        torch.save({"meta": self.metadata(), "state": self.state_dict()}, path)

    @classmethod
    def from_checkpoint(cls, payload: dict[str, Any]) -> GroupedNet:
        """Rebuild from a dict with 'meta' and 'state'."""
        meta = payload["meta"]
        net = cls(ModelSpec.from_dict(meta["spec"]), meta["tasks"], meta["n_outputs"],
                  meta["neuron_tasks"])
        net.load_state_dict(payload["state"])
        return net

    @classmethod
    def load(cls, path: str | Path) -> GroupedNet:
        """Load a network saved with save()."""
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
            return cls.from_checkpoint(payload)
        except Exception as err:  # noqa: BLE001 - any failure here means an unusable checkpoint
            raise CheckpointError(f"cannot load network checkpoint {path}: {one_line(err)}") from err


class CheckpointError(RuntimeError):
    """A checkpoint file that cannot be read back."""


def split_heads(out: Tensor, tasks: Sequence[str], n_outputs: dict[str, int]) -> dict[str, Tensor]:
    """Split concatenated head outputs into one tensor per task."""
    parts = torch.split(out, [n_outputs[t] for t in tasks], dim=1)
    return dict(zip(tasks, parts, strict=True))
