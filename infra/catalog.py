"""The experiment catalog: MLflow tracking and its model registry.

Every training job is an MLflow run: hyperparameters as params, every scraped
metric as a series with steps, the job's facts as tags, its record and log as
artifacts. A tuning job is a parent run with its trials nested. Embedded
default: a SQLite store at DOCKYARD_HOME/mlflow.db, artifacts under
DOCKYARD_HOME/mlartifacts; MLFLOW_TRACKING_URI points at a tracking server
instead. MLflow is imported only here and only when used (about 1 s), so a
job's way to its container never waits for it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import re
import tempfile
import threading
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dockyard.record import MetricValue
from dockyard.search import Clause
from infra.store_schema import MIGRATING

if TYPE_CHECKING:
    from mlflow.entities import Run
    from mlflow.tracking import MlflowClient

DEFAULT_EXPERIMENT = "dockyard"
JOB_TAG = "dockyard.job_name"
EXPLAINS_TAG = "dockyard.explains"  # a Clarify job's run: the training job whose model it explains
KIND_TAG = "dockyard.kind"  # training-job | tuning-job
PARENT_TAG = "mlflow.parentRunId"
RUN_STATUS = {"Completed": "FINISHED", "Failed": "FAILED", "Stopped": "KILLED"}
_MLFLOW_NAME = re.compile(r"[^\w.\- :/]")  # what MLflow accepts in metric and param names
BATCH = 1000  # MLflow's log_batch takes at most 1000 metrics at once
PAGE = 10_000  # runs per search call (MLflow allows at most 50,000)


_clients: dict[str, MlflowClient] = {}
_clients_lock = threading.Lock()


def client(uri: str) -> MlflowClient:
    """One client per tracking URI per process, its store opened (and on first use created)."""
    with _clients_lock:
        if uri not in _clients:
            from mlflow.tracking import MlflowClient

            for name in ("mlflow", "alembic"):  # their schema-migration chatter
                logging.getLogger(name).setLevel(logging.WARNING)
            # Opening the tracking and registry stores creates or migrates their tables with
            # Alembic, whose state is global: never beside another migration in this process,
            # nor (a SQLite file) in another process opening the same new catalog.
            with MIGRATING, _file_lock(uri):
                mlflow = MlflowClient(tracking_uri=uri, registry_uri=uri)
                mlflow.search_experiments(max_results=1)
                mlflow.search_registered_models(max_results=1)
            _clients[uri] = mlflow
        return _clients[uri]


@contextlib.contextmanager
def _file_lock(uri: str) -> Iterator[None]:
    """An exclusive lock beside a SQLite catalog's file (nothing for other URIs)."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    database = Path(uri.removeprefix("sqlite:///"))
    database.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{database}.migrate.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def warm_up(uri: str) -> None:
    """Import MLflow and open the store in the background (about 1.5 s), so the write
    when the job ends does not wait for it."""

    def warm() -> None:
        with contextlib.suppress(Exception):  # the write itself reports what is wrong
            client(uri)

    threading.Thread(target=warm, name="catalog-warm-up", daemon=True).start()


def experiment_id(mlflow: MlflowClient, name: str, home: str) -> str:
    found = mlflow.get_experiment_by_name(name)
    if found is not None:
        return str(found.experiment_id)
    location = (Path(home) / "mlartifacts" / name).as_uri() if mlflow.tracking_uri.startswith("sqlite") else None
    try:
        return str(mlflow.create_experiment(name, artifact_location=location))
    except Exception:
        found = mlflow.get_experiment_by_name(name)
        if found is None:
            raise
        return str(found.experiment_id)


def mlflow_name(name: str) -> str:
    """A metric or param name as MLflow accepts it: other characters become '_'."""
    return _MLFLOW_NAME.sub("_", name)[:250]


def _millis(moment: str | datetime | None) -> int | None:
    if moment is None:
        return None
    when = datetime.fromisoformat(moment) if isinstance(moment, str) else moment
    return int(when.timestamp() * 1000)


def find_run(mlflow: MlflowClient, job_name: str) -> Run | None:
    experiments = [e.experiment_id for e in mlflow.search_experiments()]
    runs = mlflow.search_runs(experiments, filter_string=f"tags.`{JOB_TAG}` = '{job_name}'", max_results=1)
    return runs[0] if runs else None


