"""The Clarify processor image (infra/images/clarify) on data whose answers are
known: bias metrics against hand computations, SHAP additivity for an XGBoost
model trained by the built-in algorithm, clear errors for configs that do not
fit the data, and a report a real browser draws."""

from __future__ import annotations

import csv
import io
import json
import math
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest

from infra import docker_engine
from tests.integration.helpers import ROOT, run_example, run_job, screenshot, unique
from tests.integration.test_processing import process

pytestmark = pytest.mark.integration
IMAGE = "dockyard/clarify:1.0"  # built by scripts/setup

# 10 applicants: facet gender 1 (the sensitive group, d) has 3 rows, 1 approved;
# gender 0 (a) has 7, 5 approved. The model's predictions approve 2 of d's... and 6 of a's.
HEADERS = ["approved", "gender", "income", "debt", "predicted"]
ROWS = [
    # approved, gender, income, debt, predicted
    (1, 0, 60, 10, 1), (1, 0, 55, 20, 1), (1, 0, 70, 5, 1), (1, 0, 40, 30, 1), (1, 0, 52, 12, 1),
    (0, 0, 20, 40, 1), (0, 0, 25, 35, 0),
    (1, 1, 58, 8, 1), (0, 1, 30, 30, 1), (0, 1, 22, 45, 0),
]  # fmt: skip


# The analysis every test starts from: approvals, by gender (1 the sensitive group), the model's
# predictions column kept out of its features.
BY_GENDER: dict[str, Any] = {
    "dataset_type": "text/csv",
    "headers": HEADERS,
    "label": "approved",
    "label_values_or_threshold": [1],
    "facet": [{"name_or_index": "gender", "value_or_threshold": [1]}],
    "excluded_columns": ["predicted"],
}


def write_csv(path: Path, header: bool = False) -> None:
    """The rows ten times over: smclarify takes an integer column with more than 5% distinct
    values for a continuous one, and 0/1 columns must read as categories."""
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    writer = csv.writer(buf)
    if header:
        writer.writerow(HEADERS)
    writer.writerows(ROWS * 10)
    path.write_text(buf.getvalue())


def analyze(folder: Path, config: dict[str, Any], model: Path | None = None) -> tuple[int, str, Path]:
    """Run the processor on folder/data with `config`; returns its exit code, its output and its output folder."""
    (folder / "config").mkdir(parents=True, exist_ok=True)
    (folder / "config" / "analysis_config.json").write_text(json.dumps(config))
    out = folder / "output"
    out.mkdir(exist_ok=True)
    root = "/opt/ml/processing"
    volumes = {
        str(folder / "config"): {"bind": f"{root}/input/config", "mode": "ro"},
        str(folder / "data"): {"bind": f"{root}/input/data", "mode": "ro"},
        str(out): {"bind": f"{root}/output", "mode": "rw"},
    }
    if model is not None:
        volumes[str(model)] = {"bind": f"{root}/input/model", "mode": "ro"}
    container = docker_engine.client().containers.run(IMAGE, "analyze", volumes=volumes, detach=True)
    try:
        code = int(container.wait(timeout=600)["StatusCode"])
        return code, container.logs().decode(), out
    finally:
        container.remove(force=True)


def clarify_job(
    folder: Path, config: dict[str, Any], out: Path, environment: dict[str, str] | None = None
) -> dict[str, Any]:
    """A processing job running the Clarify processor, as the SDK's SageMakerClarifyProcessor sends
    one: its dataset (folder/data) and analysis config as inputs, its results to `out`."""
    configs = folder / f"config-{out.name}"
    configs.mkdir()
    (configs / "analysis_config.json").write_text(json.dumps(config))
    root = "/opt/ml/processing"

    def given(name: str, uri: str, path: str) -> dict[str, Any]:
        return {"input_name": name, "s3_input": {"s3_uri": uri, "local_path": f"{root}/input/{path}"}}

    result = {"s3_uri": f"file://{out}", "local_path": f"{root}/output"}
    return {
        "processing_job_name": unique("clarify"),
        "app_specification": {"image_uri": IMAGE},  # its own command, as SageMaker runs Clarify's
        "processing_inputs": [
            given("dataset", f"file://{folder}/data", "data"),
            given("analysis_config", f"file://{configs}", "config"),
        ],
        "processing_output_config": {"outputs": [{"output_name": "analysis_result", "s3_output": result}]},
        "environment": environment or {},
    }


