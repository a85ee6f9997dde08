"""Mergers: build one grouped multitask network from single-task teachers."""
