"""merger=pam: Pruning-Aware Merging (He et al., KDD 2021), regrouping neurons by mutual information.

Algorithm (research/pam.md section 3, from the authors' code):

1. Take B = ``samples`` training images (``ctx.sample(samples, "train", seed)``) and run every
   teacher on them. A neuron's activation is its output after ReLU; a conv channel is reduced to
   its global spatial max, taken *before* pooling (max-pooling commutes with a global max, so the
   value is the same after it).
2. For each regrouped layer (``layers``; the others keep every neuron, shared by all tasks) the
   candidates are the neurons of all teachers. For each task t, PAM greedily grows Irr_t, a set of
   neurons jointly irrelevant to t: it adds the candidate whose addition gives the smallest
   MI(acts[:, Irr_t + [n]]; Y_t) (``mi.py``: Kolchinsky-Tracey bound, noise ``sigma2``, summed over
   the task's labels) as long as that MI is below the threshold, ``alpha_conv`` or ``alpha_fc`` nats
   (with ``relative: true``, that fraction of the task's label entropy, the largest MI the
   estimator gives, so one setting fits tasks of any size). ``alpha = 0`` disables regrouping (PAM's
   "baseline" configs). Squared distances add up over neurons, so the kernel
   exp(-D(Irr_t) / 2 sigma^2) is kept and every candidate of a step is scored in one batched matmul;
   neurons constant on the batch never change the MI and join Irr_t at once. The search runs on
   ``threads`` torch threads (default 1: its steps are many mid-sized operations, for which thread
   synchronisation costs more than it saves on a small shared CPU; 0 keeps torch's setting).
3. Relevant tasks R(n) = {t : n not in Irr_t}. R(n) empty: the neuron is dropped. ``grouping=star``
   (PAM as published): R(n) = {t} makes n exclusive to t, anything else is shared by all tasks.
   ``grouping=subsets``: n gets exactly R(n) (one group per task subset, what the theory asks for
   when T > 2); every subsets-set is contained in the star-set of the same neuron.

Rules that turn the groups into a valid grouped network (stated here because PAM's code leaves
the merged network to retraining):

- Own task: a kept neuron of teacher k always gets k's task too (star: a set that is then neither
  {k} nor all tasks becomes all tasks, so the partition stays a star). Task k's head only reads
  teacher k's neurons at first (cross-teacher links start at zero), so it needs them all.
- Keep one: a teacher whose neurons of a layer would all be dropped keeps its neuron with the
  highest MI with its own task (set {k}), so every head stays connected.
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
- Compensation (``compensate``): a teacher link that the merged network lacks (source dropped, or
  cut) is replaced by its mean contribution over the B samples, added to the reader's bias.

What is lost before any training: with ``widen`` / ``narrow`` only the dropped neurons' variation
around their mean (they carry almost no information about any task, by construction); with ``cut``
also the cut links' variation. With ``alpha = 0`` nothing is dropped, every neuron is shared and
each task's outputs equal its teacher's (the concat merger).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from mergeprune.context import Context
from mergeprune.errors import ConfigError, check_choice, check_int, check_number
from mergeprune.merging.assemble import Source, assemble
from mergeprune.merging.mi import (
    Labels,
    mi_from_dists,
    mi_from_sums,
    neuron_sq_dists,
    task_labels,
)
from mergeprune.models.grouped import GroupedNet, subset_key

log = logging.getLogger(__name__)

GROUPINGS = ("star", "subsets")
CLOSURES = ("widen", "narrow", "cut")


class PamMerger:
    """Regroup the teachers' neurons by their mutual information with each task."""

    separate = False

    def __init__(self, name: str = "pam", *, alpha_conv: float, alpha_fc: float, sigma2: float = 0.1,
                 samples: int = 128, grouping: str = "star", layers: Sequence[str] | None = None,
                 seed: int = 0, closure: str = "widen", compensate: bool = True, relative: bool = False,
                 chunk: int = 256, threads: int = 1):
        self.name = name
        self.alpha_conv = check_number(alpha_conv, "merger.alpha_conv", low=0.0)
        self.alpha_fc = check_number(alpha_fc, "merger.alpha_fc", low=0.0)
        self.sigma2 = check_number(sigma2, "merger.sigma2", low=0.0, strict=True)
        self.samples = check_int(samples, "merger.samples", 2)
        self.chunk = check_int(chunk, "merger.chunk", 1)
        self.threads = check_int(threads, "merger.threads", 0)
        self.grouping = check_choice(grouping, "merger.grouping", GROUPINGS)
        self.closure = check_choice(closure, "merger.closure", CLOSURES)
        if layers is not None and (isinstance(layers, str) or not all(isinstance(x, str) for x in layers)):
            raise ConfigError(f"merger.layers={layers}; allowed: null (all hidden layers) or a list of layer names")
        self.layers = None if layers is None else list(layers)
        self.seed, self.compensate, self.relative = int(seed), bool(compensate), bool(relative)
        self.report: dict[str, Any] = {}
        self.sources: list[list[Source]] = []  # per hidden layer: (teacher, neuron) of each kept neuron

    @torch.no_grad()
    def __call__(self, teachers: Sequence[GroupedNet], ctx: Context) -> GroupedNet:
        """Merge single-task teachers (same architecture, one per task of ctx.data) into a grouped net."""
        start = time.perf_counter()
        names = list(teachers[0].names[:-1])
        regroup = self._regrouped(names)
        x, targets = ctx.sample(self.samples, "train", self.seed)
        labels = _teacher_labels(teachers, ctx.data.tasks, targets)
        acts, means = zip(*(teacher_activations(t, x) for t in teachers), strict=True)
        tasks = [t.tasks[0] for t in teachers]
        sets, owners, report = [], [], {}
        for idx, name in enumerate(names):
            pool = torch.cat([a[idx] for a in acts], dim=1)
            owner = torch.cat([torch.full((a[idx].shape[1],), k) for k, a in enumerate(acts)])
            alpha = self.alpha_conv if teachers[0].layer_specs[idx].kind == "conv" else self.alpha_fc
            layer_sets, report[name] = self._regroup_layer(name, pool, owner, labels, tasks, alpha,
                                                           name in regroup)
            sets.append(layer_sets)
            owners.append(owner)
        links = [[teacher_links(t, idx) for t in teachers] for idx in range(1, len(names))]
        if self.closure == "widen":
            widen(sets, owners, links)
        elif self.closure == "narrow":
            narrow(sets, owners, links)
        self.sources = [kept_sources(s, o) for s, o in zip(sets, owners, strict=True)]
        net = assemble(teachers, self.sources, [s[s != 0].tolist() for s in sets])
        if self.compensate:
            compensate_biases(net, teachers, self.sources, means)
        for name, s in zip(names, sets, strict=True):
            report[name]["dropped"] = int((s == 0).sum())
            report[name]["groups"] = _counts(s, tasks)
        self.report = {"layers": report, "closure": self.closure, "grouping": self.grouping,
                       "seconds": round(time.perf_counter() - start, 3)}
        log.info(f"pam: after closure={self.closure}: " + "; ".join(
            f"{n} dropped {r['dropped']} groups {r['groups']}" for n, r in report.items()))
        return net

    def _regroup_layer(self, name: str, pool: Tensor, owner: Tensor, labels: Sequence[Labels],
                       tasks: Sequence[str], alpha: float, regroup: bool) -> tuple[Tensor, dict[str, Any]]:
        """Task set of every candidate of one layer (0 = dropped) before the closure, and its report."""
        t0 = time.perf_counter()
        thresholds = [self._threshold(alpha, lab, name, t) if regroup else 0.0
                      for lab, t in zip(labels, tasks, strict=True)]
        with _threads(self.threads):
            irr = [greedy_irrelevant(pool, lab, self.sigma2, thr, self.chunk)[0]
                   for lab, thr in zip(labels, thresholds, strict=True)]
        raw = assign_groups(relevance(irr, pool.shape[1]), len(tasks), self.grouping)
        sets = own_task_sets(raw, owner, len(tasks), self.grouping)
        keep_one(sets, owner, pool, labels, self.sigma2)
        seconds = time.perf_counter() - t0
        entry = {"candidates": int(pool.shape[1]), "regrouped": regroup,
                 "thresholds": {t: round(v, 4) for t, v in zip(tasks, thresholds, strict=True)},
                 "irrelevant": {t: len(i) for t, i in zip(tasks, irr, strict=True)},
                 "mi_groups": _counts(raw, tasks), "seconds": round(seconds, 4)}
        log.info(f"pam: {name}: {seconds:.2f} s, {pool.shape[1]} candidates, irrelevant {entry['irrelevant']}, "
              f"groups by MI {entry['mi_groups']}")
        return sets, entry

    def _threshold(self, alpha: float, labels: Labels, layer: str, task: str) -> float:
        """The MI threshold (nats) of one task in one layer; warns when it makes every neuron irrelevant."""
        thr = alpha * labels.entropy if self.relative else alpha
        if thr >= labels.entropy > 0:
            log.warning(f"pam: {layer}: threshold {thr:.3f} nats >= the label entropy {labels.entropy:.3f} "
                  f"of task '{task}', so every neuron is irrelevant to it (lower merger.alpha_*)")
        return thr

    def _regrouped(self, names: list[str]) -> set[str]:
        """The hidden layers to regroup (all by default), checked against the model."""
        if self.layers is None:
            return set(names)
        bad = [n for n in self.layers if n not in names]
        if bad:
            raise ConfigError(f"merger.layers={self.layers}: unknown {bad}; allowed: any of {names}")
        return set(self.layers)