def metrics_of(section: dict[str, Any], facet: str) -> dict[str, float]:
    [row] = section["facets"][facet]
    return {m["name"]: m["value"] for m in row["metrics"]}


def test_bias_metrics_match_hand_computations(tmp_path: Path) -> None:
    write_csv(tmp_path / "data" / "applicants.csv")
    config = BY_GENDER | {
        "predicted_label": "predicted",
        "methods": {"pre_training_bias": {"methods": "all"}, "post_training_bias": {"methods": "all"}},
    }
    code, logs, out = analyze(tmp_path, config)
    assert code == 0, logs
    analysis = json.loads((out / "analysis.json").read_text())
    pre = metrics_of(analysis["pre_training_bias_metrics"], "gender")
    n_a, n_d, q_a, q_d = 70, 30, 50 / 70, 10 / 30
    assert pre["CI"] == (n_a - n_d) / (n_a + n_d)
    assert pre["DPL"] == q_a - q_d
    p_a, p_d = [q_a, 1 - q_a], [q_d, 1 - q_d]
    kl = sum(a * math.log(a / d) for a, d in zip(p_a, p_d, strict=True))
    mid = [(a + d) / 2 for a, d in zip(p_a, p_d, strict=True)]
    js = 0.5 * (sum(a * math.log(a / m) for a, m in zip(p_a, mid, strict=True))
                + sum(d * math.log(d / m) for d, m in zip(p_d, mid, strict=True)))  # fmt: skip
    assert abs(pre["KL"] - kl) < 1e-9 and abs(pre["JS"] - js) < 1e-9
    post = metrics_of(analysis["post_training_bias_metrics"], "gender")
    predicted_a, predicted_d = 60 / 70, 20 / 30  # the predicted approval rates
    assert abs(post["DI"] - predicted_d / predicted_a) < 1e-9
    assert abs(post["DPPL"] - (predicted_a - predicted_d)) < 1e-9
    report = (out / "report.html").read_text()
    assert report.count("<svg") == 2 and "Pre-training bias" in report
    png = tmp_path / "report.png"
    screenshot(out / "report.html", png)
    from matplotlib.image import imread

    drawn = (imread(png)[:, :, :3].min(axis=2) < 0.9).mean()
    assert drawn > 0.02, f"the report draws almost nothing: {drawn:.3%} of its pixels"


def test_configs_that_do_not_fit_the_data_fail_clearly_keeping_what_ran(tmp_path: Path) -> None:
    base = {"dataset_type": "text/csv", "headers": HEADERS, "label": "approved", "label_values_or_threshold": [1]}
    cases = {
        "no-column": ({"facet": [{"name_or_index": "age"}]}, "facet[0].name_or_index: no column 'age' in the data"),
        "empty-facet": (
            {"facet": [{"name_or_index": "gender", "value_or_threshold": [7]}]},
            "facet[0].value_or_threshold: no row of 'gender' has [7] — the facet is empty",
        ),
        "no-label-value": (
            {"label_values_or_threshold": ["yes"], "facet": [{"name_or_index": "gender"}]},
            "label_values_or_threshold: ['yes'] never occurs in column 'approved'",
        ),
        "no-model": (
            {"facet": [{"name_or_index": "gender", "value_or_threshold": [1]}],
             "methods": {"pre_training_bias": {"methods": ["CI"]}, "shap": {}}},
            "post_training_bias and shap need predictions: name the model (predictor.model_name",
        ),
    }  # fmt: skip
    for case, (fields, expected) in cases.items():
        write_csv(tmp_path / case / "data" / "applicants.csv", header=True)  # a header row, and headers: both fine
        code, logs, out = analyze(tmp_path / case, base | fields)
        assert code == 1, logs
        assert expected in (out / "failure").read_text(), (out / "failure").read_text()
        assert "Traceback" not in logs, logs
    # Ten 0/1 labels are 20% distinct: smclarify reads the column as continuous, and says so here.
    few = tmp_path / "few" / "data" / "applicants.csv"
    few.parent.mkdir(parents=True)
    few.write_text("\n".join(",".join(map(str, r)) for r in ROWS) + "\n")
    code, _, out = analyze(tmp_path / "few", base | {"facet": [{"name_or_index": "gender", "value_or_threshold": [1]}]})
    assert code == 1 and "column 'approved' reads as continuous" in (out / "failure").read_text()
    # What ran before the failure is kept: pre-training bias came before SHAP asked for a model.
    kept = json.loads((tmp_path / "no-model" / "output" / "analysis.json").read_text())
    assert metrics_of(kept["pre_training_bias_metrics"], "gender") == {"CI": 0.4}


