import re
from datetime import UTC, datetime
from typing import Any

import pytest

from dockyard.errors import JobSpecError
from dockyard.loading import build_job, from_sagemaker_request, generate_job_name, parse_document
from dockyard.rules import HostFacts, check_job
from dockyard.spec import JOB_NAME_PATTERN

NOW = datetime(2026, 11, 28, 12, 0, 0, tzinfo=UTC)
HOST = HostFacts(cpus=2, memory_bytes=24 * 1024**3, gpus=0)


def doc(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "training_job_name": "job-1",
        "algorithm_specification": {"algorithm_name": "xgboost"},
        "input_data_config": [{"channel_name": "train", "data_source": {"s3_data_source": {"s3_uri": "s3://b/train"}}}],
        "hyperparameters": {"num_round": 10},
        "output_data_config": {"s3_output_path": "s3://b/out"},
    }
    base.update(changes)
    return base


S3_TRAIN = {"data_source": {"s3_data_source": {"s3_uri": "s3://b/train"}}}


def problems(d: dict[str, Any]) -> list[str]:
    with pytest.raises(JobSpecError) as err:
        check_job(build_job(d, home="/h", now=NOW), HOST)
    return [str(p) for p in err.value.problems]


def test_yaml_numbers_become_wire_strings_and_defaults_apply() -> None:
    spec = build_job(doc(hyperparameters={"num_round": 10, "eta": 0.3, "flag": True}), home="/h", now=NOW)
    assert spec.hyperparameters == {"num_round": "10", "eta": "0.3", "flag": "true"}
    assert spec.resource_config.instance_type == "local"
    assert spec.stopping_condition.max_runtime_in_seconds == 86400


def test_a_missing_name_is_generated_from_base_job_name() -> None:
    d = doc(base_job_name="nightly")
    del d["training_job_name"]
    name = build_job(d, home="/h", now=NOW).training_job_name
    assert name.startswith("nightly-20261128-120000-")
    long = generate_job_name("x" * 100, NOW)
    assert len(long) <= 63
    import re

    assert re.match(JOB_NAME_PATTERN, long)


