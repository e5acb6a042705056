"""Warm pools' rules: what a job must share to take one over, which ends keep one, and the
WarmPoolStatus SageMaker's clients read."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from dockyard.spec import TrainingJobSpec
from dockyard.warm_pool import PoolStatus, kept, match_key, retained

T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def spec(**changes: Any) -> TrainingJobSpec:
    body: dict[str, Any] = {
        "training_job_name": "job-1",
        "algorithm_specification": {"training_image": "probe:1"},
        "resource_config": {"instance_type": "ml.m5.xlarge", "keep_alive_period_in_seconds": 600},
        "input_data_config": [{"channel_name": "train", "data_source": {"s3_data_source": {"s3_uri": "s3://b/t"}}}],
        "hyperparameters": {"eta": "0.1"},
        "output_data_config": {"s3_output_path": "s3://b/out"},
    }
    return TrainingJobSpec.model_validate(body | changes)


def test_jobs_match_on_instances_image_and_inputs_not_on_name_hyperparameters_or_period() -> None:
    first = match_key(spec())
    assert match_key(spec(training_job_name="job-2", hyperparameters={"eta": "0.3"})) == first
    assert (
        match_key(spec(resource_config={"instance_type": "ml.m5.xlarge", "keep_alive_period_in_seconds": 60})) == first
    )
    assert match_key(spec(resource_config={"instance_type": "ml.m5.2xlarge"})) != first
    assert match_key(spec(algorithm_specification={"training_image": "probe:2"})) != first
    other = [{"channel_name": "train", "data_source": {"s3_data_source": {"s3_uri": "s3://b/other"}}}]
    assert match_key(spec(input_data_config=other)) != first
    assert match_key(spec(enable_network_isolation=True)) != first
    from dockyard.processing import as_job
    from dockyard.spec import ProcessingJobSpec

    processing = ProcessingJobSpec.model_validate({"processing_job_name": "p", "app_specification": {"image_uri": "i"}})
    shaped = as_job(processing, "s3://b/out")
    assert match_key(shaped) != match_key(shaped.model_copy(update={"processing": None}))  # never a training job's pool


def test_a_completed_stopped_or_user_failed_job_keeps_its_pool_an_internal_failure_does_not() -> None:
    assert kept(spec(), None, ran=True)
    assert kept(spec(), "AlgorithmError: exit code 3", ran=True)
    assert kept(spec(), "ClientError: a Pipe channel broke", ran=True)
    assert not kept(spec(), "InternalServerError: the engine went away", ran=True)
    assert not kept(spec(), "TransientInfraError: storage did not answer", ran=True)
    assert not kept(spec(), None, ran=False)  # its instances were never made
    assert not kept(spec(resource_config={"instance_type": "ml.m5.xlarge"}), None, ran=True)  # none asked for


def test_a_pool_folder_is_a_job_name_never_a_path() -> None:
    for folder in ("", "..", "a/b", "../etc"):
        with pytest.raises(ValidationError):
            retained(spec(), "gpu-1", folder, T0)


def test_warm_pool_status_counts_retained_time_and_reads_terminated_past_its_period() -> None:
    pool = retained(spec(), "gpu-1", "job-1", T0)
    assert pool.expires_at == T0 + timedelta(seconds=600)
    assert pool.shown(T0 + timedelta(seconds=42)) == {
        "Status": "Available",
        "ResourceRetainedBillableTimeInSeconds": 42,
    }
    assert pool.shown(T0 + timedelta(hours=2)) == {"Status": "Terminated", "ResourceRetainedBillableTimeInSeconds": 600}
    given = pool.model_copy(
        update={"status": PoolStatus.REUSED, "ended_at": T0 + timedelta(seconds=9), "reused_by": "b"}
    )
    assert given.shown(T0 + timedelta(hours=1)) == {
        "Status": "Reused",
        "ResourceRetainedBillableTimeInSeconds": 9,
        "ReusedByJob": "b",
    }