@pytest.mark.usefixtures("home")  # the session's Prefect server
def test_tree_shap_for_a_model_the_built_in_xgboost_trained_adds_up_to_its_predictions(
    home: str, tmp_path: Path
) -> None:
    train = tmp_path / "train" / "train.csv"
    train.parent.mkdir(parents=True)
    train.write_text("\n".join(",".join(map(str, (r[0], r[1], r[2], r[3]))) for r in ROWS * 5) + "\n")
    channel = {"channel_name": "train", "content_type": "text/csv",
               "data_source": {"s3_data_source": {"s3_uri": train.parent.as_uri()}}}  # fmt: skip
    body = run_job(
        {
            "training_job_name": unique("clarify-model"),
            "algorithm_specification": {"algorithm_name": "xgboost"},
            "hyperparameters": {"objective": "binary:logistic", "num_round": "20", "max_depth": "3"},
            "input_data_config": [channel],
            "output_data_config": {"s3_output_path": f"file://{home}/output"},
        }
    )
    assert body["TrainingJobStatus"] == "Completed", body.get("FailureReason")
    model = tmp_path / "model"
    with tarfile.open(body["ModelArtifacts"]["S3ModelArtifacts"].removeprefix("file://")) as tar:
        tar.extractall(model, filter="data")
    write_csv(tmp_path / "data" / "applicants.csv")
    config = BY_GENDER | {
        "methods": {"post_training_bias": {"methods": ["DPPL", "DI"]}, "shap": {"agg_method": "mean_abs"}}
    }
    # As a processing job naming the training job: dockyard hands the processor its model.
    out = tmp_path / "out"
    named = config | {"predictor": {"model_name": body["TrainingJobName"], "instance_type": "ml.m5.large",
                                    "initial_instance_count": 1}}  # fmt: skip
    done = process(clarify_job(tmp_path, named, out), tmp_path)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    analysis = json.loads((out / "analysis.json").read_text())
    explanation = analysis["explanations"]["tree_shap"]["label0"]
    assert set(explanation["global_shap_values"]) == {"gender", "income", "debt"}
    rows = (out / "explanations_shap" / "out.csv").read_text().splitlines()[1:]
    local = [list(map(float, row)) for row in csv.reader(rows)]
    # The model's margins, from the same model file in the same image.
    features = [list(r[1:4]) for r in ROWS * 10]  # gender, income, debt: the rows the analysis read
    predict = (
        "import xgboost, numpy; b = xgboost.Booster(); b.load_model('/model/xgboost-model'); "
        f"print(list(map(float, b.predict(xgboost.DMatrix(numpy.array({features}, dtype=float)), output_margin=True))))"
    )
    printed = docker_engine.client().containers.run(
        IMAGE, ["python3", "-c", predict], volumes={str(model): {"bind": "/model", "mode": "ro"}}, remove=True
    )
    margins = json.loads(printed.decode().strip())
    for values, margin in zip(local, margins, strict=True):
        assert abs(sum(values) + explanation["expected_value"] - margin) < 1e-6
    # Kernel SHAP (as for a model that is not a tree ensemble) adds up the same way, over its baseline.
    kernel = config | {"methods": {"shap": {"algorithm": "kernel", "num_samples": 64, "agg_method": "median",
                                             "baseline": features[:5]}}}  # fmt: skip
    write_csv(tmp_path / "kernel" / "data" / "applicants.csv")
    code, logs, out = analyze(tmp_path / "kernel", kernel, model)
    assert code == 0, logs
    explained = json.loads((out / "analysis.json").read_text())["explanations"]["kernel_shap"]["label0"]
    rows = (out / "explanations_shap" / "out.csv").read_text().splitlines()[1:]
    for values, margin in zip(([float(v) for v in r] for r in csv.reader(rows)), margins, strict=True):
        assert abs(sum(values) + explained["expected_value"] - margin) < 1e-6


