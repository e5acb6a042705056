"""End-to-end training jobs on a real Docker engine, through real Prefect flow runs."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.integration.helpers import (
    channel,
    local,
    members,
    probe_job,
    read_json,
    run_example,
    run_job,
    write_files,
)

pytestmark = pytest.mark.integration


def test_xgboost_example_completes_and_its_model_predicts(home: str) -> None:
    body = run_example("examples/xgboost-breast-cancer", home)
    assert body["TrainingJobStatus"] == "Completed"
    assert [t["Status"] for t in body["SecondaryStatusTransitions"]] == [
        "Starting",
        "Downloading",
        "DownloadingTrainingImage",
        "Training",
        "Uploading",
        "Completed",
    ]
    metrics = {m["MetricName"]: m["Value"] for m in body["FinalMetricDataList"]}
    assert metrics["validation:auc"] > 0.9
    assert body["TrainingImageDigest"].startswith("sha256:")
    model = local(body["ModelArtifacts"]["S3ModelArtifacts"])
    record = read_json(model.parent / "job.json")
    assert record["TrainingJobStatus"] == "Completed" and record["TrainingTimeInSeconds"] >= 1
    # Load the model and predict, inside the algorithm's own image.
    extract = model.parent / "model"
    extract.mkdir()
    subprocess.run(["tar", "-xzf", str(model), "-C", str(extract)], check=True)
    data = Path(home) / "data/breast-cancer/validation"
    script = (
        "import numpy as np, xgboost as xgb; d=np.loadtxt('/data/validation.csv', delimiter=',');"
        "b=xgb.Booster(model_file='/model/xgboost-model');"
        "p=b.predict(xgb.DMatrix(d[:,1:])); print(((p>0.5)==d[:,0]).mean())"
    )
    accuracy = subprocess.run(
        [
            "docker",
            "run",
            "--rm",
            "-v",
            f"{extract}:/model:ro",
            "-v",
            f"{data}:/data:ro",
            "dockyard/xgboost:2.0",
            "python3",
            "-c",
            script,
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert float(accuracy) > 0.9


def test_two_instances_reach_each_other_and_see_the_contract(
    home: str, test_images: dict[str, str], tmp_path: Path
) -> None:
    data = tmp_path / "data"
    write_files(data, {"train/a.csv": "1,2\n", "train/sub/b.csv": "3,4\n"})
    spec = probe_job(
        home,
        test_images["probe"],
        "contract",
        [channel("train", f"file://{data}/train")],
        instance_count=2,
        environment={"MY_SETTING": "42"},
    )
    body = run_job(spec)
    assert body["TrainingJobStatus"] == "Completed", body.get("FailureReason")
    files = members(local(body["ModelArtifacts"]["S3ModelArtifacts"]))
    for me, other in (("algo-1", "algo-2"), ("algo-2", "algo-1")):
        report = json.loads(files[f"contract-{me}.json"])
        assert report["peers"] == {other: other}
        assert report["hostname"] == me
        rc = report["config"]["resourceconfig.json"]
        assert rc["current_host"] == me and rc["hosts"] == ["algo-1", "algo-2"]
        assert rc["network_interface_name"] == "eth0"
        assert report["config"]["hyperparameters.json"] == {"mode": "contract"}
        assert report["config"]["inputdataconfig.json"]["train"]["TrainingInputMode"] == "File"
        assert report["staged"] == {"train/a.csv": 4, "train/sub/b.csv": 4}
        env = report["env"]
        assert env["SM_CURRENT_HOST"] == me and json.loads(env["SM_HOSTS"]) == ["algo-1", "algo-2"]
        assert env["SM_CHANNEL_TRAIN"] == "/opt/ml/input/data/train" and env["SM_HP_MODE"] == "contract"
        assert env["TRAINING_JOB_NAME"] == spec["training_job_name"] and env["MY_SETTING"] == "42"
        assert report["input_writable"] is False and report["docker_socket"] is False
        assert report["argv"][1:] == [] and report["argv"][0].endswith("train")
        # Confined: no new privileges, seccomp filtering, seven capabilities, a pids limit.
        confined = report["confinement"]
        assert (confined["NoNewPrivs"], confined["Seccomp"]) == ("1", "2"), confined
        assert confined["CapEff"] == confined["CapBnd"] == "00000000000000fb", confined  # CHOWN..SETUID, bits 0-7 but 2
        assert confined["pids.max"] == "16384" and confined["raw_socket"] == confined["mknod"] == "refused", confined
    output = members(local(body["OutputArtifacts"]))
    assert set(output) == {"algo-1.txt", "algo-2.txt"}


def test_failing_container_ends_failed_with_its_failure_text(home: str, test_images: dict[str, str]) -> None:
    body = run_job(
        probe_job(home, test_images["probe"], "fail", hyperparameters={"failure_text": "ValueError: bad column 7"})
    )
    assert body["TrainingJobStatus"] == "Failed"
    assert body["FailureReason"] == "AlgorithmError: ValueError: bad column 7"
    assert [t["Status"] for t in body["SecondaryStatusTransitions"]][-2:] == ["Uploading", "Failed"]
    assert local(body["ModelArtifacts"]["S3ModelArtifacts"]).exists()


def test_one_failed_instance_stops_its_waiting_peer_and_names_the_jobs_failure(
    home: str, test_images: dict[str, str]
) -> None:
    hyperparameters = {"failure_text": "ValueError: bad shard", "failing_host": "algo-2"}
    job = probe_job(home, test_images["probe"], "fail", hyperparameters=hyperparameters, instance_count=2)
    body = run_job(job)
    assert body["TrainingJobStatus"] == "Failed"
    assert body["FailureReason"] == "AlgorithmError: ValueError: bad shard"  # not algo-1's SIGTERM
    log = (Path(home) / "jobs" / job["training_job_name"] / "job.log").read_text()
    assert "an instance failed: stopping the others (algo-1)" in log


def test_exit_code_and_last_lines_when_no_failure_file(home: str, test_images: dict[str, str]) -> None:
    body = run_job(probe_job(home, test_images["probe"], "exit", hyperparameters={"exit_code": "7"}))
    assert body["TrainingJobStatus"] == "Failed"
    assert "algo-1 exited with code 7" in body["FailureReason"]
    assert "line 29" in body["FailureReason"]


def test_max_runtime_stops_the_job_and_keeps_artifacts(home: str, test_images: dict[str, str]) -> None:
    spec = probe_job(
        home,
        test_images["probe"],
        "sleep",
        hyperparameters={"seconds": "120"},
        stopping_condition={"max_runtime_in_seconds": 15},
    )
    body = run_job(spec)
    assert (body["TrainingJobStatus"], body["SecondaryStatus"]) == ("Stopped", "MaxRuntimeExceeded")
    statuses = [t["Status"] for t in body["SecondaryStatusTransitions"]]
    assert statuses[-3:] == ["Stopping", "Uploading", "MaxRuntimeExceeded"]
    files = members(local(body["ModelArtifacts"]["S3ModelArtifacts"]))
    assert files["started.txt"] == b"started" and files["stopped.txt"] == b"stopped by SIGTERM"
    assert any(m["MetricName"] == "loss" for m in body["FinalMetricDataList"])


def test_sagemaker_training_toolkit_container_runs_unchanged(
    home: str, test_images: dict[str, str], tmp_path: Path
) -> None:
    write_files(tmp_path / "train", {"part-0.csv": "1\n", "part-1.csv": "2\n"})
    spec = probe_job(home, test_images["toolkit"], "unused", [channel("train", f"file://{tmp_path}/train")])
    spec["hyperparameters"] = {"epochs": "3"}
    spec["algorithm_specification"]["metric_definitions"] = [{"name": "loss", "regex": r"loss=([0-9.]+)"}]
    body = run_job(spec)
    assert body["TrainingJobStatus"] == "Completed", body.get("FailureReason")
    result = json.loads(members(local(body["ModelArtifacts"]["S3ModelArtifacts"]))["toolkit-result.json"])
    assert result == {"epochs": 3, "files": ["part-0.csv", "part-1.csv"], "hosts": ["algo-1"], "current_host": "algo-1"}
    assert {m["MetricName"]: m["Value"] for m in body["FinalMetricDataList"]} == {"loss": pytest.approx(1 / 3, 1e-3)}


@pytest.mark.usefixtures("test_images")
def test_bring_your_own_container_example(home: str) -> None:
    body = run_example("examples/byo-container", home)
    weights = json.loads(members(local(body["ModelArtifacts"]["S3ModelArtifacts"]))["model.json"])["weights"]
    assert weights == pytest.approx([3, -2, 1], abs=0.1)


@pytest.mark.usefixtures("test_images")
def test_pipe_mode_example_trains_from_its_fifos(home: str) -> None:
    body = run_example("examples/pipe-mode", home)
    weights = json.loads(members(local(body["ModelArtifacts"]["S3ModelArtifacts"]))["model.json"])["weights"]
    assert weights == pytest.approx([3, -2, 1], abs=0.1)
    log = (Path(home) / "jobs" / body["TrainingJobName"] / "job.log").read_text()
    assert all(f"epoch={e} rows=800 " in log for e in range(10))  # every row, every epoch
