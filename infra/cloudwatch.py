"""CloudWatch sinks (boto3): a job's log and metrics where SageMaker puts them.

Logs: group /aws/sagemaker/TrainingJobs, one stream per host named
`{job}/algo-N-{creation epoch}` (and `{job}/platform` for dockyard's own
lines). Metrics: namespace /aws/sagemaker/TrainingJobs, each scraped value
under its metric name with dimension Host={job}/algo-N. Endpoints and
credentials are boto3's own (AWS_ENDPOINT_URL, AWS_ENDPOINT_URL_CLOUDWATCH_LOGS, ...).
"""

from __future__ import annotations

import contextlib
import re
from datetime import datetime
from typing import Any

from dockyard.record import MetricValue

GROUP = "/aws/sagemaker/TrainingJobs"
NAMESPACE = "/aws/sagemaker/TrainingJobs"
EVENTS_PER_CALL = 10_000  # put_log_events' limit (and 1 MB, far above a batch of log lines here)
BYTES_PER_CALL = 900_000
METRICS_PER_CALL = 20
_LINE = re.compile(r"^(?P<time>\S+) (?:\[(?P<host>algo-\d+)\] )?(?P<text>.*)$")


def streams_of(job: str, created: datetime, log: str) -> dict[str, list[dict[str, Any]]]:
    """The job log's lines (its text) as CloudWatch events, by stream."""
    streams: dict[str, list[dict[str, Any]]] = {}
    epoch = int(created.timestamp())
    for line in log.split("\n"):  # newlines only: a container's carriage returns stay in its line
        found = _LINE.match(line)
        if not found:
            continue
        try:
            millis = int(datetime.fromisoformat(found["time"]).timestamp() * 1000)
        except ValueError:
            continue
        stream = f"{job}/{found['host']}-{epoch}" if found["host"] else f"{job}/platform"
        streams.setdefault(stream, []).append({"timestamp": millis, "message": found["text"] or " "})
    return streams


def _client(service: str, region: str | None) -> Any:
    import boto3

    return boto3.client(service, region_name=region or boto3.session.Session().region_name or "us-east-1")


def ship_logs(job: str, created: datetime, log: str, region: str | None = None) -> int:
    """Put the job's log into CloudWatch Logs; returns the events sent."""
    logs = _client("logs", region)
    with contextlib.suppress(logs.exceptions.ResourceAlreadyExistsException):
        logs.create_log_group(logGroupName=GROUP)
    sent = 0
    for stream, events in streams_of(job, created, log).items():
        with contextlib.suppress(logs.exceptions.ResourceAlreadyExistsException):
            logs.create_log_stream(logGroupName=GROUP, logStreamName=stream)
        batch: list[dict[str, Any]] = []
        size = 0
        for event in sorted(events, key=lambda e: e["timestamp"]):
            cost = len(event["message"].encode()) + 26  # CloudWatch counts 26 bytes per event
            if batch and (len(batch) == EVENTS_PER_CALL or size + cost > BYTES_PER_CALL):
                logs.put_log_events(logGroupName=GROUP, logStreamName=stream, logEvents=batch)
                sent, batch, size = sent + len(batch), [], 0
            batch.append(event)
            size += cost
        if batch:
            logs.put_log_events(logGroupName=GROUP, logStreamName=stream, logEvents=batch)
            sent += len(batch)
    return sent


def ship_metrics(job: str, values: list[MetricValue], region: str | None = None) -> int:
    """Put every scraped metric value into CloudWatch Metrics; returns the values sent."""
    cloudwatch = _client("cloudwatch", region)
    data = [
        {
            "MetricName": v.metric_name,
            "Dimensions": [{"Name": "Host", "Value": f"{job}/{v.host}"}],
            "Timestamp": v.timestamp,
            "Value": v.value,
        }
        for v in values
    ]
    for start in range(0, len(data), METRICS_PER_CALL):
        cloudwatch.put_metric_data(Namespace=NAMESPACE, MetricData=data[start : start + METRICS_PER_CALL])
    return len(data)
