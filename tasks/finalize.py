"""After the last attempt: the finished job published to the MLflow catalog (a
model version, when the spec names a model package group) and, when
configured, to CloudWatch; then the final status the flow decided, job.json
beside the artifacts, and the instances torn down."""

from __future__ import annotations

import json
import logging
import os
from typing import Any

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NONE

from dockyard import profiling
from dockyard.charts import curves, metric_digest
from dockyard.outcome import Outcome
from dockyard.record import JobRecord, MetricValue, describe, describe_processing
from dockyard.settings import Settings
from dockyard.spec import TrainingJobSpec
from dockyard.status import PrimaryStatus, path_to_final
from dockyard.warm_pool import PoolStatus, WarmPool
from infra import catalog, cloudwatch, job_log, storage
from infra.job_store import now, open_store, redacted
from infra.retry import task_retry_options
from tasks.persist import PARTS_FOLDER, output_prefix
from tasks.profiler import write_report
from tasks.provision import give_back, keep_instances, remove_instances
from tasks.status import move
from tasks.warm_pool import keep_or_end


def final_metrics(values: list[MetricValue]) -> tuple[MetricValue, ...]:
    """The last value of each metric, as FinalMetricDataList reports it."""
    last: dict[str, MetricValue] = {}
    for value in sorted(values, key=lambda v: v.timestamp):
        last[value.metric_name] = value
    return tuple(last[n] for n in sorted(last))


def summary_markdown(record: JobRecord) -> str:
    """The job's summary artifact: status timeline, final metrics, artifacts."""
    lines = [f"# {record.name}: {record.status.primary.value} ({record.secondary.value})", ""]
    if record.failure_reason:
        lines += [f"**FailureReason:** `{record.failure_reason[:300]}`", ""]
    lines += ["| status | started | message |", "|---|---|---|"]
    lines += [
        f"| {t.status.value} | {t.start_time.isoformat()} | {t.status_message} |" for t in record.status.transitions
    ]
    if record.final_metrics:
        lines += ["", "| metric | final value |", "|---|---|"]
        lines += [f"| {m.metric_name} | {m.value:g} |" for m in record.final_metrics]
    lines += [
        "",
        f"- model: {record.model_artifacts or '-'}",
        f"- output: {record.output_artifacts or '-'}",
        f"- image: {record.training_image} ({record.training_image_digest})",
        f"- TrainingTimeInSeconds: {record.training_seconds()}",
    ]
    return "\n".join(lines)


_PUBLISHED: set[str] = set()  # the jobs this process has published


def _delete_part_archives(spec: TrainingJobSpec, settings: Settings) -> None:
    """What parts on other machines left for a persist that did not merge them (an attempt that
    ended early, or restarted): gone with the job's end."""
    folder = storage.join(output_prefix(spec), PARTS_FOLDER)
    try:
        for obj in storage.list_objects(folder, settings.s3_endpoint_url):
            storage.delete(obj.uri, settings.s3_endpoint_url)
    except Exception as exc:  # noqa: BLE001 - leftovers, not the job's outcome
        why = f"could not delete {folder} ({exc}): delete it by hand"
        job_log.report(settings.home, spec.training_job_name, why, logging.WARNING)


def _keeps(pool: WarmPool | None, scratch_root: str | None) -> bool:
    """Whether the job's end kept its instances (whoever may have taken them over since): then
    neither its folder nor its room is this job's to give back."""
    kept = (PoolStatus.AVAILABLE, PoolStatus.REUSED)
    return (
        pool is not None
        and pool.status in kept
        and scratch_root is not None
        and (pool.folder == os.path.basename(scratch_root))
    )


