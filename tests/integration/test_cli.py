"""`python -m flows.train` as a user runs it: bad specs, Ctrl-C, SageMaker requests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from cli.train import run_training
from infra import docker_engine
from tests.conftest import ROOT
from tests.integration.helpers import local, members, probe_job, start_cli, store_of, wait_for_status, write_files

pytestmark = pytest.mark.integration


def cli(job: dict[str, Any] | str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    path = job if isinstance(job, str) else str(tmp_path / "job.yaml")
    if not isinstance(job, str):
        Path(path).write_text(yaml.safe_dump(job))
    return subprocess.run(
        [sys.executable, "-m", "flows.train", path, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=os.environ.copy(),
        timeout=300,
    )


BAD_SPECS = [
    ({"training_job_name": "bad_name!"}, "training_job_name: 'bad_name!' is not a valid job name"),
    ({"resource_config": {"instance_type": "ml.m5.larg"}}, "did you mean 'ml.m5.large'?"),
    ({"resource_config": {"instance_type": "ml.p3.2xlarge"}}, "ml.p3.2xlarge needs GPUs and this host has none"),
    ({"hyperparameters": {f"h{i}": "1" for i in range(101)}}, "at most 100 allowed"),
    (
        {
            "algorithm_specification": {
                "training_image": "x:1",
                "metric_definitions": [{"name": "m", "regex": "loss=[0-9.]+"}],
            }
        },
        "must have exactly one capture group",
    ),
    (
        {"input_data_config": [{"channel_name": "..", "data_source": {"s3_data_source": {"s3_uri": "file:///tmp"}}}]},
        "input_data_config[0].channel_name",
    ),
    (
        {"input_data_config": [{"channel_name": "train", "data_source": {"s3_data_source": {"s3_uri": "data/train"}}}]},
        "input_data_config[0].data_source.s3_data_source.s3_uri: must start with s3:// or file:// — got 'data/train'",
    ),
    (
        {
            "input_data_config": [
                {"channel_name": "train", "data_source": {"s3_data_source": {"s3_uri": "file:///nonexistent/data"}}}
            ]
        },
        "no objects at file:///nonexistent/data",
    ),
    ({"algorithm_specification": {"training_image": None, "algorithm_name": "xgbost"}}, "did you mean 'xgboost'?"),
    (
        {
            "input_data_config": [
                {
                    "channel_name": "train",
                    "compression_type": "Gzip",
                    "data_source": {"s3_data_source": {"s3_uri": "file:///nonexistent/data"}},
                }
            ]
        },
        "Gzip is decompressed only on the way through a Pipe channel; this one is File",
    ),
    (
        {"output_data_config": {"s3_output_path": "s3://no-such-bucket-dockyard/out"}},
        "bucket 'no-such-bucket-dockyard'",
    ),
    ({"hyperparamters": {"a": "1"}}, "hyperparamters: unknown field — did you mean 'hyperparameters'?"),
]


@pytest.mark.parametrize(("change", "message"), BAD_SPECS, ids=[m[:40] for _, m in BAD_SPECS])
def test_bad_spec_exits_2_naming_the_field_and_creates_nothing(
    change: dict[str, Any],
    message: str,
    home: str,
    tmp_path: Path,
    s3_endpoint: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The command line's own code, in this process (a whole process costs seconds of imports
    a case; test_a_second_run_of_a_finished_job_name_is_refused runs one for exit code 2)."""
    monkeypatch.setenv("DOCKYARD_S3_ENDPOINT_URL", s3_endpoint)
    job = probe_job(home, "dockyard-test/probe:1", "noop")
    for key, value in change.items():
        job[key] = {**job[key], **value} if isinstance(job.get(key), dict) and key != "hyperparameters" else value
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(job))
    assert run_training([str(path), "--json"]) == 2
    err = capsys.readouterr().err
    assert message in err, err
    assert not (Path(home) / "jobs").exists() and not (Path(home) / "output").exists()
    assert store_of(home).summaries() == []
    assert [o for o in docker_engine.list_managed() if o["job"] == job["training_job_name"]] == []


