"""Compact export: for each task subset, a torch.export program with only the neurons it computes.

A ``CompactNet`` keeps, for one task subset, the live neurons of the groups that subset computes
(``GroupedNet.neuron_index(bits, alive_only=True)``). Each hidden layer runs group by group: group g
is one conv/linear over the concatenation of exactly the input groups it may read (the previous
layer's live groups whose task set contains tasks(g); the image for the first layer). Each task's
head is one linear over the groups it reads. The program thus performs exactly the multiply-adds
that the cost rule of ``mergeprune.cost`` counts, with no multiplications by structural zeros
(unstructured zeros inside a kept block are still multiplied, as the dense cost rule assumes).

Relation to ``torch.utils.flop_counter.FlopCounterMode`` (2 FLOPs per multiply-add of conv/linear,
nothing for biases, ReLU, pooling or concatenation), per example:
``counted = subset_cost(net, bits)["flops"] + sum over computed neurons of their output positions``
because the cost rule charges ``2*n_in - 1`` per output where the counter charges ``2*n_in``.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.export import Dim, ExportedProgram
from torch.utils.flop_counter import FlopCounterMode

from mergeprune.models.grouped import GroupedNet, all_subsets, pooled, subset_key

log = logging.getLogger(__name__)

TOLERANCE = 1e-5  # largest accepted |compact - grouped| output difference
MAX_BATCH = 1 << 16  # upper bound of the exported program's dynamic batch dimension

Group = tuple[int, Tensor]  # (task-set bitmask, neuron indices of the layer)


class ExportError(RuntimeError):
    """A compact program whose outputs differ from the grouped network's, or that cannot be exported."""


class _Block(nn.Module):
    """One group's (or one task head's) conv/linear over the concatenated input groups it reads."""

    def __init__(self, kind: str, weight: Tensor, bias: Tensor, reads: Sequence[int],
                 padding: int, out_hw: tuple[int, int]):
        super().__init__()
        self.kind, self.padding, self.out_hw = kind, padding, out_hw
        self.reads = tuple(int(r) for r in reads)
        self.weight = nn.Parameter(weight, requires_grad=False)
        self.bias = nn.Parameter(bias, requires_grad=False)

    def forward(self, inputs: list[Tensor], image: Tensor) -> Tensor:
        """The block's pre-activation output; only its bias when no live input is left."""
        if not self.reads:
            return self._bias_only(image.shape[0])
        parts = [inputs[i] for i in self.reads]
        x = parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)
        if self.kind == "conv":
            return F.conv2d(x, self.weight, self.bias, padding=self.padding)
        return F.linear(x.flatten(1), self.weight, self.bias)

    def _bias_only(self, batch: int) -> Tensor:
        """The output of neurons whose every input is pruned: the bias at every position."""
        if self.kind == "conv":
            return self.bias.view(1, -1, 1, 1).expand(batch, -1, *self.out_hw).contiguous()
        return self.bias.view(1, -1).expand(batch, -1).contiguous()


class CompactNet(nn.Module):
    """The live neurons one task subset of a GroupedNet computes, run group by group."""

    def __init__(self, net: GroupedNet, bits: int):
        super().__init__()
        if not 0 < bits <= net.full_set:
            raise ValueError(f"task subset bitmask must be in 1..{net.full_set}, got {bits}")
        self.key = subset_key(net.tasks, bits)
        self.tasks = [t for i, t in enumerate(net.tasks) if bits >> i & 1]
        rows = net.neuron_index(bits, alive_only=True)
        self.pools = [sp.pool for sp in net.layer_specs[:-1]]
        self.hidden = nn.ModuleList()
        self.group_bits: list[list[int]] = []
        prev: list[Group] = [(net.full_set, torch.empty(0, dtype=torch.long))]  # the image
        for idx, name in enumerate(net.names[:-1]):
            groups = _split_groups(net.groups(name), rows[idx])
            self.hidden.append(nn.ModuleList(_block(net, idx, g, prev) for g in groups))
            self.group_bits.append([b for b, _ in groups])
            prev = groups
        slices = net.head_slices()
        heads = [(1 << net.tasks.index(t), torch.arange(slices[t].start, slices[t].stop))
                 for t in self.tasks]
        self.heads = nn.ModuleList(_block(net, len(net.names) - 1, h, prev) for h in heads)

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        """Outputs of the subset's tasks, in task order."""
        feats = [x]
        for blocks, pool in zip(self.hidden, self.pools, strict=True):
            outs = []
            for block in blocks:
                outs.append(pooled(F.relu(block(feats, x)), pool))
            feats = outs
        return tuple(head(feats, x) for head in self.heads)

    def weight_count(self) -> int:
        """Conv + linear weights of the program (biases excluded)."""
        return sum(m.weight.numel() for m in self.modules() if isinstance(m, _Block))


def _split_groups(layer_bits: Tensor, rows: Tensor) -> list[Group]:
    """The computed live neurons of a layer, split by task set (groups in increasing bitmask order)."""
    sel = layer_bits[rows]
    return [(int(b), rows[sel == b]) for b in torch.unique(sel).tolist()]


@torch.no_grad()
def _block(net: GroupedNet, idx: int, group: Group, prev: list[Group]) -> _Block:
    """A block for one group of layer idx, reading the previous groups whose task set contains its own."""
    bits, rows = group
    sp, name = net.layer_specs[idx], net.names[idx]
    layer, mask = net.layers[name], net.mask(name)
    reads = [j for j, (pb, _) in enumerate(prev) if bits & ~pb == 0]
    weight = (layer.weight.detach() * mask)[rows]
    if idx > 0:
        prev_rows = torch.cat([prev[j][1] for j in reads]) if reads else torch.empty(0, dtype=torch.long)
        weight = weight[:, net.input_index(idx, prev_rows)]
    bias = layer.bias.detach()[rows] * mask[rows].flatten(1).any(dim=1).to(layer.bias.dtype)
    return _Block(sp.kind, weight.clone(), bias.clone(), reads, sp.padding, sp.out_hw)


