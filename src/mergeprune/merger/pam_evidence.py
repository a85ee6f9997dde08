"""What PAM's regrouping of one layer rests on, per task: the MI of the whole layer, the threshold,
the irrelevant set and its MI, and the null (the shuffled-label MI of a random set of the same size).

A threshold means something only if it lies well above the null: a label-independent set of the size
of Irr_t must score far below alpha * MI(layer), else Irr_t is chosen by the estimator's bias, not
by the labels.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from mergeprune.merger.mi import Estimator, Labels, varying


def null_mi(acts: Tensor, labels: Labels, estimator: Estimator, size: int, draws: int,
            gen: torch.Generator) -> float:
    """Mean MI of `size` random varying neurons with randomly permuted labels, over `draws` draws."""
    live = varying(acts).nonzero().flatten()
    size = min(size, len(live))
    if size == 0 or draws == 0:
        return 0.0
    total = 0.0
    for _ in range(draws):
        pick = live[torch.randperm(len(live), generator=gen)[:size]]
        order = torch.randperm(len(acts), generator=gen)
        shuffled = Labels(labels.membership[order], labels.n_labels, labels.constant)
        total += estimator.set_mi(acts[:, pick], shuffled)
    return total / draws


def task_evidence(acts: Tensor, irrelevant: Sequence[Sequence[int]], labels: Sequence[Labels],
                  whole: Sequence[float], thresholds: Sequence[float], estimator: Estimator, draws: int,
                  seed: int, tasks: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Per task: layer MI, threshold, |Irr_t| (all / varying), MI of Irr_t, and the null of its size."""
    gen = torch.Generator().manual_seed(seed)
    live = varying(acts)
    out = {}
    for t, irr, lab, mi, thr in zip(tasks, irrelevant, labels, whole, thresholds, strict=True):
        idx = torch.as_tensor(list(irr), dtype=torch.long)
        n_live = int(live[idx].sum()) if len(idx) else 0
        out[t] = {"layer_mi": round(mi, 4), "threshold": round(thr, 4), "irrelevant": len(idx),
                  "irrelevant_varying": n_live,
                  "irrelevant_mi": round(estimator.set_mi(acts[:, idx], lab), 4) if len(idx) else 0.0,
                  "null_mi": round(null_mi(acts, lab, estimator, n_live, draws, gen), 4)}
    return out
