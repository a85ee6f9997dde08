"""Entropy and mutual information of neuron activations: the Kolchinsky-Tracey pairwise-distance bound.

The B rows of a sample matrix Z (B x d) are read as the centres of a Gaussian mixture with isotropic
noise variance sigma^2 and equal weights. With D_ij = ||z_i - z_j||^2 the pairwise-distance (KL)
upper bound on the mixture entropy (Kolchinsky & Tracey, Entropy 2017) is

    H(Z) = d/2 - mean_i [ logsumexp_j(-D_ij / (2 sigma^2)) - log B - (d/2) log(2 pi sigma^2) ],

and for a discrete label y, MI(Z; y) = H(Z) - sum_c p(c) H(Z[y = c]), each conditional entropy
taken over the rows of class c (a class absent from the batch contributes 0). The d-dependent terms
cancel in the MI, which therefore depends on Z only through D. Writing P_ij = exp(-D_ij / 2 sigma^2),
S_i = sum_j P_ij and S_ic = sum_{j in c} P_ij, the MI of one label is

    MI = log B - mean_i log S_i + (1/B) sum_c sum_{i in c} log S_ic - (1/B) sum_c n_c log n_c,

so the class sums of every row come from one matmul with a class-membership matrix (plus a column
of ones for S_i). P_ii = 1, hence
every logarithm taken is of a number >= 1 and nothing underflows. A task's MI (PAM's convention) is
the sum of the MIs of its discrete labels (`task_labels`), not their joint MI. Units: nats.

PAM scores sets of neurons with this bound (`Estimator`) in one of two ways:

- ``raw`` (the authors' code): activations as they are, D summed over the set's neurons, sigma^2 = 0.1.
  On ReLU activations whose spread is much larger than sigma the kernel exp(-D / 2 sigma^2) is
  nearly the identity, and then the estimate is the label entropy whatever the labels are.
- ``calibrated`` (default): the layer's activations divided by one scale (`layer_scale`: the root
  mean variance of its varying neurons) and D divided by the layer's number of varying neurons, so
  the whole layer's distances are per-neuron averages (about 2 for independent samples) and sigma^2 =
  1 is the variance of a typical neuron: the kernel of the whole layer, and of every subset, is far
  from diagonal, and the kernel width is the same for every set of the layer, so adding a neuron to a
  set never hides information already in it.
- ``averaged``: the same scale, but D averaged over the set's own varying neurons (a width that grows
  with the set). Adding label-independent neurons then dilutes the set's distances, so a set can
  hold informative neurons and still score low; kept for comparison.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from mergeprune.tasks import Task


def pairwise_sq_dists(z: Tensor) -> Tensor:
    """Squared Euclidean distances between the rows of z: [..., B, d] -> [..., B, B]."""
    return torch.cdist(z, z, compute_mode="donot_use_mm_for_euclid_dist").pow(2)


def neuron_sq_dists(acts: Tensor) -> Tensor:
    """Per-neuron squared distances of activations [B, N] -> [N, B, B] (they add up over neurons)."""
    a = acts.t()
    return (a[:, :, None] - a[:, None, :]).pow(2)


def entropy_from_dists(d2: Tensor, dim: int, sigma2: float) -> Tensor:
    """Entropy upper bound (nats) of a d-dimensional sample from its squared distances [..., B, B]."""
    b = d2.shape[-1]
    lse = torch.logsumexp(-d2 / (2 * sigma2), dim=-1)
    return dim / 2 - (lse.mean(-1) - math.log(b) - dim / 2 * math.log(2 * math.pi * sigma2))


def entropy(z: Tensor, sigma2: float) -> Tensor:
    """Entropy upper bound (nats) of the rows of z [..., B, d] under isotropic noise sigma2."""
    return entropy_from_dists(pairwise_sq_dists(z), z.shape[-1], sigma2)


@dataclass(frozen=True)
class Labels:
    """Discrete labels of a batch as a class-membership matrix, ready for the vectorised MI."""

    membership: Tensor  # [B, G] 0/1: sample i belongs to (label, class) group g
    n_labels: int  # K discrete labels; their MIs are summed
    constant: float  # K log B - (1/B) sum_g n_g log n_g, the label-only part of the MI

    @property
    def entropy(self) -> float:
        """Summed plug-in entropy of the labels (nats): the largest MI the estimator can give."""
        return self.constant

    @staticmethod
    def from_tensor(labels: Tensor) -> Labels:
        """From integer labels [B] (one label) or [K, B] (K labels, each with its own classes)."""
        labels = labels.long()
        if labels.dim() == 1:
            labels = labels[None]
        cols = [labels[k] == c for k in range(len(labels)) for c in torch.unique(labels[k])]
        member = torch.stack(cols, dim=1).to(torch.get_default_dtype())
        b = labels.shape[1]
        n = member.double().sum(0)
        const = len(labels) * math.log(b) - float((n * n.log()).sum()) / b
        return Labels(member, len(labels), const)

    def columns(self, dtype: torch.dtype) -> Tensor:
        """[B, G + 1]: the membership matrix and a column of ones (row sums come with the class sums)."""
        m = self.membership.to(dtype)
        return torch.cat([m, torch.ones(len(m), 1, dtype=dtype)], dim=1)

    def to(self, dtype: torch.dtype) -> Labels:
        """The same labels with the membership matrix in another dtype."""
        return Labels(self.membership.to(dtype), self.n_labels, self.constant)


ESTIMATORS = ("calibrated", "averaged", "raw")


@dataclass(frozen=True)
class Estimator:
    """How a set of neurons is scored: the bound above with kernel exp(-w D) on prepared activations."""

    sigma2: float
    scaled: bool = False  # activations divided by one scale per layer (calibrated, averaged)
    per_set: bool = False  # D averaged over the set's varying neurons (averaged), else over the layer's

    @staticmethod
    def named(name: str, sigma2: float | None = None) -> Estimator:
        """An estimator by name; sigma2 defaults to 1.0 (calibrated, averaged) or 0.1 (raw)."""
        scaled = name != "raw"
        return Estimator(float(sigma2) if sigma2 is not None else (1.0 if scaled else 0.1), scaled,
                         name == "averaged")

    @property
    def name(self) -> str:
        """The estimator's config name."""
        return "raw" if not self.scaled else "averaged" if self.per_set else "calibrated"

    def width(self, size: int) -> float:
        """The factor w of the kernel exp(-w D) of a set with `size` varying neurons."""
        return 1.0 / (2 * self.sigma2 * (max(size, 1) if self.per_set else 1))

    def prepare(self, acts: Tensor) -> Tensor:
        """A layer's activations [B, N] as the estimator reads them.

        calibrated: divided by the layer's scale times sqrt(its number of varying neurons), so the
        distances of the whole layer are averaged over its neurons and those of any subset are smaller.
        """
        if not self.scaled:
            return acts
        live = max(int(varying(acts).sum()), 1)
        return acts / (layer_scale(acts) * (1.0 if self.per_set else live ** 0.5))

    def set_mi(self, acts: Tensor, labels: Labels) -> float:
        """MI (nats) of the set of all columns of prepared activations [B, n] with the labels."""
        size = int(varying(acts).sum())
        kernel = torch.exp(-self.width(size) * pairwise_sq_dists(acts))
        return float(mi_from_kernel(kernel, labels.to(acts.dtype)))

    def neuron_mis(self, acts: Tensor, labels: Labels) -> Tensor:
        """MI (nats) of every single column of prepared activations [B, n] with the labels."""
        return mi_from_kernel(torch.exp(-self.width(1) * neuron_sq_dists(acts)), labels.to(acts.dtype))


