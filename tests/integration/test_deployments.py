"""deployments/prefect.yaml on a real Prefect server with a real process worker."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.helpers import ROOT, record_of

pytestmark = pytest.mark.integration

PREFECT = str(Path(sys.executable).parent / "prefect")


def prefect(*args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([PREFECT, *args], cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, f"prefect {' '.join(args)}:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
    return result


def test_the_train_deployment_runs_the_example_on_a_process_worker(home: str, tmp_path: Path) -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: os.environ["PREFECT_API_URL"]}):
        deploy_and_run_train(home, tmp_path)


def deploy_and_run_train(home: str, tmp_path: Path) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
    from prefect.deployments import run_deployment

    subprocess.run([sys.executable, str(ROOT / "examples/xgboost-breast-cancer/make_data.py")], check=True)
    prefect("work-pool", "create", "dockyard", "--type", "process", "--overwrite")
    prefect("deploy", "--prefect-file", "deployments/prefect.yaml", "--all")
    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name("train/train")
        assert [s.schedule.cron for s in deployment.schedules] == ["0 2 * * *"]  # nightly retraining
        assert client.read_deployment_by_name("tune/tune").entrypoint == "flows/tune.py:tune"
    flow_run = run_deployment("train/train", timeout=0)  # the default parameters: the XGBoost example
    worker = subprocess.Popen(
        [PREFECT, "worker", "start", "--pool", "dockyard", "--type", "process"],
        cwd=tmp_path,  # the deployment's pull step puts the run in the repository root
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=os.environ.copy(),
    )
    try:
        with get_client(sync_client=True) as client:
            deadline = time.time() + 300
            while time.time() < deadline:
                state = client.read_flow_run(flow_run.id).state
                if state is not None and state.is_final():
                    break
                time.sleep(1)
            run = client.read_flow_run(flow_run.id)
            artifacts = client.read_artifacts(
                artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run.id]))
            )
    finally:
        worker.terminate()
        worker.wait(timeout=60)
    assert run.state is not None and run.state.is_completed(), run.state
    assert run.name.startswith("xgboost-breast-cancer-") and f"job:{run.name}" in run.tags  # named after the job
    keys = {a.key for a in artifacts}
    job = run.name.lower()
    assert {f"job-{job}", f"job-{job}-metrics", f"job-{job}-curves"} <= keys
    assert record_of(home, run.name).status.primary == "Completed"
