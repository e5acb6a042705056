"""Stage 7, persist: artifacts, the job record, the catalog, and tearing everything down.

model.tar.gz (every host's /opt/ml/model, algo-1 first) and output.tar.gz
(/opt/ml/output/data) go to {s3_output_path}/{job}/output/, after a failure
or a stop too, as SageMaker does. Then job.json, shaped like
DescribeTrainingJob, goes beside them; then containers, network and scratch
space are removed. Last, the job becomes an MLflow run in the catalog (and a
model version, when the spec names a model package group).
"""

from __future__ import annotations

import json
import os
import tarfile
import tempfile
from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NONE
from pydantic import BaseModel, ConfigDict

from dockyard import contract
from dockyard.charts import curves, metric_digest
from dockyard.record import JobRecord, MetricValue, describe
from dockyard.spec import TrainingJobSpec
from dockyard.status import SecondaryStatus, path_to_final
from infra import catalog, cloudwatch, records, spot, storage
from infra.retry import task_retry_options
from tasks.provision import ProvisionPlan, host_dirs, remove_instances


class PersistPlan(BaseModel):
    model_config = ConfigDict(frozen=True)

    model_sources: tuple[str, ...]  # host folders merged into model.tar.gz, algo-1 first
    output_sources: tuple[str, ...]  # host folders merged into output.tar.gz
    model_uri: str
    output_uri: str
    record_uri: str


def output_prefix(spec: TrainingJobSpec) -> str:
    return storage.join(spec.output_data_config.s3_output_path, spec.training_job_name, "output")


def plan_persist(spec: TrainingJobSpec, scratch_by_host: dict[str, str]) -> PersistPlan:
    hosts = sorted(scratch_by_host, key=lambda h: int(h.rsplit("-", 1)[1]))
    prefix = output_prefix(spec)
    return PersistPlan(
        model_sources=tuple(host_dirs(scratch_by_host[h])["model"] for h in hosts),
        output_sources=tuple(os.path.join(host_dirs(scratch_by_host[h])["output"], "data") for h in hosts),
        model_uri=storage.join(prefix, contract.MODEL_ARCHIVE),
        output_uri=storage.join(prefix, contract.OUTPUT_ARCHIVE),
        record_uri=storage.join(prefix, "job.json"),
    )


def pack(sources: tuple[str, ...], archive: str) -> tuple[int, list[str]]:
    """Tar+gzip the files of `sources` into `archive`; the first host's copy of a path wins.

    Returns the number of files packed and the paths that clashed.
    """
    seen: set[str] = set()
    clashes = []
    with tarfile.open(archive, "w:gz") as tar:
        for source in sources:
            for folder, _, files in os.walk(source):
                for file_name in sorted(files):
                    full = os.path.join(folder, file_name)
                    relative = os.path.relpath(full, source)
                    if relative in seen:
                        clashes.append(relative)
                        continue
                    seen.add(relative)
                    tar.add(full, arcname=relative)
    return len(seen), clashes


def final_metrics(values: list[MetricValue]) -> tuple[MetricValue, ...]:
    """The last value of each metric, as FinalMetricDataList reports it."""
    last: dict[str, MetricValue] = {}
    for value in sorted(values, key=lambda v: v.timestamp):
        last[value.metric_name] = value
    return tuple(last[n] for n in sorted(last))


@task(name="persist", cache_policy=NONE, **task_retry_options())
def persist(
    spec_json: dict[str, Any], provision_json: dict[str, Any], home: str, endpoint_url: str | None
) -> dict[str, str]:
    """Upload model.tar.gz and output.tar.gz; returns their URIs."""
    logger = get_run_logger()
    spec = TrainingJobSpec.model_validate(spec_json)
    provisioned = ProvisionPlan.model_validate(provision_json)
    name = spec.training_job_name
    if records.load(home, name).status.secondary is not SecondaryStatus.UPLOADING:
        records.transition(home, name, SecondaryStatus.UPLOADING, "Uploading generated training model")
    plan = plan_persist(spec, {h.host: h.scratch for h in provisioned.hosts})
    with tempfile.TemporaryDirectory(prefix="dockyard-persist-") as tmp:
        for sources, uri in ((plan.model_sources, plan.model_uri), (plan.output_sources, plan.output_uri)):
            spot.check(home, name)  # capacity may be taken back mid-upload
            archive = os.path.join(tmp, uri.rsplit("/", 1)[1])
            count, clashes = pack(sources, archive)
            if clashes:
                logger.warning(
                    f"{len(clashes)} file(s) exist on several hosts; kept the lowest host's: {', '.join(clashes[:5])}"
                )
            size = os.path.getsize(archive)
            storage.upload_file(archive, uri, endpoint_url)
            message = f"uploaded {uri} ({count} files, {size / 1e6:.2f} MB)"
            logger.info(message)
            records.append_log(home, name, message)
    records.update(home, name, model_artifacts=plan.model_uri, output_artifacts=plan.output_uri)
    return {"model": plan.model_uri, "output": plan.output_uri}


