"""The built-in image classifier's checks before anything runs, and SageMaker's image URIs for built-ins."""

from typing import Any

import pytest

from dockyard.algorithms import sagemaker_builtin
from dockyard.errors import JobSpecError
from dockyard.image_classification import parse_image_shape
from dockyard.loading import build_job, from_sagemaker_request
from dockyard.rules import check_job
from tasks.pull_image import plan_pull_image
from tests.unit.test_spec import HOST, NOW


def channel(name: str, content_type: str | None = "application/x-image", **source: Any) -> dict[str, Any]:
    c: dict[str, Any] = {
        "channel_name": name,
        "data_source": {"s3_data_source": {"s3_uri": f"s3://b/{name}", **source}},
    }
    if content_type:
        c["content_type"] = content_type
    return c


def ic_doc(
    hyperparameters: dict[str, Any] | None = None, channels: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    return {
        "training_job_name": "ic-1",
        "algorithm_specification": {"algorithm_name": "image-classification"},
        "resource_config": {"instance_type": "ml.m5.large", "instance_count": 2},
        "input_data_config": channels
        if channels is not None
        else [channel("train"), channel("train_lst"), channel("validation"), channel("validation_lst")],
        "hyperparameters": {"num_classes": 10, "num_training_samples": 1437, "image_shape": "3,32,32"}
        if hyperparameters is None
        else hyperparameters,
        "output_data_config": {"s3_output_path": "s3://b/out"},
    }


def problems(d: dict[str, Any]) -> list[str]:
    with pytest.raises(JobSpecError) as err:
        check_job(build_job(d, home="/h", now=NOW), HOST)
    return [str(p) for p in err.value.problems]


def test_a_two_instance_lst_job_passes() -> None:
    check_job(build_job(ic_doc(), home="/h", now=NOW), HOST)


@pytest.mark.parametrize(
    ("hyperparameters", "expected"),
    [
        ({"num_training_samples": 10}, "hyperparameters.num_classes: required by the built-in image-classification"),
        ({"num_classes": 10}, "hyperparameters.num_training_samples: required"),
        ({"num_classes": 1, "num_training_samples": 9}, "hyperparameters.num_classes: must be at least 2"),
        (
            {"num_classes": 10, "num_training_samples": 9, "image_shape": "3,32"},
            "hyperparameters.image_shape: must be 'channels,height,width' with 1 or 3 channels — got '3,32'",
        ),
        ({"num_classes": 10, "num_training_samples": 9, "image_shape": "4,32,32"}, "with 1 or 3 channels"),
        (
            {"num_classes": 10, "num_training_samples": 9, "num_layers": 19},
            "hyperparameters.num_layers: must be one of",
        ),
        ({"num_classes": 10, "num_training_samples": 9, "optimizer": "lamb"}, "hyperparameters.optimizer"),
        ({"num_classes": 10, "num_training_samples": 9, "learning_rate": 2}, "learning_rate: must be at most 1"),
        ({"num_classes": 10, "num_training_samples": 9, "top_k": 11}, "hyperparameters.top_k: is 11, more than"),
        ({"num_classes": 10, "num_training_samples": 9, "lr_scheduler_step": "10;20"}, "comma-separated epoch"),
        ({"num_classes": 10, "num_training_samples": 9, "num_round": 5}, "not a hyperparameter of the built-in"),
        (
            {"num_classes": 10, "num_training_samples": 9, "epochs": 3, "checkpoint_frequency": 5},
            "hyperparameters.checkpoint_frequency: is 5, more than epochs (3)",
        ),
    ],
)
def test_hyperparameters_are_checked_before_anything_runs(hyperparameters: dict[str, Any], expected: str) -> None:
    found = problems(ic_doc(hyperparameters))
    assert any(expected in p for p in found), found


@pytest.mark.parametrize(
    ("channels", "expected"),
    [
        ([channel("train")], "channel 'train' holds raw images (application/x-image), so it needs a 'train_lst'"),
        (
            [channel("train", "application/x-recordio"), channel("validation")],
            "channel 'validation' holds raw images",
        ),
        ([channel("train", "text/csv")], "input_data_config[0].content_type: the image classifier reads"),
        ([channel("validation", "application/x-recordio")], "needs a 'train' channel"),
        (
            [channel("train", "application/x-recordio"), channel("model", "application/x-image")],
            "input_data_config[1].content_type: the model channel (incremental training) holds a model.tar.gz",
        ),
        ([channel("train", "application/x-recordio"), channel("labels")], "reads no channel 'labels'"),
    ],
)
def test_channels_are_checked_before_anything_runs(channels: list[dict[str, Any]], expected: str) -> None:
    found = problems(ic_doc(channels=channels))
    assert any(expected in p for p in found), found


def test_recordio_and_augmented_manifest_need_no_lst() -> None:
    manifest = channel("train", "application/x-recordio", s3_data_type="AugmentedManifestFile")
    manifest.update(input_mode="Pipe", record_wrapper_type="RecordIO")
    manifest["data_source"]["s3_data_source"]["attribute_names"] = ["source-ref", "class"]
    for channels in ([channel("train", "application/x-recordio")], [manifest]):
        check_job(build_job(ic_doc(channels=channels), home="/h", now=NOW), HOST)


def test_image_shape_parsing() -> None:
    assert parse_image_shape("3, 224, 224") == (3, 224, 224)
    assert parse_image_shape("1,28,28") == (1, 28, 28)
    for bad in ("3,224", "3,0,224", "a,b,c", "2,32,32", ""):
        assert parse_image_shape(bad) is None


@pytest.mark.parametrize(
    ("uri", "builtin"),
    [
        ("811284229777.dkr.ecr.us-east-1.amazonaws.com/image-classification:1", "image-classification"),
        ("501404015308.dkr.ecr.ap-northeast-1.amazonaws.com/image-classification:latest", "image-classification"),
        ("141502667606.dkr.ecr.eu-west-1.amazonaws.com/sagemaker-xgboost:1.7-1", "xgboost"),
        ("390948362332.dkr.ecr.cn-north-1.amazonaws.com.cn/xgboost:1", "xgboost"),
        ("123456789012.dkr.ecr.us-east-1.amazonaws.com/image-classification:1", None),  # someone's own repository
        ("811284229777.dkr.ecr.us-east-1.amazonaws.com/blazingtext:1", None),  # a built-in dockyard lacks
        ("image-classification:1", None),
        (None, None),
    ],
)
def test_sagemaker_image_uris_name_their_builtin(uri: str | None, builtin: str | None) -> None:
    assert sagemaker_builtin(uri) == builtin


def test_a_sagemaker_request_with_the_builtins_image_runs_the_builtin() -> None:
    request = {
        "TrainingJobName": "ic-from-sdk",
        "AlgorithmSpecification": {
            "TrainingImage": "811284229777.dkr.ecr.us-east-1.amazonaws.com/image-classification:1",
            "TrainingInputMode": "File",
        },
        "RoleArn": "arn:aws:iam::111122223333:role/SageMakerRole",
        "InputDataConfig": [
            {
                "ChannelName": "train",
                "ContentType": "application/x-recordio",
                "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": "s3://b/train"}},
            }
        ],
        "HyperParameters": {"num_classes": "10", "num_training_samples": "100", "num_layers": "19"},
        "OutputDataConfig": {"S3OutputPath": "s3://b/out"},
        "ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 10},
        "StoppingCondition": {"MaxRuntimeInSeconds": 600},
    }
    job = build_job(from_sagemaker_request(request)[0], home="/h", now=NOW)
    assert job.algorithm_specification.builtin_name == "image-classification"
    with pytest.raises(JobSpecError, match=r"hyperparameters\.num_layers: must be one of"):
        check_job(job, HOST)  # the built-in's rules apply
    plan = plan_pull_image(job, "base:1")
    assert (plan.image, plan.build_target) == ("dockyard/image-classification:1.0", "image-classification")