def test_a_second_run_of_a_finished_job_name_is_refused(home: str, tmp_path: Path, test_images: dict[str, str]) -> None:
    job = probe_job(home, test_images["probe"], "noop")
    assert cli(job, tmp_path).returncode == 0
    again = cli(job, tmp_path)
    assert again.returncode == 2
    assert f"training_job_name: '{job['training_job_name']}' already names a training job (Completed" in again.stderr


def test_ctrl_c_stops_the_job_gracefully_with_artifacts(home: str, tmp_path: Path, test_images: dict[str, str]) -> None:
    job = probe_job(home, test_images["probe"], "sleep", hyperparameters={"seconds": "300"})
    process = start_cli(job, tmp_path)
    wait_for_status(home, job["training_job_name"], "Training")
    time.sleep(1.5)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 3, err[-3000:]
    body = json.loads(out)
    assert (body["TrainingJobStatus"], body["SecondaryStatus"]) == ("Stopped", "Stopped")
    assert [t["Status"] for t in body["SecondaryStatusTransitions"]][-3:] == ["Stopping", "Uploading", "Stopped"]
    files = members(local(body["ModelArtifacts"]["S3ModelArtifacts"]))
    assert files["stopped.txt"] == b"stopped by SIGTERM"


def test_a_sagemaker_create_training_job_request_runs_as_it_is(
    home: str, tmp_path: Path, test_images: dict[str, str]
) -> None:
    write_files(tmp_path / "data", {"train/a.csv": "1\n"})
    request = {
        "TrainingJobName": "sagemaker-request-job",
        "AlgorithmSpecification": {
            "TrainingImage": test_images["probe"],
            "TrainingInputMode": "File",
            "MetricDefinitions": [{"Name": "loss", "Regex": "loss=([0-9.]+)"}],
        },
        "RoleArn": "arn:aws:iam::123456789012:role/SageMakerRole",
        "InputDataConfig": [
            {
                "ChannelName": "train",
                "DataSource": {
                    "S3DataSource": {
                        "S3DataType": "S3Prefix",
                        "S3Uri": f"file://{tmp_path}/data/train",
                        "S3DataDistributionType": "FullyReplicated",
                    }
                },
                "ContentType": "text/csv",
            }
        ],
        "OutputDataConfig": {"S3OutputPath": f"file://{home}/output"},
        "ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 10},
        "StoppingCondition": {"MaxRuntimeInSeconds": 600},
        "HyperParameters": {"mode": "contract"},
        "VpcConfig": {"SecurityGroupIds": ["sg-1"], "Subnets": ["subnet-1"]},
        "Tags": [{"Key": "team", "Value": "ml"}],
    }
    path = tmp_path / "request.json"
    path.write_text(json.dumps(request))
    result = cli(str(path), tmp_path, "--json")
    assert result.returncode == 0, result.stderr[-3000:]
    body = json.loads(result.stdout)
    assert body["TrainingJobName"] == "sagemaker-request-job"
    assert body["RoleArn"] == request["RoleArn"] and body["Tags"] == request["Tags"]
    assert body["ResourceConfig"] == {"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 10}
    report = json.loads(members(local(body["ModelArtifacts"]["S3ModelArtifacts"]))["contract-algo-1.json"])
    assert report["config"]["inputdataconfig.json"]["train"]["ContentType"] == "text/csv"
    assert report["env"]["SM_NUM_CPUS"] == str(min(2, os.cpu_count() or 1))


def test_dockyard_jobs_on_a_running_job_then_stop_from_another_process(
    home: str, tmp_path: Path, test_images: dict[str, str]
) -> None:
    job = probe_job(home, test_images["probe"], "sleep", hyperparameters={"seconds": "300"})
    name = job["training_job_name"]
    process = start_cli(job, tmp_path)
    dockyard = [sys.executable, "-c", "import sys; from cli.main import main; sys.exit(main())"]
    wait_for_status(home, name, "Training")
    running = json.loads(
        subprocess.run(
            [*dockyard, "jobs", "list", "--status", "InProgress", "--since", "10m", "--json"],
            cwd=ROOT,
            capture_output=True,
            text=True,
        ).stdout
    )
    assert [r["TrainingJobName"] for r in running] == [name]
    assert (
        subprocess.run(
            [*dockyard, "jobs", "list", "--status", "Completed"], cwd=ROOT, capture_output=True, text=True
        ).stdout
        == ""
    )
    assert (
        "InProgress (Training)"
        in subprocess.run([*dockyard, "jobs", "describe", name], cwd=ROOT, capture_output=True, text=True).stdout
    )
    follow = subprocess.Popen(
        [*dockyard, "jobs", "logs", name, "--follow"], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    stop = subprocess.run([*dockyard, "jobs", "stop", name], cwd=ROOT, capture_output=True, text=True)
    assert stop.returncode == 0, stop.stderr
    _, err = process.communicate(timeout=120)
    assert process.returncode == 3, err[-3000:]
    followed, _ = follow.communicate(timeout=30)  # --follow ends once the job has
    assert follow.returncode == 0 and "got SIGTERM, saved" in followed and "uploaded" in followed
    described = json.loads(
        subprocess.run(
            [*dockyard, "jobs", "describe", name, "--json"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout
    )
    assert described["TrainingJobStatus"] == "Stopped"
    assert described["SecondaryStatusTransitions"][-1]["StatusMessage"].startswith(
        "Training job stopped: stop requested"
    )
    again = subprocess.run([*dockyard, "jobs", "stop", name], cwd=ROOT, capture_output=True, text=True)
    assert again.returncode == 1 and "is Stopped; there is nothing to stop" in again.stderr
    logs = subprocess.run([*dockyard, "jobs", "logs", name], cwd=ROOT, capture_output=True, text=True).stdout
    assert "[algo-1] step=" in logs and "got SIGTERM, saved" in logs
    chart = tmp_path / "curves.png"
    table = subprocess.run(
        [*dockyard, "jobs", "metrics", name, "--plot", str(chart)], cwd=ROOT, capture_output=True, text=True
    ).stdout
    header, row = table.splitlines()[:2]
    assert header.split() == ["metric", "host", "count", "last", "min", "max"]
    assert row.split()[:2] == ["loss", "algo-1"] and int(row.split()[2]) >= 1
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cancelling_the_flow_run_in_prefect_stops_the_job(
    home: str, tmp_path: Path, test_images: dict[str, str]
) -> None:
    from uuid import UUID

    from prefect.client.orchestration import get_client
    from prefect.states import Cancelling

    job = probe_job(home, test_images["probe"], "sleep", hyperparameters={"seconds": "300"})
    process = start_cli(job, tmp_path)
    record = wait_for_status(home, job["training_job_name"], "Training")
    with get_client(sync_client=True) as client:
        client.set_flow_run_state(UUID(str(record.flow_run_id)), Cancelling(), force=True)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 3, err[-3000:]
    body = json.loads(out)
    assert (body["TrainingJobStatus"], body["SecondaryStatus"]) == ("Stopped", "Stopped")
    assert body["SecondaryStatusTransitions"][-1]["StatusMessage"] == "Training job stopped: cancelled in Prefect"
    assert members(local(body["ModelArtifacts"]["S3ModelArtifacts"]))["stopped.txt"] == b"stopped by SIGTERM"
    with get_client(sync_client=True) as client:
        assert client.read_flow_run(UUID(str(record.flow_run_id))).state.name == "Cancelled"  # type: ignore[union-attr]
