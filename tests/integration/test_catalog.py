"""The MLflow catalog on a real SQLite store: runs, search, experiments and the model registry."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.integration.helpers import ROOT, probe_job, run_job, store_of

pytestmark = pytest.mark.integration

DOCKYARD = [sys.executable, "-c", "import sys; from cli.main import main; sys.exit(main())"]


def dockyard(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*DOCKYARD, *args], cwd=ROOT, capture_output=True, text=True, timeout=120)


def mlflow_client(home: str) -> Any:
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{home}/mlflow.db"
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def sleeper(home: str, image: str, offset: str, eta: str, **extra: Any) -> dict[str, Any]:
    """A probe whose loss falls from offset + 1 towards offset, step by step, for about a second."""
    return probe_job(home, image, "sleep", hyperparameters={"seconds": "1", "offset": offset, "eta": eta}, **extra)


def test_search_returns_exactly_the_jobs_matching_metric_and_param_filters(
    home: str, test_images: dict[str, str]
) -> None:
    jobs = {
        (offset, eta): run_job(sleeper(home, test_images["probe"], offset, eta))
        for offset, eta in [("0", "0.1"), ("0", "0.5"), ("3", "0.2"), ("1", "0.25")]
    }
    names = {key: body["TrainingJobName"] for key, body in jobs.items()}
    result = dockyard("search", "metrics.loss < 2 and params.eta < '0.3'", "--order-by", "metrics.loss DESC", "--json")
    assert result.returncode == 0, result.stderr
    found = [row["name"] for row in json.loads(result.stdout)]
    assert found == [names[("1", "0.25")], names[("0", "0.1")]]  # exactly these, worst loss first
    equal = json.loads(dockyard("search", "params.eta = '0.5'", "--json").stdout)
    assert [row["name"] for row in equal] == [names[("0", "0.5")]]
    assert len(json.loads(dockyard("search", "--json").stdout)) == 4
    table = dockyard("search", "status = 'Completed' and metrics.loss >= 3").stdout
    assert names[("3", "0.2")] in table and "loss=3." in table
    bad = dockyard("search", "loss < 2")
    assert bad.returncode == 2 and "names no kind of field" in bad.stderr and "metrics.validation:auc" in bad.stderr

    client = mlflow_client(home)
    body = jobs[("0", "0.1")]
    [run] = client.search_runs(
        [e.experiment_id for e in client.search_experiments()],
        filter_string=f"tags.`dockyard.job_name` = '{body['TrainingJobName']}'",
    )
    assert run.info.experiment_id == client.get_experiment_by_name("dockyard").experiment_id
    assert run.info.status == "FINISHED" and run.info.run_name == body["TrainingJobName"]
    assert run.data.params == {"mode": "sleep", "seconds": "1", "offset": "0", "eta": "0.1"}
    assert run.data.tags["dockyard.status"] == "Completed"
    assert run.data.tags["dockyard.image_digest"] == body["TrainingImageDigest"]
    assert run.data.tags["dockyard.instance_type"] == "local"
    assert run.data.tags["dockyard.model_artifacts"] == body["ModelArtifacts"]["S3ModelArtifacts"]
    history = client.get_metric_history(run.info.run_id, "loss")
    assert [m.step for m in history] == list(range(len(history))) and len(history) >= 3
    final = next(m["Value"] for m in body["FinalMetricDataList"] if m["MetricName"] == "loss")
    assert run.data.metrics["loss"] == pytest.approx(final)
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"job.json", "job.log"} <= artifacts


def test_experiment_config_picks_the_experiment_and_a_model_group_gets_a_version_per_job(
    home: str, test_images: dict[str, str]
) -> None:
    bodies = [
        run_job(
            sleeper(
                home,
                test_images["probe"],
                offset,
                "0.1",
                experiment_config={"experiment_name": "churn", "trial_name": "baseline", "run_name": f"try-{offset}"},
                model_package_group_name="churn-model",
            )
        )
        for offset in ("1", "0")
    ]
    failed = run_job(
        {
            **probe_job(home, test_images["probe"], "fail"),
            "model_package_group_name": "churn-model",
        }
    )
    assert failed["TrainingJobStatus"] == "Failed"  # catalogued, never registered
    result = dockyard("models", "list", "--json")
    assert result.returncode == 0, result.stderr
    versions = json.loads(result.stdout)
    assert [(v["model"], v["version"], v["training_job"]) for v in versions] == [
        ("churn-model", 2, bodies[1]["TrainingJobName"]),
        ("churn-model", 1, bodies[0]["TrainingJobName"]),
    ]
    assert versions[1]["source"] == bodies[0]["ModelArtifacts"]["S3ModelArtifacts"]
    assert versions[0]["metrics"]["loss"] < versions[1]["metrics"]["loss"]
    client = mlflow_client(home)
    experiment = client.get_experiment_by_name("churn")
    runs = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time ASC"])
    assert [r.info.run_name for r in runs] == ["try-1", "try-0"]
    assert runs[0].data.tags["dockyard.trial"] == "baseline"
    [failed_run] = client.search_runs(
        [client.get_experiment_by_name("dockyard").experiment_id],
        filter_string=f"tags.`dockyard.job_name` = '{failed['TrainingJobName']}'",
    )
    assert failed_run.info.status == "FAILED" and "probe failed" in failed_run.data.tags["dockyard.failure_reason"]
    assert (
        "registered as model churn-model version 2"
        in (Path(home) / "jobs" / bodies[1]["TrainingJobName"] / "job.log").read_text()
    )


def test_cloudwatch_sinks_receive_the_log_and_metrics_as_sagemaker_names_them(
    home: str, test_images: dict[str, str], s3_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import boto3

    monkeypatch.setenv("DOCKYARD_CLOUDWATCH", "1")
    monkeypatch.setenv("AWS_ENDPOINT_URL_CLOUDWATCH_LOGS", s3_endpoint)  # moto's server speaks every AWS API
    monkeypatch.setenv("AWS_ENDPOINT_URL_CLOUDWATCH", s3_endpoint)
    body = run_job(sleeper(home, test_images["probe"], "0", "0.1"))
    name = body["TrainingJobName"]
    logs = boto3.client("logs", region_name="us-east-1")
    streams = {
        s["logStreamName"]
        for s in logs.describe_log_streams(logGroupName="/aws/sagemaker/TrainingJobs", logStreamNamePrefix=name)[
            "logStreams"
        ]
    }
    [algo] = [s for s in streams if s.startswith(f"{name}/algo-1-")]
    assert f"{name}/platform" in streams
    messages = [
        e["message"]
        for e in logs.get_log_events(logGroupName="/aws/sagemaker/TrainingJobs", logStreamName=algo)["events"]
    ]
    assert messages and all(m.startswith("step=") for m in messages)
    cloudwatch = boto3.client("cloudwatch", region_name="us-east-1")
    [metric] = cloudwatch.list_metrics(Namespace="/aws/sagemaker/TrainingJobs", MetricName="loss")["Metrics"]
    assert metric["Dimensions"] == [{"Name": "Host", "Value": f"{name}/algo-1"}]
    scraped = store_of(home).metrics(name)
    stats = cloudwatch.get_metric_statistics(
        Namespace="/aws/sagemaker/TrainingJobs",
        MetricName="loss",
        Dimensions=metric["Dimensions"],
        StartTime=datetime.fromisoformat(body["CreationTime"]) - timedelta(minutes=5),
        EndTime=datetime.fromisoformat(body["TrainingEndTime"]) + timedelta(minutes=5),
        Period=3600,
        Statistics=["SampleCount"],
    )
    assert sum(p["SampleCount"] for p in stats["Datapoints"]) == len(scraped) == len(messages)


OPEN_CATALOG = """
import sys, time
from infra import catalog
time.sleep(max(0.0, float(sys.argv[2]) - time.time()))
catalog.client(sys.argv[1]).search_experiments()
"""


def test_processes_opening_one_new_catalog_at_once_all_open_it(tmp_path: Path) -> None:
    # Two first jobs of a new home, in two flow-run processes, create its SQLite catalog together.
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    start = str(time.time() + 6)  # every process has imported MLflow's client by then
    openers = [
        subprocess.Popen([sys.executable, "-c", OPEN_CATALOG, uri, start], cwd=ROOT, stderr=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    errors = [p.communicate(timeout=120)[1] for p in openers]
    assert [p.returncode for p in openers] == [0, 0, 0], errors
