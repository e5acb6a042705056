"""SageMaker's algorithm operations: CreateAlgorithm, DescribeAlgorithm, ListAlgorithms and
DeleteAlgorithm over the job store's registry (dockyard.algorithm_spec). DescribeAlgorithm also
answers for dockyard's built-ins; ListAlgorithms lists the registered ones, as SageMaker lists
an account's own."""

from __future__ import annotations

from typing import Any

from api.protocol import ApiError, validation
from api.training import Context, page_offset, page_token, wire_problems
from dockyard.algorithm_spec import BUILTINS, AlgorithmSpec, describe_algorithm
from dockyard.contract import job_arn
from dockyard.errors import DockyardError, JobSpecError
from dockyard.loading import build_algorithm
from infra.job_store import now


def algorithm_name(value: str) -> str:
    """An algorithm's name, from its name or its ARN."""
    return value.rsplit(":algorithm/", 1)[-1]


def create_algorithm(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    try:
        algorithm = build_algorithm(params)
    except JobSpecError as exc:
        raise validation(wire_problems(exc)) from None
    try:
        ctx.store.create_algorithm(algorithm)
    except DockyardError as exc:
        raise ApiError("ResourceInUse", str(exc)) from None
    return {"AlgorithmArn": job_arn(algorithm.algorithm_name, "algorithm")}


def _found(ctx: Context, value: str) -> tuple[AlgorithmSpec, Any]:
    name = algorithm_name(value)
    found = ctx.store.algorithm(name)
    if found is None and name in BUILTINS:
        return BUILTINS[name], now()
    if found is None:
        raise validation(f"Could not find algorithm '{name}' — ListAlgorithms shows the registered ones")
    return found


def describe(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    algorithm, created = _found(ctx, params["AlgorithmName"])
    return describe_algorithm(algorithm, created, job_arn(algorithm.algorithm_name, "algorithm"))


def list_algorithms(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    query = {k: v for k, v in params.items() if k not in ("NextToken", "MaxResults")}
    rows = ctx.store.algorithms(params.get("NameContains"))
    after, before = params.get("CreationTimeAfter"), params.get("CreationTimeBefore")  # datetimes, parsed
    rows = [r for r in rows if (after is None or r[1] > after) and (before is None or r[1] < before)]
    by_name = params.get("SortBy", "CreationTime") == "Name"
    rows.sort(key=lambda r: r[0].algorithm_name if by_name else r[1], reverse=params.get("SortOrder") == "Descending")
    offset, limit = page_offset(params.get("NextToken"), query), int(params.get("MaxResults", 10))
    page = rows[offset : offset + limit]
    answer: dict[str, Any] = {
        "AlgorithmSummaryList": [
            {"AlgorithmName": a.algorithm_name, "AlgorithmArn": job_arn(a.algorithm_name, "algorithm"),
             "AlgorithmDescription": a.algorithm_description, "CreationTime": created.isoformat(),
             "AlgorithmStatus": "Completed"}
            for a, created in page
        ]
    }  # fmt: skip
    if offset + limit < len(rows):
        answer["NextToken"] = page_token(offset + limit, query)
    return answer


def delete(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    name = algorithm_name(params["AlgorithmName"])
    if name in BUILTINS:
        raise validation(f"'{name}' is one of dockyard's built-ins, which cannot be deleted")
    if not ctx.store.delete_algorithm(name):
        raise validation(f"Could not find algorithm '{name}'")
    return {}


HANDLERS = {
    "CreateAlgorithm": create_algorithm,
    "DescribeAlgorithm": describe,
    "ListAlgorithms": list_algorithms,
    "DeleteAlgorithm": delete,
}