@contextmanager
def _threads(n: int) -> Iterator[None]:
    """Run with n torch threads (0: leave the setting alone), restoring the previous count."""
    before = torch.get_num_threads()
    if n > 0:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _teacher_labels(teachers: Sequence[GroupedNet], tasks: Sequence[Any],
                    targets: Sequence[Tensor]) -> list[Labels]:
    """Each teacher's task labels on the sampled batch."""
    by_name = {t.name: (t, y) for t, y in zip(tasks, targets, strict=True)}
    out = []
    for teacher in teachers:
        if len(teacher.tasks) != 1 or teacher.tasks[0] not in by_name:
            raise ValueError(f"pam merges single-task teachers of the job's tasks, got {teacher.tasks}")
        out.append(task_labels(*by_name[teacher.tasks[0]]))
    return out


def _counts(sets: Tensor, tasks: Sequence[str]) -> dict[str, int]:
    """Neurons per task set (dropped ones not counted), keyed by subset name."""
    bits, counts = torch.unique(sets[sets != 0], return_counts=True)
    return {subset_key(tasks, int(b)): int(c) for b, c in zip(bits, counts, strict=True)}


def kept_sources(sets: Tensor, owner: Tensor) -> list[Source]:
    """(teacher, neuron index in that teacher) of the kept candidates, in candidate order."""
    out: list[Source] = []
    for k in torch.unique(owner).tolist():
        mine = sets[owner == k]
        out += [(int(k), int(i)) for i in (mine != 0).nonzero().flatten()]
    return out


