"""Tuning jobs on real Docker: trials as training subflows, chosen by Optuna."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from infra import job_log
from tests.integration.helpers import ROOT, record_of, run_cli, run_job, start_module, store_of, wait_for_status

pytestmark = pytest.mark.integration


def tune_cli(doc: dict[str, Any], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "tuning.yaml"
    path.write_text(yaml.safe_dump(doc))
    return run_cli("flows.tune", path)


def unfinished_trials(home: str, summaries: list[dict[str, Any]]) -> dict[str, str]:
    """Each trial that did not complete: its status, FailureReason and the end of its job log."""
    found = {}
    for s in summaries:
        if s["TrainingJobStatus"] != "Completed":
            log = job_log.path(home, s["TrainingJobName"])
            tail = log.read_text(errors="replace").splitlines()[-30:] if log.exists() else ["(no job log)"]
            found[s["TrainingJobName"]] = "\n".join([f"{s['TrainingJobStatus']}: {s.get('FailureReason')}", *tail])
    return found


def most_at_once(summaries: list[dict[str, Any]]) -> int:
    """The most trials whose [start, end] intervals overlap at one moment."""
    events = []
    for s in summaries:
        events += [
            (datetime.fromisoformat(s["TrainingStartTime"]), 1),
            (datetime.fromisoformat(s["TrainingEndTime"]), -1),
        ]
    now = peak = 0
    for _, step in sorted(events, key=lambda e: (e[0], e[1])):
        now += step
        peak = max(peak, now)
    return peak


def test_xgboost_tuning_beats_the_untuned_default_within_the_parallel_limit(home: str, tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, str(ROOT / "examples/xgboost-breast-cancer/make_data.py")],
        check=True,
        env={**os.environ, "DOCKYARD_HOME": home},
    )
    doc = yaml.safe_load((ROOT / "examples/xgboost-breast-cancer/tuning.yaml").read_text())
    result = tune_cli(doc, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    body = json.loads(result.stdout)
    assert body["HyperParameterTuningJobStatus"] == "Completed"
    summaries = body["TrainingJobSummaries"]
    assert len(summaries) == 8 and body["TrainingJobStatusCounters"] == {"Completed": 8}, unfinished_trials(
        home, summaries
    )
    assert most_at_once(summaries) <= 2  # never past the limit
    definition = dict(doc["training_job_definition"])
    default = run_job(
        {
            **{k: v for k, v in definition.items() if k != "static_hyper_parameters"},
            "training_job_name": "xgb-untuned-default",
            "hyperparameters": definition["static_hyper_parameters"],
        }
    )
    untuned = next(m["Value"] for m in default["FinalMetricDataList"] if m["MetricName"] == "validation:auc")
    best = body["BestTrainingJob"]["FinalHyperParameterTuningJobObjectiveMetric"]
    assert best > untuned, (best, untuned)
    record = store_of(home).tuning("xgb-bc-tuning")
    assert record is not None and record.describe()["BestTrainingJob"] == body["BestTrainingJob"]


def probe_tuning(image: str, home: str, strategy: str, ranges: dict[str, Any], jobs: int = 6) -> dict[str, Any]:
    return {
        "hyper_parameter_tuning_job_name": f"probe-{strategy.lower()}-{os.urandom(3).hex()}",
        "hyper_parameter_tuning_job_config": {
            "strategy": strategy,
            "hyper_parameter_tuning_job_objective": {"type": "Minimize", "metric_name": "loss"},
            "resource_limits": {"max_number_of_training_jobs": jobs, "max_parallel_training_jobs": min(3, jobs)},
            "parameter_ranges": ranges,
        },
        "training_job_definition": {
            "algorithm_specification": {
                "training_image": image,
                "metric_definitions": [{"name": "loss", "regex": r"loss=([0-9.]+)"}],
            },
            "static_hyper_parameters": {"seconds": "0.5"},
            "output_data_config": {"s3_output_path": f"file://{home}/output"},
        },
    }


def test_grid_runs_exactly_every_combination_and_a_failing_trial_does_not_fail_the_job(
    home: str, tmp_path: Path, test_images: dict[str, str]
) -> None:
    doc = probe_tuning(
        test_images["probe"],
        home,
        "Grid",
        {
            "categorical_parameter_ranges": [
                {"name": "mode", "values": ["sleep", "fail"]},
                {"name": "label", "values": ["a", "b", "c"]},
            ]
        },
    )
    result = tune_cli(doc, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    body = json.loads(result.stdout)
    combos = sorted(
        (s["TunedHyperParameters"]["mode"], s["TunedHyperParameters"]["label"]) for s in body["TrainingJobSummaries"]
    )
    assert combos == sorted((m, label) for m in ("sleep", "fail") for label in "abc")
    assert body["TrainingJobStatusCounters"] == {"Completed": 3, "Failed": 3}
    assert body["HyperParameterTuningJobStatus"] == "Completed"
    assert body["BestTrainingJob"]["TunedHyperParameters"]["mode"] == "sleep"
    from mlflow.tracking import MlflowClient  # the catalog: a parent run, every trial nested under it

    client = MlflowClient(tracking_uri=f"sqlite:///{home}/mlflow.db")
    experiments = [e.experiment_id for e in client.search_experiments()]
    [parent] = client.search_runs(experiments, filter_string="tags.`dockyard.kind` = 'tuning-job'")
    assert parent.info.run_name == doc["hyper_parameter_tuning_job_name"]
    assert parent.data.tags["dockyard.best_training_job"] == body["BestTrainingJob"]["TrainingJobName"]
    trials = client.search_runs(experiments, filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert sorted(r.data.tags["dockyard.job_name"] for r in trials) == sorted(
        s["TrainingJobName"] for s in body["TrainingJobSummaries"]
    )


def test_a_tuning_job_whose_trials_all_fail_fails_with_the_reason(
    home: str, tmp_path: Path, test_images: dict[str, str]
) -> None:
    doc = probe_tuning(
        test_images["probe"],
        home,
        "Random",
        {"categorical_parameter_ranges": [{"name": "mode", "values": ["fail"]}]},
        jobs=2,
    )
    result = tune_cli(doc, tmp_path)
    assert result.returncode == 1, result.stderr[-3000:]
    body = json.loads(result.stdout)
    assert body["HyperParameterTuningJobStatus"] == "Failed"
    assert "AlgorithmError: probe failed" in body["FailureReason"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {
                "strategy": "Grid",
                "parameter_ranges": {"integer_parameter_ranges": [{"name": "n", "min_value": 1, "max_value": 3}]},
            },
            "Grid accepts only categorical_parameter_ranges",
        ),
        (
            {"hyper_parameter_tuning_job_objective": {"type": "Maximize", "metric_name": "accuracy"}},
            "'accuracy' is not one of the training definition's metrics (loss)",
        ),
        (
            {
                "parameter_ranges": {
                    "continuous_parameter_ranges": [
                        {"name": "lr", "min_value": 0, "max_value": 1, "scaling_type": "Logarithmic"}
                    ]
                }
            },
            "Logarithmic scaling needs min_value > 0",
        ),
        (
            {"strategy": "Hyperband"},
            "max_resource: is missing, and no static hyperparameter (epochs,",
        ),
    ],
)
def test_bad_tuning_specs_exit_2_and_start_nothing(
    change: dict[str, Any], message: str, home: str, tmp_path: Path
) -> None:
    doc = probe_tuning(
        "dockyard-test/probe:1",
        home,
        "Random",
        {"categorical_parameter_ranges": [{"name": "mode", "values": ["sleep"]}]},
    )
    doc["hyper_parameter_tuning_job_config"].update(change)
    result = tune_cli(doc, tmp_path)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert not (Path(home) / "jobs").exists() and not (Path(home) / "tuning").exists()


def test_auto_early_stopping_stops_trials_worse_than_the_median(
    home: str, tmp_path: Path, test_images: dict[str, str]
) -> None:
    doc = probe_tuning(
        test_images["probe"],
        home,
        "Grid",
        {
            "categorical_parameter_ranges": [
                {"name": "offset", "values": ["0", "5"]},
                {"name": "label", "values": ["a", "b", "c"]},
            ]
        },
    )
    config = doc["hyper_parameter_tuning_job_config"]
    config["training_job_early_stopping_type"] = "Auto"
    config["resource_limits"]["max_parallel_training_jobs"] = 1
    doc["training_job_definition"]["static_hyper_parameters"] = {"mode": "sleep", "seconds": "3"}
    result = tune_cli(doc, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    body = json.loads(result.stdout)
    by_offset = {
        (s["TunedHyperParameters"]["offset"], s["TunedHyperParameters"]["label"]): s
        for s in body["TrainingJobSummaries"]
    }
    assert [by_offset[("0", x)]["TrainingJobStatus"] for x in "abc"] == ["Completed"] * 3
    assert [by_offset[("5", x)]["TrainingJobStatus"] for x in "abc"] == ["Stopped"] * 3
    for x in "abc":
        stopped = by_offset[("5", x)]
        assert stopped["FinalHyperParameterTuningJobObjectiveMetric"] > 5  # its last objective is recorded
        record = record_of(home, stopped["TrainingJobName"])
        assert record.status.transitions[-1].status_message.startswith("Training job stopped: early stopping")
    assert body["BestTrainingJob"]["TunedHyperParameters"]["offset"] == "0"


def branin_tuning(image: str, home: str, strategy: str, jobs: int, parallel: int) -> dict[str, Any]:
    """Tune the probe's Branin function (minimum 0.3979 at three points), one loss line per epoch."""
    doc = probe_tuning(
        image,
        home,
        strategy,
        {
            "continuous_parameter_ranges": [
                {"name": "x1", "min_value": -5, "max_value": 10, "scaling_type": "Linear"},
                {"name": "x2", "min_value": 0, "max_value": 15, "scaling_type": "Linear"},
            ]
        },
        jobs=jobs,
    )
    config = doc["hyper_parameter_tuning_job_config"]
    config["resource_limits"]["max_parallel_training_jobs"] = parallel
    config["random_seed"] = 7
    doc["training_job_definition"]["static_hyper_parameters"] = {
        "mode": "branin",
        "epochs": "9",
        "epoch_seconds": "0.4",
    }
    return doc


