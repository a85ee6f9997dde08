"""PAM's greedy search for a task's irrelevant neurons (step 2 of the algorithm in ``pam.py``)."""

from __future__ import annotations

import torch
from torch import Tensor

from mergeprune.merger.mi import Labels, mi_from_sums


def greedy_irrelevant(acts: Tensor, labels: Labels, sigma2: float, alpha: float, chunk: int = 256,
                      budget: int = 1 << 29) -> tuple[list[int], list[float]]:
    """PAM's greedy Irr_t for one task: neuron indices in the order added, and the MI after each addition.

    Distances add up over neurons, so kernels multiply: with K = exp(-D(Irr_t) / 2 sigma^2) and a
    candidate's own kernel Q_n, the class sums that give MI(Irr_t + [n]) are
    sum_j Q_n[i, j] (K[i, j] C[j, g]) (C: class membership and a ones column), one batched matmul
    over rows i for all candidates. The candidates' kernels are computed once, laid out [i, n, j],
    when they fit in ``budget`` bytes, else again per chunk of candidates at every step.
    """
    n, b = acts.shape[1], acts.shape[0]
    if alpha <= 0 or n == 0:
        return [], []
    const = acts.amax(0) == acts.amin(0)  # they never change the MI: all join at once
    chosen = const.nonzero().flatten().tolist()
    trace = [0.0] * len(chosen)
    free = (~const).nonzero().flatten()
    cand = acts[:, free]
    cached = _kernels(cand, sigma2) if len(free) * b * b * acts.element_size() <= budget else None
    cols = labels.columns(acts.dtype)
    kernel = torch.ones(b, b, dtype=acts.dtype)  # exp(-D(Irr_t) / 2 sigma^2)
    alive = torch.ones(len(free), dtype=torch.bool)
    while bool(alive.any()):
        weights = kernel[:, :, None] * cols[None]  # [i, j, G + 1]
        sums = torch.cat([torch.bmm(q, weights) for q in _kernel_chunks(cand, cached, sigma2, chunk)], 1)
        scores = mi_from_sums(sums.transpose(0, 1), labels).masked_fill(~alive, float("inf"))
        best, pos = scores.min(0)
        if float(best) >= alpha:
            break
        pos = int(pos)
        chosen.append(int(free[pos]))
        trace.append(float(best))
        own = cached[:, pos] if cached is not None else _kernels(cand[:, pos:pos + 1], sigma2)[:, 0]
        kernel = kernel * own
        alive[pos] = False
        if int(alive.sum()) < 0.75 * len(alive):  # drop the chosen candidates from the work
            free, cand = free[alive], cand[:, alive]
            cached = cached[:, alive] if cached is not None else None
            alive = torch.ones(len(free), dtype=torch.bool)
    return chosen, trace


def _kernels(acts: Tensor, sigma2: float) -> Tensor:
    """Per-neuron kernels exp(-D_n / 2 sigma^2) laid out [i, n, j]: activations [B, N] -> [B, N, B]."""
    return torch.exp((acts[:, :, None] - acts.t()[None]).pow(2) / (-2 * sigma2))


def _kernel_chunks(cand: Tensor, cached: Tensor | None, sigma2: float, chunk: int):
    """The free candidates' kernels [i, n, j], chunk by chunk of candidates."""
    if cached is not None:
        yield cached
        return
    for s in range(0, cand.shape[1], chunk):
        yield _kernels(cand[:, s:s + chunk], sigma2)