# ----- activations -------------------------------------------------------------------------------
def teacher_activations(net: GroupedNet, x: Tensor) -> tuple[list[Tensor], list[Tensor]]:
    """Per hidden layer: activations [B, width] (conv: global max after ReLU) and the batch-mean output."""
    net.eval()
    acts, means = [], []
    h = x
    for sp, name in zip(net.layer_specs[:-1], net.names[:-1], strict=True):
        layer = net.layers[name]
        w = layer.weight * net.mask(name)
        h = F.relu(F.conv2d(h, w, layer.bias, padding=sp.padding) if sp.kind == "conv"
                   else F.linear(h.flatten(1), w, layer.bias))
        acts.append(h.amax(dim=(2, 3)) if h.dim() == 4 else h)
        if sp.kind == "conv" and sp.pool > 1:
            h = F.max_pool2d(h, sp.pool)
        means.append(h.mean(0))
    return acts, means


# ----- the greedy search for irrelevant neurons --------------------------------------------------
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


def own_task_sets(groups: Tensor, owner: Tensor, n_tasks: int, grouping: str) -> Tensor:
    """Add each kept neuron's own teacher's task to its set (star: keep the partition a star)."""
    own = 1 << owner
    sets = torch.where(groups == 0, 0, groups | own)
    if grouping == "star":
        full = (1 << n_tasks) - 1
        sets = torch.where((sets != 0) & (sets != own), full, sets)
    return sets


def keep_one(sets: Tensor, owner: Tensor, acts: Tensor, labels: Sequence[Labels], sigma2: float) -> None:
    """In place: a teacher with every neuron dropped keeps its most informative one, exclusive to it."""
    for k, lab in enumerate(labels):
        mine = (owner == k).nonzero().flatten()
        if len(mine) == 0 or (sets[mine] != 0).any():
            continue
        mi = mi_from_dists(neuron_sq_dists(acts[:, mine]), lab.to(acts.dtype), sigma2)
        sets[mine[int(mi.argmax())]] = 1 << k


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