def job_tags(body: dict[str, Any], kind: str = "training-job") -> dict[str, str]:
    """The job's facts as run tags, from its DescribeTrainingJob body (a processing job's too: the
    training-shaped form the stages carry), `kind` telling them apart."""
    resources = body.get("ResourceConfig", {})
    experiment = body.get("ExperimentConfig", {})
    tags = {
        JOB_TAG: body["TrainingJobName"],
        KIND_TAG: kind,
        "dockyard.status": body["TrainingJobStatus"],
        "dockyard.secondary_status": body.get("SecondaryStatus", ""),
        "dockyard.image": body.get("AlgorithmSpecification", {}).get("TrainingImage", ""),
        "dockyard.image_digest": body.get("TrainingImageDigest", ""),
        "dockyard.algorithm": body.get("AlgorithmSpecification", {}).get("AlgorithmName", ""),
        "dockyard.instance_type": resources.get("InstanceType", ""),
        "dockyard.instance_count": str(resources.get("InstanceCount", "")),
        "dockyard.model_artifacts": body.get("ModelArtifacts", {}).get("S3ModelArtifacts", ""),
        "dockyard.output_artifacts": body.get("OutputArtifacts", ""),
        "dockyard.failure_reason": body.get("FailureReason", "")[:5000],
        "dockyard.training_seconds": str(body.get("TrainingTimeInSeconds", "")),
        "dockyard.billable_seconds": str(body.get("BillableTimeInSeconds", "")),
        "dockyard.trial": experiment.get("TrialName", ""),
        "dockyard.prefect_flow_run_id": body.get("PrefectFlowRunId", ""),
        **{f"tag.{mlflow_name(t['Key'])}": t.get("Value", "") for t in body.get("Tags", [])},
    }
    if "SpotSavingsPercent" in body:
        tags["dockyard.spot_savings_percent"] = str(body["SpotSavingsPercent"])
        tags["dockyard.spot_savings_usd"] = str(body["SpotSavingsUSD"])
        tags["dockyard.spot_interruptions"] = str(len(body.get("SpotInterruptions", [])))
    return {k: v for k, v in tags.items() if v != ""}


def _metric_batches(values: list[MetricValue]) -> Iterator[list[Any]]:
    from mlflow.entities import Metric

    steps: dict[str, int] = {}
    batch: list[Metric] = []
    for v in sorted(values, key=lambda v: v.timestamp):
        key = mlflow_name(v.metric_name)
        step = steps[key] = steps.get(key, -1) + 1
        batch.append(Metric(key, v.value, _millis(v.timestamp) or 0, step))
        if len(batch) == BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def record_job(
    home: str,
    uri: str,
    body: dict[str, Any],
    metrics: list[MetricValue],
    log: str | None = None,
    kind: str = "training-job",
    explains: str | None = None,
) -> str:
    """Write (or rewrite, for a job picked up again) the job's run; returns its run id. A job that
    `explains` a training job's model (a Clarify job) becomes a child of that job's run, in its
    experiment unless it names its own. `log` is the job's log, kept as the artifact job.log."""
    from mlflow.entities import Param, RunTag

    mlflow = client(uri)
    name = body["TrainingJobName"]
    experiment = body.get("ExperimentConfig", {})
    existing = find_run(mlflow, name)
    parent = find_run(mlflow, explains) if explains else None
    if existing is not None:
        run_id = existing.info.run_id
        logged = set(existing.data.metrics)
    else:
        named = experiment.get("ExperimentName")
        run = mlflow.create_run(
            parent.info.experiment_id
            if parent is not None and not named
            else experiment_id(mlflow, named or DEFAULT_EXPERIMENT, home),
            start_time=_millis(body.get("CreationTime")),
            run_name=experiment.get("RunName") or experiment.get("TrialComponentDisplayName") or name,
            tags={JOB_TAG: name},
        )
        run_id, logged = run.info.run_id, set()
    params = [Param(mlflow_name(k), str(v)[:6000]) for k, v in body.get("HyperParameters", {}).items()]
    tags = [RunTag(k, v) for k, v in job_tags(body, kind).items()]
    if explains:
        tags.append(RunTag(EXPLAINS_TAG, explains))
    if parent is not None:
        tags.append(RunTag(PARENT_TAG, parent.info.run_id))  # MLflow's own relation: nested runs
    mlflow.log_batch(run_id, params=params if existing is None else [], tags=tags)
    for batch in _metric_batches([m for m in metrics if mlflow_name(m.metric_name) not in logged]):
        mlflow.log_batch(run_id, metrics=batch)
    with tempfile.TemporaryDirectory(prefix="dockyard-catalog-") as tmp:
        record = Path(tmp) / "job.json"
        record.write_text(json.dumps(body, indent=2))
        mlflow.log_artifact(run_id, str(record))
        if log:
            (Path(tmp) / "job.log").write_text(log)
            mlflow.log_artifact(run_id, str(Path(tmp) / "job.log"))
    mlflow.set_terminated(
        run_id, RUN_STATUS.get(body["TrainingJobStatus"], "FAILED"), _millis(body.get("TrainingEndTime"))
    )
    return run_id


