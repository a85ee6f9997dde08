"""A pruning run's state after its last finished step, saved atomically so a killed run continues.

The checkpoint holds the network's tensors (weights, masks), the schedule's protected neurons and
its plain state (step counters, trajectory, step log) as JSON text; it is read back with
``torch.load(weights_only=True)``. One that cannot be read, or that does not fit the network, is
discarded with a warning and the run starts from its first step.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from mergeprune.errors import one_line
from mergeprune.models.grouped import GroupedNet

log = logging.getLogger(__name__)


class StepCheckpoint:
    """Save / load / clear the schedule's state in a folder (no folder: nothing is saved)."""

    def __init__(self, folder: Path | None):
        self.path = None if folder is None else Path(folder) / "schedule.pt"

    def save(self, net: GroupedNet, state: dict[str, Any], protected: dict[str, Tensor]) -> None:
        """Write the state after a finished step (atomic: a kill leaves the previous one)."""
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.tmp-{os.getpid()}")
        torch.save({"net": {k: v.detach().cpu() for k, v in net.state_dict().items()},
                    "protected": {k: v.clone() for k, v in protected.items()},
                    "state": json.dumps(state)}, tmp)
        os.replace(tmp, self.path)

    def load(self, net: GroupedNet) -> tuple[dict[str, Any], dict[str, Tensor]] | None:
        """The saved (state, protected), with the saved weights loaded into net; None if there is none."""
        if self.path is None or not self.path.exists():
            return None
        try:
            payload = torch.load(self.path, map_location="cpu", weights_only=True)
            problem = _problem(payload, net)
        except Exception as err:  # noqa: BLE001 - truncated or tampered: unusable either way
            problem = one_line(err)
        if problem is not None:
            log.warning("pruning checkpoint %s is unusable (%s): discarded, pruning restarts from "
                        "its first step", self.path, problem)
            self.path.unlink(missing_ok=True)
            return None
        net.load_state_dict(payload["net"])
        return json.loads(payload["state"]), dict(payload["protected"])

    def clear(self) -> None:
        """Remove the folder once the run has finished."""
        if self.path is not None and self.path.parent.exists():
            shutil.rmtree(self.path.parent, ignore_errors=True)


def _problem(payload: Any, net: GroupedNet) -> str | None:
    """What makes a loaded checkpoint unusable for this network, or None."""
    if not isinstance(payload, dict) or not {"net", "protected", "state"} <= set(payload):
        return "not a pruning checkpoint"
    mine, theirs = net.state_dict(), payload["net"]
    if set(mine) != set(theirs) or any(tuple(theirs[k].shape) != tuple(v.shape) for k, v in mine.items()):
        return "its weights do not fit this network"
    if set(payload["protected"]) != set(net.names[:-1]):
        return "its protected neurons do not fit this network"
    state = json.loads(payload["state"])
    if not isinstance(state, dict) or "tried" not in state:
        return "no schedule state"
    return None
