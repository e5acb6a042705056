"""SageMaker's training-job operations over the job store; Create hands the job to a Prefect worker.

The endpoint holds no job state of its own: a Create validates the request,
stores the job's record (Starting, queued) and creates a flow run of the
`train` deployment, which a worker on any machine sharing the store runs.
"""

from __future__ import annotations

import base64
import contextlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from api.auth import Principal
from api.protocol import ApiError, validation
from dockyard import secrets
from dockyard.contract import job_arn
from dockyard.errors import DockyardError, FieldProblem, JobSpecError, StatusConflict
from dockyard.loading import SAGEMAKER_IGNORED, build_job
from dockyard.record import JobRecord, describe
from dockyard.settings import Settings
from dockyard.spec import TrainingJobSpec
from dockyard.status import SecondaryStatus, is_final
from dockyard.wire import pascal
from infra import prefect_api
from infra import secrets as secret_blocks
from infra.job_store import JobFilter, JobStore, now
from infra.retry import with_backoff
from tasks.validate import check_runnable, create_record, resolve_algorithm, same_job
from tasks.warm_pool import set_keep_alive

NOT_FOUND = "Requested resource not found."  # what SageMaker answers for an unknown name


@dataclass(frozen=True)
class Context:
    """What every operation works on."""

    settings: Settings
    store: JobStore
    principal: Principal | None = None  # who calls, for the checks that need what a request leads to


def wire_problems(exc: JobSpecError) -> str:
    """A spec error's lines with their field paths in the request's PascalCase."""
    return "; ".join(
        str(FieldProblem(_FIELD.sub(lambda m: pascal(m.group()), p.path), p.problem, p.fix)) for p in exc.problems
    )


_FIELD = re.compile(r"[a-z][a-z0-9_]*")


def record_of(ctx: Context, name: str, kind: str = "training") -> JobRecord:
    """Raises: ApiError (ValidationException) when there is no such job of that kind, as SageMaker does."""
    record = ctx.store.find(name)
    if record is None or record.kind != kind:
        raise validation(NOT_FOUND)
    return record