@pytest.mark.usefixtures("home")
def test_clarify_runs_as_a_processing_job_and_a_failed_one_keeps_what_ran_and_says_why(tmp_path: Path) -> None:
    write_csv(tmp_path / "data" / "applicants.csv")

    pre = {"methods": {"pre_training_bias": {"methods": ["CI", "DPL"]}}}
    done = process(clarify_job(tmp_path, BY_GENDER | pre, tmp_path / "ok"), tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout)["ProcessingJobStatus"] == "Completed"
    analysis = json.loads((tmp_path / "ok" / "analysis.json").read_text())
    assert metrics_of(analysis["pre_training_bias_metrics"], "gender")["CI"] == 0.4

    broken = BY_GENDER | pre | {"methods": {**pre["methods"], "shap": {}}}  # SHAP wants a model: none given
    failed = process(clarify_job(tmp_path, broken, tmp_path / "failed"), tmp_path)
    body = json.loads(failed.stdout)
    assert body["ProcessingJobStatus"] == "Failed"
    assert body["FailureReason"].startswith("AlgorithmError: post_training_bias and shap need predictions")
    kept = json.loads((tmp_path / "failed" / "analysis.json").read_text())  # the part that ran, uploaded
    assert "pre_training_bias_metrics" in kept


def _scores(model: dict[str, Any], rows: list[tuple[int, ...]]) -> list[float]:
    """The scorer image's probabilities (tests/images/scorer/serve), computed here."""
    out = []
    for row in rows:
        x = [float(v) / s for v, s in zip(row, model["scales"], strict=True)]
        margin = sum(w * v for w, v in zip(model["weights"], x, strict=True)) + model["bias"]
        out.append(1 / (1 + math.exp(-margin)))
    return out


@pytest.mark.usefixtures("home")
def test_a_model_dockyard_cannot_load_is_served_beside_the_processor_and_the_analysis_is_listed_with_its_job(
    home: str, test_images: dict[str, str], tmp_path: Path
) -> None:
    from dockyard.settings import Settings
    from infra import catalog
    from infra.job_log import path as log_path

    train = tmp_path / "train" / "train.csv"
    train.parent.mkdir(parents=True)
    train.write_text("\n".join(",".join(map(str, r[:4])) for r in ROWS * 5) + "\n")
    channel = {"channel_name": "train", "data_source": {"s3_data_source": {"s3_uri": train.parent.as_uri()}}}
    body = run_job(
        {
            "training_job_name": unique("scorer"),
            "algorithm_specification": {"training_image": test_images["scorer"]},
            "input_data_config": [channel],
            "output_data_config": {"s3_output_path": f"file://{home}/output"},
        }
    )
    assert body["TrainingJobStatus"] == "Completed", body.get("FailureReason")
    trained = body["TrainingJobName"]
    with tarfile.open(body["ModelArtifacts"]["S3ModelArtifacts"].removeprefix("file://")) as tar:
        model = json.loads(tar.extractfile("model.json").read())  # type: ignore[union-attr]
    write_csv(tmp_path / "data" / "applicants.csv")
    features = [r[1:4] for r in ROWS * 10]
    config = BY_GENDER | {
        # As the SDK's ModelConfig and ModelPredictedLabelConfig write them: JSON lines back, the score by key.
        "predictor": {"model_name": trained, "instance_type": "ml.m5.large", "initial_instance_count": 1,
                      "content_type": "text/csv", "accept_type": "application/jsonlines", "probability": "score"},
        "probability_threshold": 0.5,
        "methods": {"post_training_bias": {"methods": ["DPPL", "DI"]},
                    "shap": {"num_samples": 32, "baseline": [list(features[0])], "agg_method": "mean_abs"}},
    }  # fmt: skip
    spec = clarify_job(tmp_path, config, tmp_path / "out")
    done = process(spec, tmp_path)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    analysis = json.loads((tmp_path / "out" / "analysis.json").read_text())
    scores = _scores(model, features)
    predicted = [(s > 0.5, r[1]) for s, r in zip(scores, ROWS * 10, strict=True)]  # (approved?, gender)
    rate_a = sum(p for p, g in predicted if g == 0) / 70
    rate_d = sum(p for p, g in predicted if g == 1) / 30
    post = metrics_of(analysis["post_training_bias_metrics"], "gender")
    assert abs(post["DPPL"] - (rate_a - rate_d)) < 1e-9
    # Kernel SHAP of the served score adds up to it.
    explanation = analysis["explanations"]["kernel_shap"]["label0"]
    rows = (tmp_path / "out" / "explanations_shap" / "out.csv").read_text().splitlines()[1:]
    for values, score in zip(([float(v) for v in r] for r in csv.reader(rows)), scores, strict=True):
        assert abs(sum(values) + explanation["expected_value"] - score) < 1e-6
    name = spec["processing_job_name"]
    log = log_path(home, name).read_text()
    assert "[model] serving the model on port 8080" in log, log[-3000:]
    assert docker_engine.job_containers(name) == {}  # the served model went with the job
    # The analysis is found from the training job: its record, and the catalog's nested run.
    dockyard = [sys.executable, "-c", "import sys; from cli.main import main; sys.exit(main())"]
    described = subprocess.run([*dockyard, "jobs", "describe", trained], capture_output=True, text=True)
    assert f"analysis: {name} (Completed)" in described.stdout, described.stdout + described.stderr
    as_json = json.loads(subprocess.run([*dockyard, "jobs", "describe", trained, "--json"],
                                        capture_output=True, text=True).stdout)  # fmt: skip
    assert [a["ProcessingJobName"] for a in as_json["Analyses"]] == [name]
    mlflow = catalog.client(Settings.from_env({"DOCKYARD_HOME": home}).catalog_uri())
    run, parent = catalog.find_run(mlflow, name), catalog.find_run(mlflow, trained)
    assert run is not None and parent is not None
    assert run.data.tags[catalog.PARENT_TAG] == parent.info.run_id
    assert run.data.tags[catalog.EXPLAINS_TAG] == trained


