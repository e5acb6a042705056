"""Deep learning on real Docker: the built-in image classifier (PyTorch) on two
instances, SageMaker's own image URI, incremental training, its errors on bad
data, and a DDP script in script mode."""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.integration.helpers import ROOT, local, run_example, run_job, unique

# ResNet-18 trains at 10-25 images/s on 2 shared cores: these jobs take minutes, not
# seconds, and use every core (scripts/test runs them apart from the rest).
pytestmark = [pytest.mark.integration, pytest.mark.deep_learning, pytest.mark.timeout(1800)]

IMAGE = "dockyard/image-classification:1.0"
SAGEMAKER_URI = "811284229777.dkr.ecr.us-east-1.amazonaws.com/image-classification:1"


def metric(body: dict[str, Any], name: str) -> float:
    return next(float(m["Value"]) for m in body["FinalMetricDataList"] if m["MetricName"] == name)


def job_log(home: str, body: dict[str, Any]) -> str:
    return (Path(home) / "jobs" / body["TrainingJobName"] / "job.log").read_text()


def lst_channels(data: Path, *names: str) -> list[dict[str, Any]]:
    return [
        {
            "channel_name": name,
            "content_type": "application/x-image",
            "data_source": {"s3_data_source": {"s3_uri": f"file://{data}/{name}"}},
        }
        for name in names
    ]


def ic_job(home: str, channels: list[dict[str, Any]], **hyperparameters: Any) -> dict[str, Any]:
    return {
        "training_job_name": unique("ic"),
        "algorithm_specification": {"training_image": SAGEMAKER_URI, "training_input_mode": "File"},
        "resource_config": {"instance_type": "ml.m5.large", "instance_count": 1},
        "input_data_config": channels,
        "hyperparameters": {
            "num_classes": 10,
            "num_training_samples": 1437,
            "image_shape": "3,32,32",
            "num_layers": 18,
            "optimizer": "adam",
            "learning_rate": 0.001,
            "mini_batch_size": 32,
            "epochs": 2,
            **hyperparameters,
        },
        "output_data_config": {"s3_output_path": f"file://{home}/output"},
        "stopping_condition": {"max_runtime_in_seconds": 1800},
    }


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The digits example's data: JPEGs with .lst files, and the same as RecordIO."""
    out = tmp_path_factory.mktemp("digits")
    script = str(ROOT / "examples" / "image-classification-digits" / "make_data.py")
    subprocess.run([sys.executable, script, "--out", str(out)], check=True)
    subprocess.run([sys.executable, script, "--out", str(out), "--recordio"], check=True)
    return out


