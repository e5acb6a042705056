from datetime import UTC, datetime, timedelta

import pytest

from dockyard.errors import StatusTransitionError
from dockyard.status import (
    TRANSITIONS,
    JobStatus,
    PrimaryStatus,
    apply_transition,
    is_final,
    path_to_final,
)
from dockyard.status import (
    SecondaryStatus as S,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def walk(*steps: S) -> JobStatus:
    status = JobStatus()
    for i, step in enumerate(steps):
        status = apply_transition(status, step, f"to {step.value}", T0 + timedelta(seconds=i))
    return status


def test_a_successful_job_walks_sagemakers_sequence() -> None:
    status = walk(S.STARTING, S.DOWNLOADING, S.DOWNLOADING_TRAINING_IMAGE, S.TRAINING, S.UPLOADING, S.COMPLETED)
    assert status.primary is PrimaryStatus.COMPLETED
    assert [t.status for t in status.transitions][-1] is S.COMPLETED
    assert all(t.end_time is not None for t in status.transitions)
    assert status.transitions[0].end_time == status.transitions[1].start_time


def test_stopping_keeps_the_primary_status_stopping_until_final() -> None:
    status = walk(S.STARTING, S.DOWNLOADING, S.TRAINING, S.STOPPING, S.UPLOADING)
    assert status.primary is PrimaryStatus.STOPPING
    assert apply_transition(status, S.MAX_RUNTIME_EXCEEDED, "", T0).primary is PrimaryStatus.STOPPED


@pytest.mark.parametrize("final", [S.COMPLETED, S.FAILED, S.STOPPED, S.MAX_RUNTIME_EXCEEDED, S.MAX_WAIT_TIME_EXCEEDED])
def test_final_statuses_cannot_be_left(final: S) -> None:
    assert is_final(final)
    status = JobStatus(secondary=final)
    for target in S:
        with pytest.raises(StatusTransitionError, match="it is final"):
            apply_transition(status, target, "", T0)


def test_an_illegal_move_names_the_current_status() -> None:
    with pytest.raises(StatusTransitionError, match="from Starting to Completed"):
        walk(S.STARTING, S.COMPLETED)


def test_every_non_final_status_can_fail() -> None:
    for status in TRANSITIONS:
        if status is not None:
            assert S.FAILED in TRANSITIONS[status], status


def test_a_stop_before_training_passes_through_stopping() -> None:
    assert path_to_final(S.DOWNLOADING, S.STOPPED) == [S.STOPPING, S.STOPPED]
    assert path_to_final(S.UPLOADING, S.COMPLETED) == [S.COMPLETED]
    assert path_to_final(S.COMPLETED, S.COMPLETED) == []
