"""SageMaker's processing-job operations: the same job store, flow runs and workers as
training jobs (a processing job is another kind of job for the same stages)."""

from __future__ import annotations

import dataclasses
from typing import Any

from api.access import check_named_model
from api.training import Context, create_job, list_params, page_token, record_of, stop_job
from dockyard.contract import job_arn
from dockyard.record import describe_processing
from dockyard.spec import TrainingJobSpec
from tasks.validate import processing_job

KIND = "processing"


def create_processing_job(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    """Validate, store the job as queued, and submit a flow run of the `process` deployment."""

    def built(request: dict[str, Any]) -> TrainingJobSpec:
        spec = processing_job(request, ctx.settings)
        model = spec.processing.analyzed_model if spec.processing else None
        if model is not None:  # read from the config in the caller's input: checked as if the request named it
            check_named_model(ctx.principal, model.model_data, model.training_job_name)
        return spec

    name = params["ProcessingJobName"]
    create_job(ctx, params, name, built, "process")
    return {"ProcessingJobArn": job_arn(name, "processing-job")}


def describe_processing_job(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    record = record_of(ctx, params["ProcessingJobName"], KIND)
    body = describe_processing(record)
    body.setdefault("RoleArn", record.spec.role or "")
    return body


def list_processing_jobs(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    """One page of processing jobs, filtered and sorted in SQL."""
    where, sort_by, ascending, offset, limit, query = list_params(params)
    where = dataclasses.replace(where, kind=KIND)
    rows = ctx.store.page(where, sort_by=sort_by, ascending=ascending, offset=offset, limit=limit + 1)
    body: dict[str, Any] = {
        "ProcessingJobSummaries": [
            {
                "ProcessingJobName": r.name,
                "ProcessingJobArn": job_arn(r.name, "processing-job"),
                "CreationTime": r.creation_time,
                "ProcessingEndTime": r.training_end_time,
                "LastModifiedTime": r.last_modified_time,
                "ProcessingJobStatus": r.primary.value,
            }
            for r in rows[:limit]
        ]
    }
    if len(rows) > limit:
        body["NextToken"] = page_token(offset + limit, query)
    return body


def stop_processing_job(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    return stop_job(ctx, record_of(ctx, params["ProcessingJobName"], KIND), "StopProcessingJob")


HANDLERS = {
    "CreateProcessingJob": create_processing_job,
    "DescribeProcessingJob": describe_processing_job,
    "ListProcessingJobs": list_processing_jobs,
    "StopProcessingJob": stop_processing_job,
}
