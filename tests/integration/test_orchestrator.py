"""The orchestrator may die: a rerun of the same command picks the job up."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from infra import docker_engine
from tests.integration.helpers import local, members, probe_job, run_cli, start_cli, wait_for_status

pytestmark = pytest.mark.integration


def counting_job(home: str, image: str, tmp_path: Path) -> dict[str, Any]:
    job = probe_job(home, image, "count", hyperparameters={"steps": "30", "step_seconds": "0.2"})
    job["checkpoint_config"] = {"s3_uri": f"file://{tmp_path}/checkpoints"}
    return job


def rerun(job: dict[str, Any], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return run_cli("flows.train", tmp_path / f"{job['training_job_name']}.yaml")


def kill_during_training(home: str, job: dict[str, Any], tmp_path: Path) -> None:
    process = start_cli(job, tmp_path)
    wait_for_status(home, job["training_job_name"], "Training")
    time.sleep(2)
    process.send_signal(signal.SIGKILL)
    process.wait(30)


def test_a_rerun_reattaches_to_containers_that_outlived_their_orchestrator(
    home: str, tmp_path: Path, test_images: dict[str, str]
) -> None:
    job = counting_job(home, test_images["probe"], tmp_path)
    kill_during_training(home, job, tmp_path)
    assert list(docker_engine.job_containers(job["training_job_name"])) == ["algo-1"]  # still training
    result = rerun(job, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "picking up the unfinished training job" in result.stderr
    body = json.loads(result.stdout)
    assert body["TrainingJobStatus"] == "Completed"
    assert len(body["Attempts"]) == 1  # one container, never a second copy
    assert members(local(body["ModelArtifacts"]["S3ModelArtifacts"]))["steps.txt"] == b"30"
    log = (Path(home) / "jobs" / job["training_job_name"] / "job.log").read_text()
    assert "reattached to 1 running container(s)" in log and "resuming at step" not in log


def test_a_rerun_restarts_from_checkpoints_when_the_containers_are_gone(
    home: str, tmp_path: Path, test_images: dict[str, str]
) -> None:
    job = counting_job(home, test_images["probe"], tmp_path)
    kill_during_training(home, job, tmp_path)
    docker_engine.remove_job_containers(job["training_job_name"])  # the host lost them
    result = rerun(job, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    body = json.loads(result.stdout)
    assert body["TrainingJobStatus"] == "Completed"
    statuses = [t["Status"] for t in body["SecondaryStatusTransitions"]]
    assert statuses[statuses.index("Training") + 1 : statuses.index("Training") + 3] == ["Restarting", "Downloading"]
    assert body["Attempts"][0]["EndedBy"] == "orchestrator restarted"
    log = (Path(home) / "jobs" / job["training_job_name"] / "job.log").read_text()
    resumed_at = int(log.split("resuming at step ")[1].split()[0])
    assert resumed_at > 0
    assert members(local(body["ModelArtifacts"]["S3ModelArtifacts"]))["steps.txt"] == b"30"


def test_a_job_that_is_running_cannot_be_started_twice(home: str, tmp_path: Path, test_images: dict[str, str]) -> None:
    job = probe_job(home, test_images["probe"], "sleep", hyperparameters={"seconds": "300"})
    first = start_cli(job, tmp_path)
    wait_for_status(home, job["training_job_name"], "Training")
    second = rerun(job, tmp_path)
    assert second.returncode == 1
    assert f"training job {job['training_job_name']} is being run by process {first.pid} on " in second.stderr
    first.send_signal(signal.SIGINT)  # the first run carries on, untouched, until it is stopped
    _, err = first.communicate(timeout=120)
    assert first.returncode == 3, err[-3000:]


def test_another_home_sharing_the_database_picks_the_job_up_once(
    home: str, tmp_path: Path, test_images: dict[str, str], postgres_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKYARD_DATABASE_URL", postgres_database)
    job = counting_job(home, test_images["probe"], tmp_path)
    kill_during_training(home, job, tmp_path)
    other_home = tmp_path / "other-home"
    monkeypatch.setenv("DOCKYARD_HOME", str(other_home))
    result = rerun(job, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    body = json.loads(result.stdout)
    assert body["TrainingJobStatus"] == "Completed" and len(body["Attempts"]) == 1
    assert members(local(body["ModelArtifacts"]["S3ModelArtifacts"]))["steps.txt"] == b"30"
    log = (other_home / "jobs" / job["training_job_name"] / "job.log").read_text()
    assert "reattached to 1 running container(s)" in log
    assert not (Path(home) / "dockyard.db").exists() and not (other_home / "dockyard.db").exists()
    again = rerun(job, tmp_path)  # once: a finished job is not run a second time
    assert again.returncode == 2 and "already names a training job (Completed" in again.stderr
