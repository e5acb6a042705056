"""AddTags, ListTags and DeleteTags on training, processing and tuning jobs, by ARN."""

from __future__ import annotations

from typing import Any

from api.protocol import validation
from api.training import NOT_FOUND, Context

MAX_TAGS = 50  # SageMaker's limit per resource


def _resource_of(ctx: Context, arn: str) -> tuple[str, bool]:
    """The job an ARN names (…:training-job/NAME, …:processing-job/NAME or
    …:hyper-parameter-tuning-job/NAME, any region and account), and whether it is a tuning job.

    Raises:
        ApiError: ValidationException when it names no such job here.
    """
    kind, _, lowered = arn.rpartition(":")[2].partition("/")
    if kind in ("training-job", "processing-job"):
        name = ctx.store.name_of(lowered)
        found = ctx.store.find(name) if name else None
        if found is None or f"{found.kind}-job" != kind:
            raise validation(NOT_FOUND)
        return found.name, False
    if kind != "hyper-parameter-tuning-job":
        raise validation(
            f"ResourceArn '{arn}': only training jobs (…:training-job/NAME), processing jobs "
            "(…:processing-job/NAME) and tuning jobs (…:hyper-parameter-tuning-job/NAME) carry tags here"
        )
    name = ctx.store.tuning_name_of(lowered)
    if name is None:
        raise validation(NOT_FOUND)
    return name, True


def add_tags(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    name, tuning = _resource_of(ctx, params["ResourceArn"])
    tags = {t["Key"]: t.get("Value", "") for t in params["Tags"]}
    if len({**ctx.store.tags(name, tuning), **tags}) > MAX_TAGS:
        raise validation(f"a resource has at most {MAX_TAGS} tags — delete some first")
    ctx.store.set_tags(name, tags, tuning)
    return {"Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}


def list_tags(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    tags = ctx.store.tags(*_resource_of(ctx, params["ResourceArn"]))
    return {"Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}  # at most 50: one page


def delete_tags(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    name, tuning = _resource_of(ctx, params["ResourceArn"])
    ctx.store.delete_tags(name, params["TagKeys"], tuning)
    return {}


HANDLERS = {"AddTags": add_tags, "ListTags": list_tags, "DeleteTags": delete_tags}
