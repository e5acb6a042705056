"""Warm pools, as SageMaker's managed warm pools: a finished job's instances kept for
`resource_config.keep_alive_period_in_seconds`, for the next job that matches them.

What is kept is the instances' folders (their volumes and the File channels staged
on them) on the machine they ran on, the image already there, and, in a fleet, the
job's grants: the room stays reserved. A job that matches (the same instance type,
count and volume, image, input channels, network isolation and role) takes the pool over
instead of being placed: it skips the wait for room and the downloads the pool
already holds. One pool has one owner at a time; its life:

    Available  the job ended; kept until expires_at
    InUse      a matching job took it over and runs on it (that job's record)
    Reused     given to `reused_by` (the first job's record: its pool lives on there)
    Terminated the period ran out, or the job that used it kept none
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from dockyard.spec import JOB_NAME_PATTERN, TrainingJobSpec

MAX_KEEP_ALIVE_SECONDS = 3600  # SageMaker's limit


class PoolStatus(StrEnum):
    AVAILABLE = "Available"
    IN_USE = "InUse"
    REUSED = "Reused"
    TERMINATED = "Terminated"


class WarmPool(BaseModel):
    """A job's warm pool, as its record holds it."""

    model_config = ConfigDict(frozen=True)

    status: PoolStatus
    key: str  # what a job must match to take it over (match_key)
    host: str  # the fleet host the instances are on ("": a machine outside a fleet)
    # the instances' folder under that machine's scratch root: named after the job that made them
    folder: str = Field(pattern=JOB_NAME_PATTERN, max_length=63)
    retained_at: datetime | None = None  # when it became Available
    expires_at: datetime | None = None
    ended_at: datetime | None = None  # when it stopped being Available (taken over or terminated)
    reused_by: str | None = None

    def available(self, at: datetime) -> bool:
        return self.status is PoolStatus.AVAILABLE and self.expires_at is not None and at < self.expires_at

    def shown(self, at: datetime) -> dict[str, Any]:
        """SageMaker's WarmPoolStatus: an Available pool past its period reads Terminated
        (nothing can take it over) before the sweep that ends it has run."""
        status, end = self.status, self.ended_at
        if status is PoolStatus.AVAILABLE and not self.available(at):
            status, end = PoolStatus.TERMINATED, self.expires_at
        body: dict[str, Any] = {"Status": status.value}
        if self.retained_at is not None:
            until = end or at
            body["ResourceRetainedBillableTimeInSeconds"] = max(0, int((until - self.retained_at).total_seconds()))
        if self.reused_by:
            body["ReusedByJob"] = self.reused_by
        return body


def match_key(spec: TrainingJobSpec) -> str:
    """What two jobs must share for one to run on the other's warm pool."""
    algorithm = spec.algorithm_specification
    wanted = {
        "instances": spec.resource_config.model_dump(mode="json", exclude={"keep_alive_period_in_seconds"}),
        "image": algorithm.builtin_name or spec.image,
        "inputs": [c.model_dump(mode="json") for c in spec.input_data_config],
        "input_mode": algorithm.training_input_mode.value,
        "network_isolation": spec.enable_network_isolation,
        "role": spec.role,
        "kind": "processing" if spec.processing is not None else "training",
    }
    return hashlib.sha256(json.dumps(wanted, sort_keys=True).encode()).hexdigest()


KEPT_FAILURES = ("AlgorithmError", "ClientError")  # the job's own code or inputs: its instances are sound


def kept(spec: TrainingJobSpec, failure_reason: str | None, ran: bool) -> bool:
    """Whether a job's end keeps its instances as a warm pool: asked for, its instances made
    (`ran`), and completed, stopped, or failed in its own code or inputs; a failure of the
    platform (dockyard's own, an engine or storage fault) leaves nothing worth keeping."""
    if not spec.resource_config.keep_alive_period_in_seconds or not ran:
        return False
    return failure_reason is None or failure_reason.startswith(KEPT_FAILURES)


def retained(spec: TrainingJobSpec, host: str, folder: str, at: datetime, key: str | None = None) -> WarmPool:
    """The pool a job's end keeps."""
    period = timedelta(seconds=spec.resource_config.keep_alive_period_in_seconds or 0)
    return WarmPool(
        status=PoolStatus.AVAILABLE, key=key or match_key(spec), host=host, folder=folder,
        retained_at=at, expires_at=at + period,
    )  # fmt: skip
