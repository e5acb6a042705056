"""SageMaker's Search, for TrainingJob resources, as a query of the MLflow catalog.

Filter names map to what the catalog keeps of a job: TrainingJobName and
TrainingJobStatus, Metrics.NAME (the final value), HyperParameters.NAME,
Tags.KEY, and a few ResourceConfig / AlgorithmSpecification fields. Filters
and SubExpressions join with And (the catalog's queries have no Or). The
catalog answers a page's job names in one query (infra/catalog_query.py); each
result is then the job's whole record from the job store, as SageMaker answers
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


def clauses_of(expression: dict[str, Any]) -> list[Clause]:
    """A SearchExpression as catalog clauses, all joined by And.

    Raises:
        ApiError: ValidationException for Or, NestedFilters, or a field or operator not searchable here.
    """
    parts = [*expression.get("Filters", []), *expression.get("SubExpressions", [])]
    if expression.get("Operator", "And") == "Or" and len(parts) > 1:
        raise validation("SearchExpression Operator Or is not supported here — search once per alternative")
    if expression.get("NestedFilters"):
        raise validation("SearchExpression NestedFilters are not supported here — use Filters")
    found = [_clause(f) for f in expression.get("Filters", [])]
    for sub in expression.get("SubExpressions", []):
        found += clauses_of(sub)
    return found


def search(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    if params["Resource"] != "TrainingJob":
        raise validation(f"Search Resource '{params['Resource']}' is not searchable here — use TrainingJob")
    clauses = clauses_of(params.get("SearchExpression", {}))
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
    names = catalog_query.job_names(ctx.settings.catalog_uri(), clauses, order, offset + limit + 1, "training-job")
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
