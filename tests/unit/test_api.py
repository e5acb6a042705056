"""The SageMaker endpoint's pure parts: signatures, wire shapes, Search's translation."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from pydantic import SecretStr

from api.auth import Principal, SignedRequest, verify
from api.protocol import ApiError, operation, parse_input, render_output

PRINCIPALS = {"AKIAONE": Principal(name="one", access_key_id="AKIAONE", secret_access_key=SecretStr("s3cret"))}
AT = datetime(2026, 11, 29, 12, 0, 0, tzinfo=UTC)


def signed(body: bytes = b"{}", secret: str = "s3cret", key: str = "AKIAONE", at: datetime = AT) -> SignedRequest:
    """A request signed exactly as botocore signs one, at `at`."""
    request = AWSRequest(
        method="POST",
        url="http://127.0.0.1:8900/",
        data=body,
        headers={"X-Amz-Target": "SageMaker.ListTrainingJobs", "Host": "127.0.0.1:8900"},
    )
    request.context["timestamp"] = at.strftime("%Y%m%dT%H%M%SZ")
    request.headers["X-Amz-Date"] = request.context["timestamp"]
    signer = SigV4Auth(Credentials(key, secret), "sagemaker", "us-east-1")
    signature = signer.signature(signer.string_to_sign(request, signer.canonical_request(request)), request)
    request.headers["Authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={signer.scope(request)}, "
        f"SignedHeaders={signer.signed_headers(signer.headers_to_sign(request))}, Signature={signature}"
    )
    return SignedRequest("POST", "http://127.0.0.1:8900/", dict(request.headers.items()), body)


def code_of(request: SignedRequest, now: datetime = AT) -> str:
    with pytest.raises(ApiError) as caught:
        verify(request, PRINCIPALS, now)
    return caught.value.code


def test_a_request_signed_with_a_known_key_names_its_principal() -> None:
    assert verify(signed(), PRINCIPALS, AT + timedelta(minutes=14)).name == "one"


def test_wrong_secret_unknown_key_tampered_body_stale_date_and_no_signature_are_refused() -> None:
    assert code_of(signed(secret="guess")) == "InvalidSignatureException"
    assert code_of(signed(key="AKIAOTHER")) == "UnrecognizedClientException"
    tampered = signed()
    assert code_of(SignedRequest(tampered.method, tampered.url, tampered.headers, b'{"a":1}')) == (
        "InvalidSignatureException"
    )
    assert code_of(signed(), now=AT + timedelta(minutes=16)) == "InvalidSignatureException"
    assert code_of(signed(), now=AT - timedelta(minutes=16)) == "InvalidSignatureException"
    assert code_of(SignedRequest("POST", "http://x/", {}, b"{}")) == "MissingAuthenticationTokenException"
    unsigned_host = {k: v for k, v in signed().headers.items() if k.lower() != "host"}
    assert code_of(SignedRequest("POST", "http://x/", unsigned_host, b"{}")) == "InvalidSignatureException"


def test_the_secret_never_appears_in_a_principal_shown() -> None:
    assert "s3cret" not in repr(PRINCIPALS) and "s3cret" not in str(PRINCIPALS["AKIAONE"])


def test_operations_come_from_botocore_models_and_unknown_ones_are_named() -> None:
    assert operation("SageMaker.DescribeTrainingJob") == ("sagemaker", operation("SageMaker.DescribeTrainingJob")[1])
    assert operation("Logs_20140328.GetLogEvents")[0] == "logs"
    for target in ("SageMaker.LaunchRockets", "Nope.DescribeTrainingJob", None):
        with pytest.raises(ApiError) as caught:
            operation(target)
        assert caught.value.code == "UnknownOperationException"
    with pytest.raises(ApiError, match="LaunchRockets"):
        operation("SageMaker.LaunchRockets")


def test_input_is_checked_against_the_shape_and_timestamps_become_datetimes() -> None:
    _, op = operation("SageMaker.ListTrainingJobs")
    params = parse_input(op, json.dumps({"CreationTimeAfter": 1795968000, "MaxResults": 5}).encode())
    assert params["CreationTimeAfter"] == datetime.fromtimestamp(1795968000, UTC)
    with pytest.raises(ApiError) as caught:
        parse_input(op, b'{"MaxResults": "five"}')
    assert caught.value.code == "ValidationException" and "MaxResults" in caught.value.message
    with pytest.raises(ApiError) as caught:
        parse_input(op, b"not json")
    assert caught.value.code == "SerializationException"
    _, describe = operation("SageMaker.DescribeTrainingJob")
    with pytest.raises(ApiError, match="TrainingJobName"):
        parse_input(describe, b"{}")


def test_output_is_cut_to_the_shape_with_epoch_timestamps() -> None:
    _, op = operation("SageMaker.DescribeTrainingJob")
    body = render_output(
        op,
        {
            "TrainingJobName": "a",
            "CreationTime": "2026-11-29T12:00:00+00:00",
            "CostUSD": 1.5,  # dockyard's own: not SageMaker's shape
            "SecondaryStatusTransitions": [{"Status": "Starting", "StartTime": AT, "StatusMessage": ""}],
            "FailureReason": None,
        },
    )
    assert body == {
        "TrainingJobName": "a",
        "CreationTime": AT.timestamp(),
        "SecondaryStatusTransitions": [{"Status": "Starting", "StartTime": AT.timestamp(), "StatusMessage": ""}],
    }


def test_search_expressions_become_catalog_clauses_or_name_what_is_not_searchable() -> None:
    from api.search import MAX_ALTERNATIVES, alternatives_of

    [clauses] = alternatives_of(
        {
            "Filters": [
                {"Name": "Metrics.validation:auc", "Operator": "GreaterThan", "Value": "0.9"},
                {"Name": "TrainingJobName", "Operator": "Contains", "Value": "xgb"},
                {"Name": "Tags.team", "Operator": "Exists"},
            ],
            "SubExpressions": [{"Filters": [{"Name": "HyperParameters.eta", "Operator": "LessThan", "Value": "0.3"}]}],
        }
    )
    assert [c.mlflow() for c in clauses] == [
        "metrics.`validation:auc` > 0.9",
        "tags.`dockyard.job_name` LIKE '%xgb%'",
        "tags.`tag.team` IS NOT NULL",
        "params.`eta` < '0.3'",
    ]
    a, b, c = ({"Name": "TrainingJobName", "Value": v} for v in "abc")
    either = {"Operator": "Or", "Filters": [a, b]}
    assert [[x.value for x in alt] for alt in alternatives_of(either)] == [["'a'"], ["'b'"]]
    both = alternatives_of({"Filters": [c], "SubExpressions": [either]})  # c and (a or b)
    assert [[x.value for x in alt] for alt in both] == [["'c'", "'a'"], ["'c'", "'b'"]]
    assert alternatives_of({}) == [[]]
    too_many = {"SubExpressions": [{"Operator": "Or", "Filters": [a, b, c]}] * 3}  # 27 alternatives
    for bad, named in (
        ({"Filters": [{"Name": "Color", "Value": "x"}]}, "'Color'"),
        ({"Filters": [{"Name": "Metrics.a", "Value": "x"}]}, "number"),
        ({"NestedFilters": [{"NestedPropertyName": "x", "Filters": [a]}]}, "NestedFilters"),
        (too_many, f"more than {MAX_ALTERNATIVES} alternatives"),
    ):
        with pytest.raises(ApiError, match=named):
            alternatives_of(bad)