def varying(acts: Tensor) -> Tensor:
    """[N] bool: the neurons whose activation is not constant on the batch."""
    return acts.amax(0) != acts.amin(0)


def layer_scale(acts: Tensor) -> float:
    """One scale for a layer's activations [B, N]: the root mean variance of its varying neurons."""
    live = varying(acts)
    if not bool(live.any()):
        return 1.0
    return float(acts[:, live].double().var(0).mean().sqrt())


def task_labels(task: Task, target: Tensor) -> Labels:
    """A task's discrete labels from its targets: one binary label per attribute, else its class index.

    For categorical tasks a sample outside the listed classes (target IGNORE) forms a class of its own.
    """
    if task.kind == "attributes":
        return Labels.from_tensor((target > 0).long().t())
    return Labels.from_tensor(target.long())


def mi_from_sums(sums: Tensor, labels: Labels) -> Tensor:
    """Summed MI from kernel sums [..., B, G + 1]: per row, the sum over each class group, then the total."""
    b = sums.shape[-2]
    m = labels.membership.to(sums.dtype)
    within = (m * sums[..., :-1].clamp_min(1e-30).log()).sum((-1, -2)) / b
    return labels.constant - labels.n_labels * sums[..., -1].log().mean(-1) + within


def mi_from_kernel(p: Tensor, labels: Labels) -> Tensor:
    """Summed MI of the labels with a sample, from its kernel P = exp(-D / 2 sigma^2) [..., B, B]."""
    b = p.shape[-1]
    sums = (p.reshape(-1, b) @ labels.columns(p.dtype)).reshape(*p.shape[:-1], -1)
    return mi_from_sums(sums, labels)


def mi_from_dists(d2: Tensor, labels: Labels, sigma2: float) -> Tensor:
    """Summed MI (nats) of the labels with a sample given by its squared distances [..., B, B]."""
    return mi_from_kernel(torch.exp(-d2 / (2 * sigma2)), labels)


def mutual_information(z: Tensor, labels: Labels | Tensor, sigma2: float) -> Tensor:
    """MI (nats) of the rows of z [B, d] with discrete labels ([B], [K, B] or Labels), summed over labels."""
    if not isinstance(labels, Labels):
        labels = Labels.from_tensor(labels)
    return mi_from_dists(pairwise_sq_dists(z), labels, sigma2)
