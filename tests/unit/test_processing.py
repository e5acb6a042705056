"""Processing job specs: SageMaker's CreateProcessingJob checked and carried by the training
stages' spec, the config files and binds its container gets, and DescribeProcessingJob."""

from __future__ import annotations

import json
import os
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from dockyard import clarify, contract
from dockyard.errors import JobSpecError
from dockyard.loading import build_job, build_processing_job
from dockyard.processing import as_job
from dockyard.record import JobRecord, describe_processing
from dockyard.status import SecondaryStatus
from tasks.follow import read_container_file

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def request(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "ProcessingJobName": "clarify-1",
        "RoleArn": "arn:aws:iam::111111111111:role/dockyard",
        "AppSpecification": {"ImageUri": "dockyard/clarify:1.0"},
        "ProcessingResources": {
            "ClusterConfig": {"InstanceType": "ml.m5.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 20}
        },
        "ProcessingInputs": [
            {
                "InputName": "dataset",
                "AppManaged": False,
                "S3Input": {
                    "S3Uri": "s3://b/data",
                    "LocalPath": "/opt/ml/processing/input/data",
                    "S3DataType": "S3Prefix",
                    "S3InputMode": "File",
                    "S3DataDistributionType": "FullyReplicated",
                    "S3CompressionType": "None",
                },
            }
        ],
        "ProcessingOutputConfig": {
            "Outputs": [
                {
                    "OutputName": "analysis_result",
                    "AppManaged": False,
                    "S3Output": {
                        "S3Uri": "s3://b/out",
                        "LocalPath": "/opt/ml/processing/output",
                        "S3UploadMode": "EndOfJob",
                    },
                }
            ]
        },
        "Environment": {"TOKEN": "literal"},
    }
    return body | changes


def problems(body: dict[str, Any]) -> list[str]:
    with pytest.raises(JobSpecError) as caught:
        build_processing_job(body, home="/h", now=NOW)
    return [str(p) for p in caught.value.problems]


def test_a_create_processing_job_request_becomes_the_spec_the_stages_carry() -> None:
    spec = as_job(build_processing_job(request(), home="/h", now=NOW), "file:///h/processing")
    assert spec.training_job_name == "clarify-1" and spec.processing is not None
    assert spec.algorithm_specification.training_image == "dockyard/clarify:1.0"
    assert (spec.resource_config.instance_type, spec.resource_config.volume_size_in_gb) == ("ml.m5.xlarge", 20)
    [channel] = spec.input_data_config
    assert (channel.channel_name, channel.data_source.s3_data_source.s3_uri) == ("dataset", "s3://b/data")  # type: ignore[union-attr]
    assert spec.environment == {"TOKEN": "literal"} and spec.processing.environment == {}  # one copy, masked there
    assert build_job(spec.model_dump(mode="json"), home="/h", now=NOW) == spec  # as the validate task reads it
    clarify = request(
        AppSpecification={"ImageUri": "205585389593.dkr.ecr.us-east-1.amazonaws.com/sagemaker-clarify-processing:1.0"}
    )
    shaped = as_job(build_processing_job(clarify, home="/h", now=NOW), "file:///h/processing")
    assert shaped.algorithm_specification.training_image == "dockyard/clarify:1.0"  # dockyard's Clarify processor


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/opt/ml/input/data", "must be a folder under /opt/ml/processing/"),
        ("/opt/ml/processing", "must be a folder under /opt/ml/processing/"),
        ("/opt/ml/processing/a/../../x", "must not hold '.', '..' or empty segments"),
    ],
)
def test_local_paths_stay_under_opt_ml_processing(path: str, expected: str) -> None:
    body = request()
    body["ProcessingInputs"][0]["S3Input"]["LocalPath"] = path
    assert any(p.startswith("processing_inputs[0].s3_input.local_path") and expected in p for p in problems(body))


