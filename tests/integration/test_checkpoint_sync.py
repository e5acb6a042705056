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