def test_dockyard_home_is_expanded() -> None:
    d = doc(output_data_config={"s3_output_path": "file://${DOCKYARD_HOME}/out"})
    assert build_job(d, home="/data/home", now=NOW).output_data_config.s3_output_path == "file:///data/home/out"


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"training_job_name": "-bad"}, "training_job_name: '-bad' is not a valid job name"),
        ({"training_job_name": "a" * 64}, "training_job_name"),
        ({"hyperparameters": {"num_round": 0}}, "hyperparameters.num_round: must be at least 1"),
        (
            {"hyperparameters": {"num_round": 5, "etaa": 1}},
            "hyperparameters.etaa: not a hyperparameter of the built-in",
        ),
        ({"hyperparameters": {}}, "hyperparameters.num_round: required by the built-in xgboost"),
        ({"hyperparameters": {"num_round": 5, "objective": "binary:logit"}}, "must be one of"),
        ({"resource_config": {"instance_type": "ml.g5.xlarge"}}, "needs GPUs and this host has none"),
        (
            {"hyperparameters": {"num_round": 5, "eval_metric": "auc,aucc"}},
            "hyperparameters.eval_metric: XGBoost computes no metric 'aucc' — did you mean 'auc'?",
        ),
        (
            {"hyperparameters": {"num_round": 5, "objective": "multi:softmax"}},
            "hyperparameters.num_class: objective multi:softmax needs the number of classes",
        ),
        (
            {"hyperparameters": {"num_round": 5, "objective": "binary:logisitc"}},
            "must be one of binary:logistic, binary:logitraw, binary:hinge, reg:squarederror, reg:logistic, "
            "reg:pseudohubererror, reg:absoluteerror, reg:tweedie, reg:gamma, reg:squaredlogerror, "
            "reg:quantileerror, reg:linear, count:poisson, multi:softmax, multi:softprob, rank:pairwise, rank:ndcg, "
            "rank:map, survival:cox "
            "— got 'binary:logisitc' — did you mean 'binary:logistic'?",
        ),
        ({"resource_config": {"instance_type": "m5.large"}}, "unknown instance type 'm5.large'"),
        ({"input_data_config": []}, "needs a 'train' channel"),
        (
            {
                "algorithm_specification": {"algorithm_name": "xgboost", "training_input_mode": "FastFile"},
                "input_data_config": [
                    {
                        "channel_name": "train",
                        "data_source": {
                            "s3_data_source": {"s3_uri": "s3://b/t", "s3_data_distribution_type": "ShardedByS3Key"}
                        },
                    }
                ],
            },
            "FastFile mounts the whole prefix on every host; dockyard does not shard it",
        ),
        (
            {"input_data_config": [{"channel_name": "train", "compression_type": "Gzip", **S3_TRAIN}]},
            "input_data_config[0].compression_type: Gzip is decompressed only on the way through a Pipe channel",
        ),
        (
            {
                "input_data_config": [
                    {
                        "channel_name": "train",
                        "data_source": {
                            "s3_data_source": {"s3_uri": "s3://b/m", "s3_data_type": "AugmentedManifestFile"}
                        },
                    }
                ]
            },
            "AugmentedManifestFile streams records, so it needs Pipe mode, not File",
        ),
        (
            {
                "input_data_config": [
                    {
                        "channel_name": "train",
                        "input_mode": "Pipe",
                        "data_source": {"file_system_data_source": {"file_system_id": "fs-1", "directory_path": "/d"}},
                    }
                ]
            },
            "a file system channel is mounted as it is, so it is File mode only, not Pipe",
        ),
        (
            {"input_data_config": [{"channel_name": "train", "data_source": {}}]},
            "give exactly one of s3_data_source or file_system_data_source",
        ),
        ({"enable_managed_spot_training": True}, "required for managed spot training"),
        (
            {
                "enable_managed_spot_training": True,
                "stopping_condition": {"max_runtime_in_seconds": 100, "max_wait_time_in_seconds": 50},
            },
            "is less than max_runtime_in_seconds",
        ),
        ({"checkpoint_config": {"s3_uri": "s3://b/c", "local_path": "/opt/ml/model/c"}}, "cannot hold checkpoints"),
        ({"stopping_condition": {"max_wait_time_in_seconds": 100}}, "only applies to managed spot training"),
        (
            {
                "enable_managed_spot_training": True,
                "stopping_condition": {"max_wait_time_in_seconds": 86400},
                "resource_config": {"keep_alive_period_in_seconds": 60},
            },
            "resource_config.keep_alive_period_in_seconds: warm pools do not keep spot instances",
        ),
        ({"resource_config": {"keep_alive_period_in_seconds": 3601}}, "less than or equal to 3600"),
        ({"environment": {"1BAD": "x"}}, "is not a valid variable name"),
        ({"algorithm_specification": {"algorithm_name": "xgboost", "training_image": "img"}}, "exactly one of"),
        ({"output_data_config": {"s3_output_path": "s3:///x"}}, "names no bucket"),
        ({"output_data_config": {"s3_output_path": "file://relative/x"}}, "needs an absolute path"),
        (
            {"algorithm_specification": {"algorithm_name": "xgboost", "training_input_mode": "Pipe"}},
            "algorithm_specification.training_input_mode: XGBoost reads text/libsvm from files only, not through a "
            "Pipe channel (text/libsvm is the default when content_type is not given) — set input_mode: File",
        ),
        (
            {
                "input_data_config": [
                    {"channel_name": "train", "input_mode": "Pipe", "content_type": "parquet", **S3_TRAIN}
                ]
            },
            "input_data_config[0].input_mode: XGBoost reads application/x-parquet from files only",
        ),
        (
            {"input_data_config": [{"channel_name": "train", "content_type": "text/csv;label_size=0", **S3_TRAIN}]},
            "input_data_config[0].content_type: label_size=0: training reads one label, the first column",
        ),
        (
            {
                "input_data_config": [
                    {"channel_name": "train", "content_type": "text/csv", **S3_TRAIN},
                    {"channel_name": "validation", "content_type": "libsvm", **S3_TRAIN},
                ]
            },
            "input_data_config[1].content_type: channel validation is text/libsvm, channel train text/csv: XGBoost "
            "reads every channel in one content type",
        ),
        (
            {"input_data_config": [{"channel_name": "train", "content_type": "application/json", **S3_TRAIN}]},
            "input_data_config[0].content_type: the built-in xgboost reads channel train as text/libsvm, libsvm,",
        ),
    ],
)
def test_rules_name_the_field_and_the_fix(changes: dict[str, Any], expected: str) -> None:
    assert any(expected in p for p in problems(doc(**changes))), problems(doc(**changes))


