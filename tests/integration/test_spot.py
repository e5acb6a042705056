"""Managed spot training on real Docker and a real S3 endpoint: interruptions
from dockyard's simulated market, checkpoints synced, work resumed."""

from __future__ import annotations

import json
import os
import re
import subprocess
import uuid
from pathlib import Path
from typing import Any

import boto3
import pytest

from tests.integration.helpers import local, members, probe_job, record_of, run_job, start_cli

pytestmark = pytest.mark.integration


def spot_job(home: str, image: str, bucket: str, steps: int, **extra: Any) -> dict[str, Any]:
    job = probe_job(home, image, "count", hyperparameters={"steps": str(steps), "step_seconds": "0.2"}, **extra)
    job["enable_managed_spot_training"] = True
    job["checkpoint_config"] = {"s3_uri": f"s3://{bucket}/checkpoints/{job['training_job_name']}"}
    job.setdefault("stopping_condition", {"max_runtime_in_seconds": 600, "max_wait_time_in_seconds": 1200})
    return job


@pytest.fixture
def bucket(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("DOCKYARD_S3_ENDPOINT_URL", s3_endpoint)
    name = f"spot-{uuid.uuid4().hex[:10]}"
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=name)
    return name


def steps_done(home: str, name: str) -> list[int]:
    log = (Path(home) / "jobs" / name / "job.log").read_text()
    return [int(m) for m in re.findall(r"\[algo-1\] step=(\d+) done", log)]


def statuses(body: dict[str, Any]) -> list[str]:
    return [t["Status"] for t in body["SecondaryStatusTransitions"]]


def test_interrupted_twice_resumes_from_checkpoints_and_completes(
    home: str, bucket: str, test_images: dict[str, str], monkeypatch: pytest.MonkeyPatch, s3_endpoint: str
) -> None:
    # Timed from the start of each stretch of training, so a slow machine meets them mid-training too.
    monkeypatch.setenv("DOCKYARD_SPOT_SIMULATION", "on=Training+2,Training+3; notice=1; price=0.3")
    job = spot_job(home, test_images["probe"], bucket, steps=60)  # 12 s of training: both land mid-training
    body = run_job(job)
    assert body["TrainingJobStatus"] == "Completed", body.get("FailureReason")
    assert steps_done(home, job["training_job_name"]) == list(range(60))  # every step once, none lost
    log = (Path(home) / "jobs" / job["training_job_name"] / "job.log").read_text()
    assert len(re.findall(r"resuming at step \d+", log)) == 2
    seq = statuses(body)
    assert seq.count("Interrupted") == 2 and seq[-1] == "Completed"
    first = seq.index("Interrupted")
    assert seq[first - 1 : first + 4] == [
        "Training",
        "Interrupted",
        "Restarting",
        "Downloading",
        "DownloadingTrainingImage",
    ]
    assert [e["Event"] for e in body["SpotInterruptions"]] == ["on-Training+2", "on-Training+3"]
    assert len(body["Attempts"]) == 3
    assert body["BillableTimeInSeconds"] < body["TrainingTimeInSeconds"]
    assert 50 < body["SpotSavingsPercent"] < 75 and body["SpotSavingsUSD"] == 0  # 'local' has no price
    assert members(local(body["ModelArtifacts"]["S3ModelArtifacts"]))["steps.txt"] == b"60"
    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    saved = s3.get_object(Bucket=bucket, Key=f"checkpoints/{job['training_job_name']}/progress.json")
    assert saved["Body"].read() == b'{"next": 60}'


