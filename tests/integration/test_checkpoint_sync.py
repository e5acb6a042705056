"""Checkpoint sync against a real S3 endpoint, and per-host folders on real Docker."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import boto3
import pytest

from infra.checkpoint_sync import CheckpointSync
from tests.integration.helpers import probe_job, run_job

pytestmark = pytest.mark.integration


def keys(s3: Any, bucket: str, prefix: str) -> dict[str, bytes]:
    """The objects under `prefix` and their bytes; one deleted between the listing and its read is gone."""
    found = {}
    for o in s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", []):
        try:
            found[o["Key"][len(prefix) :]] = s3.get_object(Bucket=bucket, Key=o["Key"])["Body"].read()
        except s3.exceptions.NoSuchKey:
            continue
    return found


def eventually(check: object, timeout: float = 10) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


def test_files_upload_when_complete_deletions_propagate_and_restore_brings_them_back(
    s3_endpoint: str, tmp_path: Path
) -> None:
    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    bucket = f"ckpt-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="run/old.bin", Body=b"from an earlier attempt")
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    sync = CheckpointSync(str(folder), f"s3://{bucket}/run", s3_endpoint, print)
    assert sync.restore() == 1 and (folder / "old.bin").read_bytes() == b"from an earlier attempt"
    sync.start()
    try:
        with open(folder / "model.ckpt", "wb") as f:
            f.write(b"half")
            f.flush()
            time.sleep(1.0)
            assert "model.ckpt" not in keys(s3, bucket, "run/")  # never half-written
            f.write(b" and the rest")
        eventually(lambda: keys(s3, bucket, "run/").get("model.ckpt") == b"half and the rest")
        (folder / "sub").mkdir()
        (folder / ".tmp").write_bytes(b"renamed into place")
        (folder / ".tmp").rename(folder / "sub" / "x.ckpt")
        eventually(lambda: keys(s3, bucket, "run/").get("sub/x.ckpt") == b"renamed into place")
        (folder / "old.bin").unlink()
        eventually(lambda: "old.bin" not in keys(s3, bucket, "run/"))
    finally:
        sync.stop()
    (folder / "late.ckpt").write_bytes(b"written after the watcher stopped")
    assert sync.final_sync() == (1, 0)
    assert set(keys(s3, bucket, "run/")) == {"model.ckpt", "sub/x.ckpt", "late.ckpt"}


def test_each_host_of_a_multi_instance_job_syncs_to_its_own_folder(
    home: str, tmp_path: Path, test_images: dict[str, str]
) -> None:
    job = probe_job(
        home, test_images["probe"], "count", instance_count=2, hyperparameters={"steps": "3", "step_seconds": "0.1"}
    )
    job["checkpoint_config"] = {"s3_uri": f"file://{tmp_path}/ckpt"}
    body = run_job(job)
    assert body["TrainingJobStatus"] == "Completed", body.get("FailureReason")
    for host in ("algo-1", "algo-2"):
        assert (tmp_path / "ckpt" / host / "progress.json").read_text() == '{"next": 3}'


def test_links_a_container_plants_never_carry_the_hosts_files_out(
    s3_endpoint: str, test_images: dict[str, str], tmp_path: Path
) -> None:
    """A container owns its checkpoint folder and may leave links in it to the host's files (as the
    sync sees them, on the host): neither the live sync nor the final one follows them."""
    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    bucket = f"ckpt-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    secret = tmp_path / "host-secret"
    secret.write_text("the host's own")
    (tmp_path / "host-dir").mkdir()
    (tmp_path / "host-dir" / "key.pem").write_text("the host's key")
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    sync = CheckpointSync(str(folder), f"s3://{bucket}/run", s3_endpoint, print)
    sync.start()
    try:
        # Written by a real container, as root inside it: a file, a link to a host file, one to a host folder.
        script = (
            f"import os; open('/c/real.ckpt', 'w').write('mine'); os.symlink('{secret}', '/c/stolen.ckpt');"
            f"os.symlink('{tmp_path / 'host-dir'}', '/c/linked'); open('/c/after.ckpt', 'w').write('done')"
        )
        from infra import docker_engine

        docker_engine.client().containers.run(
            test_images["probe"], ["python3", "-c", script], volumes={str(folder): {"bind": "/c", "mode": "rw"}},
            remove=True,
        )  # fmt: skip
        eventually(lambda: "after.ckpt" in keys(s3, bucket, "run/"))
    finally:
        sync.stop()
    sync.final_sync()
    found = keys(s3, bucket, "run/")
    assert found == {"real.ckpt": b"mine", "after.ckpt": b"done"}, found
