"""Training job statuses: the one transition table and the one writer.

Primary and secondary statuses follow SageMaker's DescribeTrainingJob. The
secondary status drives everything: the table below says which secondary
status may follow which, and the primary status is derived from it.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict

from dockyard.errors import StatusTransitionError


class PrimaryStatus(StrEnum):
    IN_PROGRESS = "InProgress"  # anything from Starting until a final status
    COMPLETED = "Completed"  # every host exited 0 and artifacts were uploaded
    FAILED = "Failed"  # a host exited non-zero, or the platform failed the job
    STOPPING = "Stopping"  # a stop was asked for; containers are being stopped
    STOPPED = "Stopped"  # stopped by request or by a stopping condition


class SecondaryStatus(StrEnum):
    STARTING = "Starting"  # validating and provisioning instances
    PENDING = "Pending"  # waiting for capacity (spot)
    DOWNLOADING = "Downloading"  # staging input data onto the instances
    DOWNLOADING_TRAINING_IMAGE = "DownloadingTrainingImage"  # pulling or building the image
    TRAINING = "Training"  # the containers run `train`
    INTERRUPTED = "Interrupted"  # spot capacity was taken back
    RESTARTING = "Restarting"  # restarting after an interruption or infra fault
    UPLOADING = "Uploading"  # uploading model and output artifacts
    STOPPING = "Stopping"  # SIGTERM sent, waiting for the grace period
    STOPPED = "Stopped"  # final: stopped on request
    MAX_RUNTIME_EXCEEDED = "MaxRuntimeExceeded"  # final: stopping_condition.max_runtime_in_seconds
    MAX_WAIT_TIME_EXCEEDED = "MaxWaitTimeExceeded"  # final: stopping_condition.max_wait_time_in_seconds
    COMPLETED = "Completed"  # final: success
    FAILED = "Failed"  # final: failure


S = SecondaryStatus

# The one table of allowed transitions. A status absent as a key is final.
TRANSITIONS: dict[SecondaryStatus | None, frozenset[SecondaryStatus]] = {
    None: frozenset({S.STARTING}),
    S.STARTING: frozenset(
        {
            S.RESTARTING,
            S.PENDING,
            S.DOWNLOADING,
            S.DOWNLOADING_TRAINING_IMAGE,
            S.TRAINING,
            S.INTERRUPTED,
            S.STOPPING,
            S.FAILED,
        }
    ),
    S.PENDING: frozenset({S.STARTING, S.RESTARTING, S.STOPPING, S.MAX_WAIT_TIME_EXCEEDED, S.FAILED}),
    S.DOWNLOADING: frozenset(
        {S.RESTARTING, S.DOWNLOADING_TRAINING_IMAGE, S.TRAINING, S.INTERRUPTED, S.STOPPING, S.FAILED}
    ),
    S.DOWNLOADING_TRAINING_IMAGE: frozenset(
        {S.RESTARTING, S.DOWNLOADING, S.TRAINING, S.INTERRUPTED, S.STOPPING, S.FAILED}
    ),
    S.TRAINING: frozenset({S.RESTARTING, S.UPLOADING, S.INTERRUPTED, S.STOPPING, S.FAILED}),
    S.INTERRUPTED: frozenset({S.PENDING, S.STARTING, S.RESTARTING, S.STOPPING, S.MAX_WAIT_TIME_EXCEEDED, S.FAILED}),
    S.RESTARTING: frozenset(
        {S.INTERRUPTED, S.STARTING, S.PENDING, S.DOWNLOADING, S.STOPPING, S.MAX_WAIT_TIME_EXCEEDED, S.FAILED}
    ),
    S.UPLOADING: frozenset(
        {
            S.COMPLETED,
            S.FAILED,
            S.STOPPED,
            S.MAX_RUNTIME_EXCEEDED,
            S.MAX_WAIT_TIME_EXCEEDED,
            S.INTERRUPTED,
            S.RESTARTING,
        }
    ),
    S.STOPPING: frozenset({S.UPLOADING, S.STOPPED, S.MAX_RUNTIME_EXCEEDED, S.MAX_WAIT_TIME_EXCEEDED, S.FAILED}),
}

FINAL_PRIMARY: dict[SecondaryStatus, PrimaryStatus] = {
    S.COMPLETED: PrimaryStatus.COMPLETED,
    S.FAILED: PrimaryStatus.FAILED,
    S.STOPPED: PrimaryStatus.STOPPED,
    S.MAX_RUNTIME_EXCEEDED: PrimaryStatus.STOPPED,
    S.MAX_WAIT_TIME_EXCEEDED: PrimaryStatus.STOPPED,
}


def is_final(status: SecondaryStatus | None) -> bool:
    """True when no transition may leave `status`."""
    return status is not None and status not in TRANSITIONS


class StatusTransition(BaseModel):
    """One entry of SecondaryStatusTransitions, as DescribeTrainingJob shows it."""

    model_config = ConfigDict(frozen=True)

    status: SecondaryStatus
    start_time: datetime
    end_time: datetime | None = None
    status_message: str = ""


class JobStatus(BaseModel):
    """The status part of a job record: current statuses plus their history."""

    model_config = ConfigDict(frozen=True)

    primary: PrimaryStatus = PrimaryStatus.IN_PROGRESS
    secondary: SecondaryStatus | None = None
    transitions: tuple[StatusTransition, ...] = ()


def apply_transition(current: JobStatus, to: SecondaryStatus, message: str, at: datetime) -> JobStatus:
    """Return `current` moved to secondary status `to`; the only status writer.

    Raises:
        StatusTransitionError: the table does not allow `current -> to`
            (including any move out of a final status).
    """
    allowed = TRANSITIONS.get(current.secondary, frozenset())
    if to not in allowed:
        where = current.secondary.value if current.secondary else "(new job)"
        raise StatusTransitionError(
            f"cannot move a job from {where} to {to.value}: "
            + (
                "it is final"
                if is_final(current.secondary)
                else f"allowed next: {', '.join(sorted(s.value for s in allowed))}"
            )
        )
    if to in FINAL_PRIMARY:
        primary = FINAL_PRIMARY[to]
    elif to is S.STOPPING or current.primary is PrimaryStatus.STOPPING:
        primary = PrimaryStatus.STOPPING
    else:
        primary = PrimaryStatus.IN_PROGRESS
    history = list(current.transitions)
    if history:
        history[-1] = history[-1].model_copy(update={"end_time": at})
    end = at if to in FINAL_PRIMARY else None
    history.append(StatusTransition(status=to, start_time=at, end_time=end, status_message=message))
    return JobStatus(primary=primary, secondary=to, transitions=tuple(history))


def path_to_final(current: SecondaryStatus | None, final: SecondaryStatus) -> list[SecondaryStatus]:
    """The statuses to pass through from `current` to the final status `final`.

    A stop that lands before training went through Stopping first; anything
    else goes straight there when the table allows it.
    """
    if current == final:
        return []
    if final in TRANSITIONS.get(current, frozenset()):
        return [final]
    if S.STOPPING in TRANSITIONS.get(current, frozenset()) and final in TRANSITIONS[S.STOPPING]:
        return [S.STOPPING, final]
    return [final]  # apply_transition will name the illegal move