def create_training_job(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    """Validate, store the job as queued, and submit its flow run."""

    def built(request: dict[str, Any]) -> TrainingJobSpec:
        return resolve_algorithm(build_job(request, home=str(ctx.settings.home), now=now()), ctx.settings)

    create_job(ctx, params, params["TrainingJobName"], built, "train")
    return {"TrainingJobArn": job_arn(params["TrainingJobName"])}


def create_job(
    ctx: Context, params: dict[str, Any], name: str, built: Callable[[dict[str, Any]], TrainingJobSpec], flow: str
) -> None:
    """Validate the request (`built` makes its spec), store the job as queued, submit a flow run of
    `flow`; a retried request of a job not yet ended is answered as the first was.

    Raises:
        ApiError: ValidationException, ResourceInUse, ThrottlingException, InternalFailure.
    """
    old = ctx.store.find(name)
    if old is not None:
        return _retried_create(params, old, built)
    try:
        spec, literals = secrets.as_references(built(params))
        check_runnable(spec, ctx.settings, literals)
    except JobSpecError as exc:
        raise validation(wire_problems(exc)) from None
    extras = {k: v for k, v in params.items() if k in SAGEMAKER_IGNORED}
    pool = ctx.settings.work_pool
    try:
        message = f"Queued for a worker of work pool '{pool}'"
        create_record(spec, ctx.settings, None, message, work_pool=pool, request_extras=extras)
    except DockyardError:  # created by a request beside this one
        old = ctx.store.find(name)
        if old is None:
            raise ApiError("ThrottlingException", "Rate exceeded: the name was being taken — retry") from None
        return _retried_create(params, old, built)
    kind = "processing-job" if spec.processing else "training-job"
    tags = ["dockyard", kind, f"job:{name}", "sagemaker-api"]
    try:
        secret_blocks.save(literals)  # the job's own name now: no other job's blocks to overwrite
        flow_run_id = submit(flow, pool, {"job": spec.model_dump(mode="json")}, name, tags)
    except Exception as exc:  # noqa: BLE001 - whatever kept Prefect from taking it, the job must not stay queued
        if ctx.store.discard_queued(name):  # not created after all: the client may send it again
            raise ApiError(
                "ThrottlingException",
                f"Rate exceeded: Prefect did not take the job ({type(exc).__name__}) — retry the request",
            ) from None
        raise ApiError("InternalFailure", f"the job could not be handed to Prefect: {exc}"[:500], 500) from None
    with contextlib.suppress(DockyardError):
        ctx.store.change(name, lambda r: r.model_copy(update={"flow_run_id": r.flow_run_id or flow_run_id}))
    return None


def _retried_create(params: dict[str, Any], old: JobRecord, built: Callable[[dict[str, Any]], TrainingJobSpec]) -> None:
    """A Create for a name that exists: the same request again while its job has not ended is a
    client's retry (after a timeout, say, of a Create that went through), answered as the first
    was once the first has handed the job to Prefect; anything else is the name taken.

    Raises:
        ApiError: ResourceInUse; ThrottlingException while the first request is still submitting.
    """
    name = old.name
    noun = "Processing" if old.kind == "processing" else "Training"
    arn = job_arn(name, "processing-job" if old.kind == "processing" else "training-job")
    taken = ApiError("ResourceInUse", f"{noun} job names must be unique; {arn} exists already")
    if is_final(old.status.secondary):
        raise taken
    try:
        again = built(params)
    except JobSpecError:
        raise taken from None
    if not same_job(old.spec, again):
        raise taken
    if old.queued and old.flow_run_id is None:  # the first may yet fail and take the job back
        raise ApiError("ThrottlingException", "Rate exceeded: the same request is still being submitted — retry it")


SUBMIT_PATIENCE = 8.0  # Prefect busy (a local server's SQLite under load answers 503): back off, then give up


def submit(
    flow_name: str, pool: str, parameters: dict[str, Any], name: str, tags: list[str], queue: str | None = None
) -> str:
    """A flow run of the flow's deployment on `pool` (its `queue`, else its default queue), retried
    with backoff while Prefect is busy.

    Raises:
        Exception: Prefect's own error once the patience is spent, or at once when retrying cannot help.
    """
    return with_backoff(
        lambda: prefect_api.submit(flow_name, pool, parameters, name, tags, queue), SUBMIT_PATIENCE, first_delay=0.5
    )


def describe_training_job(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    return describe_body(record_of(ctx, params["TrainingJobName"]))


def describe_body(record: JobRecord) -> dict[str, Any]:
    """The record as DescribeTrainingJob answers it (and Search, for each job it finds)."""
    body = describe(record)
    # Fields the SageMaker SDK reads without checking for them.
    body.setdefault("OutputDataConfig", {}).setdefault("KmsKeyId", "")
    body.setdefault("RoleArn", record.spec.role or "")
    for step in body.get("SecondaryStatusTransitions", []):
        step["StatusMessage"] = step.get("StatusMessage") or ""
    return body


def stop_training_job(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    return stop_job(ctx, record_of(ctx, params["TrainingJobName"]), "StopTrainingJob")


def stop_job(ctx: Context, record: JobRecord, operation: str) -> dict[str, Any]:
    """Stop a job: one still waiting for a worker ends Stopped at once; a running one is asked to stop."""
    name = record.name
    if record.queued and record.flow_run_id and prefect_api.cancel_if_waiting(record.flow_run_id, "job stopped"):
        with contextlib.suppress(StatusConflict):
            ctx.store.transition(name, SecondaryStatus.STARTING, SecondaryStatus.STOPPING, "Stop requested")
            ctx.store.transition(
                name, SecondaryStatus.STOPPING, SecondaryStatus.STOPPED, "Stopped before it started", queued=False
            )
            return {}
    try:
        ctx.store.request_stop(name, operation)
    except DockyardError as exc:
        raise validation(str(exc)) from None
    return {}


def update_training_job(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    """UpdateTrainingJob: ResourceConfig.KeepAlivePeriodInSeconds, the period of the job's warm pool
    (0 ends an Available one now); Profiler settings cannot be changed once a job runs here."""
    record = record_of(ctx, params["TrainingJobName"])
    others = sorted(k for k in params if k not in ("TrainingJobName", "ResourceConfig"))
    if others:
        raise validation(
            f"{', '.join(others)}: not updatable in dockyard — only ResourceConfig.KeepAlivePeriodInSeconds is"
        )
    seconds = (params.get("ResourceConfig") or {}).get("KeepAlivePeriodInSeconds")
    if seconds is None:
        raise validation("ResourceConfig.KeepAlivePeriodInSeconds is required: the warm pool's period, 0 to end it")
    try:
        set_keep_alive(ctx.store, ctx.settings, record.name, int(seconds))
    except DockyardError as exc:
        raise validation(str(exc)) from None
    return {"TrainingJobArn": job_arn(record.name)}


def page_token(offset: int, query: dict[str, Any]) -> str:
    """A NextToken: where the next page starts, bound to the listing's filters."""
    raw = json.dumps({"o": offset, "q": query}, sort_keys=True, default=str)
    return base64.urlsafe_b64encode(raw.encode()).decode()


def page_offset(token: str | None, query: dict[str, Any]) -> int:
    if not token:
        return 0
    try:
        decoded = json.loads(base64.urlsafe_b64decode(token.encode()))
        if decoded["q"] == json.loads(json.dumps(query, sort_keys=True, default=str)):
            return int(decoded["o"])
    except (ValueError, KeyError, TypeError):
        pass
    raise validation("NextToken is not one this listing returned — repeat the call with the same filters")


def list_params(params: dict[str, Any]) -> tuple[JobFilter, str, bool, int, int, dict[str, Any]]:
    """A List call's filter, sort key, order, offset and page size, and the query its tokens are bound to."""
    query = {k: v for k, v in params.items() if k not in ("NextToken", "MaxResults")}
    where = JobFilter(
        name_contains=params.get("NameContains"),
        status=params.get("StatusEquals"),
        created_after=_utc(params.get("CreationTimeAfter")),
        created_before=_utc(params.get("CreationTimeBefore")),
        modified_after=_utc(params.get("LastModifiedTimeAfter")),
        modified_before=_utc(params.get("LastModifiedTimeBefore")),
        warm_pool_status=params.get("WarmPoolStatusEquals"),
    )
    ascending = params.get("SortOrder", "Descending") == "Ascending"
    limit = int(params.get("MaxResults", 10))
    return (
        where,
        params.get("SortBy", "CreationTime"),
        ascending,
        page_offset(params.get("NextToken"), query),
        limit,
        query,
    )


def list_training_jobs(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    """One page of jobs, filtered and sorted in SQL; NextToken holds the offset and the filters."""
    where, sort_by, ascending, offset, limit, query = list_params(params)
    rows = ctx.store.page(where, sort_by=sort_by, ascending=ascending, offset=offset, limit=limit + 1)
    pooled = {p.job_name for p in ctx.store.pools(names=[r.name for r in rows[:limit]])}
    at = now()
    pools = {n: r.warm_pool.shown(at) for n, r in ctx.store.find_many(pooled).items() if r.warm_pool}
    body: dict[str, Any] = {
        "TrainingJobSummaries": [
            {
                "TrainingJobName": r.name,
                "TrainingJobArn": job_arn(r.name),
                "CreationTime": r.creation_time,
                "TrainingEndTime": r.training_end_time,
                "LastModifiedTime": r.last_modified_time,
                "TrainingJobStatus": r.primary.value,
                "SecondaryStatus": r.secondary.value,
            }
            | ({"WarmPoolStatus": pools[r.name]} if r.name in pools else {})
            for r in rows[:limit]
        ]
    }
    if len(rows) > limit:
        body["NextToken"] = page_token(offset + limit, query)
    return body


def _utc(moment: datetime | None) -> datetime | None:
    """A moment as the store keeps it: UTC."""
    return moment.astimezone(now().tzinfo) if moment is not None else None


HANDLERS = {
    "CreateTrainingJob": create_training_job,
    "DescribeTrainingJob": describe_training_job,
    "StopTrainingJob": stop_training_job,
    "UpdateTrainingJob": update_training_job,
    "ListTrainingJobs": list_training_jobs,
}
