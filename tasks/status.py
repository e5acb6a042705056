"""Moving a job's status from the stages: a compare-and-set in the job store, and
a line in the job's log that says so."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from dockyard.errors import StatusConflict
from dockyard.record import JobRecord
from dockyard.settings import Settings
from dockyard.status import SecondaryStatus
from infra import job_log
from infra.job_store import open_store


def move(
    settings: Settings,
    name: str,
    expected: SecondaryStatus | Collection[SecondaryStatus],
    to: SecondaryStatus,
    message: str,
    **fields: Any,
) -> JobRecord:
    """Move job `name` from `expected` to `to` (see JobStore.transition), and log it.

    Raises:
        StatusConflict: the job is not in `expected`.
        StatusTransitionError: the table does not allow the move.
    """
    record = open_store(settings).transition(name, expected, to, message, **fields)
    job_log.append(settings.home, name, f"status: {record.status.primary.value}/{to.value} — {message}")
    return record


def move_once(
    settings: Settings,
    name: str,
    expected: SecondaryStatus | Collection[SecondaryStatus],
    to: SecondaryStatus,
    message: str,
) -> bool:
    """`move`, where finding the job in `to` already means a retry of the same step
    got there first; returns whether this call moved it."""
    try:
        move(settings, name, expected, to, message)
    except StatusConflict as conflict:
        if conflict.actual != to.value:
            raise
        return False
    return True
