"""The instances flow: one machine's part of a training job whose instances span
machines of the fleet. The job's orchestrator (flows/train.py, on algo-1's
machine) submits it to this host's work queue; `dockyard worker` runs it.
"""

from __future__ import annotations

import os
from typing import Any

from prefect import flow, runtime

from dockyard.errors import DockyardError
from dockyard.settings import Settings
from dockyard.spec import TrainingJobSpec
from tasks.part import run_part


def _run_name() -> str:
    job = runtime.flow_run.parameters.get("job") or {}
    return f"{job.get('training_job_name', 'job')}-part"


@flow(name="instances", flow_run_name=_run_name, log_prints=True)
def instances(job: dict[str, Any], attempt: int) -> list[dict[str, Any]]:
    """Run the instances of attempt `attempt` of the training job `job` (its spec, as the
    orchestrator validated it) that are granted on this worker's host; returns how they ended."""
    settings = Settings.from_env(os.environ)
    if settings.fleet_host is None:
        raise DockyardError("the instances flow runs under `dockyard worker` only (DOCKYARD_FLEET_HOST is not set)")
    exits = run_part(TrainingJobSpec.model_validate(job), attempt, settings)
    return [e.model_dump(mode="json") for e in exits]