# ----- checks and export ---------------------------------------------------------------------------
def _max_diff(got: Sequence[Tensor], want: Sequence[Tensor]) -> float:
    """Largest absolute difference between two tuples of outputs."""
    return max(float((g - w).abs().max()) if g.numel() else 0.0 for g, w in zip(got, want, strict=True))


def _check(key: str, got: Sequence[Tensor], want: Sequence[Tensor], what: str) -> float:
    """The max abs difference; raises ExportError naming the subset when it exceeds the tolerance.

    The tolerance is TOLERANCE for outputs up to 1 in magnitude and TOLERANCE relative above that:
    float32 sums taken in another order differ by ~1e-7 of the output scale.
    """
    diff = _max_diff(got, want)
    scale = max([1.0] + [float(w.abs().max()) for w in want if w.numel()])
    if not diff <= TOLERANCE * scale:
        raise ExportError(f"compact program of subset {key!r} ({what}) differs from the grouped network "
                          f"by {diff:.3g} > {TOLERANCE * scale:.3g}; are the masks applied "
                          "(net.apply_masks())?")
    return diff


def export_program(compact: CompactNet, example: Tensor) -> ExportedProgram:
    """torch.export a compact network with a dynamic batch dimension."""
    trace_x = example if example.shape[0] >= 2 else example.expand(2, *example.shape[1:]).clone()
    batch = Dim("batch", min=1, max=MAX_BATCH)
    try:
        return torch.export.export(compact, (trace_x,), dynamic_shapes={"x": {0: batch}})
    except Exception as err:  # noqa: BLE001 - report any export failure with the subset named
        raise ExportError(f"torch.export failed for subset {compact.key!r}: {err}") from err


def median_latency_ms(fn: Callable[[Tensor], Any], x: Tensor, repeats: int, warmup: int = 2,
                      threads: int | None = 1) -> float:
    """Median wall time of fn(x) in milliseconds over repeated runs, after warm-up runs.

    threads: torch intra-op threads while timing (restored afterwards); None keeps the current
    setting. One thread by default: on a shared CPU, OpenMP barriers otherwise dominate small models.
    """
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    times = []
    try:
        with torch.inference_mode():
            for _ in range(warmup):
                fn(x)
            for _ in range(max(1, repeats)):
                start = time.perf_counter()
                fn(x)
                times.append((time.perf_counter() - start) * 1e3)
    finally:
        torch.set_num_threads(before)
    return statistics.median(times)


def export_subset(net: GroupedNet, bits: int, example: Tensor, path: str | Path,
                  repeats: int = 20, repeats_batch256: int | None = None, warmup: int = 2,
                  threads: int | None = 1) -> dict[str, Any]:
    """Export, save, reload and time the compact program of one subset; returns path, diff, latency.

    The program's batch dimension is dynamic (1 to MAX_BATCH); latency is the median over repeated
    CPU runs of the reloaded program at batch 1 (``repeats`` runs) and 256 (``repeats_batch256``,
    by default a quarter as many), with ``threads`` intra-op threads.
    """
    path = Path(path)
    compact = CompactNet(net, bits).eval()
    with torch.no_grad():
        ref_dict = net(example, tasks=compact.key)
    ref = [ref_dict[t] for t in compact.tasks]
    with torch.no_grad():
        diff = _check(compact.key, compact(example), ref, "before export")
    program = export_program(compact, example)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.export.save(program, str(path))
    loaded = torch.export.load(str(path)).module()
    with torch.no_grad():
        diff = max(diff, _check(compact.key, loaded(example), ref, f"loaded from {path}"))
    shape = tuple(example.shape[1:])
    big = max(1, repeats // 4) if repeats_batch256 is None else repeats_batch256
    latency = {"batch1": median_latency_ms(loaded, torch.randn(1, *shape), repeats, warmup, threads),
               "batch256": median_latency_ms(loaded, torch.randn(256, *shape), big, warmup, threads)}
    return {"path": str(path), "max_abs_diff": diff, "latency_ms": latency}


def export_all(net: GroupedNet, example_shape: tuple[int, int, int], out_dir: str | Path,
               repeats: int = 20, repeats_batch256: int | None = None, warmup: int = 2,
               threads: int | None = 1, seed: int = 0) -> dict[str, dict[str, Any]]:
    """Export every non-empty task subset to out_dir/<subset>.pt2; results keyed by subset."""
    out_dir = Path(out_dir)
    gen = torch.Generator().manual_seed(seed)
    example = torch.randn(8, *example_shape, generator=gen)
    results: dict[str, dict[str, Any]] = {}
    for bits in all_subsets(len(net.tasks)):
        key = subset_key(net.tasks, bits)
        res = export_subset(net, bits, example, out_dir / f"{key}.pt2", repeats, repeats_batch256,
                            warmup, threads)
        lat = res["latency_ms"]
        log.info(f"export {key}: max|diff| {res['max_abs_diff']:.2e}, latency {lat['batch1']:.3f} ms "
              f"(batch 1), {lat['batch256']:.2f} ms (batch 256) -> {res['path']}")
        results[key] = res
    return results


def count_program_flops(program_or_module: ExportedProgram | nn.Module, example: Tensor) -> int:
    """FLOPs of one forward pass on example as counted by torch.utils.flop_counter (2 per multiply-add)."""
    module = (program_or_module.module() if isinstance(program_or_module, ExportedProgram)
              else program_or_module)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        module(example)
    return int(counter.get_total_flops())