def test_inputs_are_file_or_pipe_mode_and_a_training_spec_carries_no_processing_environment() -> None:
    reserved = request(Environment={"AWS_CONTAINER_CREDENTIALS_FULL_URI": "x", "DEPTH": 3})  # a number, as YAML gives
    assert any("is dockyard's to set" in p for p in problems(reserved))  # a spec error, never a traceback later
    assert build_processing_job(request(Environment={"DEPTH": 3}), home="/h", now=NOW).environment == {"DEPTH": "3"}
    body = request()
    body["ProcessingInputs"][0]["S3Input"]["S3InputMode"] = "FastFile"
    assert any("s3_input_mode must be File or Pipe" in p for p in problems(body))
    body["ProcessingInputs"][0]["S3Input"] |= {"S3InputMode": "File", "S3CompressionType": "Gzip"}
    assert any("Gzip needs s3_input_mode Pipe" in p for p in problems(body))
    body["ProcessingInputs"][0]["S3Input"]["S3InputMode"] = "Pipe"  # its FIFO at LocalPath_0, read-only
    piped = as_job(build_processing_job(body, home="/h", now=NOW), "file:///h/processing")
    binds = contract.processing_mounts(piped, contract.host_layout("/s"))
    assert binds["/s/input/data/dataset_0"] == ("/opt/ml/processing/input/data_0", True)
    assert piped.channel_mode(piped.input_data_config[0]).value == "Pipe"
    spec = as_job(build_processing_job(request(), home="/h", now=NOW), "file:///h/processing")
    smuggled = spec.model_dump(mode="json")
    smuggled["processing"]["environment"] = {"TOKEN": "literal"}  # out of reach of the secrets' handling
    with pytest.raises(JobSpecError, match="dockyard's own field"):
        build_job(smuggled, home="/h", now=NOW)


def test_a_container_file_is_read_only_when_it_is_a_plain_file(tmp_path: Path) -> None:
    (tmp_path / "secret").write_text("host secret")
    (tmp_path / "message").write_text("done\n")
    (tmp_path / "link").symlink_to(tmp_path / "secret")
    os.mkfifo(tmp_path / "fifo")
    assert read_container_file(str(tmp_path / "message")) == "done"
    assert read_container_file(str(tmp_path / "link")) is None  # a link to a host file is not followed
    assert read_container_file(str(tmp_path / "fifo")) is None  # nor does a FIFO block the reader
    assert read_container_file(str(tmp_path / "missing")) is None


def test_inputs_and_outputs_need_their_own_names_and_paths_and_a_training_runner_says_where_to_go() -> None:
    body = request()
    body["ProcessingOutputConfig"]["Outputs"][0]["S3Output"]["LocalPath"] = "/opt/ml/processing/input/data/out"
    assert any("overlap" in p for p in problems(body))
    body = request()
    body["ProcessingOutputConfig"]["Outputs"][0]["OutputName"] = "dataset"
    assert any("repeated: ['dataset']" in p for p in problems(body))
    with pytest.raises(JobSpecError, match=re.escape("run it with `python -m flows.process`")):
        build_job({"processing_job_name": "p"}, home="/h", now=NOW)


def test_the_container_gets_the_request_echoed_its_resource_config_and_its_binds() -> None:
    spec = as_job(build_processing_job(request(), home="/h", now=NOW), "file:///h/processing")
    files = contract.processing_config_files(spec, "algo-1", ["algo-1"])
    echoed = json.loads(files[contract.PROCESSING_CONFIG_FILE])
    assert echoed["ProcessingJobArn"].endswith(":processing-job/clarify-1")
    assert echoed["Environment"] == {"TOKEN": "literal"}
    assert echoed["ProcessingInputs"][0]["S3Input"]["S3DownloadMode"] == "StartOfJob"
    assert json.loads(files[contract.RESOURCE_CONFIG_FILE])["current_host"] == "algo-1"
    binds = contract.processing_mounts(spec, contract.host_layout("/s/algo-1"))
    assert binds == {
        "/s/algo-1/config": ("/opt/ml/config", True),
        "/s/algo-1/output": ("/opt/ml/output", False),
        "/s/algo-1/input/data/dataset": ("/opt/ml/processing/input/data", False),
        "/s/algo-1/processing/output": ("/opt/ml/processing/output", False),
    }


def test_describe_processing_job_masks_the_environment_and_has_no_training_fields() -> None:
    spec = as_job(build_processing_job(request(), home="/h", now=NOW), "file:///h/processing")
    record = JobRecord(spec=spec, creation_time=NOW, exit_message="done").moved(SecondaryStatus.STARTING, "x", NOW)
    body = describe_processing(record)
    assert body["ProcessingJobStatus"] == "InProgress" and body["ExitMessage"] == "done"
    assert body["Environment"] == {"TOKEN": "********"}  # as DescribeTrainingJob masks it
    assert body["ProcessingResources"]["ClusterConfig"]["InstanceCount"] == 1
    assert not {"TrainingJobName", "SecondaryStatus", "Tags"} & set(body)


