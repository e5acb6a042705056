"""AddTags, ListTags and DeleteTags on training jobs, by ARN."""

from __future__ import annotations

from typing import Any

from api.protocol import validation
from api.training import NOT_FOUND, Context

MAX_TAGS = 50  # SageMaker's limit per resource


def _job_of(ctx: Context, arn: str) -> str:
    """The training job an ARN names (arn:aws:sagemaker:REGION:ACCOUNT:training-job/NAME, any region and account).

    Raises:
        ApiError: ValidationException when it names no training job here.
    """
    kind, _, lowered = arn.rpartition(":")[2].partition("/")
    if kind != "training-job":
        raise validation(f"ResourceArn '{arn}': only training jobs (…:training-job/NAME) carry tags here")
    name = ctx.store.name_of(lowered)
    if name is None:
        raise validation(NOT_FOUND)
    return name


def add_tags(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    name = _job_of(ctx, params["ResourceArn"])
    tags = {t["Key"]: t.get("Value", "") for t in params["Tags"]}
    if len({**ctx.store.tags(name), **tags}) > MAX_TAGS:
        raise validation(f"a resource has at most {MAX_TAGS} tags — delete some first")
    ctx.store.set_tags(name, tags)
    return {"Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}


def list_tags(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    tags = ctx.store.tags(_job_of(ctx, params["ResourceArn"]))
    return {"Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}  # at most 50: one page


def delete_tags(ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    ctx.store.delete_tags(_job_of(ctx, params["ResourceArn"]), params["TagKeys"])
    return {}


HANDLERS = {"AddTags": add_tags, "ListTags": list_tags, "DeleteTags": delete_tags}
