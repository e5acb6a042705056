"""Checkpoints: checkpoint-epoch-N.pt in the host's own checkpoint folder, written
whole under a temporary name then renamed (the sync never uploads half a file),
the newest two kept. At start the hosts agree on one epoch to resume from.
"""

from __future__ import annotations

import os
import re
from typing import Any

import torch

from image_classification import distributed
from image_classification.config import Config, TrainingError
from image_classification.distributed import World

KEEP = 2
NAME = re.compile(r"^checkpoint-epoch-(\d+)\.pt$")


def saved(folder: str) -> list[tuple[int, str]]:
    """(epoch, path) of the folder's checkpoints, oldest first."""
    if not os.path.isdir(folder):
        return []
    found = [(int(m.group(1)), os.path.join(folder, name)) for name in os.listdir(folder) if (m := NAME.match(name))]
    return sorted(found)


def save(folder: str, epoch: int, state: dict[str, Any]) -> None:
    """Write epoch `epoch`'s checkpoint and drop all but the newest KEEP."""
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"checkpoint-epoch-{epoch}.pt")
    torch.save(state, f"{path}.tmp")
    os.replace(f"{path}.tmp", path)
    for _, old in saved(folder)[:-KEEP]:
        os.remove(old)


def _read(path: str) -> dict[str, Any] | None:
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)  # our own file: optimizer state too
        if not isinstance(state, dict) or "model" not in state:
            raise ValueError("no model state in it")
        return state
    except Exception as exc:  # noqa: BLE001 - any unreadable checkpoint is skipped the same way
        print(f"warning: checkpoint {path} is unreadable ({type(exc).__name__}: {str(exc)[:160]}); trying an older one",
              flush=True)
        return None


def resume(folder: str, world: World, cfg: Config) -> dict[str, Any] | None:
    """The checkpoint to continue from: each host's newest readable one, then the oldest epoch
    among the hosts (every host keeps two, so it has that one too); None to start afresh.

    Raises:
        TrainingError: the checkpoint is of another network than the job's.
    """
    found: tuple[int, dict[str, Any]] | None = None
    for epoch, path in reversed(saved(folder)):
        state = _read(path)
        if state is not None:
            found = (epoch, state)
            break
    agreed = distributed.all_min(world, found[0] if found else -1)
    if agreed < 0:
        return None
    state = found[1] if found and found[0] == agreed else None
    path = os.path.join(folder, f"checkpoint-epoch-{agreed}.pt")
    if state is None and os.path.exists(path):
        state = _read(path)
    if not distributed.all_true(world, state is not None):
        print(f"warning: not every host has a readable checkpoint-epoch-{agreed}.pt; starting from epoch 0",
              flush=True)
        return None
    assert state is not None
    if state.get("model_spec") != cfg.model_spec():
        raise TrainingError(f"checkpoint {path} is of another network ({state.get('model_spec')}) than the job's "
                            f"({cfg.model_spec()}): give the job a new checkpoint location or empty this one")
    print(f"resuming from checkpoint-epoch-{agreed}.pt (epoch {agreed})", flush=True)
    return state
