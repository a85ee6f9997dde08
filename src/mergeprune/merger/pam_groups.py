"""PAM's task sets: from the irrelevant sets to the group of every neuron, and the closure.

Rules that turn the groups into a valid grouped network (stated here because PAM's code leaves
the merged network to retraining):

- Groups as PAM's code forms them: a neuron relevant only to task s is exclusive to s, whichever
  teacher it comes from (its links to the other teacher's neurons start at zero and its teacher's
  readers lose it: compensation replaces it there by its mean); relevant to several tasks: shared
  (star) or that subset (subsets); relevant to none: dropped.
- Keep one: a teacher none of whose neurons of a layer would serve its own task keeps its neuron
  with the highest MI with that task for it, so every head stays connected to its teacher.
- Closure (``closure``): a grouped neuron may only read neurons whose task set contains its own, so
  a shared neuron of teacher k cannot read k's exclusive neurons. ``widen`` (default) propagates
  top-down: a neuron read by a same-teacher neuron through a live weight gets the reader's tasks
  too (the minimal sets above the MI groups that keep every teacher link). ``narrow`` propagates
  bottom-up the other way: a reader loses the tasks its same-teacher sources lack (the maximal
  sets below). ``cut`` keeps the MI groups and deletes the forbidden teacher links, as PAM's code
  does. With dense teachers ``widen`` leaves exclusive neurons mostly in the top regrouped layer
  (lower layers become shared) and ``narrow`` makes every layer above a teacher's first exclusive
  neuron exclusive to it; both keep each task's function exactly, ``cut`` keeps the most structure
  but changes the function until the network is retrained.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from mergeprune.merger.assemble import Source
from mergeprune.merger.mi import Estimator, Labels
from mergeprune.models.grouped import GroupedNet


def kept_sources(sets: Tensor, owner: Tensor) -> list[Source]:
    """(teacher, neuron index in that teacher) of the kept candidates, in candidate order."""
    out: list[Source] = []
    for k in torch.unique(owner).tolist():
        mine = sets[owner == k]
        out += [(int(k), int(i)) for i in (mine != 0).nonzero().flatten()]
    return out


# ----- groups ------------------------------------------------------------------------------------
def relevance(irrelevant: Sequence[Sequence[int]], n: int) -> Tensor:
    """Bitmask of the tasks each of n candidates is relevant to (not in that task's Irr set)."""
    bits = torch.zeros(n, dtype=torch.long)
    for t, irr in enumerate(irrelevant):
        rel = torch.ones(n, dtype=torch.bool)
        rel[torch.as_tensor(list(irr), dtype=torch.long)] = False
        bits |= rel.long() << t
    return bits


def _popcount(bits: Tensor, n_tasks: int) -> Tensor:
    """Number of tasks in each bitmask."""
    return sum(((bits >> t) & 1) for t in range(n_tasks))


def assign_groups(relevant: Tensor, n_tasks: int, grouping: str) -> Tensor:
    """Task set of each candidate from its relevant tasks (0 = dropped)."""
    if grouping == "subsets":
        return relevant.clone()
    full = (1 << n_tasks) - 1
    single = _popcount(relevant, n_tasks) == 1
    return torch.where(relevant == 0, 0, torch.where(single, relevant, full))


def keep_one(sets: Tensor, owner: Tensor, acts: Tensor, labels: Sequence[Labels], estimator: Estimator) -> None:
    """In place: a teacher none of whose neurons serves its own task keeps its most informative one for it.

    That neuron becomes exclusive to the task if it was dropped, else shared by all tasks.
    """
    full = (1 << len(labels)) - 1
    for k, lab in enumerate(labels):
        mine = (owner == k).nonzero().flatten()
        if len(mine) == 0 or ((sets[mine] >> k) & 1).any():
            continue
        best = mine[int(estimator.neuron_mis(acts[:, mine], lab).argmax())]
        sets[best] = 1 << k if int(sets[best]) == 0 else full


# ----- closure: make every teacher link legal in the grouped network ------------------------------
def teacher_links(net: GroupedNet, idx: int) -> Tensor:
    """[neurons of layer idx, neurons of layer idx-1] bool: a live weight joins them."""
    name = net.names[idx]
    w = net.layers[name].weight * net.mask(name)
    n_in = len(net.groups(net.names[idx - 1]))
    return (w.reshape(w.shape[0], n_in, -1) != 0).any(-1)


def _teacher_slice(owner: Tensor, k: int) -> Tensor:
    """Candidate positions of teacher k (its neurons in order)."""
    return (owner == k).nonzero().flatten()


def widen(sets: list[Tensor], owners: list[Tensor], links: list[list[Tensor]], star: bool = False) -> None:
    """In place, top-down: a kept neuron gets the tasks of every same-teacher kept neuron reading it.

    star: a set that becomes neither one task nor all tasks becomes all tasks (a neuron exclusive to
    another task than its teacher's, read by its teacher's neurons, can otherwise get two tasks).
    """
    n_tasks = len(links[0]) if links else 0
    full = (1 << n_tasks) - 1
    for idx in range(len(sets) - 1, 0, -1):
        for k in range(n_tasks):
            rd = _teacher_slice(owners[idx], k)
            sc = _teacher_slice(owners[idx - 1], k)
            readers, sources = sets[idx][rd], sets[idx - 1][sc]
            added = torch.zeros_like(sources)
            for t in range(n_tasks):
                has = ((readers >> t) & 1).bool()
                added |= (links[idx - 1][k] & has[:, None]).any(0).long() << t
            wider = sources | added
            if star:
                wider = torch.where(_popcount(wider, n_tasks) == 1, wider, full)
            sets[idx - 1][sc] = torch.where(sources != 0, wider, 0)


def narrow(sets: list[Tensor], owners: list[Tensor], links: list[list[Tensor]]) -> None:
    """In place, bottom-up: a kept neuron loses the tasks some same-teacher source serving that teacher lacks."""
    n_tasks = len(links[0]) if links else 0
    for idx in range(1, len(sets)):
        for k in range(n_tasks):
            rd = _teacher_slice(owners[idx], k)
            sc = _teacher_slice(owners[idx - 1], k)
            readers, sources = sets[idx][rd], sets[idx - 1][sc]
            lost = torch.zeros_like(readers)
            serves = ((sources >> k) & 1).bool()  # a source that left k's task is dropped for k
            for t in range(n_tasks):
                lacks = serves & (((sources >> t) & 1) == 0)
                lost |= (links[idx - 1][k] & lacks[None, :]).any(1).long() << t
            sets[idx][rd] = readers & ~lost
