"""Algorithm specifications: CreateAlgorithm's shape checked, built-ins as specifications, and a
job checked against its algorithm."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from dockyard.algorithm_spec import BUILTINS, check_job, check_objective, describe_algorithm, with_defaults
from dockyard.errors import JobSpecError
from dockyard.loading import build_algorithm, build_job

NOW = datetime(2026, 12, 1, tzinfo=UTC)
REQUEST = {
    "AlgorithmName": "scorer",
    "TrainingSpecification": {
        "TrainingImage": "vendor/scorer:1",
        "SupportedHyperParameters": [
            {"Name": "depth", "Type": "Integer", "DefaultValue": "3", "IsTunable": True,
             "Range": {"IntegerParameterRangeSpecification": {"MinValue": "1", "MaxValue": "8"}}},
            {"Name": "loss", "Type": "Categorical", "IsRequired": True,
             "Range": {"CategoricalParameterRangeSpecification": {"Values": ["l1", "l2"]}}},
        ],
        "SupportedTrainingInstanceTypes": ["ml.m5.large"],
        "MetricDefinitions": [{"Name": "rmse", "Regex": "rmse=([0-9.]+)"}],
        "TrainingChannels": [{"Name": "train", "IsRequired": True, "SupportedContentTypes": ["text/csv"],
                              "SupportedInputModes": ["File", "Pipe"]}],
        "SupportedTuningJobObjectiveMetrics": [{"Type": "Minimize", "MetricName": "rmse"}],
    },
}  # fmt: skip


def job(**changes: object) -> object:
    doc = {
        "training_job_name": "j",
        "algorithm_specification": {"algorithm_name": "scorer"},
        "resource_config": {"instance_type": "ml.m5.large"},
        "input_data_config": [{"channel_name": "train", "content_type": "text/csv;label_size=1",
                               "data_source": {"s3_data_source": {"s3_uri": "s3://b/t"}}}],
        "hyperparameters": {"loss": "l2"},
        "output_data_config": {"s3_output_path": "s3://b/o"},
    }  # fmt: skip
    return build_job(doc | changes, home="/h", now=NOW)


def test_a_create_algorithm_request_checks_a_job_as_the_sdk_would() -> None:
    algorithm = build_algorithm(REQUEST)
    assert check_job(algorithm, job()) == []
    assert with_defaults(algorithm, {"loss": "l1"}) == {"depth": "3", "loss": "l1"}
    found = [str(p) for p in check_job(algorithm, job(hyperparameters={"depth": "9", "dept": "1"},
                                                      resource_config={"instance_type": "ml.c5.xlarge"}))]  # fmt: skip
    assert "hyperparameters.depth: must be at most 8 — got '9' — fix the value" in found
    assert any(p.startswith("hyperparameters.dept: not a hyperparameter of algorithm scorer — did you mean 'depth'?")
               for p in found)  # fmt: skip
    assert any(p.startswith("hyperparameters.loss: required by algorithm scorer") for p in found)
    assert any("does not train on ml.c5.xlarge" in p for p in found)
    assert check_objective(algorithm, "rmse", "Minimize") == []
    assert "not tuned on Maximize rmse" in str(check_objective(algorithm, "rmse", "Maximize")[0])
    body = describe_algorithm(algorithm, NOW, "arn:x")
    assert body["TrainingSpecification"]["SupportedHyperParameters"][0]["Range"] == {
        "IntegerParameterRangeSpecification": {"MinValue": "1", "MaxValue": "8"}
    }


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"MinValue": "9", "MaxValue": "8"}, "min_value 9 is above its max_value 8"),
        ({"MinValue": "1.5", "MaxValue": "8"}, "'1.5' is not an integer"),
    ],
)
def test_a_malformed_specification_names_its_problem(change: dict[str, str], expected: str) -> None:
    spec = dict(REQUEST["TrainingSpecification"])  # type: ignore[arg-type]
    depth = spec["SupportedHyperParameters"][0] | {"Range": {"IntegerParameterRangeSpecification": change}}
    with pytest.raises(JobSpecError, match=expected):
        build_algorithm(REQUEST | {"TrainingSpecification": spec | {"SupportedHyperParameters": [depth]}})


def test_the_built_ins_are_specifications_of_the_same_registry() -> None:
    xgboost = BUILTINS["xgboost"].training_specification
    assert xgboost.training_image == "dockyard/xgboost:2.0" and xgboost.supports_distributed_training
    assert xgboost.hyperparameter("num_round") is not None and xgboost.hyperparameter("num_round").is_required  # type: ignore[union-attr]
    assert BUILTINS["image-classification"].training_specification.supports_distributed_training
    with pytest.raises(JobSpecError, match="is a built-in's name"):
        build_algorithm(REQUEST | {"AlgorithmName": "xgboost"})