def test_digits_example_on_two_instances_then_incremental_from_its_model_by_sagemakers_uri(
    home: str, digits: Path, tmp_path: Path
) -> None:
    body = run_example("examples/image-classification-digits", home)
    assert body["TrainingJobStatus"] == "Completed", body.get("FailureReason")
    accuracy = metric(body, "validation:accuracy")
    assert accuracy >= 0.9, accuracy
    log = job_log(home, body)
    assert "[algo-1]" in log and "[algo-2]" in log and "rank 1 of 2" in log
    assert re.search(r"\[algo-1\] Epoch\[2\] Validation-accuracy=", log)

    # The model loads as README says, and classifies digits.
    model = local(body["ModelArtifacts"]["S3ModelArtifacts"])
    (tmp_path / "model").mkdir()
    subprocess.run(["tar", "-xzf", str(model), "-C", str(tmp_path / "model")], check=True)
    info = json.loads((tmp_path / "model" / "model-info.json").read_text())
    assert (info["num_classes"], info["image_shape"]) == (10, [3, 32, 32])
    script = (
        "import torch; net = torch.jit.load('/m/image-classification.pt'); "
        "print(tuple(net(torch.zeros(4, 3, 32, 32)).shape))"
    )
    out = subprocess.run(
        ["docker", "run", "--rm", "-v", f"{tmp_path / 'model'}:/m:ro", IMAGE, "python", "-c", script],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert out.strip().endswith("(4, 10)"), out

    # Incremental training, asked for by SageMaker's image URI with .lst channels, continues from it.
    model_channel = {
        "channel_name": "model",
        "content_type": "application/x-sagemaker-model",
        "data_source": {"s3_data_source": {"s3_uri": body["ModelArtifacts"]["S3ModelArtifacts"]}},
    }
    channels = [*lst_channels(Path(digits), "train", "train_lst", "validation", "validation_lst"), model_channel]
    more = run_job(ic_job(home, channels, epochs=1, learning_rate=0.0001))  # a fine-tuning rate
    assert more["TrainingJobStatus"] == "Completed", more.get("FailureReason")
    assert more["AlgorithmSpecification"]["TrainingImage"] == SAGEMAKER_URI
    assert "incremental training: starting from the model channel's model" in job_log(home, more)
    assert metric(more, "validation:accuracy") >= 0.9  # from scratch, one epoch reaches 0.6-0.7


def test_a_spot_interruption_mid_training_resumes_from_the_last_epoch_checkpoint(
    home: str, digits: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A third of the digits (the first 480 of train.lst) keep the three epochs short.
    lines = (digits / "train_lst" / "train.lst").read_text().splitlines()[:480]
    _write(tmp_path / "train_lst", {"train.lst": ("\n".join(lines) + "\n").encode()})
    channels = lst_channels(digits, "train")
    channels += lst_channels(tmp_path, "train_lst")
    # Interrupted once the first checkpoint file has reached the checkpoint location.
    monkeypatch.setenv("DOCKYARD_SPOT_SIMULATION", "checkpoints=1; notice=5")
    job = ic_job(home, channels, epochs=3, checkpoint_frequency=1, num_training_samples=480)
    job["enable_managed_spot_training"] = True
    job["checkpoint_config"] = {"s3_uri": f"file://{tmp_path}/checkpoints"}
    job["stopping_condition"] = {"max_runtime_in_seconds": 1800, "max_wait_time_in_seconds": 3600}
    body = run_job(job)
    assert body["TrainingJobStatus"] == "Completed", body.get("FailureReason")
    assert [i["DuringStatus"] for i in body["SpotInterruptions"]] == ["Training"]
    log = job_log(home, body)
    resumed = re.search(r"resuming from checkpoint-epoch-(\d)\.pt \(epoch (\d)\)", log)
    assert resumed, log[-3000:]
    after = log[resumed.end() :]
    first = int(resumed.group(1))
    assert re.search(rf"Epoch\[{first + 1}\] Train-accuracy=", after)  # the epoch after the checkpoint's comes next
    assert not re.search(rf"Epoch\[{first}\] Train-accuracy=", after)  # the checkpoint's own epoch is not trained again
    assert (tmp_path / "checkpoints" / "checkpoint-epoch-2.pt").is_file()


def test_a_host_killed_mid_training_restarts_both_from_the_last_epoch_checkpoint(
    home: str, digits: Path, tmp_path: Path
) -> None:
    from infra import docker_engine

    lines = (digits / "train_lst" / "train.lst").read_text().splitlines()[:480]
    _write(tmp_path / "train_lst", {"train.lst": ("\n".join(lines) + "\n").encode()})
    channels = lst_channels(digits, "train") + lst_channels(tmp_path, "train_lst")
    job = ic_job(home, channels, epochs=3, checkpoint_frequency=1, num_training_samples=480)
    job["resource_config"]["instance_count"] = 2
    job["checkpoint_config"] = {"s3_uri": f"file://{tmp_path}/checkpoints"}
    job["retry_strategy"] = {"maximum_retry_attempts": 1}
    name = job["training_job_name"]
    killed: list[str] = []
    job_ended = threading.Event()

    def kill_algo_2_after_its_first_checkpoint() -> None:  # as a machine lost mid-training would end it
        while not job_ended.is_set():
            if list((tmp_path / "checkpoints" / "algo-2").glob("checkpoint-epoch-*.pt")):
                container = docker_engine.job_containers(name).get("algo-2")
                if container:
                    subprocess.run(["docker", "kill", "--signal", "KILL", container], check=True)
                    killed.append(container)
                return
            time.sleep(0.5)

    killer = threading.Thread(target=kill_algo_2_after_its_first_checkpoint)
    killer.start()
    try:
        body = run_job(job)
    finally:
        job_ended.set()
        killer.join()
    assert killed, "algo-2 wrote no checkpoint to kill it after"
    assert body["TrainingJobStatus"] == "Completed", body.get("FailureReason")
    assert len(body["Attempts"]) == 2 and "SIGKILL" in body["Attempts"][0]["EndedBy"], body["Attempts"]
    log = job_log(home, body)
    resumed = re.findall(r"\[(algo-\d)\] resuming from checkpoint-epoch-(\d)\.pt", log)
    assert {host for host, _ in resumed} == {"algo-1", "algo-2"}, resumed
    assert len({epoch for _, epoch in resumed}) == 1  # the hosts agreed on one epoch
    assert re.search(r"\[algo-1\] Epoch\[2\] Train-accuracy=", log)


def _write(folder: Path, files: dict[str, bytes]) -> None:
    for relative, data in files.items():
        (folder / relative).parent.mkdir(parents=True, exist_ok=True)
        (folder / relative).write_bytes(data)


def _jpeg() -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (32, 32), (200, 10, 10)).save(out, format="JPEG")
    return out.getvalue()


@pytest.mark.parametrize(
    ("lst", "images", "expected"),
    [
        ("0\t12\ta.jpg\n", {"a.jpg": b"jpeg"}, r"train\.lst line 1: label '12' is not a class number.*num_classes"),
        ("0\t1\ta.jpg\n1\t2\tmissing.jpg\n", {"a.jpg": b"jpeg"}, r"train\.lst line 2: image 'missing\.jpg'"),
        ("0\t1\ta.jpg\n1\t2\tbroken.jpg\n", {"a.jpg": b"jpeg", "broken.jpg": b"not a jpeg at all"}, r"broken\.jpg"),
    ],
    ids=["label-beyond-num-classes", "missing-image", "corrupt-jpeg"],
)
def test_bad_data_fails_the_job_with_a_reason_naming_it(
    home: str, tmp_path: Path, lst: str, images: dict[str, bytes], expected: str
) -> None:
    jpeg = _jpeg()
    _write(tmp_path / "data" / "train", {k: jpeg if v == b"jpeg" else v for k, v in images.items()})
    _write(tmp_path / "data" / "train_lst", {"train.lst": lst.encode()})
    channels = lst_channels(tmp_path / "data", "train", "train_lst")
    body = run_job(ic_job(home, channels, num_training_samples=2, mini_batch_size=2))
    assert body["TrainingJobStatus"] == "Failed"
    reason = body["FailureReason"]
    assert re.search(expected, reason), reason
    assert "Traceback" not in reason


def test_a_corrupt_recordio_file_and_a_model_channel_of_another_kind_fail_naming_them(
    home: str, tmp_path: Path
) -> None:
    import tarfile

    _write(tmp_path / "rec" / "train", {"train.rec": b"these bytes are no RecordIO at all" * 8})
    channels = [
        {
            "channel_name": "train",
            "content_type": "application/x-recordio",
            "data_source": {"s3_data_source": {"s3_uri": f"file://{tmp_path}/rec/train"}},
        }
    ]
    body = run_job(ic_job(home, channels, num_training_samples=2, mini_batch_size=2))
    assert body["TrainingJobStatus"] == "Failed"
    assert re.search(r"train\.rec.*not MXNet RecordIO", body["FailureReason"]), body["FailureReason"]

    jpeg = _jpeg()
    _write(tmp_path / "lst" / "train", {"a.jpg": jpeg, "b.jpg": jpeg})
    _write(tmp_path / "lst" / "train_lst", {"train.lst": b"0\t1\ta.jpg\n1\t2\tb.jpg\n"})
    _write(tmp_path / "other", {"notes.txt": b"not a model"})
    (tmp_path / "model").mkdir()
    with tarfile.open(tmp_path / "model" / "model.tar.gz", "w:gz") as archive:
        archive.add(tmp_path / "other" / "notes.txt", arcname="notes.txt")
    model_channel = {
        "channel_name": "model",
        "content_type": "application/x-sagemaker-model",
        "data_source": {"s3_data_source": {"s3_uri": f"file://{tmp_path}/model"}},
    }
    channels = [*lst_channels(tmp_path / "lst", "train", "train_lst"), model_channel]
    body = run_job(ic_job(home, channels, num_training_samples=2, mini_batch_size=2))
    assert body["TrainingJobStatus"] == "Failed"
    assert "are not a model of dockyard's image classifier" in body["FailureReason"], body["FailureReason"]
    assert "Traceback" not in body["FailureReason"]


def test_script_mode_from_an_sdk_style_sourcedir_archive(home: str, tmp_path: Path) -> None:
    """What the SageMaker SDK sends: sagemaker_program and sagemaker_submit_directory (a sourcedir.tar.gz)."""
    shutil.copytree(ROOT / "examples" / "pytorch-ddp" / "src", tmp_path / "src")
    (tmp_path / "src" / "extra.txt").write_text("shipped with the code\n")
    subprocess.run(["tar", "-czf", str(tmp_path / "sourcedir.tar.gz"), "-C", str(tmp_path / "src"), "."], check=True)
    data = tmp_path / "data"
    subprocess.run(
        [sys.executable, str(ROOT / "examples" / "pytorch-ddp" / "make_data.py"), "--out", str(data)], check=True
    )
    job = {
        "training_job_name": unique("script"),
        "algorithm_specification": {"training_image": "dockyard/pytorch:2.13"},
        "resource_config": {"instance_type": "local", "instance_count": 1},
        "input_data_config": [
            {"channel_name": "train", "data_source": {"s3_data_source": {"s3_uri": f"file://{data}/train"}}}
        ],
        "hyperparameters": {
            "sagemaker_program": json.dumps("train.py"),
            "sagemaker_submit_directory": json.dumps(f"file://{tmp_path}/sourcedir.tar.gz"),
            "epochs": 2,
        },
        "output_data_config": {"s3_output_path": f"file://{home}/output"},
    }
    body = run_job(job)
    assert body["TrainingJobStatus"] == "Completed", body.get("FailureReason")
    log = job_log(home, body)
    assert "script mode: 2 file(s) of code" in log and "epoch=1 " in log
    # Describe echoes the hyperparameters as sent; only the container saw /opt/ml/code.
    assert body["HyperParameters"]["sagemaker_submit_directory"] == json.dumps(f"file://{tmp_path}/sourcedir.tar.gz")
