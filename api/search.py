"""SageMaker's Search, for TrainingJob resources, as a query of the MLflow catalog.

Filter names map to what the catalog keeps of a job: TrainingJobName and
TrainingJobStatus, Metrics.NAME (the final value), HyperParameters.NAME,
Tags.KEY, and a few ResourceConfig / AlgorithmSpecification fields. Filters
and SubExpressions join with the expression's Operator, And or Or. The
catalog answers a page's job names in one query per alternative
(infra/catalog_query.py); each result is then the job's whole record from the job store, as SageMaker answers
it, the page's records read together.
"""

from __future__ import annotations

from typing import Any

from api.protocol import validation
from api.training import Context, describe_body, page_offset, page_token
from dockyard.search import Clause
from infra import catalog, catalog_query

# SageMaker's field names -> (kind, key) in the catalog.
FIELDS = {
    "TrainingJobName": ("tags", catalog.JOB_TAG),
    "TrainingJobStatus": ("tags", "dockyard.status"),
    "SecondaryStatus": ("tags", "dockyard.secondary_status"),
    "AlgorithmSpecification.TrainingImage": ("tags", "dockyard.image"),
    "AlgorithmSpecification.AlgorithmName": ("tags", "dockyard.algorithm"),
    "ResourceConfig.InstanceType": ("tags", "dockyard.instance_type"),
    "ResourceConfig.InstanceCount": ("tags", "dockyard.instance_count"),
    "ExperimentConfig.TrialName": ("tags", "dockyard.trial"),
}
PREFIXES = {"Metrics.": "metrics", "HyperParameters.": "params", "Tags.": "tags"}
OPERATORS = {
    "Equals": "=",
    "NotEquals": "!=",
    "GreaterThan": ">",
    "GreaterThanOrEqualTo": ">=",
    "LessThan": "<",
    "LessThanOrEqualTo": "<=",
    "Contains": "LIKE",
    "Exists": "IS NOT NULL",
    "NotExists": "IS NULL",
}
SORTABLE = {"CreationTime": "attributes.start_time", "Name": f"tags.`{catalog.JOB_TAG}`"}


def _field(name: str) -> tuple[str, str]:
    if name in FIELDS:
        return FIELDS[name]
    for prefix, kind in PREFIXES.items():
        if name.startswith(prefix) and len(name) > len(prefix):
            key = name[len(prefix) :]
            return kind, f"tag.{catalog.mlflow_name(key)}" if kind == "tags" else key
    raise validation(
        f"Search filter Name '{name}' is not searchable here — use TrainingJobName, TrainingJobStatus, "
        "Metrics.NAME, HyperParameters.NAME, Tags.KEY or one of " + ", ".join(sorted(FIELDS))
    )


def _clause(f: dict[str, Any]) -> Clause:
    kind, key = _field(f["Name"])
    operator = f.get("Operator", "Equals")
    if operator not in OPERATORS:
        raise validation(f"Search filter Operator '{operator}' is not supported here — use {', '.join(OPERATORS)}")
    op = OPERATORS[operator]
    if "NULL" in op:
        return Clause(kind, key, op, None)
    if "Value" not in f:
        raise validation(f"Search filter on {f['Name']}: {operator} needs a Value")
    value = str(f["Value"]).replace("'", "''")
    if kind == "metrics":
        try:
            return Clause(kind, key, op, str(float(value)))
        except ValueError:
            raise validation(f"Search filter on {f['Name']}: a metric's Value must be a number") from None
    return Clause(kind, key, op, f"'%{value}%'" if op == "LIKE" else f"'{value}'")


MAX_ALTERNATIVES = 20  # And over Or multiplies: past this many, the expression is refused


def alternatives_of(expression: dict[str, Any]) -> list[list[Clause]]:
    """A SearchExpression as alternatives (an Or) of catalog clauses (each an And).

    Filters and SubExpressions join with the expression's Operator, And by default.

    Raises:
        ApiError: ValidationException for NestedFilters, a field or operator not searchable
        here, or an expression of more than MAX_ALTERNATIVES alternatives.
    """
    if expression.get("NestedFilters"):
        raise validation("SearchExpression NestedFilters are not supported here — use Filters")
    parts = [[[_clause(f)]] for f in expression.get("Filters", [])]
    parts += [alternatives_of(sub) for sub in expression.get("SubExpressions", [])]
    if expression.get("Operator", "And") == "Or" and parts:
        found = [alternative for part in parts for alternative in part]
    else:
        found = [[]]
        for part in parts:
            found = [mine + theirs for mine in found for theirs in part]
            if len(found) > MAX_ALTERNATIVES:
                break
    if len(found) > MAX_ALTERNATIVES:
        raise validation(
            f"SearchExpression: its Ands over Ors make more than {MAX_ALTERNATIVES} alternatives — "
            "search in parts, or write the expression with fewer Ors"
        )
    return found


def search(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    if params["Resource"] != "TrainingJob":
        raise validation(f"Search Resource '{params['Resource']}' is not searchable here — use TrainingJob")
    alternatives = alternatives_of(params.get("SearchExpression", {}))
    sort_by = params.get("SortBy", "CreationTime")
    if sort_by.startswith("Metrics."):
        order_key = f"metrics.`{sort_by.removeprefix('Metrics.')}`"
    elif sort_by in SORTABLE:
        order_key = SORTABLE[sort_by]
    else:
        raise validation(f"Search SortBy '{sort_by}' is not supported here — use CreationTime, Name or Metrics.NAME")
    order = [f"{order_key} {'ASC' if params.get('SortOrder') == 'Ascending' else 'DESC'}"]
    query = {k: v for k, v in params.items() if k not in ("NextToken", "MaxResults")}
    offset, limit = page_offset(params.get("NextToken"), query), int(params.get("MaxResults", 10))
    try:
        names = catalog_query.job_names_any(
            ctx.settings.catalog_uri(), alternatives, order, offset + limit + 1, "training-job"
        )
    except ValueError as exc:
        raise validation(f"SearchExpression: {exc}") from None
    page = names[offset : offset + limit]
    # The page's records and tags in two reads, not a Describe per job.
    records, tags = ctx.store.find_many(page), ctx.store.tags_of(page)
    results = [
        {"TrainingJob": {**describe_body(records[n]), "Tags": [{"Key": k, "Value": v} for k, v in tags[n].items()]}}
        for n in page
        if n in records  # catalogued, but no longer in this job store
    ]
    body: dict[str, Any] = {"Results": results}
    if len(names) > offset + limit:
        body["NextToken"] = page_token(offset + limit, query)
    return body


HANDLERS = {"Search": search}
