"""The three kinds of error dockyard tells apart (STYLE.md rule 4).

- JobSpecError: the user's to fix; raised before anything is created, never
  retried, exit code 2.
- TransientInfraError: a hiccup of the infrastructure (throttling, 5xx, a
  lost connection); retried with backoff and jitter.

A failure of the user's code is no exception: a container's non-zero exit
becomes the job's outcome (FailureReason "AlgorithmError: ..."), never retried.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class FieldProblem:
    """One problem with one field of a spec: where, what, and how to fix it."""

    path: str
    problem: str
    fix: str = ""

    def __str__(self) -> str:
        text = f"{self.path}: {self.problem}" if self.path else self.problem
        return f"{text} — {self.fix}" if self.fix else text


class DockyardError(Exception):
    """Base of every error dockyard raises on purpose."""


class JobSpecError(DockyardError):
    """The job spec cannot run as written; one line per field problem."""

    def __init__(self, problems: Sequence[FieldProblem] | str) -> None:
        if isinstance(problems, str):
            problems = [FieldProblem("", problems)]
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class ClientError(DockyardError):
    """The job's own inputs or settings fail it once it runs (SageMaker's ClientError):
    final, never retried."""


class TransientInfraError(DockyardError):
    """An infrastructure hiccup worth retrying (throttling, 5xx, lost connection)."""


class InfraError(DockyardError):
    """An infrastructure failure that retrying will not fix (e.g. no such image)."""


class SpotInterruption(DockyardError):
    """Spot capacity is being taken back: the job must yield its instances."""

    def __init__(self, event: str, notice_seconds: float) -> None:
        self.event, self.notice_seconds = event, notice_seconds
        super().__init__(f"Spot capacity reclaimed ({event}; {notice_seconds:g} s notice)")


class StatusTransitionError(DockyardError):
    """A status change that the transition table does not allow."""


class StatusConflict(StatusTransitionError):
    """A compare-and-set status write found another status than it expected."""

    def __init__(self, name: str, expected: str, actual: str) -> None:
        self.actual = actual
        super().__init__(
            f"training job {name} is {actual}, not {expected} as this change expected: another process "
            "moved it first — describe the job to see where it is"
        )


class LeaseLost(DockyardError):
    """Another orchestrator took this process's job over (its lease expired unrenewed):
    this one must stop acting on the job."""


class LeaseHeld(DockyardError):
    """Another live process holds the lease on a resource (a job's orchestration)."""

    def __init__(self, resource: str, holder: str, heartbeat_age: float) -> None:
        self.resource, self.holder, self.heartbeat_age = resource, holder, heartbeat_age
        super().__init__(
            f"{resource} is held by {holder} (last heartbeat {heartbeat_age:.0f} s ago) — wait for it to finish"
        )
