"""retry_strategy: a Docker daemon restart mid-job is an infrastructure fault,
and the job restarts from its checkpoints. Runs last: it restarts dockerd."""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests.integration.helpers import local, members, probe_job, run_job, wait_for_status

pytestmark = [pytest.mark.integration, pytest.mark.disruptive]


def restart_dockerd() -> None:
    subprocess.run(["pkill", "-TERM", "-x", "dockerd"], check=True)
    for _ in range(100):
        if subprocess.run(["pgrep", "-x", "dockerd"], capture_output=True).returncode != 0:
            break
        time.sleep(0.2)
    with open("/var/log/dockerd.log", "ab") as log:
        subprocess.Popen(["dockerd"], stdout=log, stderr=log, start_new_session=True)
    for _ in range(120):
        if subprocess.run(["docker", "info"], capture_output=True).returncode == 0:
            return
        time.sleep(0.5)
    raise AssertionError("dockerd did not come back; see /var/log/dockerd.log")


def test_a_docker_daemon_restart_is_recovered_through_retry_strategy(
    home: str, tmp_path: Path, test_images: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKYARD_LOST_CONTACT_SECONDS", "60")
    job = probe_job(home, test_images["probe"], "count", hyperparameters={"steps": "40", "step_seconds": "0.2"})
    job["checkpoint_config"] = {"s3_uri": f"file://{tmp_path}/checkpoints"}
    job["retry_strategy"] = {"maximum_retry_attempts": 2}

    def disrupt() -> None:
        wait_for_status(home, job["training_job_name"], "Training")
        time.sleep(2)
        restart_dockerd()

    chaos = threading.Thread(target=disrupt)
    chaos.start()
    body = run_job(job)
    chaos.join()
    assert body["TrainingJobStatus"] == "Completed", body.get("FailureReason")
    statuses = [t["Status"] for t in body["SecondaryStatusTransitions"]]
    assert "Restarting" in statuses and "Interrupted" not in statuses
    assert len(body["Attempts"]) == 2
    assert body["Attempts"][0]["EndedBy"].startswith("infrastructure fault: TransientInfraError")  # counted as a retry
    log = (Path(home) / "jobs" / job["training_job_name"] / "job.log").read_text()
    assert int(log.split("resuming at step ")[1].split()[0]) > 0
    assert members(local(body["ModelArtifacts"]["S3ModelArtifacts"]))["steps.txt"] == b"40"
