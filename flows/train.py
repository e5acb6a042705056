"""The training flow: one managed training job, through all seven stages.

    python -m flows.train JOB.yaml        (YAML or JSON; a CreateTrainingJob body works too)

Exceptions become final statuses here and only here (STYLE.md rule 6).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from prefect import flow, runtime
from prefect.exceptions import TerminationSignal

from dockyard.errors import DockyardError, LeaseLost, SpotInterruption
from dockyard.fleet import Part
from dockyard.outcome import Ending, Outcome
from dockyard.record import JobRecord, describe
from dockyard.settings import Settings
from dockyard.spec import TrainingJobSpec
from dockyard.status import is_final
from infra import catalog, job_log
from infra.job_store import open_store
from infra.retry import is_transient
from tasks.finalize import finalize
from tasks.monitor import monitor
from tasks.peers import start_parts
from tasks.persist import persist
from tasks.provision import ProvisionPlan, provision
from tasks.pull_image import pull_image
from tasks.recover import (
    MaxWaitExceeded,
    StoppedWhilePending,
    hand_over,
    reattach,
    reclaim,
    restarts_used,
    wait_for_capacity,
)
from tasks.run import run
from tasks.stage_data import stage_data
from tasks.validate import let_go, read_job_file, still_held, validate
from tasks.warm_pool import take_warm_pool


def _failure(exc: BaseException) -> Outcome:
    if isinstance(exc, DockyardError):
        reason = f"{type(exc).__name__}: {exc}"
    else:
        reason = f"InternalServerError: {type(exc).__name__}: {exc}"
    return Outcome(
        ending=Ending.FAILED,
        failure_reason=reason[:1024],
        message=str(exc).splitlines()[0][:200] if str(exc) else "",
    )


def run_name(*keys: str, default: str) -> Callable[[], str]:
    """A flow_run_name function: the job's name from the `job` parameter's spec
    (the first of `keys` it has), or the spec file's name; the flow renames the
    run after the job once it has read a file."""

    def name() -> str:
        job = runtime.flow_run.parameters.get("job") or {}
        if isinstance(job, str):
            return os.path.basename(job)
        return str(next((job[k] for k in keys if job.get(k)), default))

    return name


def final_record(name: str, settings: Settings) -> JobRecord | None:
    """The job's record once it reached a final status (however its flow run ended), else None."""
    record = open_store(settings).find(name)
    return record if record is not None and is_final(record.status.secondary) else None


@dataclass(frozen=True)
class _AttemptResult:
    """How one attempt ended: a final outcome, or a reason to restart."""

    outcome: Outcome | None
    provisioned: ProvisionPlan | None
    restart_reason: str = ""
    interrupted: bool = False  # a spot interruption, not an infrastructure fault
    handed_to: str | None = None  # granted on another fleet host: its worker runs the job