def register_model(uri: str, group: str, run_id: str, body: dict[str, Any]) -> str:
    """A new version of model `group` from the job's model.tar.gz; returns the version."""
    mlflow = client(uri)
    try:
        mlflow.get_registered_model(group)
    except Exception:  # noqa: BLE001 - MLflow raises RESOURCE_DOES_NOT_EXIST for a new group
        try:
            mlflow.create_registered_model(group, description="registered by dockyard training jobs")
        except Exception:  # noqa: BLE001 - another job created it first
            mlflow.get_registered_model(group)
    metrics = {f"metric.{m['MetricName']}": str(m["Value"]) for m in body.get("FinalMetricDataList", [])}
    version = mlflow.create_model_version(
        group,
        source=body["ModelArtifacts"]["S3ModelArtifacts"],
        run_id=run_id,
        tags={JOB_TAG: body["TrainingJobName"], **metrics},
        description=f"model.tar.gz of training job {body['TrainingJobName']}",
    )
    return str(version.version)


def record_tuning(home: str, uri: str, body: dict[str, Any]) -> str:
    """The tuning job's parent run, its trials' runs nested under it; returns its run id."""
    from mlflow.entities import Metric, Param, RunTag

    mlflow = client(uri)
    name = body["HyperParameterTuningJobName"]
    definition = body.get("TrainingJobDefinition", {})
    experiment = (definition.get("experiment_config") or {}).get("experiment_name") or DEFAULT_EXPERIMENT
    run = mlflow.create_run(experiment_id(mlflow, experiment, home), run_name=name, tags={JOB_TAG: name})
    config = body["HyperParameterTuningJobConfig"]
    best = body.get("BestTrainingJob") or {}
    params = [
        Param(mlflow_name(k), str(v)[:6000]) for k, v in (definition.get("static_hyper_parameters") or {}).items()
    ]
    params += [
        Param("strategy", config["strategy"]),
        Param("objective", json.dumps(config["hyper_parameter_tuning_job_objective"])),
    ]
    tags = {
        KIND_TAG: "tuning-job",
        "dockyard.status": body["HyperParameterTuningJobStatus"],
        "dockyard.best_training_job": best.get("TrainingJobName", ""),
        "dockyard.completion_reason": body.get("CompletionReason", ""),
        "dockyard.failure_reason": body.get("FailureReason", ""),
    }
    metrics = []
    if best.get("FinalHyperParameterTuningJobObjectiveMetric") is not None:
        metric = config["hyper_parameter_tuning_job_objective"]["metric_name"]
        metrics.append(Metric(mlflow_name(metric), best["FinalHyperParameterTuningJobObjectiveMetric"], 0, 0))
    mlflow.log_batch(run.info.run_id, metrics=metrics, params=params, tags=[RunTag(k, v) for k, v in tags.items() if v])
    for summary in body["TrainingJobSummaries"]:
        trial = find_run(mlflow, summary["TrainingJobName"])
        if trial is not None:
            mlflow.set_tag(trial.info.run_id, PARENT_TAG, run.info.run_id)
    mlflow.set_terminated(run.info.run_id, RUN_STATUS.get(body["HyperParameterTuningJobStatus"], "FAILED"))
    return str(run.info.run_id)


def search(
    uri: str, filter_string: str, order_by: list[str], max_results: int, keep: Callable[[Run], bool] | None = None
) -> list[Run]:
    """Runs of every experiment matching an MLflow filter (and `keep`, for what MLflow
    cannot filter), in the order asked, page by page until max_results are found."""
    mlflow = client(uri)
    experiments = [e.experiment_id for e in mlflow.search_experiments()]
    found: list[Run] = []
    token = None
    while experiments and len(found) < max_results:
        page = mlflow.search_runs(
            experiments,
            filter_string=filter_string,
            order_by=order_by,
            # a run `keep` turns down must be made up for: fetch a few times what is wanted
            max_results=min(PAGE, max_results if keep is None else max(4 * max_results, 200)),
            page_token=token,
        )
        found += [run for run in page if keep is None or keep(run)]
        token = page.token
        if not token:
            break
    return found[:max_results]


def find_jobs(uri: str, clauses: list[Clause], order_by: list[str], max_results: int, kind: str) -> list[Run]:
    """Training (or tuning) jobs' runs matching every clause: MLflow evaluates what it
    can, and the param and tag comparisons it cannot are checked here."""
    pushed = [c for c in clauses if c.pushed_down()] + [Clause("tags", KIND_TAG, "=", f"'{kind}'")]
    checked_here = [c for c in clauses if not c.pushed_down()]

    def keep(run: Run) -> bool:
        data = {"params": run.data.params, "tags": run.data.tags}
        return all(c.matches(data[c.kind].get(c.key)) for c in checked_here)

    return search(uri, " and ".join(c.mlflow() for c in pushed), order_by, max_results, keep if checked_here else None)


def model_versions(uri: str) -> list[Any]:
    """Every registered model version, newest first within each model."""
    mlflow = client(uri)
    versions = list(mlflow.search_model_versions(max_results=10_000))
    return sorted(versions, key=lambda v: (v.name, -int(v.version)))
