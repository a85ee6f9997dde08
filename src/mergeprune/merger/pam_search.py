"""PAM's greedy search for a task's irrelevant neurons (step 2 of the algorithm in ``pam.py``)."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor

from mergeprune.merger.mi import Estimator, Labels, mi_from_sums, varying


def greedy_irrelevant(acts: Tensor, labels: Labels, estimator: Estimator, alpha: float, chunk: int = 256,
                      budget: int = 1 << 29) -> tuple[list[int], list[float]]:
    """PAM's greedy Irr_t for one task: neuron indices in the order added, and the MI after each addition.

    Squared distances add up over neurons: with D(Irr_t) the summed distances of the set, a candidate's
    own distances D_n and w the estimator's kernel factor for the set grown by one (fixed, or 1 /
    (2 sigma^2 (m + 1)) for the averaged estimator), the class sums that give MI(Irr_t + [n]) are
    sum_j exp(-w D_n)[i, j] (exp(-w D(Irr_t))[i, j] C[j, g]) (C: class membership and a ones column),
    one batched matmul over rows i for all candidates. The candidates' distances (raw: kernels) are
    computed once, laid out [i, n, j], when they fit in ``budget`` bytes, else again per chunk of
    candidates at every step. Neurons constant on the batch never change the distances: they join at
    once and do not count in the set's size.
    """
    n, b = acts.shape[1], acts.shape[0]
    if alpha <= 0 or n == 0:
        return [], []
    live = varying(acts)
    chosen = (~live).nonzero().flatten().tolist()
    trace = [0.0] * len(chosen)
    free = live.nonzero().flatten()
    cand = acts[:, free]
    cached = _dists(cand) if len(free) * b * b * acts.element_size() <= budget else None
    if cached is not None and not estimator.per_set:
        cached = torch.exp(-estimator.width(1) * cached)  # raw: the kernels never change
    cols = labels.columns(acts.dtype)
    dsum = torch.zeros(b, b, dtype=acts.dtype)  # D(Irr_t) over its varying neurons
    size = 0
    alive = torch.ones(len(free), dtype=torch.bool)
    while bool(alive.any()):
        width = estimator.width(size + 1)
        weights = torch.exp(-width * dsum)[:, :, None] * cols[None]  # [i, j, G + 1]
        kernels = _candidate_kernels(cand, cached, width, not estimator.per_set, chunk)
        sums = torch.cat([torch.bmm(q, weights) for q in kernels], 1)
        scores = mi_from_sums(sums.transpose(0, 1), labels).masked_fill(~alive, float("inf"))
        best, pos = scores.min(0)
        if float(best) >= alpha:
            break
        pos = int(pos)
        chosen.append(int(free[pos]))
        trace.append(float(best))
        dsum = dsum + _dists(cand[:, pos:pos + 1])[:, 0]
        size += 1
        alive[pos] = False
        if int(alive.sum()) < 0.75 * len(alive):  # drop the chosen candidates from the work
            free, cand = free[alive], cand[:, alive]
            cached = cached[:, alive] if cached is not None else None
            alive = torch.ones(len(free), dtype=torch.bool)
    return chosen, trace


def _dists(acts: Tensor) -> Tensor:
    """Per-neuron squared distances laid out [i, n, j]: activations [B, N] -> [B, N, B]."""
    return (acts[:, :, None] - acts.t()[None]).pow(2)


def _candidate_kernels(cand: Tensor, cached: Tensor | None, width: float, cached_kernels: bool,
                       chunk: int) -> Iterator[Tensor]:
    """The free candidates' kernels exp(-width D_n) [i, n, j], chunk by chunk of candidates."""
    if cached is not None:
        yield cached if cached_kernels else torch.exp(-width * cached)
        return
    for s in range(0, cand.shape[1], chunk):
        yield torch.exp(-width * _dists(cand[:, s:s + chunk]))