def summary_markdown(record: JobRecord) -> str:
    body = describe(record)
    lines = [f"# {record.name}: {record.status.primary.value} ({record.status.secondary})", ""]
    if record.failure_reason:
        lines += [f"**FailureReason:** `{record.failure_reason[:300]}`", ""]
    lines += ["| status | started | message |", "|---|---|---|"]
    lines += [
        f"| {t['Status']} | {t['StartTime']} | {t['StatusMessage']} |" for t in body["SecondaryStatusTransitions"]
    ]
    if record.final_metrics:
        lines += ["", "| metric | final value |", "|---|---|"]
        lines += [f"| {m.metric_name} | {m.value:g} |" for m in record.final_metrics]
    lines += [
        "",
        f"- model: {record.model_artifacts or '-'}",
        f"- output: {record.output_artifacts or '-'}",
        f"- image: {record.training_image} ({record.training_image_digest})",
        f"- TrainingTimeInSeconds: {body.get('TrainingTimeInSeconds')}",
    ]
    return "\n".join(lines)


@task(name="finalize", cache_policy=NONE, **task_retry_options())
def finalize(
    spec_json: dict[str, Any],
    final_status: str,
    message: str,
    failure_reason: str | None,
    home: str,
    endpoint_url: str | None,
    scratch_root: str | None,
) -> dict[str, Any]:
    """Record the final status decided by the flow, publish job.json, tear down.

    Returns the DescribeTrainingJob body.
    """
    spec = TrainingJobSpec.model_validate(spec_json)
    name = spec.training_job_name
    records.end_attempt(home, name)
    record = records.load(home, name)
    values = records.read_metrics(home, name)
    steps = path_to_final(record.status.secondary, SecondaryStatus(final_status))
    if steps:
        records.update(
            home,
            name,
            failure_reason=failure_reason,
            training_end_time=records.now(),
            final_metrics=final_metrics(values),
        )
    for step in steps:
        record = records.transition(home, name, step, message)
    body = describe(record)
    plan_uri = storage.join(output_prefix(spec), "job.json")
    try:
        storage.write_text(plan_uri, json.dumps(body, indent=2), endpoint_url)
    finally:
        removed = remove_instances(name, scratch_root) if scratch_root else 0
        records.append_log(home, name, f"removed {removed} Docker object(s) and the scratch space")
    key = f"job-{name.lower()}"[:90].rstrip("-")
    create_markdown_artifact(key=key, markdown=summary_markdown(record), description=f"dockyard training job {name}")
    if values:
        create_table_artifact(key=f"{key}-metrics", table=metric_digest(values), description=f"metrics of {name}")
        create_markdown_artifact(
            key=f"{key}-curves",
            markdown=f"# Training curves of {name}\n\n```\n{curves(values)}\n```",
            description=f"training curves of {name}",
        )
    return body


@task(name="catalog", cache_policy=NONE, **task_retry_options())
def record_in_catalog(body: dict[str, Any], home: str) -> dict[str, str | None]:
    """The finished job as an MLflow run; a Completed job naming model_package_group_name
    also becomes a new version of that registered model. Returns the run id and version."""
    name = body["TrainingJobName"]
    uri = catalog.tracking_uri(home, dict(os.environ))
    run_id = catalog.record_job(
        home, uri, body, records.read_metrics(home, name), records.job_dir(home, name) / records.LOG_FILE
    )
    message = f"catalogued as MLflow run {run_id} ({uri})"
    version = None
    group = body.get("ModelPackageGroupName")
    if group and body["TrainingJobStatus"] == "Completed" and body.get("ModelArtifacts"):
        version = catalog.register_model(uri, group, run_id, body)
        message += f"; registered as model {group} version {version}"
    get_run_logger().info(message)
    records.append_log(home, name, message)
    return {"run_id": run_id, "model_version": version}


@task(name="cloudwatch", cache_policy=NONE, **task_retry_options())
def publish_to_cloudwatch(name: str, home: str) -> None:
    """Send the job's log and metrics to CloudWatch, named as SageMaker names them."""
    record = records.load(home, name)
    events = cloudwatch.ship_logs(name, record.creation_time, records.job_dir(home, name) / records.LOG_FILE)
    values = cloudwatch.ship_metrics(name, records.read_metrics(home, name))
    message = f"sent {events} log event(s) to {cloudwatch.GROUP} and {values} metric value(s) to CloudWatch"
    get_run_logger().info(message)
    records.append_log(home, name, message)
