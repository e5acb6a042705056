"""Search's one-query path (infra/catalog_query.py) answers what MLflow's search_runs answers,
on one real catalog, SQLite and PostgreSQL alike; and Search pages through it with whole records."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from api.search import search
from api.training import Context, describe_training_job
from dockyard.record import JobRecord, MetricValue, describe
from dockyard.search import Clause
from dockyard.settings import Settings
from dockyard.spec import TrainingJobSpec
from dockyard.status import SecondaryStatus
from infra import catalog, catalog_query
from infra.job_store import open_store

pytestmark = pytest.mark.integration
T0 = datetime(2026, 11, 29, 9, 0, tzinfo=UTC)
# name: (minutes after T0, hyperparameters, final metrics, tags)
JOBS: dict[str, tuple[int, dict[str, str], dict[str, float], dict[str, str]]] = {
    "q-a": (0, {"eta": "0.1", "depth": "3"}, {"loss": 1.0, "auc": 0.9}, {"team": "vision"}),
    "q-b": (1, {"eta": "0.5", "depth": "10"}, {"loss": 2.5}, {"team": "Vision"}),
    "q-c": (2, {"eta": "0.25"}, {"loss": float("nan"), "auc": 0.7}, {"team": "nlp's"}),
    "q-d": (2, {"eta": "auto", "depth": "2"}, {"loss": 0.5, "auc": 0.95}, {}),  # same start as q-c
    "q-e": (4, {"eta": "0.05", "depth": "7"}, {"auc": 0.8}, {"team": "vision"}),
    "q-f": (5, {"eta": "0.2"}, {"loss": 3.0}, {"team": "vision"}),
}
CLAUSES = [
    [],
    [Clause("metrics", "loss", "<", "2.0")],
    [Clause("metrics", "loss", "!=", "1.0")],
    [Clause("metrics", "auc", ">=", "0.8"), Clause("params", "eta", "<", "'0.3'")],
    [Clause("params", "eta", "=", "'0.1'")],
    [Clause("params", "depth", ">", "'5'")],
    [Clause("params", "depth", "IS NULL", None)],
    [Clause("params", "depth", "IS NOT NULL", None), Clause("tags", "dockyard.status", "=", "'Completed'")],
    [Clause("tags", "tag.team", "LIKE", "'%vis%'")],
    [Clause("tags", "tag.team", "!=", "'vision'")],
]
ORDERS = [
    [],
    ["attributes.start_time ASC"],
    ["metrics.`loss` DESC"],
    ["metrics.`loss` ASC"],
    [f"tags.`{catalog.JOB_TAG}` ASC"],
    ["params.`eta` DESC"],
]


@pytest.fixture(params=["sqlite", "postgresql"])
def catalog_uri(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'mlflow.db'}"
    return str(request.getfixturevalue("postgres_database"))


def record(name: str) -> tuple[JobRecord, list[MetricValue]]:
    minutes, hyperparameters, finals, tags = JOBS[name]
    created = T0 + timedelta(minutes=minutes)
    spec = TrainingJobSpec.model_validate(
        {
            "training_job_name": name,
            "algorithm_specification": {"training_image": "probe:1"},
            "hyperparameters": hyperparameters,
            "output_data_config": {"s3_output_path": "file:///tmp/out"},
            "tags": [{"key": k, "value": v} for k, v in tags.items()],
        }
    )
    job = JobRecord(spec=spec, creation_time=created, training_start_time=created)
    for step in (
        SecondaryStatus.STARTING,
        SecondaryStatus.TRAINING,
        SecondaryStatus.UPLOADING,
        SecondaryStatus.COMPLETED,
    ):
        job = job.moved(step, step.value, created)
    values = [MetricValue(metric_name=k, value=v, timestamp=created) for k, v in finals.items()]
    # The catalog gets the NaN; the record does not (a NaN final metric does not read back from the job store).
    finals_stored = tuple(v for v in values if v.value == v.value)
    return job.model_copy(update={"final_metrics": finals_stored, "training_end_time": created}), values


def catalogued(uri: str, home: Path) -> None:
    """JOBS in the catalog, and two runs no search may find: a deleted job and a tuning job."""
    mlflow = catalog.client(uri)
    mlflow.create_experiment(catalog.DEFAULT_EXPERIMENT, artifact_location=(home / "mlartifacts").as_uri())
    for name in [*JOBS, "q-deleted", "q-tuning"]:
        job, values = record(name if name in JOBS else "q-a")
        body = {
            **describe(job),
            "TrainingJobName": name,
            "Tags": [{"Key": t.key, "Value": t.value} for t in job.spec.tags],
        }
        run_id = catalog.record_job(str(home), uri, body, values)
        if name == "q-deleted":
            mlflow.delete_run(run_id)
        if name == "q-tuning":
            mlflow.set_tag(run_id, catalog.KIND_TAG, "tuning-job")


def test_one_query_finds_what_mlflow_finds_in_the_same_order(catalog_uri: str, tmp_path: Path) -> None:
    catalogued(catalog_uri, tmp_path)
    assert catalog_query._served(catalog_uri) and not catalog_query._served("http://tracking:5000")
    for clauses in CLAUSES:
        for order in ORDERS:
            for most in (2, 50):
                ours = catalog_query.job_names(catalog_uri, clauses, order, most, "training-job")
                runs = catalog.find_jobs(catalog_uri, clauses, order, most, "training-job")
                mlflows = [r.data.tags[catalog.JOB_TAG] for r in runs]
                assert ours == mlflows, (clauses, order, most)
    everything = catalog_query.job_names(catalog_uri, [], [], 50, "training-job")
    assert sorted(everything) == sorted(JOBS)  # the deleted run and the tuning run are not found
    assert catalog_query.job_names(catalog_uri, [Clause("tags", "tag.team", "LIKE", "'%vis%'")], [], 50,
                                   "training-job") == ["q-f", "q-e", "q-a"]  # LIKE is case-sensitive  # fmt: skip


def test_an_or_finds_the_union_of_its_alternatives_in_the_one_order(catalog_uri: str, tmp_path: Path) -> None:
    catalogued(catalog_uri, tmp_path)
    for first, second in zip(CLAUSES, CLAUSES[1:] + CLAUSES[:1], strict=True):
        for order in ORDERS:
            everything = catalog_query.job_names(catalog_uri, [], order, 50, "training-job")
            matching = {
                *catalog_query.job_names(catalog_uri, first, order, 50, "training-job"),
                *catalog_query.job_names(catalog_uri, second, order, 50, "training-job"),
            }
            for most in (2, 50):
                either = catalog_query.job_names_any(catalog_uri, [first, second], order, most, "training-job")
                assert either == [n for n in everything if n in matching][:most], (first, second, order, most)
    with pytest.raises(ValueError, match="Or needs the catalog in a database"):
        catalog_query.job_names_any("http://tracking:5000", [CLAUSES[1], CLAUSES[2]], [], 5, "training-job")


def test_search_pages_whole_records_with_their_tags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    monkeypatch.setenv("DOCKYARD_HOME", str(home))
    settings = Settings.from_env(os.environ)
    ctx = Context(settings, open_store(settings))
    for name in JOBS:
        ctx.store.create(record(name)[0])
    catalogued(settings.catalog_uri(), home)
    ctx.store.set_tags("q-e", {"stage": "prod"})  # tagged after it was catalogued
    params: dict[str, Any] = {
        "Resource": "TrainingJob",
        "SearchExpression": {"Filters": [{"Name": "Tags.team", "Operator": "Contains", "Value": "vis"}]},
        "SortBy": "CreationTime",
        "SortOrder": "Ascending",
        "MaxResults": 2,
    }
    first = search(ctx, params)
    second = search(ctx, {**params, "NextToken": first["NextToken"]})
    assert "NextToken" not in second
    jobs = [r["TrainingJob"] for r in first["Results"] + second["Results"]]
    assert [j["TrainingJobName"] for j in jobs] == ["q-a", "q-e", "q-f"]
    for job in jobs:
        name = job["TrainingJobName"]
        assert job["Tags"] == [{"Key": k, "Value": v} for k, v in ctx.store.tags(name).items()]  # today's tags
        described = describe_training_job(ctx, {"TrainingJobName": name})
        assert {**job, "Tags": None} == {**described, "Tags": None}
    assert {"Key": "stage", "Value": "prod"} in first["Results"][1]["TrainingJob"]["Tags"]
    capital = {"Name": "Tags.team", "Value": "Vision"}
    high_auc = {"Name": "Metrics.auc", "Operator": "GreaterThan", "Value": "0.9"}
    either = {"Resource": "TrainingJob", "SearchExpression": {"Operator": "Or", "Filters": [capital, high_auc]}}
    found = search(ctx, {**either, "SortBy": "Name", "SortOrder": "Ascending"})
    assert [r["TrainingJob"]["TrainingJobName"] for r in found["Results"]] == ["q-b", "q-d"]
    by_loss = search(ctx, {"Resource": "TrainingJob", "SortBy": "Metrics.loss", "SortOrder": "Ascending"})
    assert [r["TrainingJob"]["TrainingJobName"] for r in by_loss["Results"]] == [
        "q-d",
        "q-a",
        "q-b",
        "q-f",
        "q-c",
        "q-e",
    ]
