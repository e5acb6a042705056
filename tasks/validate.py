"""Stage 1, validate: the spec's rules, the host's limits, the locations.

Nothing is created until this stage has passed; then the job record is.
"""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NONE
from pydantic import BaseModel, ConfigDict

from dockyard.errors import JobSpecError
from dockyard.loading import build_job
from dockyard.record import JobRecord
from dockyard.rules import HostFacts, check_job
from dockyard.spec import TrainingJobSpec
from dockyard.status import SecondaryStatus
from infra import docker_engine, records, spot, storage
from infra.retry import task_retry_options


class Location(BaseModel):
    model_config = ConfigDict(frozen=True)

    field: str
    uri: str


class ValidatePlan(BaseModel):
    model_config = ConfigDict(frozen=True)

    job: TrainingJobSpec
    readable: tuple[Location, ...]
    writable: tuple[Location, ...]


def plan_validate(spec: TrainingJobSpec, host: HostFacts) -> ValidatePlan:
    """Check the rules that need no I/O and list the locations to check.

    Raises:
        JobSpecError: the spec breaks a rule on this host.
    """
    check_job(spec, host)
    readable = tuple(
        Location(
            field=f"input_data_config[{i}].data_source.s3_data_source.s3_uri", uri=c.data_source.s3_data_source.s3_uri
        )
        for i, c in enumerate(spec.input_data_config)
    )
    writable = (Location(field="output_data_config.s3_output_path", uri=spec.output_data_config.s3_output_path),)
    return ValidatePlan(job=spec, readable=readable, writable=writable)


def check_spec(doc: dict[str, Any], home: str, endpoint_url: str | None) -> TrainingJobSpec:
    """Everything validate checks, without creating anything.

    Raises:
        JobSpecError: the spec cannot run here as written.
    """
    spec = build_job(doc, home=home, now=records.now())
    plan = plan_validate(spec, docker_engine.host_facts())
    for loc in plan.readable:
        storage.check_readable_prefix(loc.uri, loc.field, endpoint_url)
    for loc in plan.writable:
        storage.check_writable_location(loc.uri, loc.field, endpoint_url)
    if spec.enable_managed_spot_training:
        spot.market()  # a spot simulation that does not parse is the user's to fix
    if records.exists(home, spec.training_job_name):
        old = records.load(home, spec.training_job_name)
        raise JobSpecError(
            f"training_job_name: '{spec.training_job_name}' already names a job "
            f"({old.status.primary.value}, created {old.creation_time:%Y-%m-%d %H:%M}) — "
            "choose another name, or omit it to have one generated"
        )
    return spec


@task(name="validate", cache_policy=NONE, **task_retry_options())
def validate(doc: dict[str, Any], home: str, endpoint_url: str | None, flow_run_id: str | None) -> dict[str, Any]:
    """Validate the job document and create its record (Starting)."""
    spec = check_spec(doc, home, endpoint_url)
    now = records.now()
    ratio = spot.market().price_ratio if spec.enable_managed_spot_training else None
    record = JobRecord(spec=spec, creation_time=now, flow_run_id=flow_run_id, spot_price_ratio=ratio).moved(
        SecondaryStatus.STARTING, "Validated the job; preparing the instances", now
    )
    records.save(home, record)
    return spec.model_dump(mode="json")