@task(name="finalize", cache_policy=NONE, **task_retry_options())
def finalize(spec: TrainingJobSpec, outcome: Outcome, settings: Settings, scratch_root: str | None) -> JobRecord:
    """Publish the finished job, record the final status the flow decided, write job.json, tear down;
    returns the final record."""
    store = open_store(settings)
    name = spec.training_job_name
    values = store.metrics(name)
    record = store.get(name)
    steps = path_to_final(record.secondary, outcome.ending.final_status)
    message = outcome.message or outcome.ending.value
    try:
        for step in steps[:-1]:
            record = move(settings, name, record.secondary, step, message)
        if steps:  # none when a retry of this task finds the job ended already
            last, at = steps[-1], now()
            fields: dict[str, Any] = {
                "failure_reason": outcome.failure_reason,
                "training_end_time": at,
                "final_metrics": final_metrics(values),
                "attempts": record.ended_attempt(at).attempts,
                "warm_pool": keep_or_end(spec, outcome, settings, scratch_root),
            }
            if _keeps(fields["warm_pool"], scratch_root):  # torn down before another job may take it over
                removed = keep_instances(name, scratch_root or "")
                job_log.append(settings.home, name, f"removed {removed} Docker object(s); the instances stay")
            # Catalogued before the job store says the job ended, so whoever sees it ended finds it by
            # Search; once, should this task be retried (a model version is registered each time).
            ended = record.model_copy(update=fields).moved(last, message, at)
            if name not in _PUBLISHED:
                publish(ended, settings)
                _PUBLISHED.add(name)
            write_report(ended, settings, values)  # in place, too, before anyone sees the job ended
            record = move(settings, name, record.secondary, last, message, **fields)
        storage.write_text(
            storage.join(output_prefix(spec), "job.json"),
            json.dumps(describe_processing(record) if spec.processing else describe(record), indent=2),
            settings.s3_endpoint_url,
        )
    finally:
        pool = store.get(name).warm_pool
        if _keeps(pool, scratch_root) and pool is not None:  # its grants too: the room stays reserved
            if pool.status is PoolStatus.AVAILABLE:
                job_log.report(
                    settings.home, name, f"the instances are kept as a warm pool until "
                    f"{pool.expires_at:%Y-%m-%d %H:%M:%S} UTC for the next job that matches them",
                )  # fmt: skip
        else:
            removed = remove_instances(name, scratch_root) if scratch_root else 0
            give_back(settings, name)  # the parts on other machines, if any, stopped first
            job_log.append(settings.home, name, f"removed {removed} Docker object(s) and the scratch space")
        _delete_part_archives(spec, settings)
    key = f"job-{name.lower()}"[:90].rstrip("-")
    create_markdown_artifact(key=key, markdown=summary_markdown(record), description=f"dockyard training job {name}")
    if values:
        create_table_artifact(key=f"{key}-metrics", table=metric_digest(values), description=f"metrics of {name}")
        create_markdown_artifact(
            key=f"{key}-curves",
            markdown=f"# Training curves of {name}\n\n```\n{curves(values)}\n```",
            description=f"training curves of {name}",
        )
    return record


@task(name="catalog", cache_policy=NONE, **task_retry_options())
def record_in_catalog(record: JobRecord, settings: Settings) -> tuple[str, str | None]:
    """The finished job as an MLflow run; a Completed job naming model_package_group_name
    also becomes a new version of that registered model. Returns the run id and version."""
    name, body = record.name, describe(record)
    uri = settings.catalog_uri()
    store = open_store(settings)
    values = store.metrics(name) + profiling.as_metric_values(store.samples(name))  # MLflow's system/ metrics too
    kind = f"{record.kind}-job"
    log = job_log.whole(settings.home, name, store.log_lines(name))
    run_id = catalog.record_job(str(settings.home), uri, body, values, log, kind, explains=record.explains)
    message = f"catalogued as MLflow run {run_id} ({redacted(uri)})"
    version = None
    group = record.spec.model_package_group_name
    if group and record.status.primary is PrimaryStatus.COMPLETED and record.model_artifacts:
        version = catalog.register_model(uri, group, run_id, body)
        message += f"; registered as model {group} version {version}"
    job_log.report(settings.home, name, message)
    return run_id, version


@task(name="cloudwatch", cache_policy=NONE, **task_retry_options())
def publish_to_cloudwatch(record: JobRecord, settings: Settings) -> None:
    """Send the job's log and metrics to CloudWatch, named as SageMaker names them."""
    name = record.name
    store = open_store(settings)
    events = cloudwatch.ship_logs(name, record.creation_time, job_log.whole(settings.home, name, store.log_lines(name)))
    values = cloudwatch.ship_metrics(name, store.metrics(name))
    job_log.report(
        settings.home,
        name,
        f"sent {events} log event(s) to {cloudwatch.GROUP} and {values} metric value(s) to CloudWatch",
    )


def publish(record: JobRecord, settings: Settings) -> None:
    """The finished job to the catalog and, when configured, CloudWatch. The job has
    ended as it ended: a sink that fails leaves a warning, not another status."""
    try:
        record_in_catalog(record, settings)
    except Exception as exc:  # noqa: BLE001
        job_log.report(settings.home, record.name, f"the job is not in the MLflow catalog: {exc}", logging.WARNING)
    if settings.cloudwatch:
        try:
            publish_to_cloudwatch(record, settings)
        except Exception as exc:  # noqa: BLE001
            job_log.report(
                settings.home,
                record.name,
                f"the job's log and metrics did not reach CloudWatch: {exc}",
                logging.WARNING,
            )
