"""Pruners: masks on conv and linear weights, shared by every pruning method."""
