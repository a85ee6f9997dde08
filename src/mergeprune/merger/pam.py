"""merger=pam: Pruning-Aware Merging (He et al., KDD 2021), regrouping neurons by mutual information.

Algorithm (docs/methods.md#pam-algorithm, from the authors' code):

1. Take B = ``samples`` training images (``ctx.sample(samples, "train", seed)``) and run every
   teacher on them. A neuron's activation is its output after ReLU; a conv channel is reduced to
   its global spatial max, taken *before* pooling (max-pooling commutes with a global max, so the
   value is the same after it).
2. For each regrouped layer (``layers``; the others keep every neuron, shared by all tasks) the
   candidates are the neurons of all teachers. For each task t, PAM greedily grows Irr_t, a set of
   neurons jointly irrelevant to t: it adds the candidate whose addition gives the smallest
   MI(acts[:, Irr_t + [n]]; Y_t) (``mi.py``: Kolchinsky-Tracey bound, noise ``sigma2``, summed over
   the task's labels, read by ``estimator``: calibrated by default, the authors' raw bound on request)
   as long as that MI is below the threshold: ``alpha_conv`` or ``alpha_fc`` times the MI of the whole
   layer with the task (``threshold: layer``; ``entropy``: times the label entropy; ``nats``: alpha
   itself). ``alpha = 0`` disables regrouping (PAM's "baseline" configs). Squared distances add up
   over neurons, so the distances of Irr_t are kept and every candidate of a step is scored in one
   batched matmul (``pam_search.py``);
   neurons constant on the batch never change the MI and join Irr_t at once. The search runs on
   ``threads`` torch threads (default 1: its steps are many mid-sized operations, for which thread
   synchronisation costs more than it saves on a small shared CPU; 0 keeps torch's setting).
3. Relevant tasks R(n) = {t : n not in Irr_t}. R(n) empty: the neuron is dropped. ``grouping=star``
   (PAM as published): R(n) = {t} makes n exclusive to t, whichever teacher n comes from, anything
   else is shared by all tasks.
   ``grouping=subsets``: n gets exactly R(n) (one group per task subset, what the theory asks for
   when T > 2); every subsets-set is contained in the star-set of the same neuron.

The rules that turn these groups into a valid grouped network are in ``pam_groups.py`` (keep
one, closure) and ``pam_compensate.py`` (compensation); the greedy search of step 2 is
in ``pam_search.py``; the evidence reported per layer and task (layer MI, threshold, |Irr_t|, the
shuffled-label null) in ``pam_evidence.py``.

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
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from mergeprune.context import Built, Context, together
from mergeprune.errors import ConfigError, check_choice, check_int, check_number
from mergeprune.merger.assemble import Source, assemble
from mergeprune.merger.mi import ESTIMATORS, Estimator, Labels, task_labels, varying
from mergeprune.merger.pam_compensate import compensate_biases
from mergeprune.merger.pam_evidence import task_evidence
from mergeprune.merger.pam_groups import (
    assign_groups,
    keep_one,
    kept_sources,
    narrow,
    relevance,
    teacher_links,
    widen,
)
from mergeprune.merger.pam_search import greedy_irrelevant
from mergeprune.models.grouped import GroupedNet, subset_key

log = logging.getLogger(__name__)

GROUPINGS = ("star", "subsets")
CLOSURES = ("widen", "narrow", "cut")
THRESHOLDS = ("layer", "entropy", "nats")


@dataclass
class PamPlan:
    """PAM's decision before the network is assembled."""

    sets: list[Tensor]  # per hidden layer: the task set (bitmask) of every teacher neuron, 0 = dropped
    owners: list[Tensor]  # per hidden layer: the teacher of every candidate
    sources: list[list[Source]]  # per hidden layer: (teacher, neuron) of each kept neuron
    means: list[list[Tensor]]  # per teacher, per hidden layer: batch-mean output (bias compensation)
    layers: dict[str, dict[str, Any]]  # per layer: what the regrouping found
    started: float  # perf_counter when planning began (the report's seconds)


