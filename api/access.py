"""Who may do what: a principal limited to actions and to job-name prefixes, IAM-style.

In the keys file (api/auth.py), a principal may carry

    actions: ["sagemaker:Describe*", "sagemaker:List*", "logs:*"]   # IAM action names, * wildcards
    job_name_prefixes: ["alice-"]                                   # the jobs it may name
    roles: ["arn:aws:iam::*:role/alice-*"]                          # the roles it may give its jobs

Absent, each means no limit (the default principal has none). The prefixes
hold for every call that names a job, as IAM's resource ARNs do: a training or
tuning job by name, a tagged resource by ARN, a log stream by its
`<job>/algo-N-...` name; a log read that names no stream is refused to a
principal with prefixes (it would read every job's). Calls that name no job
(List*, Search) answer only the jobs within the prefixes. A limited principal
may not name locations on this machine (file:// URIs, FileSystemDataSource):
those would reach any file the host can, other jobs' included. A refusal
answers AccessDeniedException and is logged.
"""

from __future__ import annotations

import fnmatch
import logging
from typing import Any

from api.protocol import ApiError

log = logging.getLogger("dockyard.api")

# The request fields that name a job, by operation; the logs operations name it in a stream.
_JOB_FIELDS = ("TrainingJobName", "ProcessingJobName", "HyperParameterTuningJobName", "AlgorithmName")
_LOG_FIELDS = ("logStreamName", "logStreamNamePrefix")


def named_jobs(service: str, params: dict[str, Any]) -> list[str] | None:
    """The job names a call names, or None when it names none."""
    if service == "logs":
        names = [params[f] for f in _LOG_FIELDS if params.get(f)] + list(params.get("logStreamNames") or [])
        return [n.split("/", 1)[0] for n in names] or None
    names = [str(params[f]).rpartition(":")[2].rpartition("/")[2] for f in _JOB_FIELDS if params.get(f)]  # or ARNs
    if params.get("ResourceArn"):
        names.append(str(params["ResourceArn"]).rpartition(":")[2].partition("/")[2])
    return names or None


def named_roles(params: dict[str, Any]) -> list[str]:
    """The roles a call passes to its jobs (a training job's, a tuning job's definitions')."""
    definitions = [params, params.get("TrainingJobDefinition") or {}, *(params.get("TrainingJobDefinitions") or [])]
    return [str(d["RoleArn"]) for d in definitions if isinstance(d, dict) and d.get("RoleArn")]


def authorize(
    principal: str,
    actions: list[str] | None,
    job_name_prefixes: list[str] | None,
    service: str,
    operation: str,
    params: dict[str, Any],
    roles: list[str] | None = None,
) -> None:
    """Let the call through, or refuse it.

    Raises:
        ApiError: AccessDeniedException naming the principal, the action and what it may not touch.
    """
    action = f"{service}:{operation}"
    passable = roles if roles is not None else ["*"]  # IAM's iam:PassRole
    for role in named_roles(params):
        if not any(fnmatch.fnmatchcase(role, pattern) for pattern in passable):
            _deny(
                principal,
                action,
                f"it may not pass the role {role} to a job (its roles: {', '.join(passable) or 'none'})",
                "roles",
            )
    if actions is not None or job_name_prefixes is not None:
        local = host_location(params)
        if local:
            _deny(principal, action, f"it may not name locations on this machine ({local}); use s3:// locations")
    if actions is not None and not any(fnmatch.fnmatchcase(action.lower(), a.lower()) for a in actions):
        _deny(principal, action, f"its actions ({', '.join(actions) or 'none'}) do not include {action}")
    if job_name_prefixes is None:
        return
    names = named_jobs(service, params)
    if names is None:
        if service == "logs":
            _deny(principal, action, "it may read only its own jobs' logs: name a log stream (<job>/...)")
        return
    for name in names:
        if not any(name.lower().startswith(p.lower()) for p in job_name_prefixes):
            _deny(
                principal,
                action,
                f"job '{name}' does not start with any of its job name prefixes ({', '.join(job_name_prefixes)})",
            )


def host_location(value: Any) -> str | None:
    """The first location on this machine a request names (a file:// URI, a FileSystemDataSource), or None."""
    if isinstance(value, str):
        return value[value.index("file://") :][:120] if "file://" in value else None
    if isinstance(value, dict):
        if "FileSystemDataSource" in value:
            return "a FileSystemDataSource"
        value = list(value.values())
    if isinstance(value, list):
        return next((found for v in value if (found := host_location(v))), None)
    return None


# What the List and Search answers hold, and where each item's job name is.
_LISTED = {
    "TrainingJobSummaries": ("TrainingJobName",),
    "ProcessingJobSummaries": ("ProcessingJobName",),
    "HyperParameterTuningJobSummaries": ("HyperParameterTuningJobName",),
    "AlgorithmSummaryList": ("AlgorithmName",),
    "Results": ("TrainingJob", "TrainingJobName"),
}


def visible(job_name_prefixes: list[str] | None, answer: dict[str, Any]) -> dict[str, Any]:
    """`answer` with only the listed jobs whose names are within the prefixes (a page may come back short)."""
    if job_name_prefixes is None:
        return answer
    prefixes = tuple(p.lower() for p in job_name_prefixes)
    kept = dict(answer)
    for key, path in _LISTED.items():
        if isinstance(answer.get(key), list):
            kept[key] = [item for item in answer[key] if _name_at(item, path).lower().startswith(prefixes)]
    return kept


def _name_at(item: Any, path: tuple[str, ...]) -> str:
    for step in path:
        item = item.get(step, {}) if isinstance(item, dict) else {}
    return item if isinstance(item, str) else ""


def _deny(principal: str, action: str, why: str, limits: str = "actions or job_name_prefixes") -> None:
    log.warning("access denied: %s may not call %s: %s", principal, action, why)
    raise ApiError(
        "AccessDeniedException",
        f"{principal} is not authorized to perform {action}: {why} — ask for it to be added to the "
        f"principal's {limits} in the keys file",
    )


def check_named_model(principal: Any, model_data: str, training_job: str | None) -> None:
    """A Clarify job's model (its analysis config's predictor.model_name, as resolved) against the
    caller's limits, as if the request had named it: no location on this machine, and only the
    training jobs its prefixes allow.

    Raises:
        ApiError: AccessDeniedException.
    """
    if principal is None or (principal.actions is None and principal.job_name_prefixes is None):
        return
    action = "sagemaker:CreateProcessingJob"
    if host_location(model_data):
        _deny(principal.name, action, f"its analysis config names a model on this machine ({model_data}); use s3://")
    prefixes = principal.job_name_prefixes
    if training_job and prefixes is not None and not any(training_job.lower().startswith(p.lower()) for p in prefixes):
        _deny(principal.name, action, f"its analysis config names training job '{training_job}', outside its prefixes")
