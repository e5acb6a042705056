"""The CloudWatch Logs operations SageMaker's clients read training logs with.

Groups /aws/sagemaker/TrainingJobs and /aws/sagemaker/ProcessingJobs; one stream per instance, named
`<job>/algo-<n>-<epoch of the job's creation>` as SageMaker names them; the
events are the lines the job's containers printed, every host's, as the job
store holds them (a job from before it kept them: this machine's log file). Tokens are
positions in a stream: GetLogEvents always answers a nextForwardToken, and
the same token again (with no events) once it has caught up, which is how
clients know to wait.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from api.protocol import ApiError
from api.training import Context
from dockyard.record import HostLine, JobRecord
from infra import job_log

GROUP = "/aws/sagemaker/TrainingJobs"
GROUPS = (GROUP, "/aws/sagemaker/ProcessingJobs")  # a processing job's streams are named as a training job's
MAX_EVENTS = 10_000  # CloudWatch's page size for GetLogEvents
_STREAM = re.compile(r"(?P<job>[^/]+)/(?P<host>algo-\d+)-\d+")


def _epoch(record: JobRecord) -> int:
    """The suffix of the job's stream names: the epoch second of its creation."""
    return int(record.creation_time.timestamp())


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def _check_group(name: str) -> None:
    if name not in GROUPS:
        raise ApiError(
            "ResourceNotFoundException", f"The specified log group does not exist: {name} (try {' or '.join(GROUPS)})"
        )


def _streams(ctx: Context, job: str) -> dict[str, list[HostLine]]:
    """The job's streams by name, each with its lines; an unknown job has none."""
    record = ctx.store.find(job)
    if record is None:
        return {}
    epoch = _epoch(record)
    streams: dict[str, list[HostLine]] = {}
    for line in _lines(ctx, job):
        streams.setdefault(f"{job}/{line.host}-{epoch}", []).append(line)
    return dict(sorted(streams.items()))


def _lines(ctx: Context, job: str, host: str | None = None) -> list[HostLine]:
    """The instances' lines (`host`'s only, if given): the job store's, else this machine's log file's."""
    lines = ctx.store.log_lines(job, host) or [
        x for x in job_log.host_lines(ctx.settings.home, job) if host is None or x.host == host
    ]
    return [x for x in lines if x.host.startswith("algo-")]  # not a Clarify job's shadow model


def _stream_lines(ctx: Context, stream: str) -> list[HostLine]:
    match = _STREAM.fullmatch(stream)
    record = ctx.store.find(match["job"]) if match else None
    if match is None or record is None or stream != f"{match['job']}/{match['host']}-{_epoch(record)}":
        raise ApiError("ResourceNotFoundException", f"The specified log stream does not exist: {stream}")
    found = _lines(ctx, match["job"], match["host"])
    if not found:
        raise ApiError("ResourceNotFoundException", f"The specified log stream does not exist: {stream}")
    return found


def describe_log_streams(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    """A job's streams (never a nextToken: a job has few, and the SageMaker SDK loops while one comes back)."""
    _check_group(params["logGroupName"])
    prefix = params.get("logStreamNamePrefix", "")
    job = prefix.split("/", 1)[0]
    streams: list[dict[str, Any]] = [
        {
            "logStreamName": name,
            "creationTime": _ms(lines[0].at),
            "firstEventTimestamp": _ms(lines[0].at),
            "lastEventTimestamp": _ms(lines[-1].at),
            "lastIngestionTime": _ms(lines[-1].at),
            "arn": f"arn:aws:logs:local:000000000000:log-group:{params['logGroupName']}:log-stream:{name}",
            "storedBytes": 0,
        }
        for name, lines in (_streams(ctx, job).items() if job else ())
        if name.startswith(prefix)
    ]
    if params.get("orderBy") == "LastEventTime":
        streams.sort(key=lambda s: s["lastEventTimestamp"])
    if params.get("descending"):
        streams.reverse()
    return {"logStreams": streams[: params.get("limit", 50)]}


def _position(token: str | None, size: int) -> int:
    if token is None:
        return 0
    try:
        return min(max(int(token.split("/", 1)[1]), 0), size)
    except (IndexError, ValueError):
        raise ApiError("InvalidParameterException", f"nextToken '{token}' is not one this endpoint gave") from None


def _event(line: HostLine) -> dict[str, Any]:
    return {"timestamp": _ms(line.at), "message": line.text, "ingestionTime": _ms(line.at)}


def get_log_events(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    _check_group(params["logGroupName"])
    lines = _stream_lines(ctx, params["logStreamName"])
    start, end = params.get("startTime"), params.get("endTime")
    if start is not None or end is not None:
        lines = [
            line for line in lines if (start is None or _ms(line.at) >= start) and (end is None or _ms(line.at) < end)
        ]
    limit = min(params.get("limit", MAX_EVENTS), MAX_EVENTS)
    token = params.get("nextToken")
    if token is None and not params.get("startFromHead", False):
        first = max(len(lines) - limit, 0)  # CloudWatch answers the newest events unless asked from the head
    elif token is not None and token.startswith("b/"):
        last = _position(token, len(lines))
        first = max(last - limit, 0)
        return _page(lines, first, last)
    else:
        first = _position(token, len(lines))
    return _page(lines, first, min(first + limit, len(lines)))


def _page(lines: list[HostLine], first: int, last: int) -> dict[str, Any]:
    return {
        "events": [_event(line) for line in lines[first:last]],
        "nextForwardToken": f"f/{last}",
        "nextBackwardToken": f"b/{first}",
    }


def filter_log_events(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    """Events of several streams, merged by time; filterPattern matches terms (all of them, case-sensitive)."""
    _check_group(params["logGroupName"])
    names = params.get("logStreamNames")
    prefix = params.get("logStreamNamePrefix", "")
    job = (names[0] if names else prefix).split("/", 1)[0]
    terms = [t.strip('"') for t in params.get("filterPattern", "").split()]
    start, end = params.get("startTime"), params.get("endTime")
    events = [
        {**_event(line), "logStreamName": name, "eventId": f"{name}:{i}"}
        for name, lines in (_streams(ctx, job).items() if job else ())
        if (names is None or name in names) and name.startswith(prefix)
        for i, line in enumerate(lines)
        if all(t in line.text for t in terms)
        and (start is None or _ms(line.at) >= start)
        and (end is None or _ms(line.at) < end)
    ]
    events.sort(key=lambda e: (e["timestamp"], e["eventId"]))
    first = _position(params.get("nextToken"), len(events))
    limit = min(params.get("limit", MAX_EVENTS), MAX_EVENTS)
    body: dict[str, Any] = {"events": events[first : first + limit]}
    if first + limit < len(events):
        body["nextToken"] = f"f/{first + limit}"
    return body


HANDLERS = {
    "DescribeLogStreams": describe_log_streams,
    "GetLogEvents": get_log_events,
    "FilterLogEvents": filter_log_events,
}