def _trained(name: str, primary: str, **algorithm: str) -> JobRecord:
    """A training job's record, finished as `primary` with a model (or not)."""
    spec = build_job(
        {"training_job_name": name, "algorithm_specification": algorithm,
         "output_data_config": {"s3_output_path": "s3://b/out"}},
        home="/h", now=NOW,
    )  # fmt: skip
    record = JobRecord(spec=spec, creation_time=NOW).moved(SecondaryStatus.STARTING, "x", NOW)
    record = record.moved(SecondaryStatus.TRAINING, "x", NOW)
    if primary == "Completed":
        record = record.moved(SecondaryStatus.UPLOADING, "x", NOW).moved(SecondaryStatus.COMPLETED, "x", NOW)
    else:
        record = record.moved(SecondaryStatus.FAILED, "x", NOW)
    model = f"s3://b/out/{name}/output/model.tar.gz" if primary == "Completed" else None
    return record.model_copy(update={"model_artifacts": model})


def test_a_clarify_job_names_its_model_by_training_job_or_uri_and_bad_names_are_spec_errors() -> None:
    jobs = {
        "xgb": _trained("xgb", "Completed", algorithm_name="xgboost"),
        "mine": _trained("mine", "Completed", training_image="me/scorer:1"),
        "broken": _trained("broken", "Failed", training_image="me/scorer:1"),
        "images": _trained("images", "Completed", algorithm_name="image-classification"),
    }
    pinned = "registry.example:5000/me/scorer@sha256:" + "a" * 64
    jobs["pulled"] = jobs["mine"].model_copy(update={"training_image_digest": pinned})
    jobs["built"] = jobs["mine"].model_copy(update={"training_image_digest": "sha256:" + "b" * 64})
    spec = build_processing_job(request(), home="/h", now=NOW)
    config_input = {"InputName": "analysis_config", "S3Input": {"S3Uri": "s3://b/config/analysis_config.json",
                    "LocalPath": "/opt/ml/processing/input/config"}}  # fmt: skip
    spec = build_processing_job(request(ProcessingInputs=request()["ProcessingInputs"] + [config_input]),
                                home="/h", now=NOW)  # fmt: skip
    assert clarify.config_location(spec) == (
        "s3://b/config/analysis_config.json",
        "processing_inputs[1].s3_input.s3_uri",
    )

    def resolve(predictor: dict[str, Any]) -> Any:
        return clarify.analyzed_model(spec, json.dumps({"predictor": predictor}).encode(), "f", jobs.get)

    loaded = resolve({"model_name": "xgb"})
    assert (loaded.image, loaded.training_job_name, loaded.model_data) == (
        None, "xgb", "s3://b/out/xgb/output/model.tar.gz")  # fmt: skip
    assert resolve({"model_name": "mine"}).image == "me/scorer:1"  # served from its own image
    assert resolve({"model_name": "pulled"}).image == pinned  # the very image it trained in
    assert resolve({"model_name": "built"}).image == "me/scorer:1"  # an id only this engine knows: its tag
    assert resolve({"model_name": "s3://b/m/model.tar.gz"}).model_data == "s3://b/m/model.tar.gz"
    assert clarify.analyzed_model(spec, b'{"methods": {}}', "f", jobs.get) is None
    for predictor, expected in (
        ({"model_name": "nope"}, "'nope' is no training job in the job store"),
        ({"model_name": "broken"}, "training job 'broken' is Failed"),
        ({"model_name": "images"}, "ran the built-in image-classification"),
        ({"model_name": "http://x/model.tar.gz"}, "is no s3:// or file:// URI"),
        ({"endpoint_name": "prod"}, "dockyard runs no endpoints"),
    ):
        with pytest.raises(JobSpecError, match=re.escape(expected)):
            resolve(predictor)
    with pytest.raises(JobSpecError, match="is not JSON"):
        clarify.analyzed_model(spec, b"{", "f", jobs.get)
    # The model's own path is dockyard's to bind when the processor loads it.
    taken = {"InputName": "mine", "S3Input": {"S3Uri": "s3://b/m", "LocalPath": "/opt/ml/processing/input/model"}}
    clash = build_processing_job(request(ProcessingInputs=[taken]), home="/h", now=NOW)
    with pytest.raises(JobSpecError, match=r"processing_inputs\[0\].s3_input.local_path"):
        clarify.analyzed_model(clash, b'{"predictor": {"model_name": "xgb"}}', "f", jobs.get)
    # A user's spec cannot set what validation resolves.
    assert problems(request(AnalyzedModel={"ModelData": "s3://b/m.tar.gz"})) == [
        "analyzed_model: dockyard's own field, set from the analysis config — name the model there "
        "(predictor.model_name)"
    ]
