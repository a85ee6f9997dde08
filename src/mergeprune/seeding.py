"""Random state that depends only on what a stage's cache key says (see docs/reliability.md).

Every stage reseeds torch, numpy and Python from the job seed and its own cache key before it
builds anything, so a cached artifact is a function of its key alone, whatever ran before it in the
process. Resume checkpoints carry the whole random state (`rng_state`) so a resumed run continues
exactly where the killed one stopped.
"""

from __future__ import annotations

import hashlib
import random
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch


def stage_seed(seed: int, key: str) -> int:
    """A 31-bit seed derived from the job seed and one stage's cache key."""
    digest = hashlib.sha256(f"{int(seed)}:{key}".encode()).hexdigest()
    return int(digest[:8], 16) & 0x7FFFFFFF


def seed_all(seed: int) -> None:
    """Seed torch, numpy and Python (and Lightning's PL_GLOBAL_SEED, used by DDP samplers)."""
    pl.seed_everything(int(seed), verbose=False)


def draw_seed() -> int:
    """A 31-bit seed drawn from torch's global generator (reproducible once the stage is seeded)."""
    return int(torch.randint(0, 0x7FFFFFFF, (1,)).item())


def rng_state() -> dict[str, Any]:
    """The torch, numpy and Python random states as tensors and plain data (weights_only-safe)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {"torch": torch.get_rng_state(),
            "numpy": {"name": str(name), "keys": torch.as_tensor(keys.astype(np.int64)),
                      "pos": int(pos), "has_gauss": int(has_gauss), "cached": float(cached)},
            "python": random.getstate()}


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what rng_state() returned."""
    torch.set_rng_state(state["torch"])
    npy = state["numpy"]
    np.random.set_state((npy["name"], npy["keys"].numpy().astype(np.uint32), npy["pos"],
                         npy["has_gauss"], npy["cached"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
