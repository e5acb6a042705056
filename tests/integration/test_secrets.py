"""A job's secrets reach its container and nothing else: not the job log, the
record, `dockyard jobs describe`, the MLflow run, nor Prefect's parameters."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml

from dockyard import secrets
from dockyard.settings import Settings
from infra import catalog, job_log
from tests.conftest import ROOT
from tests.integration.helpers import local, members, probe_job, run_cli, run_job, store_of, unique

pytestmark = pytest.mark.integration


def test_secrets_reach_the_container_and_are_masked_everywhere_else(
    home: str, tmp_path: Path, test_images: dict[str, str]
) -> None:
    from prefect.blocks.system import Secret
    from prefect.client.orchestration import get_client

    token, password, kept = (f"{what}-{uuid.uuid4().hex}" for what in ("token", "password", "kept"))
    block = f"itest-{uuid.uuid4().hex[:12]}"
    Secret(value=kept).save(block)
    job = probe_job(
        home,
        test_images["probe"],
        "contract",
        hyperparameters={"api_token": token, "echo": secrets.reference(block)},
        environment={"MY_DB_PASSWORD": password},
    )
    name = job["training_job_name"]
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(job))
    result = run_cli("flows.train", path)
    assert result.returncode == 0, result.stderr[-3000:]
    body = json.loads(result.stdout)

    report = json.loads(members(local(body["ModelArtifacts"]["S3ModelArtifacts"]))["contract-algo-1.json"])
    assert report["config"]["hyperparameters.json"]["api_token"] == token
    assert report["config"]["hyperparameters.json"]["echo"] == kept
    assert report["env"]["MY_DB_PASSWORD"] == password and report["env"]["SM_HP_API_TOKEN"] == token

    values = (token, password, kept)
    log = job_log.path(home, name).read_text()
    assert f"echo: {secrets.MASK}" in log  # the container printed the value; the log shows the mask
    described = subprocess.run(
        [sys.executable, "-c", "import sys; from cli.main import main; sys.exit(main())", "jobs", "describe", name],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=os.environ.copy(),
    )
    assert described.returncode == 0, described.stderr
    record = store_of(home).get(name)
    assert secrets.block_of(record.spec.hyperparameters["api_token"]) is not None
    assert secrets.block_of(record.spec.environment["MY_DB_PASSWORD"]) is not None
    run = catalog.find_run(catalog.client(Settings.from_env({**os.environ, "DOCKYARD_HOME": home}).catalog_uri()), name)
    assert run is not None
    job_json = Path(run.info.artifact_uri.removeprefix("file://")) / "job.json"
    with get_client(sync_client=True) as client:
        parameters = client.read_flow_run(record.flow_run_id).parameters  # type: ignore[arg-type]
    for where, text in {
        "the --json output": result.stdout,
        "the command's stderr": result.stderr,
        "the job log": log,
        "dockyard jobs describe": described.stdout,
        "the job record": record.model_dump_json(),
        "the MLflow run's params and tags": json.dumps([run.data.params, run.data.tags]),
        "the MLflow run's job.json": job_json.read_text(),
        "the flow run's parameters": json.dumps(parameters),
    }.items():
        leaked = [v for v in values if v in text]
        assert not leaked, f"{where} holds a secret"


def test_a_reference_to_a_missing_block_is_a_spec_error_naming_the_field(
    home: str, tmp_path: Path, test_images: dict[str, str]
) -> None:
    job = probe_job(
        home,
        test_images["probe"],
        "noop",
        hyperparameters={"hf_token": secrets.reference(f"nowhere-{uuid.uuid4().hex[:8]}")},
    )
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(job))
    result = run_cli("flows.train", path)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "hyperparameters.hf_token: references the Prefect Secret block 'nowhere-" in result.stderr
    assert store_of(home).find(job["training_job_name"]) is None


def test_a_flow_called_from_python_keeps_no_secret_value_in_its_flow_run_parameters(
    home: str, test_images: dict[str, str]
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.tune import tune

    token = f"token-{uuid.uuid4().hex}"
    job = probe_job(home, test_images["probe"], "sleep", hyperparameters={"seconds": "0.1", "hf_token": token})
    body = run_job(job)  # train(job) in this process, as a notebook calls it
    assert body["TrainingJobStatus"] == "Completed", body.get("FailureReason")
    tuning = {
        "hyper_parameter_tuning_job_name": unique("secret-tuning"),
        "hyper_parameter_tuning_job_config": {
            "strategy": "Random",
            "hyper_parameter_tuning_job_objective": {"type": "Minimize", "metric_name": "loss"},
            "resource_limits": {"max_number_of_training_jobs": 1, "max_parallel_training_jobs": 1},
            "parameter_ranges": {"categorical_parameter_ranges": [{"name": "mode", "values": ["sleep"]}]},
        },
        "training_job_definition": {
            "algorithm_specification": {
                "training_image": test_images["probe"],
                "metric_definitions": [{"name": "loss", "regex": r"loss=([0-9.]+)"}],
            },
            "static_hyper_parameters": {"seconds": "0.1", "HF_TOKEN": token},
            "output_data_config": {"s3_output_path": f"file://{home}/output"},
        },
    }
    with temporary_settings(updates={PREFECT_API_URL: os.environ["PREFECT_API_URL"]}):
        tuned = tune(tuning)
    assert tuned["HyperParameterTuningJobStatus"] == "Completed", tuned.get("FailureReason")

    store = store_of(home)
    runs = {
        "the training flow run": store.get(job["training_job_name"]).flow_run_id,
        "the tuning flow run": store.tuning(tuning["hyper_parameter_tuning_job_name"]).flow_run_id,  # type: ignore[union-attr]
    }
    with get_client(sync_client=True) as client:
        parameters = {what: client.read_flow_run(uuid.UUID(run_id)).parameters for what, run_id in runs.items()}  # type: ignore[arg-type]
    for what, given in parameters.items():
        assert token not in json.dumps(given), f"{what}'s parameters hold the secret"
    # What the training flow run holds in its place is the job as it runs, its secret a reference.
    assert secrets.block_of(parameters["the training flow run"]["job"]["hyperparameters"]["hf_token"]) is not None
