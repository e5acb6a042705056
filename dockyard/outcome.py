"""How an attempt at a job ends: why its containers were stopped, and the outcome
the training flow turns into a final status (or a restart)."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict

from dockyard.status import SecondaryStatus


class StopKind(StrEnum):
    REQUESTED = "Requested"  # `dockyard jobs stop`, Ctrl-C, SIGTERM, Prefect cancellation, a tuning rule
    MAX_RUNTIME = "MaxRuntimeExceeded"  # stopping_condition.max_runtime_in_seconds
    MAX_WAIT = "MaxWaitTimeExceeded"  # stopping_condition.max_wait_time_in_seconds (spot)
    INTERRUPTED = "Interrupted"  # the spot market takes the capacity back
    PIPE_FAILED = "PipeFailed"  # a Pipe channel could not send an epoch whole


class HostExit(BaseModel):
    """How one instance's container ended."""

    model_config = ConfigDict(frozen=True)

    host: str  # algo-N
    exit_code: int
    oom_killed: bool = False
    failure_text: str | None = None  # /opt/ml/output/failure, when written
    volume_full_gb: int | None = None  # the size of its volume, when the host filled it
    last_lines: tuple[str, ...] = ()


class StopReason(BaseModel):
    """Why the containers were stopped before they ended on their own."""

    model_config = ConfigDict(frozen=True)

    kind: StopKind
    detail: str = ""

    def __str__(self) -> str:
        return self.detail or self.kind.value


class Ending(StrEnum):
    """How an attempt ended: a final secondary status, or an interruption to restart from."""

    COMPLETED = "Completed"
    FAILED = "Failed"
    STOPPED = "Stopped"
    MAX_RUNTIME_EXCEEDED = "MaxRuntimeExceeded"
    MAX_WAIT_TIME_EXCEEDED = "MaxWaitTimeExceeded"
    INTERRUPTED = "Interrupted"  # not final: the job restarts on new capacity

    @property
    def final_status(self) -> SecondaryStatus:
        """The secondary status this ending leaves the job in.

        Raises:
            ValueError: an interruption is not final.
        """
        if self is Ending.INTERRUPTED:
            raise ValueError("an interrupted attempt is restarted, not final")
        return SecondaryStatus(self.value)


class Outcome(BaseModel):
    """How the containers ended; the flow turns it into the final status."""

    model_config = ConfigDict(frozen=True)

    ending: Ending
    failure_reason: str | None = None
    message: str = ""