def test_limits_sagemaker_enforces() -> None:
    channel = {"data_source": {"s3_data_source": {"s3_uri": "s3://b/x"}}}
    many = [{"channel_name": f"c{i}", **channel} for i in range(21)]
    assert any("input_data_config" in p for p in problems(doc(input_data_config=many)))
    twice = [{"channel_name": "train", **channel}] * 2
    assert any("channel names must be unique" in p for p in problems(doc(input_data_config=twice)))
    metrics = [{"name": f"m{i}", "regex": "(x)"} for i in range(41)]
    assert any(
        "metric_definitions" in p
        for p in problems(doc(algorithm_specification={"algorithm_name": "xgboost", "metric_definitions": metrics}))
    )
    two_groups = [{"name": "m", "regex": "(a)(b)"}]
    assert any(
        "exactly one capture group" in p
        for p in problems(doc(algorithm_specification={"algorithm_name": "xgboost", "metric_definitions": two_groups}))
    )


def test_every_problem_is_reported_at_once() -> None:
    found = problems(doc(hyperparameters={"num_round": 0, "eta": 2, "eval_metric": "nope"}))
    assert len(found) == 3


def test_unknown_fields_get_a_suggestion() -> None:
    d = doc()
    d["resource_config"] = {"instance_typ": "local"}
    assert problems(d) == [
        "resource_config.instance_typ: unknown field — did you mean 'instance_type'?",
    ]


def test_a_sagemaker_request_is_converted() -> None:
    body = {
        "TrainingJobName": "sm-job",
        "AlgorithmSpecification": {"TrainingImage": "img:1", "TrainingInputMode": "File"},
        "RoleArn": "arn:aws:iam::123456789012:role/R",
        "InputDataConfig": [
            {
                "ChannelName": "train",
                "DataSource": {
                    "S3DataSource": {
                        "S3DataType": "S3Prefix",
                        "S3Uri": "s3://b/t",
                        "S3DataDistributionType": "ShardedByS3Key",
                    }
                },
            }
        ],
        "HyperParameters": {"Max_Depth": "3"},
        "OutputDataConfig": {"S3OutputPath": "s3://b/o"},
        "ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": 2, "VolumeSizeInGB": 5},
        "StoppingCondition": {"MaxRuntimeInSeconds": 60},
        "TensorBoardOutputConfig": {"S3OutputPath": "s3://b/tensorboard"},
    }
    converted, dropped = from_sagemaker_request(body)
    assert dropped == ["TensorBoardOutputConfig"]
    spec = build_job(body, home="/h", now=NOW)
    assert spec.hyperparameters == {"Max_Depth": "3"}
    assert spec.role == "arn:aws:iam::123456789012:role/R"
    assert spec.resource_config.volume_size_in_gb == 5
    assert spec.input_data_config[0].data_source.s3_data_source.s3_data_distribution_type.value == "ShardedByS3Key"
    assert converted["stopping_condition"] == {"max_runtime_in_seconds": 60}


def test_parse_errors_are_spec_errors() -> None:
    with pytest.raises(JobSpecError, match="not valid YAML"):
        parse_document("a: [")
    with pytest.raises(JobSpecError, match="must be a mapping"):
        parse_document("- 1")


def test_an_empty_job_file_says_it_is_empty() -> None:
    with pytest.raises(JobSpecError, match=re.escape("job.yaml: the file is empty — write the job's fields in it")):
        parse_document("", "job.yaml")
    with pytest.raises(JobSpecError, match="must be a mapping of job fields"):
        parse_document("- a list", "job.yaml")
