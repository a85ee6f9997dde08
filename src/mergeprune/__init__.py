"""mergeprune: merge single-task networks, prune the multitask network, and cost every task subset."""

__version__ = "0.1.0"
