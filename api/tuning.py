"""SageMaker's hyperparameter tuning operations; Create hands the tuning job to the `tune` deployment."""

from __future__ import annotations

import contextlib
from typing import Any

from api.protocol import ApiError, validation
from api.training import NOT_FOUND, Context, list_params, page_token, submit, wire_problems
from dockyard.contract import job_arn
from dockyard.errors import DockyardError, JobSpecError
from dockyard.tuning_record import TuningRecord, TuningStatus
from dockyard.wire import to_pascal
from infra import prefect_api
from infra.job_store import JobFilter, now
from tasks.tuning import check_tuning_doc


def tuning_arn(name: str) -> str:
    return job_arn(name).replace(":training-job/", ":hyper-parameter-tuning-job/")


def _record(ctx: Context, name: str) -> TuningRecord:
    record = ctx.store.tuning(name)
    if record is None:
        raise validation(NOT_FOUND)
    return record


def create_tuning_job(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    name = params["HyperParameterTuningJobName"]
    if ctx.store.tuning(name) is not None:
        raise ApiError("ResourceInUse", f"Hyperparameter tuning job names must be unique; {name} exists already")
    try:
        spec = check_tuning_doc(params, ctx.settings)
    except JobSpecError as exc:
        raise validation(wire_problems(exc)) from None
    try:
        ctx.store.create_tuning(
            TuningRecord(spec=spec, status=TuningStatus.IN_PROGRESS, creation_time=now(), queued=True)
        )
    except DockyardError:
        raise ApiError(
            "ResourceInUse", f"Hyperparameter tuning job names must be unique; {name} exists already"
        ) from None
    tags = ["dockyard", "tuning-job", f"tuning-job:{name}", "sagemaker-api"]
    try:
        flow_run_id = submit("tune", ctx.settings.work_pool, {"job": spec.model_dump(mode="json")}, name, tags)
    except Exception as exc:  # noqa: BLE001 - the tuning job must not stay queued for a run that never comes
        reason = f"InternalServerError: the tuning job could not be handed to Prefect: {type(exc).__name__}: {exc}"
        failed = TuningRecord(spec=spec, status=TuningStatus.FAILED, creation_time=now(), failure_reason=reason)
        ctx.store.save_tuning(failed)
        raise ApiError("InternalFailure", reason[:500], 500) from None
    record = ctx.store.tuning(name)
    if record is not None and record.flow_run_id is None:
        ctx.store.save_tuning(record.model_copy(update={"flow_run_id": flow_run_id}))
    return {"HyperParameterTuningJobArn": tuning_arn(name)}


def _trial(record: TuningRecord, summary: dict[str, Any]) -> dict[str, Any]:
    """A trial's summary as SageMaker shapes it: the objective a structure, an ARN, a creation time."""
    objective = record.spec.hyper_parameter_tuning_job_config.hyper_parameter_tuning_job_objective
    value = summary.get("FinalHyperParameterTuningJobObjectiveMetric")
    wire = {**summary, "TrainingJobArn": job_arn(summary["TrainingJobName"])}
    wire["CreationTime"] = summary.get("TrainingStartTime") or record.creation_time
    wire["FinalHyperParameterTuningJobObjectiveMetric"] = (
        {"Type": objective.type.value, "MetricName": objective.metric_name, "Value": value}
        if value is not None
        else None
    )
    return wire


def _trials(ctx: Context, record: TuningRecord) -> list[dict[str, Any]]:
    """Every trial: those that ended, from the record, and those still running, from the store."""
    ended = {t.training_job_name: _trial(record, t.describe()) for t in record.trials}
    summaries = []
    for job in ctx.store.page(JobFilter(name_prefix=f"{record.name}-"), sort_by="Name", ascending=True):
        summary = ended.get(job.name) or {
            "TrainingJobName": job.name,
            "TrainingJobStatus": job.primary.value,
            "TunedHyperParameters": {},
        }
        summaries.append({**summary, "TrainingJobArn": job_arn(job.name), "CreationTime": job.creation_time})
    return summaries


def _counters(record: TuningRecord) -> dict[str, Any]:
    """The trials counted as SageMaker counts them: a failed trial is a NonRetryableError."""
    body = record.describe()
    jobs = {"Completed": 0, "InProgress": 0, "RetryableError": 0, "NonRetryableError": 0, "Stopped": 0}
    for status, count in body["TrainingJobStatusCounters"].items():
        key = {"Failed": "NonRetryableError", "Stopping": "InProgress"}.get(status, status)
        jobs[key] = jobs.get(key, 0) + count
    objectives = {"Pending": 0, **body["ObjectiveStatusCounters"]}
    return {"TrainingJobStatusCounters": jobs, "ObjectiveStatusCounters": objectives}


def describe_tuning_job(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    record = _record(ctx, params["HyperParameterTuningJobName"])
    body = record.describe()
    body["HyperParameterTuningJobArn"] = tuning_arn(record.name)
    body["HyperParameterTuningJobConfig"] = to_pascal(body["HyperParameterTuningJobConfig"])
    body["TrainingJobDefinition"] = to_pascal(body["TrainingJobDefinition"])
    body.update(_counters(record))
    body["LastModifiedTime"] = record.end_time or now()
    for key in ("BestTrainingJob", "OverallBestTrainingJob"):
        if key in body:
            body[key] = _trial(record, body[key])
    body.pop("TrainingJobSummaries", None)  # not DescribeHyperParameterTuningJob's: its trials have their own call
    return body


def list_tuning_jobs(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    where, sort_by, ascending, offset, limit, query = list_params(params)
    rows = ctx.store.tuning_page(where, sort_by, ascending, offset, limit + 1)
    body: dict[str, Any] = {
        "HyperParameterTuningJobSummaries": [
            {
                "HyperParameterTuningJobName": r.name,
                "HyperParameterTuningJobArn": tuning_arn(r.name),
                "HyperParameterTuningJobStatus": r.status.value,
                "Strategy": r.spec.hyper_parameter_tuning_job_config.strategy.value,
                "CreationTime": r.creation_time,
                "HyperParameterTuningEndTime": r.end_time,
                **_counters(r),
            }
            for r in rows[:limit]
        ]
    }
    if len(rows) > limit:
        body["NextToken"] = page_token(offset + limit, query)
    return body


def list_trials(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    record = _record(ctx, params["HyperParameterTuningJobName"])
    trials = _trials(ctx, record)
    if params.get("StatusEquals"):
        trials = [t for t in trials if t["TrainingJobStatus"] == params["StatusEquals"]]
    if params.get("SortBy") == "FinalObjectiveMetricValue":
        scored = [t for t in trials if t.get("FinalHyperParameterTuningJobObjectiveMetric") is not None]
        trials = sorted(scored, key=lambda t: t["FinalHyperParameterTuningJobObjectiveMetric"]["Value"])
    elif params.get("SortBy") == "Name":
        trials.sort(key=lambda t: t["TrainingJobName"])
    if params.get("SortOrder", "Descending") == "Descending":
        trials.reverse()
    _, _, _, offset, limit, query = list_params(params)
    body: dict[str, Any] = {"TrainingJobSummaries": trials[offset : offset + limit]}
    if offset + limit < len(trials):
        body["NextToken"] = page_token(offset + limit, query)
    return body


def stop_tuning_job(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    """Ask Prefect to cancel the tune flow run: its worker stops the run, which stops every trial gracefully."""
    record = _record(ctx, params["HyperParameterTuningJobName"])
    if record.status is not TuningStatus.IN_PROGRESS:
        raise validation(f"{record.name} is {record.status.value}; there is nothing to stop")
    if record.flow_run_id is None:
        raise ApiError("ThrottlingException", f"{record.name} is being handed to a worker — retry in a second", 400)
    with contextlib.suppress(Exception):
        if prefect_api.cancel_if_waiting(record.flow_run_id, "tuning job stopped"):
            ctx.store.save_tuning(record.model_copy(update={"status": TuningStatus.STOPPED, "end_time": now()}))
            return {}
    prefect_api.cancel(record.flow_run_id, "StopHyperParameterTuningJob")
    return {}


HANDLERS = {
    "CreateHyperParameterTuningJob": create_tuning_job,
    "DescribeHyperParameterTuningJob": describe_tuning_job,
    "ListHyperParameterTuningJobs": list_tuning_jobs,
    "ListTrainingJobsForHyperParameterTuningJob": list_trials,
    "StopHyperParameterTuningJob": stop_tuning_job,
}