def _attempt(
    spec: TrainingJobSpec,
    settings: Settings,
    may_restart: bool,
    attached: tuple[ProvisionPlan, dict[str, str]] | None = None,
) -> _AttemptResult:
    """One go at the job on fresh instances, from capacity to uploaded artifacts;
    or, with `attached`, the rest of one whose containers outlived their orchestrator."""
    provisioned: ProvisionPlan | None = None  # the instances on this machine
    containers: dict[str, str] | None = None
    parts: tuple[Part, ...] = ()  # the instances on other machines, one part per machine
    try:
        if attached is None:
            take_warm_pool(spec, settings)
            granted = wait_for_capacity(spec, settings)
            if granted is not None and granted != settings.fleet_host:
                return _AttemptResult(None, None, handed_to=granted)
            whole = provision(spec, settings)
            provisioned = whole.part(settings.fleet_host)
            if whole.peers:
                parts = start_parts(spec, whole, settings)
            stage_data(spec, provisioned, settings)
            image = pull_image(spec, settings)
            containers = run(spec, provisioned, image, settings)
        else:
            provisioned, containers = attached
        outcome = monitor(spec, provisioned, containers, settings, reattached=attached is not None, parts=parts)
        if outcome.ending is Ending.INTERRUPTED:
            return _AttemptResult(None, provisioned, outcome.message, interrupted=True)
    except SpotInterruption as exc:
        return _AttemptResult(None, provisioned, str(exc), interrupted=True)
    except MaxWaitExceeded as exc:
        return _AttemptResult(Outcome(ending=Ending.MAX_WAIT_TIME_EXCEEDED, message=str(exc)), provisioned)
    except LeaseLost:
        raise  # another orchestrator has the job now: nothing more to do here
    except (KeyboardInterrupt, TerminationSignal, StoppedWhilePending):
        job = "Training job" if spec.processing is None else "Processing job"
        outcome = Outcome(ending=Ending.STOPPED, message=f"{job} stopped before it ended")
    except Exception as exc:  # noqa: BLE001 - every failure becomes a final status or a restart here
        if may_restart and is_transient(exc):
            return _AttemptResult(None, provisioned, f"{type(exc).__name__}: {exc}")
        outcome = _failure(exc)
        job_log.append(settings.home, spec.training_job_name, f"error: {outcome.failure_reason}")
    if containers is not None and provisioned is not None:
        still_held(spec.training_job_name)
        # As SageMaker does, whatever the containers left is uploaded, however they ended.
        try:
            persist(spec, provisioned, settings, parts)
        except SpotInterruption as exc:
            if outcome.ending is Ending.COMPLETED:
                return _AttemptResult(None, provisioned, str(exc), interrupted=True)
            job_log.append(settings.home, spec.training_job_name, f"error: uploading artifacts was interrupted: {exc}")
        except Exception as exc:  # noqa: BLE001
            if outcome.ending is Ending.COMPLETED:
                outcome = _failure(exc)
            job_log.append(settings.home, spec.training_job_name, f"error: uploading artifacts failed: {exc}")
    return _AttemptResult(outcome, provisioned)


@flow(name="train", flow_run_name=run_name("training_job_name", "TrainingJobName", default="train"), log_prints=True)
def train(job: dict[str, Any] | str, spot_simulation: str | None = None) -> dict[str, Any]:
    """Run one training job to a final status; returns its DescribeTrainingJob record.

    `job` is the spec as a mapping (snake_case, or a CreateTrainingJob body), or
    the path of a YAML or JSON file holding one (as deployments pass it).
    `spot_simulation` sets the local spot market for this job (else
    DOCKYARD_SPOT_SIMULATION's; see dockyard/spot.py).
    Spot interruptions restart it from its checkpoints, within max_wait;
    infrastructure faults do, up to retry_strategy.maximum_retry_attempts.
    Raises JobSpecError, creating nothing, when the spec cannot run here.
    """
    settings = Settings.from_env(os.environ)
    if spot_simulation is not None:
        settings = settings.model_copy(update={"spot_simulation": spot_simulation})
    return describe(run_job(read_job_file(job) if isinstance(job, str) else job, settings))


def run_job(job: dict[str, Any], settings: Settings) -> JobRecord:
    """The stages, from validation to the final record, of the job `job` describes (a training
    job, or a processing job in its training-shaped form: dockyard.processing.as_job)."""
    open_store(settings)  # before MLflow's warm-up, which holds the migration lock a while on a new catalog
    catalog.warm_up(settings.catalog_uri())
    spec, resumed = validate(job, settings, str(runtime.flow_run.id) if runtime.flow_run.id else None)
    try:
        allowed = spec.retry_strategy.maximum_retry_attempts if spec.retry_strategy else 0
        restarts_left = allowed - restarts_used(open_store(settings).get(spec.training_job_name))
        attached = reattach(spec, settings) if resumed else None
        while True:
            result = _attempt(spec, settings, may_restart=restarts_left > 0, attached=attached)
            attached = None
            if result.handed_to is not None:
                return hand_over(spec, settings, result.handed_to)
            scratch = (
                result.provisioned.scratch_root
                if result.provisioned
                else str(settings.scratch_root() / spec.training_job_name)
            )
            if result.outcome is not None:
                break
            if not result.interrupted:
                restarts_left -= 1
            reclaim(spec, settings, scratch, result.restart_reason, result.interrupted)
        still_held(spec.training_job_name)
        return finalize(spec, result.outcome, settings, scratch)
    finally:
        let_go(spec.training_job_name)


if __name__ == "__main__":
    # `python -m flows.train` hands over to the command line, which imports this module.
    from cli.train import main

    sys.exit(main())
