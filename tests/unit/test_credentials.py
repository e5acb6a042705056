"""The session policy that narrows a job's role to the job's own locations."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from dockyard.credentials import SESSION_POLICY_LIMIT, session_policy
from dockyard.errors import DockyardError
from dockyard.loading import build_job
from dockyard.settings import Settings
from infra.credentials import (
    REFRESH_MARGIN,
    TOKEN,
    URI,
    Endpoint,
    _Grant,
    container_environment,
    minter,
    resume,
    session_seconds,
)


def spec(**changes: Any) -> Any:
    doc: dict[str, Any] = {
        "training_job_name": "job-a",
        "role": "arn:aws:iam::111111111111:role/training",
        "algorithm_specification": {"training_image": "image:1"},
        "input_data_config": [
            {"channel_name": "train", "data_source": {"s3_data_source": {"s3_uri": "s3://data/sets/train"}}},
            {"channel_name": "local", "data_source": {"s3_data_source": {"s3_uri": "file:///srv/validation"}}},
        ],
        "output_data_config": {"s3_output_path": "s3://results/runs"},
        "checkpoint_config": {"s3_uri": "s3://results/checkpoints/job-a"},
        **changes,
    }
    return build_job(doc, home="/tmp/home", now=datetime.now(UTC))


def test_the_policy_allows_reading_the_input_and_writing_the_job_s_own_output_and_checkpoints() -> None:
    statements = json.loads(session_policy(spec()))["Statement"]
    by_action = {tuple(s["Action"]): s for s in statements if s["Action"] != ["s3:ListBucket"]}
    assert by_action[("s3:GetObject",)]["Resource"] == ["arn:aws:s3:::data/sets/train*"]
    writes = by_action[("s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload")]
    assert writes["Resource"] == ["arn:aws:s3:::results/checkpoints/job-a/*", "arn:aws:s3:::results/runs/job-a/*"]
    listings = {s["Resource"][0]: s["Condition"]["StringLike"]["s3:prefix"] for s in statements if "Condition" in s}
    assert listings == {
        "arn:aws:s3:::data": ["sets/train*"],
        "arn:aws:s3:::results": ["checkpoints/job-a/*", "runs/job-a/*"],
    }
    assert all(s["Effect"] == "Allow" for s in statements)  # and nothing on file:// channels: they are local


def test_wildcards_and_variables_in_a_key_are_only_characters() -> None:
    channel = {"channel_name": "train", "data_source": {"s3_data_source": {"s3_uri": "s3://data/a*b?c$d"}}}
    statements = json.loads(session_policy(spec(input_data_config=[channel])))["Statement"]
    assert statements[0]["Resource"] == ["arn:aws:s3:::data/a${*}b${?}c${$}d*"]


def test_a_job_with_no_s3_location_gets_credentials_that_can_do_nothing() -> None:
    local = spec(input_data_config=[], output_data_config={"s3_output_path": "file:///srv/out"}, checkpoint_config=None)
    assert json.loads(session_policy(local))["Statement"] == [{"Effect": "Deny", "Action": "*", "Resource": "*"}]


def test_a_policy_longer_than_sts_takes_is_refused_saying_what_to_do() -> None:
    channels = [
        {"channel_name": f"c{i}", "data_source": {"s3_data_source": {"s3_uri": f"s3://bucket-{i}/{'x' * 100}"}}}
        for i in range(12)
    ]
    with pytest.raises(ValueError, match=f"over STS's {SESSION_POLICY_LIMIT}: put the input channels under fewer"):
        session_policy(spec(input_data_config=channels))


def test_credentials_are_minted_again_only_when_little_of_them_is_left() -> None:
    minted: list[datetime] = []

    def mint() -> dict[str, str]:
        expiry = datetime.now(UTC) + (timedelta(minutes=10) if not minted else timedelta(hours=1))
        minted.append(expiry)
        return {"AccessKeyId": "ASIA", "SecretAccessKey": "s", "Token": "t", "Expiration": expiry.isoformat()}

    grant = _Grant("job-a", mint)
    grant.current()  # 10 minutes left: under the margin, so the next ask mints anew
    assert timedelta(minutes=10) < REFRESH_MARGIN
    grant.current()
    grant.current()  # an hour left: kept
    assert len(minted) == 2


def test_an_endpoint_answers_a_token_only_with_its_own_job_s_credentials() -> None:
    import urllib.error
    import urllib.request

    served = Endpoint("127.0.0.1")
    given = {"AccessKeyId": "ASIA-A", "SecretAccessKey": "s", "Token": "t", "Expiration": "2099-01-01T00:00:00Z"}
    token_a = served.grant("job-a", lambda: given)
    token_b = served.grant("job-b", lambda: {**given, "AccessKeyId": "ASIA-B"})

    def ask(token: str) -> tuple[int, dict[str, Any]]:
        request = urllib.request.Request(served.uri, headers={"Authorization": token})
        try:
            with urllib.request.urlopen(request, timeout=5) as answer:
                return answer.status, json.loads(answer.read())
        except urllib.error.HTTPError as refused:
            return refused.code, json.loads(refused.read())

    assert ask(token_a) == (200, given)
    assert ask(token_b)[1]["AccessKeyId"] == "ASIA-B"
    assert ask("")[0] == 403 and ask(token_a[:-1])[0] == 403
    served.revoke("job-a")
    assert ask(token_a)[0] == 403  # a job that ended gets no more
    served.server.shutdown()


def test_without_sts_the_roles_file_maps_a_role_to_a_profile_of_this_machine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "credentials").write_text("[training]\naws_access_key_id = AKIATRAINING\naws_secret_access_key = s\n")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    roles = tmp_path / "roles.yaml"
    roles.write_text(f"roles:\n  '{spec().role}': training\n  arn:aws:iam::111111111111:role/gone: nowhere\n")
    settings = Settings(home=tmp_path, roles_file=str(roles))

    given = minter(spec(), settings)
    assert given is not None and given()["AccessKeyId"] == "AKIATRAINING"
    assert minter(spec(role="arn:aws:iam::111111111111:role/unmapped"), settings) is None  # no credentials
    gone = minter(spec(role="arn:aws:iam::111111111111:role/gone"), settings)
    assert gone is not None
    with pytest.raises(DockyardError, match="the AWS profile 'nowhere' gives no credentials"):
        gone()
    for broken in ("roles: [not, a, mapping]\n", "roles: {unclosed\n", "- a list\n"):
        roles.write_text(broken)
        with pytest.raises(DockyardError, match=r"DOCKYARD_ROLES_FILE: .* cannot be read as `roles: \{ROLE_ARN"):
            minter(spec(), settings)


def test_held_credentials_are_served_while_they_last_when_minting_fails() -> None:
    fails = False

    def mint() -> dict[str, str]:
        if fails:
            raise OSError("STS is down")
        expiry = datetime.now(UTC) + timedelta(minutes=10)  # inside the refresh margin: every ask mints
        return {"AccessKeyId": "ASIA", "SecretAccessKey": "s", "Token": "t", "Expiration": expiry.isoformat()}

    grant = _Grant("job-a", mint)
    first = grant.current()
    fails = True
    assert grant.current() == first  # still 10 minutes good
    with pytest.raises(OSError):
        _Grant("job-b", mint).current()  # nothing held: the container is told
    assert grant.values() == frozenset({"s", "t"})


def test_a_token_is_one_job_s_and_a_resumed_one_must_be_this_machine_s_endpoint(tmp_path: Path) -> None:
    served = Endpoint("127.0.0.1")
    given = {"AccessKeyId": "A", "SecretAccessKey": "s", "Token": "t", "Expiration": "2099-01-01T00:00:00Z"}
    token = served.grant("job-a", lambda: given)
    with pytest.raises(DockyardError, match="is another job's"):
        served.grant("job-b", lambda: given, token)
    served.server.shutdown()
    settings = Settings(home=tmp_path, sts_endpoint_url="http://127.0.0.1:9")
    elsewhere = {URI: "http://0.0.0.0:8080/v1/credentials", TOKEN: "chosen-by-the-job"}
    with pytest.raises(DockyardError, match="is not this machine's credentials endpoint"):
        resume(spec(), settings, elsewhere)
    assert resume(spec(enable_network_isolation=True), settings, elsewhere) is None  # an isolated job gets none
    assert resume(spec(), settings, {}) is None  # containers that were given none


def test_the_endpoint_address_must_be_one_the_sdks_take(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, sts_endpoint_url="http://127.0.0.1:9", credentials_address="10.0.0.1")
    with pytest.raises(DockyardError, match=r"take credentials over HTTP from 169\.254\.170\.2"):
        container_environment(spec(), settings)


def test_credentials_last_no_longer_than_the_job_may_run_within_sts_s_bounds() -> None:
    assert session_seconds(spec(stopping_condition={"max_runtime_in_seconds": 60})) == 1800
    assert session_seconds(spec(stopping_condition={"max_runtime_in_seconds": 2400})) == 3000
    assert session_seconds(spec(stopping_condition={"max_runtime_in_seconds": 86400})) == 3600
