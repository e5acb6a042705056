"""SageMaker's and CloudWatch Logs' JSON wire protocol (awsJson1_1), from botocore's own service models.

A request is `POST /` with `X-Amz-Target: <Prefix>.<Operation>` and a JSON
body; the answer is JSON, or HTTP 400 with `{"__type": CODE, "message": ...}`.
Request bodies are checked against the operation's input shape with
botocore's ParamValidator, and responses are cut to the output shape (so
nothing dockyard-only leaks out), timestamps as epoch seconds.
"""

from __future__ import annotations

import functools
import json
from datetime import UTC, datetime
from typing import Any

import botocore.session
from botocore.model import OperationModel, ServiceModel, Shape
from botocore.validate import ParamValidator

# The X-Amz-Target prefixes served, and the botocore service (and SigV4 signing name) of each.
SERVICES = {"SageMaker": "sagemaker", "Logs_20140328": "logs"}


class ApiError(Exception):
    """An error answer: SageMaker's error code, a message that says what to fix, an HTTP status."""

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code, self.message, self.status = code, message, status

    def body(self) -> dict[str, str]:
        return {"__type": self.code, "message": self.message}


def validation(message: str) -> ApiError:
    return ApiError("ValidationException", message)


@functools.cache
def service_model(service: str) -> ServiceModel:
    """botocore's model of an AWS service (loaded once: the SageMaker model is large)."""
    return botocore.session.get_session().get_service_model(service)


def operation(target: str | None) -> tuple[str, OperationModel]:
    """The service name and operation model an X-Amz-Target header names.

    Raises:
        ApiError: the header is missing or names nothing served here.
    """
    prefix, _, name = (target or "").partition(".")
    service = SERVICES.get(prefix)
    if service is None or not name:
        raise ApiError(
            "UnknownOperationException",
            f"X-Amz-Target '{target or ''}' names no operation served here — "
            f"send one of {', '.join(f'{p}.<Operation>' for p in SERVICES)}",
        )
    model = service_model(service)
    if name not in model.operation_names:
        raise ApiError("UnknownOperationException", f"{prefix} has no operation {name}")
    return service, model.operation_model(name)


def parse_input(op: OperationModel, body: bytes) -> dict[str, Any]:
    """The request body as parameters, checked against the operation's input shape.

    Raises:
        ApiError: SerializationException when the body is not a JSON object;
            ValidationException naming each field that breaks the shape.
    """
    try:
        params = json.loads(body or b"{}")
    except ValueError as exc:
        raise ApiError("SerializationException", f"the request body is not JSON: {exc}") from None
    if not isinstance(params, dict):
        raise ApiError("SerializationException", "the request body must be a JSON object")
    if op.input_shape is None:
        return {}
    params = _timestamps_in(op.input_shape, params)
    report = ParamValidator().validate(params, op.input_shape)
    if report.has_errors():
        raise validation(report.generate_report().replace("\n", "; "))
    return params


def _timestamps_in(shape: Shape, value: Any) -> Any:
    """JSON's epoch-second timestamps as datetimes, where the shape says timestamp."""
    if shape.type_name == "structure" and isinstance(value, dict):
        members = shape.members
        return {k: _timestamps_in(members[k], v) if k in members else v for k, v in value.items()}
    if shape.type_name == "list" and isinstance(value, list):
        return [_timestamps_in(shape.member, v) for v in value]
    if shape.type_name == "map" and isinstance(value, dict):
        return {k: _timestamps_in(shape.value, v) for k, v in value.items()}
    if shape.type_name == "timestamp" and isinstance(value, int | float) and not isinstance(value, bool):
        return datetime.fromtimestamp(value, UTC)
    return value


def render_output(op: OperationModel, value: dict[str, Any]) -> dict[str, Any]:
    """A response body cut to the operation's output shape, timestamps as epoch seconds."""
    if op.output_shape is None:
        return {}
    rendered = _wire(op.output_shape, value)
    return rendered if isinstance(rendered, dict) else {}


def _wire(shape: Shape, value: Any) -> Any:
    if value is None:
        return None
    kind = shape.type_name
    if kind == "structure":
        members = shape.members
        out = {k: _wire(members[k], v) for k, v in value.items() if k in members}
        return {k: v for k, v in out.items() if v is not None}
    if kind == "list":
        return [_wire(shape.member, v) for v in value]
    if kind == "map":
        return {k: _wire(shape.value, v) for k, v in value.items()}
    if kind == "timestamp":
        moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return round(moment.timestamp(), 3)
    return value