def epochs_of(home: str, job: str) -> int:
    return len(store_of(home).metrics(job))


def test_hyperband_stops_trials_at_its_rungs(home: str, tmp_path: Path, test_images: dict[str, str]) -> None:
    doc = branin_tuning(test_images["probe"], home, "Hyperband", jobs=9, parallel=3)
    result = tune_cli(doc, tmp_path)  # max_resource comes from the static hyperparameter epochs=9
    assert result.returncode == 0, result.stderr[-3000:]
    body = json.loads(result.stdout)
    summaries = body["TrainingJobSummaries"]
    assert len(summaries) == 9
    pruned = [s for s in summaries if (s["StoppedBecause"] or "").startswith("Hyperband: stopped at its rung")]
    assert pruned, summaries
    for s in pruned:
        assert s["TrainingJobStatus"] == "Stopped" and s["ObjectiveStatus"] == "Failed"
        assert s["FinalHyperParameterTuningJobObjectiveMetric"] is not None  # its last objective is recorded
        assert epochs_of(home, s["TrainingJobName"]) < 9
        assert (Path(home) / "output" / s["TrainingJobName"] / "output" / "model.tar.gz").exists()
    trained = [s for s in summaries if s["ObjectiveStatus"] == "Succeeded"]
    assert trained and all(epochs_of(home, s["TrainingJobName"]) == 9 for s in trained)
    best = min(s["FinalHyperParameterTuningJobObjectiveMetric"] for s in trained)
    assert body["BestTrainingJob"]["FinalHyperParameterTuningJobObjectiveMetric"] == best
    assert "loss by trial" in result.stderr  # the objective chart is printed


