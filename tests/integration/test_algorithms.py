"""Algorithms as products: a third-party-style algorithm (the probe image and a specification
written only for this test) registered, trained by name, tuned on its objective, and refused
with clear errors where a job breaks its specification."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.helpers import ROOT, run_cli, store_of, unique, write_files

pytestmark = pytest.mark.integration

DOCKYARD = [sys.executable, "-c", "import sys; from cli.main import main; sys.exit(main())"]


def specification(image: str, name: str) -> dict[str, Any]:
    """A vendor's specification of the probe's Branin mode: it prints `epoch=K loss=L`."""

    def numeric(kind: str, low: str, high: str) -> dict[str, Any]:
        key = "integer" if kind == "Integer" else "continuous"
        return {f"{key}_parameter_range_specification": {"min_value": low, "max_value": high}}

    return {
        "algorithm_name": name,
        "algorithm_description": "Branin's function, trained epoch by epoch (a vendor's algorithm)",
        "training_specification": {
            "training_image": image,
            "supported_hyper_parameters": [
                {"name": "mode", "type": "Categorical", "default_value": "branin",
                 "range": {"categorical_parameter_range_specification": {"values": ["branin"]}}},
                {"name": "x1", "type": "Continuous", "range": numeric("Continuous", "-5", "10"),
                 "is_required": True, "is_tunable": True},
                {"name": "x2", "type": "Continuous", "range": numeric("Continuous", "0", "15"),
                 "default_value": "2.275", "is_tunable": True},
                {"name": "epochs", "type": "Integer", "range": numeric("Integer", "1", "50"), "default_value": "3"},
                {"name": "epoch_seconds", "type": "Continuous", "range": numeric("Continuous", "0", "1"),
                 "default_value": "0.05"},
            ],
            "supported_training_instance_types": ["ml.m5.large", "ml.m5.xlarge"],
            "supports_distributed_training": False,
            "metric_definitions": [{"name": "loss", "regex": r"loss=([0-9.]+)"}],
            "training_channels": [
                {"name": "train", "is_required": True, "supported_content_types": ["text/csv"],
                 "supported_input_modes": ["File"]},
            ],
            "supported_tuning_job_objective_metrics": [{"type": "Minimize", "metric_name": "loss"}],
        },
    }  # fmt: skip


def dockyard(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*DOCKYARD, *args], cwd=ROOT, capture_output=True, text=True, env=os.environ.copy())


def job(name: str, home: str, data: Path, **changes: Any) -> dict[str, Any]:
    spec = {
        "training_job_name": unique("vendor"),
        "algorithm_specification": {"algorithm_name": name},
        "resource_config": {"instance_type": "ml.m5.large", "instance_count": 1},
        "input_data_config": [
            {
                "channel_name": "train",
                "content_type": "text/csv",
                "data_source": {"s3_data_source": {"s3_uri": data.as_uri()}},
            }
        ],
        "hyperparameters": {"x1": "3.14"},
        "output_data_config": {"s3_output_path": f"file://{home}/output"},
    }
    return spec | changes


def run(module: str, doc: dict[str, Any], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    path = tmp_path / f"{unique('doc')}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return run_cli(module, path)


@pytest.mark.usefixtures("home")
def test_a_registered_algorithm_trains_by_name_tunes_on_its_objective_and_refuses_what_breaks_it(
    home: str, test_images: dict[str, str], tmp_path: Path
) -> None:
    name = unique("branin")
    path = tmp_path / "algorithm.yaml"
    path.write_text(yaml.safe_dump(specification(test_images["probe"], name)))
    created = dockyard("algorithms", "create", str(path))
    assert created.returncode == 0, created.stderr
    assert dockyard("algorithms", "create", str(path)).returncode == 1  # the name is taken
    listed = json.loads(dockyard("algorithms", "list", "--json").stdout)
    assert [a["AlgorithmName"] for a in listed] == ["xgboost", "image-classification", name]
    data = tmp_path / "data"
    write_files(data, {"train.csv": "1,2\n"})

    # Trained by name: its image, its defaults and its metric definitions.
    done = run("flows.train", job(name, home, data), tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    body = json.loads(done.stdout)
    assert body["TrainingJobStatus"] == "Completed"
    assert body["HyperParameters"] == {"x1": "3.14", "mode": "branin", "x2": "2.275", "epochs": "3",
                                       "epoch_seconds": "0.05"}  # fmt: skip
    assert body["AlgorithmSpecification"]["TrainingImage"] == test_images["probe"]
    assert [m["MetricName"] for m in body["FinalMetricDataList"]] == ["loss"]

    # A job that breaks the specification: exit 2, nothing created.
    store = store_of(home)
    before = len(store.summaries())
    refusals = {
        "missing channel": (job(name, home, data, input_data_config=[]), "needs a 'train' channel"),
        "out of range": (job(name, home, data, hyperparameters={"x1": "100"}), "hyperparameters.x1: must be at most"),
        "instance type": (
            job(name, home, data, resource_config={"instance_type": "ml.c5.xlarge", "instance_count": 1}),
            f"resource_config.instance_type: algorithm {name} does not train on ml.c5.xlarge",
        ),
        "distributed": (
            job(name, home, data, resource_config={"instance_type": "ml.m5.large", "instance_count": 2}),
            f"algorithm {name} trains on one instance only",
        ),
        "unknown hyperparameter": (job(name, home, data, hyperparameters={"x1": "1", "x3": "1"}), "x3: not a hyper"),
    }  # fmt: skip
    for case, (doc, expected) in refusals.items():
        refused = run("flows.train", doc, tmp_path)
        assert refused.returncode == 2 and expected in refused.stderr, (case, refused.stderr[-2000:])
    assert len(store.summaries()) == before

    # Tuned on its objective; x1 is tunable, epoch_seconds is not; it is minimized, not maximized.
    tuning = {
        "hyper_parameter_tuning_job_name": unique("vendor-tune"),
        "hyper_parameter_tuning_job_config": {
            "strategy": "Random",
            "hyper_parameter_tuning_job_objective": {"type": "Minimize", "metric_name": "loss"},
            "resource_limits": {"max_number_of_training_jobs": 2, "max_parallel_training_jobs": 1},
            "parameter_ranges": {"continuous_parameter_ranges": [{"name": "x1", "min_value": -5, "max_value": 10}]},
        },
        "training_job_definition": {
            "algorithm_specification": {"algorithm_name": name},
            "resource_config": {"instance_type": "ml.m5.large", "instance_count": 1},
            "input_data_config": job(name, home, data)["input_data_config"],
            "output_data_config": {"s3_output_path": f"file://{home}/output"},
        },
    }
    tuned = run("flows.tune", tuning, tmp_path)
    assert tuned.returncode == 0, tuned.stderr[-3000:]
    assert json.loads(tuned.stdout)["TrainingJobStatusCounters"]["Completed"] == 2
    config = tuning["hyper_parameter_tuning_job_config"]
    maximized = config | {"hyper_parameter_tuning_job_objective": {"type": "Maximize", "metric_name": "loss"}}
    wrong_way = tuning | {
        "hyper_parameter_tuning_job_name": unique("vendor-max"),
        "hyper_parameter_tuning_job_config": maximized,
    }
    refused = run("flows.tune", wrong_way, tmp_path)
    assert refused.returncode == 2 and f"algorithm {name} is not tuned on Maximize loss" in refused.stderr
    fixed = {"continuous_parameter_ranges": [{"name": "epoch_seconds", "min_value": 0, "max_value": 1}]}
    untunable = tuning | {"hyper_parameter_tuning_job_name": unique("vendor-fixed"),
                          "hyper_parameter_tuning_job_config": config | {"parameter_ranges": fixed}}  # fmt: skip
    refused = run("flows.tune", untunable, tmp_path)
    assert refused.returncode == 2 and "does not let epoch_seconds be tuned" in refused.stderr, refused.stderr

    # Deleted: a job naming it is refused; the job that ran it keeps its copy.
    assert dockyard("algorithms", "delete", name).returncode == 0
    gone = run("flows.train", job(name, home, data), tmp_path)
    assert gone.returncode == 2 and f"no algorithm '{name}'" in gone.stderr, gone.stderr[-2000:]
    kept = store.get(body["TrainingJobName"]).spec.registered_algorithm
    assert kept is not None and kept.algorithm_name == name


def test_malformed_specifications_are_refused_naming_the_field(test_images: dict[str, str], tmp_path: Path) -> None:
    good = specification(test_images["probe"], "fine")
    spec = good["training_specification"]
    x1 = spec["supported_hyper_parameters"][1]
    cases = {
        "min above max": (
            {**spec, "supported_hyper_parameters": [x1 | {"range": {"continuous_parameter_range_specification":
                                                                     {"min_value": "5", "max_value": "1"}}}]},
            "x1: its range's min_value 5 is above its max_value 1",
        ),
        "default out of range": (
            {**spec, "supported_hyper_parameters": [x1 | {"default_value": "11"}]},
            "x1: default_value '11' must be at most 10",
        ),
        "no channels": ({**spec, "training_channels": []}, "training_specification.training_channels"),
    }  # fmt: skip
    for case, (training, expected) in cases.items():
        path = tmp_path / f"{case.replace(' ', '-')}.yaml"
        path.write_text(yaml.safe_dump(good | {"training_specification": training}))
        refused = dockyard("algorithms", "create", str(path))
        assert refused.returncode == 2 and expected in refused.stderr, (case, refused.stderr)
    path = tmp_path / "builtin.yaml"
    path.write_text(yaml.safe_dump(good | {"algorithm_name": "xgboost"}))
    assert "is a built-in's name" in dockyard("algorithms", "create", str(path)).stderr