@pytest.mark.usefixtures("home")
def test_a_model_that_cannot_be_analysed_is_a_clear_error(
    home: str, test_images: dict[str, str], tmp_path: Path
) -> None:
    write_csv(tmp_path / "data" / "applicants.csv")
    config = BY_GENDER | {"methods": {"post_training_bias": {"methods": ["DI"]}}}
    # No such training job: a spec error, before anything is created.
    unknown = clarify_job(tmp_path, config | {"predictor": {"model_name": "no-such-job"}}, tmp_path / "unknown")
    done = process(unknown, tmp_path)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "predictor.model_name: 'no-such-job' is no training job in the job store" in done.stderr
    # A model whose image does not serve (no `serve` command): the job fails, saying what the image lacks.
    train = tmp_path / "train" / "train.csv"
    train.parent.mkdir(parents=True)
    train.write_text("\n".join(",".join(map(str, (r[0], r[2]))) for r in ROWS) + "\n")
    body = run_job(
        {
            "training_job_name": unique("no-serve"),
            "algorithm_specification": {"training_image": test_images["byo"]},
            "hyperparameters": {"epochs": "2"},
            "input_data_config": [
                {"channel_name": "train", "data_source": {"s3_data_source": {"s3_uri": train.parent.as_uri()}}}
            ],
            "output_data_config": {"s3_output_path": f"file://{home}/output"},
        }
    )
    assert body["TrainingJobStatus"] == "Completed", body.get("FailureReason")
    silent = clarify_job(tmp_path, config | {"predictor": {"model_name": body["TrainingJobName"]}},
                         tmp_path / "silent", environment={"DOCKYARD_MODEL_STARTUP_SECONDS": "3"})  # fmt: skip
    failed = process(silent, tmp_path)
    record = json.loads(failed.stdout)
    assert record["ProcessingJobStatus"] == "Failed"
    assert "did not answer GET /ping on port 8080" in record["FailureReason"], record["FailureReason"]
    assert (tmp_path / "silent" / "analysis.json").exists()  # what ran is kept, as with every failure


@pytest.mark.usefixtures("home")
def test_the_clarify_credit_example_trains_its_model_then_explains_it(home: str) -> None:
    body = run_example("examples/clarify-credit", home)
    assert body["TrainingJobName"] == "credit-risk-xgboost"
    done = subprocess.run(
        [sys.executable, "-m", "flows.process", "examples/clarify-credit/clarify.yaml", "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    out = Path(home) / "clarify" / "credit"
    analysis = json.loads((out / "analysis.json").read_text())
    pre = metrics_of(analysis["pre_training_bias_metrics"], "sex")
    post = metrics_of(analysis["post_training_bias_metrics"], "sex")
    assert {"CI", "DPL", "KL", "JS", "LP", "TVD", "KS"} <= set(pre)
    assert {"DPPL", "DI", "DCA", "DCR", "RD", "DAR", "DRR", "AD", "TE", "FT"} <= set(post)
    shap = analysis["explanations"]["tree_shap"]["label0"]["global_shap_values"]
    assert len(shap) == 9 and "sex" in shap
    title = "Credit risk: bias by sex, and what drives the model"  # methods.report.title
    assert f"<h1>{title}</h1>" in (out / "report.html").read_text()