def test_warm_start_seeds_the_search_with_the_parents_results(
    home: str, tmp_path: Path, test_images: dict[str, str]
) -> None:
    parent = branin_tuning(test_images["probe"], home, "Random", jobs=4, parallel=2)
    parent["training_job_definition"]["static_hyper_parameters"].update(epochs="2", epoch_seconds="0.05")
    first = tune_cli(parent, tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    parent_body = json.loads(first.stdout)
    child = branin_tuning(test_images["probe"], home, "Bayesian", jobs=2, parallel=1)
    child["training_job_definition"] = parent["training_job_definition"]
    child["warm_start_config"] = {
        "parent_hyper_parameter_tuning_jobs": [
            {"hyper_parameter_tuning_job_name": parent["hyper_parameter_tuning_job_name"]}
        ],
        "warm_start_type": "IdenticalDataAndAlgorithm",
    }
    orphan = {
        **child,
        "warm_start_config": {
            **child["warm_start_config"],
            "parent_hyper_parameter_tuning_jobs": [{"hyper_parameter_tuning_job_name": "nobody"}],
        },
    }
    refused = tune_cli(orphan, tmp_path)
    assert (
        refused.returncode == 2 and "no tuning job 'nobody' has finished here — name a finished one" in refused.stderr
    )
    second = tune_cli(child, tmp_path)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "warm start: 4 trials of 1 parent tuning job(s) seed the search" in second.stderr
    body = json.loads(second.stdout)
    assert len(body["TrainingJobSummaries"]) == 2  # the parents' trials are not run again
    everyone = [parent_body["BestTrainingJob"], body["BestTrainingJob"]]
    overall = min(everyone, key=lambda s: s["FinalHyperParameterTuningJobObjectiveMetric"])
    assert body["OverallBestTrainingJob"] == overall


def test_a_sagemaker_tuning_request_ends_when_its_target_is_reached(
    home: str, tmp_path: Path, test_images: dict[str, str]
) -> None:
    request = {
        "HyperParameterTuningJobName": f"sm-target-{os.urandom(2).hex()}",
        "HyperParameterTuningJobConfig": {
            "Strategy": "Random",
            "HyperParameterTuningJobObjective": {"Type": "Minimize", "MetricName": "loss"},
            "ResourceLimits": {"MaxNumberOfTrainingJobs": 5, "MaxParallelTrainingJobs": 1},
            "ParameterRanges": {"CategoricalParameterRanges": [{"Name": "offset", "Values": ["0"]}]},
            "TrainingJobEarlyStoppingType": "Off",
            "TuningJobCompletionCriteria": {"TargetObjectiveMetricValue": 0.5},
        },
        "TrainingJobDefinition": {
            "AlgorithmSpecification": {
                "TrainingImage": test_images["probe"],
                "TrainingInputMode": "File",
                "MetricDefinitions": [{"Name": "loss", "Regex": "loss=([0-9.]+)"}],
            },
            "StaticHyperParameters": {"mode": "sleep", "seconds": "1"},
            "RoleArn": "arn:aws:iam::123456789012:role/SageMakerRole",
            "OutputDataConfig": {"S3OutputPath": f"file://{home}/output"},
            "ResourceConfig": {"InstanceType": "local", "InstanceCount": 1, "VolumeSizeInGB": 5},
            "StoppingCondition": {"MaxRuntimeInSeconds": 300},
        },
    }
    result = tune_cli(request, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    body = json.loads(result.stdout)
    assert len(body["TrainingJobSummaries"]) == 1
    assert body["CompletionReason"].startswith("the objective reached the target 0.5")


def test_stopping_a_tuning_job_stops_every_running_trial_gracefully(
    home: str, tmp_path: Path, test_images: dict[str, str]
) -> None:
    doc = probe_tuning(
        test_images["probe"],
        home,
        "Random",
        {"categorical_parameter_ranges": [{"name": "mode", "values": ["sleep"]}]},
        jobs=4,
    )
    doc["training_job_definition"]["static_hyper_parameters"] = {"seconds": "300"}
    doc["hyper_parameter_tuning_job_config"]["resource_limits"]["max_parallel_training_jobs"] = 2
    path = tmp_path / "tuning.yaml"
    path.write_text(yaml.safe_dump(doc))
    process = start_module("flows.tune", path)
    name = doc["hyper_parameter_tuning_job_name"]
    for trial in (f"{name}-001", f"{name}-002"):
        wait_for_status(home, trial, "Training")
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=300)
    assert process.returncode == 3, err[-3000:]
    body = json.loads(out)
    assert body["HyperParameterTuningJobStatus"] == "Stopped"
    assert body["TrainingJobStatusCounters"] == {"Stopped": 2}  # the other two never started
