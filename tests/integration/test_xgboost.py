"""The built-in XGBoost at SageMaker's level: the same model from libsvm (the default), CSV,
Parquet and RecordIO-protobuf data, from files and through Pipe channels, weights from CSV's
second column and libsvm's `label:weight`; two instances training one model together, as good
as one instance's; the tuned metric evaluated; checkpoints named xgboost-checkpoint.<round>; a
validation channel without a content type read as train's."""

from __future__ import annotations

import io
import json
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import dump_svmlight_file, make_classification

from tests.integration.helpers import ROOT, run_job, unique

pytestmark = pytest.mark.integration

IMAGE = "dockyard/xgboost:2.0"
SDK_PYTHON = ROOT / ".venv-clients" / "bin" / "python"


def dataset(rows: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    features, labels = make_classification(
        n_samples=rows, n_features=8, n_informative=5, flip_y=0.05, random_state=seed
    )
    return features, labels.astype(float)


def write_csv(path: Path, columns: list[np.ndarray]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savetxt(path, np.column_stack(columns), delimiter=",", fmt="%.17g")


def write_recordio(path: Path, features: np.ndarray, labels: np.ndarray) -> None:
    """With the SageMaker SDK's own writer, as `estimator.record_set()` uploads data."""
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path.with_suffix(".x.npy"), features.astype("float32"))
    np.save(path.with_suffix(".y.npy"), labels.astype("float32"))
    script = (
        "import sys, numpy as np; from sagemaker.amazon.common import write_numpy_to_dense_tensor as write; "
        "write(open(sys.argv[1], 'wb'), np.load(sys.argv[2]), np.load(sys.argv[3]))"
    )
    args = [str(path), str(path.with_suffix(".x.npy")), str(path.with_suffix(".y.npy"))]
    subprocess.run([str(SDK_PYTHON), "-c", script, *args], check=True, capture_output=True)
    path.with_suffix(".x.npy").unlink()
    path.with_suffix(".y.npy").unlink()


def channel(name: str, folder: Path, content_type: str | None, **options: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"channel_name": name, "data_source": {"s3_data_source": {"s3_uri": folder.as_uri()}}}
    if content_type:
        spec["content_type"] = content_type
    return spec | options


def train(home: str, channels: list[dict[str, Any]], **changes: Any) -> dict[str, Any]:
    spec = {
        "training_job_name": unique("xgb"),
        "algorithm_specification": {"algorithm_name": "xgboost"},
        "input_data_config": channels,
        "hyperparameters": {
            "num_round": "25",
            "max_depth": "4",
            "objective": "binary:logistic",
            "eval_metric": "logloss",
        },
        "output_data_config": {"s3_output_path": f"file://{home}/output"},
    }
    body = run_job(spec | changes)
    assert body["TrainingJobStatus"] == "Completed", body.get("FailureReason")
    return body


def predictions(models: dict[str, str], features: np.ndarray, folder: Path) -> dict[str, np.ndarray]:
    """Each model.tar.gz's predictions on `features`, by XGBoost in the built-in's own image."""
    np.save(folder / "features.npy", features)
    for name, uri in models.items():
        target = folder / "models" / name
        target.mkdir(parents=True)
        subprocess.run(["tar", "-xzf", uri.removeprefix("file://"), "-C", str(target)], check=True)
    script = (
        "import json, os, numpy as np, xgboost as xgb; x = xgb.DMatrix(np.load('/w/features.npy')); "
        "print(json.dumps({n: xgb.Booster(model_file=f'/w/models/{n}/xgboost-model').predict(x).tolist() "
        "for n in os.listdir('/w/models')}))"
    )
    done = subprocess.run(
        ["docker", "run", "--rm", "-v", f"{folder}:/w:ro", IMAGE, "python3", "-W", "ignore", "-c", script],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return {name: np.asarray(values) for name, values in json.loads(done.stdout).items()}


@pytest.mark.usefixtures("home")
def test_libsvm_parquet_and_recordio_protobuf_train_the_model_csv_trains(home: str, tmp_path: Path) -> None:
    features, labels = dataset(400, seed=1)
    weights = np.random.default_rng(2).uniform(0.5, 2.0, len(labels))
    data = tmp_path / "data"
    write_csv(data / "csv" / "train.csv", [labels, features])
    libsvm = io.BytesIO()
    dump_svmlight_file(features, labels, libsvm, zero_based=True)
    (data / "libsvm").mkdir()
    (data / "libsvm" / "train.libsvm").write_bytes(libsvm.getvalue())
    (data / "parquet").mkdir()
    pd.DataFrame(np.column_stack([labels, features]), columns=[f"c{i}" for i in range(9)]).to_parquet(
        data / "parquet" / "train.parquet"
    )
    write_recordio(data / "recordio" / "train.rec", features, labels)
    write_csv(data / "csv-weighted" / "train.csv", [labels, weights, features])
    weighted = "".join(
        f"{label:.17g}:{weight:.17g} " + " ".join(f"{i}:{v:.17g}" for i, v in enumerate(row)) + "\n"
        for label, weight, row in zip(labels, weights, features, strict=True)
    )
    (data / "libsvm-weighted").mkdir()
    (data / "libsvm-weighted" / "train.libsvm").write_text(weighted)

    runs = {
        "csv": [channel("train", data / "csv", "text/csv")],
        "libsvm": [channel("train", data / "libsvm", None)],  # none given: libsvm, SageMaker's default
        "parquet": [channel("train", data / "parquet", "application/x-parquet")],
        "recordio-pipe": [channel("train", data / "recordio", "application/x-recordio-protobuf", input_mode="Pipe")],
        "csv-pipe": [channel("train", data / "csv", "text/csv;label_size=1", input_mode="Pipe")],
    }
    models = {name: train(home, channels)["ModelArtifacts"]["S3ModelArtifacts"] for name, channels in runs.items()}
    models["csv-weighted"] = train(
        home,
        [channel("train", data / "csv-weighted", "csv")],
        hyperparameters={"num_round": "25", "max_depth": "4", "objective": "binary:logistic", "csv_weights": "1"},
    )["ModelArtifacts"]["S3ModelArtifacts"]
    models["libsvm-weighted"] = train(
        home,
        [channel("train", data / "libsvm-weighted", "text/libsvm")],
        hyperparameters={"num_round": "25", "max_depth": "4", "objective": "binary:logistic"},
    )["ModelArtifacts"]["S3ModelArtifacts"]

    predicted = predictions(models, features, tmp_path)
    for name in runs:
        assert np.abs(predicted[name] - predicted["csv"]).max() <= 1e-6, name
    assert np.abs(predicted["libsvm-weighted"] - predicted["csv-weighted"]).max() <= 1e-6
    assert np.abs(predicted["csv-weighted"] - predicted["csv"]).max() > 1e-3  # the weights counted


@pytest.mark.usefixtures("home")
def test_two_instances_train_one_model_as_good_as_one_instances(home: str, tmp_path: Path) -> None:
    features, labels = dataset(3000, seed=3)
    data = tmp_path / "data"
    write_csv(data / "train" / "train.csv", [labels[:2400], features[:2400]])
    write_csv(data / "validation" / "validation.csv", [labels[2400:], features[2400:]])
    for part in range(2):  # the same rows as two files, for ShardedByS3Key
        rows = slice(part * 1200, (part + 1) * 1200)
        write_csv(data / "shards" / f"part-{part}.csv", [labels[rows], features[rows]])
    validation = channel("validation", data / "validation", None)  # read as train's, as SageMaker's XGBoost does
    tuned = {"num_round": "40", "max_depth": "4", "eta": "0.2", "objective": "binary:logistic",
             "eval_metric": "logloss", "_tuning_objective_metric": "validation:auc"}  # fmt: skip

    def final(body: dict[str, Any]) -> dict[str, float]:
        return {m["MetricName"]: m["Value"] for m in body["FinalMetricDataList"]}

    one = final(train(home, [channel("train", data / "train", "text/csv"), validation], hyperparameters=tuned))
    assert {"validation:logloss", "validation:auc"} <= set(one)  # the tuned metric is evaluated too

    checkpoints = tmp_path / "checkpoints"
    two = train(
        home,
        [channel("train", data / "train", "text/csv"), validation],
        hyperparameters=tuned | {"checkpoint_frequency": "10"},
        resource_config={"instance_type": "local", "instance_count": 2},
        checkpoint_config={"s3_uri": checkpoints.as_uri()},
    )
    assert abs(final(two)["validation:logloss"] - one["validation:logloss"]) <= 0.01
    assert abs(final(two)["validation:auc"] - one["validation:auc"]) <= 0.01
    for host in ("algo-1", "algo-2"):  # every host checkpoints the one model, in its own folder
        assert sorted(p.name for p in (checkpoints / host).iterdir()) == [
            f"xgboost-checkpoint.{r}"
            for r in (19, 29, 39, 9)  # SageMaker's: the 0-based round each ends with
        ]

    sharded = train(
        home,
        [channel("train", data / "shards", "text/csv",
                 data_source={"s3_data_source": {"s3_uri": (data / "shards").as_uri(),
                                                 "s3_data_distribution_type": "ShardedByS3Key"}}), validation],
        hyperparameters=tuned,
        resource_config={"instance_type": "local", "instance_count": 2},
    )  # fmt: skip
    assert abs(final(sharded)["validation:logloss"] - one["validation:logloss"]) <= 0.01
