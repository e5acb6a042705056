"""Jobs against a real S3 endpoint over HTTP and a real image registry."""

from __future__ import annotations

import io
import json
import tarfile
import uuid
from pathlib import Path

import docker
import pytest

from tests.integration.flaky_proxy import FlakyProxy
from tests.integration.helpers import channel, new_bucket, probe_job, run_job, s3_client

pytestmark = pytest.mark.integration


def archive_members(endpoint: str, uri: str) -> dict[str, bytes]:
    bucket, key = uri[5:].split("/", 1)
    data = s3_client(endpoint).get_object(Bucket=bucket, Key=key)["Body"].read()
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]


def test_sharded_channel_splits_objects_across_hosts_with_none_lost(
    home: str, s3_endpoint: str, test_images: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKYARD_S3_ENDPOINT_URL", s3_endpoint)
    bucket = new_bucket(s3_endpoint)
    client = s3_client(s3_endpoint)
    keys = [f"shards/part-{i:02d}.csv" for i in range(10)]
    for i, key in enumerate(keys):
        client.put_object(Bucket=bucket, Key=key, Body=b"x" * (i + 1))
    client.put_object(Bucket=bucket, Key="meta/info.txt", Body=b"shared")
    spec = probe_job(
        home,
        test_images["probe"],
        "contract",
        [channel("train", f"s3://{bucket}/shards/", "ShardedByS3Key"), channel("meta", f"s3://{bucket}/meta")],
        output=f"s3://{bucket}/out",
        instance_count=3,
    )
    body = run_job(spec)
    assert body["TrainingJobStatus"] == "Completed", body.get("FailureReason")
    model_uri = body["ModelArtifacts"]["S3ModelArtifacts"]
    assert model_uri == f"s3://{bucket}/out/{spec['training_job_name']}/output/model.tar.gz"
    files = archive_members(s3_endpoint, model_uri)
    seen: list[str] = []
    for host in ("algo-1", "algo-2", "algo-3"):
        staged = json.loads(files[f"contract-{host}.json"])["staged"]
        shard = sorted(k for k in staged if k.startswith("train/"))
        assert 3 <= len(shard) <= 4, shard
        seen += shard
        assert staged["meta/info.txt"] == 6  # FullyReplicated: on every host
        assert (
            json.loads(files[f"contract-{host}.json"])["config"]["inputdataconfig.json"]["train"]["S3DistributionType"]
            == "ShardedByS3Key"
        )
    assert sorted(seen) == sorted(f"train/part-{i:02d}.csv" for i in range(10))
    record = json.loads(
        client.get_object(Bucket=bucket, Key=f"out/{spec['training_job_name']}/output/job.json")["Body"].read()
    )
    assert record["TrainingJobStatus"] == "Completed"


def test_transient_s3_errors_are_retried_to_success(
    home: str, s3_endpoint: str, test_images: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket = new_bucket(s3_endpoint)
    s3_client(s3_endpoint).put_object(Bucket=bucket, Key="data/a.csv", Body=b"1,2,3\n")
    # One botocore attempt per call, so each 503 reaches dockyard's own retry policy.
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    monkeypatch.setenv("AWS_RETRY_MODE", "standard")
    with FlakyProxy(s3_endpoint, fail_object_reads=2) as proxy:
        monkeypatch.setenv("DOCKYARD_S3_ENDPOINT_URL", proxy.url)
        body = run_job(probe_job(home, test_images["probe"], "contract", [channel("train", f"s3://{bucket}/data")]))
        assert proxy.failed == 2
    assert body["TrainingJobStatus"] == "Completed", body.get("FailureReason")
    log = home + f"/jobs/{body['TrainingJobName']}/job.log"
    assert "staged 1/1 objects" in Path(log).read_text()


def test_image_is_pulled_from_a_registry(home: str, registry: str, test_images: dict[str, str]) -> None:
    engine = docker.from_env()
    remote = f"{registry}/team/probe:{uuid.uuid4().hex[:6]}"
    engine.images.get(test_images["probe"]).tag(remote)
    for line in engine.images.push(remote, stream=True, decode=True):
        assert "error" not in line, line
    engine.images.remove(remote)
    try:
        body = run_job(probe_job(home, remote, "noop"))
        assert body["TrainingJobStatus"] == "Completed", body.get("FailureReason")
        assert body["TrainingImageDigest"].startswith(f"{registry}/team/probe@sha256:")
        assert "pulling" in Path(f"{home}/jobs/{body['TrainingJobName']}/job.log").read_text()
    finally:
        engine.images.remove(remote, force=True)