class PamMerger:
    """Regroup the teachers' neurons by their mutual information with each task."""

    parts = staticmethod(together)

    def __init__(self, name: str = "pam", *, alpha_conv: float, alpha_fc: float, estimator: str = "calibrated",
                 sigma2: float | None = None, threshold: str | None = None, samples: int = 128,
                 grouping: str = "star", layers: Sequence[str] | None = None, seed: int = 0,
                 closure: str = "widen", compensate: bool = True, null_draws: int = 8, chunk: int = 256,
                 threads: int = 1):
        self.name = name
        self.alpha_conv = check_number(alpha_conv, "merger.alpha_conv", low=0.0)
        self.alpha_fc = check_number(alpha_fc, "merger.alpha_fc", low=0.0)
        kind = check_choice(estimator, "merger.estimator", ESTIMATORS)
        if sigma2 is not None:
            check_number(sigma2, "merger.sigma2", low=0.0, strict=True)
        self.estimator = Estimator.named(kind, sigma2)
        default = "entropy" if kind == "raw" else "layer"
        self.threshold = check_choice(threshold or default, "merger.threshold", THRESHOLDS)
        self.samples = check_int(samples, "merger.samples", 2)
        self.null_draws = check_int(null_draws, "merger.null_draws", 0)
        self.chunk = check_int(chunk, "merger.chunk", 1)
        self.threads = check_int(threads, "merger.threads", 0)
        self.grouping = check_choice(grouping, "merger.grouping", GROUPINGS)
        self.closure = check_choice(closure, "merger.closure", CLOSURES)
        if layers is not None and (isinstance(layers, str) or not all(isinstance(x, str) for x in layers)):
            raise ConfigError(f"merger.layers={layers}; allowed: null (all hidden layers) or a list of layer names")
        self.layers = None if layers is None else list(layers)
        self.seed, self.compensate = int(seed), bool(compensate)

    @torch.no_grad()
    def __call__(self, teachers: Sequence[GroupedNet], ctx: Context) -> Built:
        """Merge single-task teachers (same architecture, one per task of ctx.data) into a grouped net."""
        return self.build(teachers, self.plan(teachers, ctx))

    @torch.no_grad()
    def plan(self, teachers: Sequence[GroupedNet], ctx: Context) -> PamPlan:
        """Which task set every teacher neuron gets (0: dropped), after the closure."""
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
            widen(sets, owners, links, self.grouping == "star")
        elif self.closure == "narrow":
            narrow(sets, owners, links)
        sources = [kept_sources(s, o) for s, o in zip(sets, owners, strict=True)]
        return PamPlan(sets, owners, sources, list(means), report, start)

    @torch.no_grad()
    def build(self, teachers: Sequence[GroupedNet], plan: PamPlan) -> Built:
        """The grouped network a plan describes (biases compensated if configured) and its report."""
        names = list(teachers[0].names[:-1])
        tasks = [t.tasks[0] for t in teachers]
        net = assemble(teachers, plan.sources, [s[s != 0].tolist() for s in plan.sets])
        if self.compensate:
            compensate_biases(net, teachers, plan.sources, plan.means)
        report = plan.layers
        for name, s, owner in zip(names, plan.sets, plan.owners, strict=True):
            report[name]["dropped"] = int((s == 0).sum())
            report[name]["groups"] = _counts(s, tasks)
            for k, t in enumerate(tasks):
                mine = report[name]["tasks"][t]
                mine["exclusive"] = int((s == 1 << k).sum())
                mine["own"] = int(((s == 1 << k) & (owner == k)).sum())
        summary = {"layers": report, "closure": self.closure, "grouping": self.grouping,
                   "estimator": self.estimator.name,
                   "sigma2": self.estimator.sigma2, "threshold": self.threshold,
                   "seconds": round(time.perf_counter() - plan.started, 3)}
        log.info(f"pam: after closure={self.closure}: " + "; ".join(
            f"{n} dropped {r['dropped']} groups {r['groups']}" for n, r in report.items()))
        return Built(net, summary)

    def _regroup_layer(self, name: str, pool: Tensor, owner: Tensor, labels: Sequence[Labels],
                       tasks: Sequence[str], alpha: float, regroup: bool) -> tuple[Tensor, dict[str, Any]]:
        """Task set of every candidate of one layer (0 = dropped) before the closure, and its evidence."""
        t0 = time.perf_counter()
        acts = self.estimator.prepare(pool)
        whole = [self.estimator.set_mi(acts, lab) for lab in labels]
        thresholds = [self._threshold(alpha, lab, mi, name, t) if regroup else 0.0
                      for lab, mi, t in zip(labels, whole, tasks, strict=True)]
        with _threads(self.threads):
            irr = [greedy_irrelevant(acts, lab, self.estimator, thr, self.chunk)[0]
                   for lab, thr in zip(labels, thresholds, strict=True)]
        sets = assign_groups(relevance(irr, pool.shape[1]), len(tasks), self.grouping)
        entry = {"candidates": int(pool.shape[1]), "constant": int((~varying(acts)).sum()), "regrouped": regroup,
                 "tasks": task_evidence(acts, irr, labels, whole, thresholds, self.estimator,
                                        self.null_draws, self.seed, tasks),
                 "mi_groups": _counts(sets, tasks)}
        keep_one(sets, owner, acts, labels, self.estimator)  # after mi_groups: not an MI decision
        entry["seconds"] = round(time.perf_counter() - t0, 4)
        log.info(f"pam: {name}: {entry['seconds']:.2f} s, {pool.shape[1]} candidates "
                 f"({entry['constant']} constant), groups by MI {entry['mi_groups']}; "
                 + "; ".join(f"{t}: layer MI {e['layer_mi']:.3f}, threshold {e['threshold']:.3f}, "
                             f"|Irr| {e['irrelevant']}, null {e['null_mi']:.3f}" for t, e in entry["tasks"].items()))
        return sets, entry

    def _threshold(self, alpha: float, labels: Labels, whole: float, layer: str, task: str) -> float:
        """The MI threshold (nats) of one task in one layer; warns when it makes every neuron irrelevant."""
        base = {"layer": whole, "entropy": labels.entropy, "nats": 1.0}[self.threshold]
        thr = alpha * base
        if thr >= whole > 0:
            log.warning(f"pam: {layer}: threshold {thr:.3f} nats >= the MI {whole:.3f} of the whole layer "
                        f"with task '{task}', so every neuron is irrelevant to it (lower merger.alpha_*)")
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


# ----- activations -------------------------------------------------------------------------------
def teacher_activations(net: GroupedNet, x: Tensor) -> tuple[list[Tensor], list[Tensor]]:
    """Per hidden layer: activations [B, width] (conv: global max after ReLU) and the batch-mean output."""
    net.eval()
    taps = net.hidden_outputs(x)
    acts = [relu.amax(dim=(2, 3)) if relu.dim() == 4 else relu for relu, _ in taps]
    return acts, [out.mean(0) for _, out in taps]