def widen(sets: list[Tensor], owners: list[Tensor], links: list[list[Tensor]]) -> None:
    """In place, top-down: a kept neuron gets the tasks of every same-teacher kept neuron reading it."""
    n_tasks = len(links[0]) if links else 0
    for idx in range(len(sets) - 1, 0, -1):
        for k in range(n_tasks):
            rd = _teacher_slice(owners[idx], k)
            sc = _teacher_slice(owners[idx - 1], k)
            readers, sources = sets[idx][rd], sets[idx - 1][sc]
            added = torch.zeros_like(sources)
            for t in range(n_tasks):
                has = ((readers >> t) & 1).bool()
                added |= (links[idx - 1][k] & has[:, None]).any(0).long() << t
            sets[idx - 1][sc] = torch.where(sources != 0, sources | added, 0)


def narrow(sets: list[Tensor], owners: list[Tensor], links: list[list[Tensor]]) -> None:
    """In place, bottom-up: a kept neuron loses the tasks some same-teacher kept source lacks."""
    n_tasks = len(links[0]) if links else 0
    for idx in range(1, len(sets)):
        for k in range(n_tasks):
            rd = _teacher_slice(owners[idx], k)
            sc = _teacher_slice(owners[idx - 1], k)
            readers, sources = sets[idx][rd], sets[idx - 1][sc]
            lost = torch.zeros_like(readers)
            for t in range(n_tasks):
                lacks = (sources != 0) & (((sources >> t) & 1) == 0)
                lost |= (links[idx - 1][k] & lacks[None, :]).any(1).long() << t
            sets[idx][rd] = readers & ~lost


# ----- compensation ------------------------------------------------------------------------------
def mean_contributions(net: GroupedNet, idx: int, mean_in: Tensor) -> Tensor:
    """[neurons, input channels]: each input channel's mean contribution to each neuron of layer idx."""
    sp, layer = net.layer_specs[idx], net.layers[net.names[idx]]
    w = layer.weight * net.mask(net.names[idx])
    if sp.kind == "conv":
        n_out, n_in = w.shape[:2]
        per = F.conv2d(mean_in[None], w.transpose(0, 1).reshape(n_in * n_out, 1, *w.shape[2:]),
                       padding=sp.padding, groups=n_in)
        return per.reshape(n_in, n_out, -1).mean(-1).t()
    n_in = mean_in.shape[0]
    return (w.reshape(w.shape[0], n_in, -1) * mean_in.reshape(1, n_in, -1)).sum(-1)


def compensate_biases(net: GroupedNet, teachers: Sequence[GroupedNet], sources: Sequence[Sequence[Source]],
                      means: Sequence[Sequence[Tensor]]) -> None:
    """In place: add to each neuron's bias the mean contribution of the teacher inputs it lost."""
    head_src = [(k, o) for k, t in enumerate(teachers) for o in range(t.n_outputs[t.tasks[0]])]
    all_src = [list(s) for s in sources] + [head_src]
    for idx in range(1, len(net.names)):
        name = net.names[idx]
        conn, prev = net.connectivity(idx), all_src[idx - 1]  # merged [rows, previous-layer rows]
        for k, teacher in enumerate(teachers):
            rows = torch.as_tensor([r for r, (o, _) in enumerate(all_src[idx]) if o == k], dtype=torch.long)
            cols = torch.as_tensor([c for c, (o, _) in enumerate(prev) if o == k], dtype=torch.long)
            if len(rows) == 0:
                continue
            contrib = mean_contributions(teacher, idx, means[k][idx - 1])  # [teacher rows, teacher cols]
            t_rows = torch.as_tensor([all_src[idx][r][1] for r in rows.tolist()], dtype=torch.long)
            missing = torch.ones(len(rows), contrib.shape[1], dtype=torch.bool)
            if len(cols):
                t_cols = torch.as_tensor([prev[c][1] for c in cols.tolist()], dtype=torch.long)
                missing[:, t_cols] = ~conn[rows][:, cols]
            net.layers[name].bias[rows] += (contrib[t_rows] * missing).sum(1)
    net.apply_masks()
