"""The training flow: one managed training job, through all seven stages.

    python -m flows.train JOB.yaml        (YAML or JSON; a CreateTrainingJob body works too)

Exceptions become final statuses here and only here (STYLE.md rule 6).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Any

from prefect import flow, runtime
from prefect.exceptions import TerminationSignal

from dockyard.errors import DockyardError, SpotInterruption
from dockyard.settings import Settings
from flows.cli import read_job_file
from infra import catalog, records
from infra.retry import is_transient
from tasks.monitor import INTERRUPTED, MAX_WAIT, Outcome, monitor
from tasks.persist import finalize, persist, publish_to_cloudwatch, record_in_catalog
from tasks.provision import MaxWaitExceeded, provision, reclaim, wait_for_capacity
from tasks.pull_image import pull_image
from tasks.run import reattach, run
from tasks.stage_data import stage_data
from tasks.validate import validate


def _failure(exc: BaseException) -> Outcome:
    if isinstance(exc, DockyardError):
        reason = f"{type(exc).__name__}: {exc}"
    else:
        reason = f"InternalServerError: {type(exc).__name__}: {exc}"
    return Outcome(
        status="Failed", failure_reason=reason[:1024], message=str(exc).splitlines()[0][:200] if str(exc) else ""
    )


def _run_name() -> str:
    job = runtime.flow_run.parameters.get("job") or {}
    if isinstance(job, str):
        return os.path.basename(job)  # renamed after the job once its spec is read
    return str(job.get("training_job_name") or job.get("TrainingJobName") or "train")


@dataclass(frozen=True)
class _AttemptResult:
    """How one attempt ended: a final outcome, or a reason to restart."""

    outcome: Outcome | None
    provisioned: dict[str, Any] | None
    restart_reason: str = ""
    interrupted: bool = False  # a spot interruption, not an infrastructure fault


def _attempt(
    spec: dict[str, Any], settings: Settings, may_restart: bool, attached: dict[str, Any] | None = None
) -> _AttemptResult:
    """One go at the job on fresh instances, from capacity to uploaded artifacts;
    or, with `attached`, the rest of one whose containers outlived their orchestrator."""
    home, endpoint = str(settings.home), settings.s3_endpoint_url
    name = spec["training_job_name"]
    provisioned: dict[str, Any] | None = None
    containers: dict[str, str] | None = None
    try:
        if attached is None:
            wait_for_capacity(spec, home)
            provisioned = provision(spec, home)
            stage_data(spec, provisioned, home, endpoint, settings.staging_concurrency)
            image = pull_image(spec, home, settings.base_image)
            containers = run(spec, provisioned, image["image"], home)
        else:
            provisioned, containers = attached["provisioned"], attached["containers"]
        outcome = Outcome.model_validate(
            monitor(
                spec,
                provisioned,
                containers,
                home,
                settings.stop_grace_seconds,
                settings.monitor_lost_contact_seconds,
                endpoint,
                reattached=attached is not None,
            )
        )
        if outcome.status == INTERRUPTED:
            return _AttemptResult(None, provisioned, outcome.message, interrupted=True)
    except SpotInterruption as exc:
        return _AttemptResult(None, provisioned, str(exc), interrupted=True)
    except MaxWaitExceeded as exc:
        return _AttemptResult(Outcome(status=MAX_WAIT, message=str(exc)), provisioned)
    except (KeyboardInterrupt, TerminationSignal):
        outcome = Outcome(status="Stopped", message="Training job stopped before training ended")
    except Exception as exc:  # noqa: BLE001 - every failure becomes a final status or a restart here
        if may_restart and is_transient(exc):
            return _AttemptResult(None, provisioned, f"{type(exc).__name__}: {exc}")
        outcome = _failure(exc)
        records.append_log(home, name, f"error: {outcome.failure_reason}")
    if containers is not None and provisioned is not None:
        # As SageMaker does, whatever the containers left is uploaded, however they ended.
        try:
            persist(spec, provisioned, home, endpoint)
        except SpotInterruption as exc:
            if outcome.status == "Completed":
                return _AttemptResult(None, provisioned, str(exc), interrupted=True)
            records.append_log(home, name, f"error: uploading artifacts was interrupted: {exc}")
        except Exception as exc:  # noqa: BLE001
            if outcome.status == "Completed":
                outcome = _failure(exc)
            records.append_log(home, name, f"error: uploading artifacts failed: {exc}")
    return _AttemptResult(outcome, provisioned)


@flow(name="train", flow_run_name=_run_name, log_prints=True)
def train(job: dict[str, Any] | str) -> dict[str, Any]:
    """Run one training job to a final status; returns its DescribeTrainingJob record.

    `job` is the spec as a mapping (snake_case, or a CreateTrainingJob body), or
    the path of a YAML or JSON file holding one (as deployments pass it).
    Spot interruptions restart it from its checkpoints, within max_wait;
    infrastructure faults do, up to retry_strategy.maximum_retry_attempts.
    Raises JobSpecError, creating nothing, when the spec cannot run here.
    """
    settings = Settings.from_env(os.environ)
    home, endpoint = str(settings.home), settings.s3_endpoint_url
    if isinstance(job, str):
        job = read_job_file(job)
    catalog.warm_up(catalog.tracking_uri(home, dict(os.environ)))
    validated = validate(job, home, endpoint, str(runtime.flow_run.id) if runtime.flow_run.id else None)
    spec = validated["spec"]
    name = spec["training_job_name"]
    retry = spec.get("retry_strategy") or {}
    restarts_left = int(retry.get("maximum_retry_attempts", 0))
    attached = reattach(spec, home) if validated["resumed"] else None
    while True:
        result = _attempt(spec, settings, may_restart=restarts_left > 0, attached=attached)
        attached = None
        scratch = result.provisioned["scratch_root"] if result.provisioned else os.path.join(home, "scratch", name)
        if result.outcome is not None:
            break
        if not result.interrupted:
            restarts_left -= 1
        reclaim(spec, home, scratch, result.restart_reason, result.interrupted)
    outcome = result.outcome
    body = finalize(
        spec, outcome.status, outcome.message or outcome.status, outcome.failure_reason, home, endpoint, scratch
    )
    # The job has ended as it ended: a sink that fails leaves a warning, not another status.
    try:
        record_in_catalog(body, home)
    except Exception as exc:  # noqa: BLE001
        records.append_log(home, name, f"warning: the job is not in the MLflow catalog: {exc}")
    if settings.cloudwatch:
        try:
            publish_to_cloudwatch(name, home)
        except Exception as exc:  # noqa: BLE001
            records.append_log(home, name, f"warning: the job's log and metrics did not reach CloudWatch: {exc}")
    return body


def main(argv: list[str] | None = None) -> int:
    from flows.cli import run_training

    return run_training(argv if argv is not None else sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