def test_interruptions_during_staging_and_upload_lose_nothing(
    home: str, bucket: str, test_images: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("DOCKYARD_SPOT_SIMULATION", "on=Downloading,Uploading; notice=1")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.csv").write_text("1\n")
    job = spot_job(home, test_images["probe"], bucket, steps=5, instance_count=1)
    job["input_data_config"] = [
        {"channel_name": "train", "data_source": {"s3_data_source": {"s3_uri": f"file://{tmp_path}/data"}}}
    ]
    job["resource_config"]["instance_type"] = "ml.m5.large"
    body = run_job(job)
    assert body["TrainingJobStatus"] == "Completed", body.get("FailureReason")
    assert [e["DuringStatus"] for e in body["SpotInterruptions"]] == ["Downloading", "Uploading"]
    seq = statuses(body)
    assert "Downloading" in seq and seq[seq.index("Interrupted") - 1] == "Downloading"
    last = len(seq) - 1 - seq[::-1].index("Interrupted")
    assert seq[last - 1 : last + 2] == ["Uploading", "Interrupted", "Restarting"]
    assert steps_done(home, job["training_job_name"]) == list(range(5))
    assert members(local(body["ModelArtifacts"]["S3ModelArtifacts"]))["steps.txt"] == b"5"
    assert body["SpotSavingsUSD"] > 0  # ml.m5.large has an on-demand price


def test_no_capacity_past_max_wait_stops_the_job_and_keeps_checkpoints(
    home: str, bucket: str, test_images: dict[str, str], monkeypatch: pytest.MonkeyPatch, s3_endpoint: str
) -> None:
    # Capacity goes 3 s after creation, the interruption comes 4 s into training, so past those 3 s
    # however fast the way to training (here it once took under 2 s, and an interruption 1 s into
    # training found capacity again); the job then waits Pending until max_wait (20 s from creation) runs out.
    monkeypatch.setenv("DOCKYARD_SPOT_SIMULATION", "on=Training+4; no_capacity=3-1000; notice=1")
    job = spot_job(
        home,
        test_images["probe"],
        bucket,
        steps=200,
        stopping_condition={"max_runtime_in_seconds": 20, "max_wait_time_in_seconds": 20},
    )
    body = run_job(job)
    assert (body["TrainingJobStatus"], body["SecondaryStatus"]) == ("Stopped", "MaxWaitTimeExceeded")
    assert statuses(body)[-3:] == ["Interrupted", "Pending", "MaxWaitTimeExceeded"]
    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    saved = s3.get_object(Bucket=bucket, Key=f"checkpoints/{job['training_job_name']}/progress.json")
    assert saved["Body"].read().startswith(b'{"next": ')
    assert body["SpotInterruptions"][0]["DuringStatus"] == "Training"


def xgboost_job(home: str, data: Path, rounds: int) -> dict[str, Any]:
    return {
        "training_job_name": f"xgb-spot-{uuid.uuid4().hex[:8]}",
        "algorithm_specification": {"algorithm_name": "xgboost"},
        "input_data_config": [
            {
                "channel_name": "train",
                "content_type": "text/csv",
                "data_source": {"s3_data_source": {"s3_uri": f"file://{data}"}},
            }
        ],
        "hyperparameters": {
            "num_round": rounds,
            "max_depth": 8,
            "eta": 0.05,
            "objective": "binary:logistic",
            "eval_metric": "auc",
            "checkpoint_frequency": 20,
        },
        "output_data_config": {"s3_output_path": f"file://{home}/output"},
    }


@pytest.mark.timeout(1200)  # two 300-round trainings; minutes each on a loaded 2-core machine
def test_xgboost_resumes_its_round_count_and_matches_an_uninterrupted_run(
    home: str, bucket: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.normal(size=(30000, 30))
    y = (x[:, 0] + x[:, 1] * x[:, 2] + rng.normal(size=30000) * 0.5 > 0).astype(float)
    (tmp_path / "data").mkdir()
    np.savetxt(tmp_path / "data" / "train.csv", np.column_stack([y, x]), delimiter=",", fmt="%.5g")
    rounds = 300
    plain = run_job(xgboost_job(home, tmp_path / "data", rounds))
    assert plain["TrainingJobStatus"] == "Completed", plain.get("FailureReason")

    # Interrupted by progress, not by the clock: once an attempt has uploaded 2 checkpoints (round 40 on),
    # and once the next has uploaded 4 more (80 rounds past its resume point), however fast rounds go.
    monkeypatch.setenv("DOCKYARD_SPOT_SIMULATION", "checkpoints=2,4; notice=5")
    job = xgboost_job(home, tmp_path / "data", rounds)
    job["enable_managed_spot_training"] = True
    job["checkpoint_config"] = {"s3_uri": f"s3://{bucket}/xgb/{job['training_job_name']}"}
    job["stopping_condition"] = {"max_runtime_in_seconds": 600, "max_wait_time_in_seconds": 1200}
    body = run_job(job)
    assert body["TrainingJobStatus"] == "Completed", body.get("FailureReason")
    assert len(body["SpotInterruptions"]) == 2
    log = (Path(home) / "jobs" / job["training_job_name"] / "job.log").read_text()
    resumed = [int(r) for r in re.findall(r"resuming from checkpoint \S+ at round (\d+)", log)]
    assert resumed and all(0 < r < rounds for r in resumed), resumed
    trained = [int(r) for r in re.findall(r"\[algo-1\] \[(\d+)\]\t", log)]
    assert sorted(trained) == list(range(rounds))  # every round trained once, counting on from the resume points
    # The models predict the same, as the algorithm's own image tells.
    for name, record in (("plain", plain), ("spot", body)):
        (tmp_path / name).mkdir()
        subprocess.run(
            ["tar", "-xzf", str(local(record["ModelArtifacts"]["S3ModelArtifacts"])), "-C", str(tmp_path / name)],
            check=True,
        )
    script = (
        "import numpy as np, xgboost as xgb; d=xgb.DMatrix(np.loadtxt('/m/data/train.csv', delimiter=',')[:2000, 1:]);"
        "p=[xgb.Booster(model_file=f'/m/{n}/xgboost-model').predict(d) for n in ('plain', 'spot')];"
        "print(float(np.abs(p[0]-p[1]).max()))"
    )
    out = subprocess.run(
        ["docker", "run", "--rm", "-v", f"{tmp_path}:/m:ro", "dockyard/xgboost:2.0", "python3", "-c", script],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert float(out) < 1e-5


def test_chaos_seeded_random_interruptions_across_concurrent_jobs_lose_nothing(
    home: str, bucket: str, test_images: dict[str, str], tmp_path: Path
) -> None:
    jobs = []
    for seed in (11, 12, 13):
        job = spot_job(home, test_images["probe"], bucket, steps=25)
        env = {**os.environ, "DOCKYARD_SPOT_SIMULATION": f"rate=360/h; seed={seed}; notice=1"}
        jobs.append((job, start_cli(job, tmp_path, env=env)))
    for job, process in jobs:
        out, err = process.communicate(timeout=600)
        assert process.returncode == 0, err[-3000:]
        body = json.loads(out)
        assert body["TrainingJobStatus"] == "Completed"
        assert steps_done(home, job["training_job_name"]) == list(range(25)), job["training_job_name"]
        assert members(local(body["ModelArtifacts"]["S3ModelArtifacts"]))["steps.txt"] == b"25"
    interruptions = [len(record_of(home, j["training_job_name"]).spot_events) for j, _ in jobs]
    assert sum(interruptions) >= 3, interruptions
