"""Clarify's SHAP on 1,000 rows x 30 features, side by side in one run, in the
same image (dockyard/clarify:1.0):

- dockyard: the Clarify processor (`analyze`) over analysis_config.json, data
  and model mounted as a processing job mounts them, writing analysis.json,
  the per-row values and the report;
- floor: `shap` called directly on the same data and model (load, explain, and
  nothing else), in a container of the same image.

Tree SHAP (exact, XGBoost) and Kernel SHAP (num_samples 100, 10 baseline rows)
each; the figure is floor / dockyard (goal >= 0.9). Whole-container wall time
both ways, so the container start is in both.

    .venv/bin/python benchmarks/clarify.py [--runs 3] [--write]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from startup import run_as_user  # noqa: E402 - the sibling script (this folder is on sys.path)

from infra import docker_engine  # noqa: E402

IMAGE = "dockyard/clarify:1.0"
ROWS, FEATURES = 1000, 30

MAKE = f"""
import numpy, xgboost
rng = numpy.random.default_rng(7)
x = rng.normal(size=({ROWS}, {FEATURES}))
y = (x[:, 0] + 0.5 * x[:, 1] - x[:, 2] + rng.normal(scale=0.5, size={ROWS}) > 0).astype(int)
numpy.savetxt('/work/data/data.csv', numpy.column_stack([y, x]), delimiter=',', fmt=['%d'] + ['%.6f'] * {FEATURES})
booster = xgboost.train({{'objective': 'binary:logistic', 'max_depth': 4}}, xgboost.DMatrix(x, label=y), 50)
booster.save_model('/work/model/xgboost-model')
"""

DIRECT = """
import sys, numpy, shap, xgboost
data = numpy.loadtxt('/work/data/data.csv', delimiter=',')[:, 1:]
booster = xgboost.Booster(); booster.load_model('/work/model/xgboost-model')
if sys.argv[1] == 'tree':
    values = shap.TreeExplainer(booster).shap_values(data)
else:
    f = lambda rows: booster.predict(xgboost.DMatrix(rows), output_margin=True)
    values = shap.KernelExplainer(f, data[:10]).shap_values(data, nsamples=100, silent=True)
print(numpy.asarray(values).shape)
"""


def run(command: list[str], work: Path, processing: bool) -> float:
    """Whole-container wall time of one run."""
    if processing:
        root = "/opt/ml/processing"
        volumes = {
            str(work / "config"): {"bind": f"{root}/input/config", "mode": "ro"},
            str(work / "data"): {"bind": f"{root}/input/data", "mode": "ro"},
            str(work / "model"): {"bind": f"{root}/input/model", "mode": "ro"},
            str(work / "out"): {"bind": f"{root}/output", "mode": "rw"},
        }
    else:
        volumes = {str(work): {"bind": "/work", "mode": "rw"}}
    started = time.perf_counter()
    container = docker_engine.client().containers.run(IMAGE, command, volumes=volumes, detach=True)
    try:
        code = int(container.wait(timeout=1800)["StatusCode"])
        if code != 0:
            raise SystemExit(f"{command} failed:\n{container.logs().decode()[-2000:]}")
    finally:
        container.remove(force=True)
    return time.perf_counter() - started


def as_processing_job(work: Path, index: int) -> tuple[float, float]:
    """The same analysis as a processing job, as users run one (`python -m flows.process`): the
    whole command's wall time, and the job's own (its creation to its end, from its record)."""
    root = "/opt/ml/processing"
    inputs = [
        {"input_name": name, "s3_input": {"s3_uri": (work / name).as_uri(), "local_path": f"{root}/input/{name}"}}
        for name in ("config", "data", "model")
    ]
    output = {"s3_uri": (work / f"job-out-{index}").as_uri(), "local_path": f"{root}/output"}
    job = {
        "processing_job_name": f"bench-clarify-{index}-{os.urandom(2).hex()}",
        "app_specification": {"image_uri": IMAGE},
        "processing_inputs": inputs,
        "processing_output_config": {"outputs": [{"output_name": "analysis_result", "s3_output": output}]},
    }
    env = {**os.environ, "DOCKYARD_HOME": str(work / "home")}
    wall, body = run_as_user("flows.process", job, work / f"job-{index}.json", env)
    own = datetime.fromisoformat(body["ProcessingEndTime"]) - datetime.fromisoformat(body["CreationTime"])
    return wall, own.total_seconds()


def config(algorithm: str, baseline: list[list[float]]) -> dict[str, object]:
    shap: dict[str, object] = {"agg_method": "mean_abs", "num_samples": 100}
    if algorithm == "kernel":
        shap |= {"algorithm": "kernel", "baseline": baseline}
    return {
        "dataset_type": "text/csv",
        "headers": ["label", *[f"f{i}" for i in range(FEATURES)]],
        "label": "label",
        "label_values_or_threshold": [1],
        "methods": {"shap": shap},
    }


def compare(work: Path, first10: list[list[float]], runs: int) -> list[str]:
    """Each SHAP algorithm three ways, interleaved; the table's rows."""
    rows = []
    (work / "config" / "analysis_config.json").write_text(json.dumps(config("tree", first10)))
    as_processing_job(work, -1)  # the home's Prefect server started and its stores made, once
    for algorithm in ("tree", "kernel"):
        analysis = config(algorithm, first10)
        (work / "config" / "analysis_config.json").write_text(json.dumps(analysis))
        ours, floor, walls, owns = [], [], [], []
        for index in range(runs):  # interleaved
            ours.append(run(["analyze"], work, processing=True))
            floor.append(run(["python3", "-c", DIRECT, algorithm], work, processing=False))
            wall, own = as_processing_job(work, index + (100 if algorithm == "kernel" else 0))
            walls.append(wall)
            owns.append(own)
        o, f, w, j = (statistics.median(v) for v in (ours, floor, walls, owns))
        rows.append(f"| {algorithm} SHAP | {f:.2f} | {o:.2f} | {f / o:.2f} | {j:.2f} | {f / j:.2f} | {w:.2f} |")
        print(rows[-1], file=sys.stderr)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--write", action="store_true", help="write the figures to benchmarks/RESULTS.md")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-clarify-") as tmp:
        work = Path(tmp)
        for folder in ("data", "model", "out", "config"):
            (work / folder).mkdir()
        run(["python3", "-c", MAKE], work, processing=False)
        lines = (work / "data" / "data.csv").read_text().split()[:10]
        first10 = [list(map(float, line.split(",")[1:])) for line in lines]  # Kernel SHAP's baseline, both ways
        try:
            rows = compare(work, first10, args.runs)
        finally:
            stop = {**os.environ, "DOCKYARD_HOME": str(work / "home")}
            subprocess.run(
                [sys.executable, "-m", "cli.main", "server", "stop"], cwd=ROOT, env=stop, capture_output=True
            )
    table = "\n".join(
        [
            "| what | floor: shap directly, s | the Clarify processor, s | floor / processor "
            "| as a processing job, its own s | floor / job | `python -m flows.process`, s |",
            "|---|---|---|---|---|---|---|",
            *rows,
        ]
    )
    note = (
        f"{ROWS} rows x {FEATURES} features, an XGBoost model of 50 trees (depth 4); Kernel SHAP with num_samples 100 "
        f"over 10 baseline rows; median of {args.runs} interleaved runs, whole-container wall time for the floor and "
        "the processor. Goal: >= 0.9. The processor also reads the config, checks it against the data, and writes "
        "analysis.json, the per-row values and report.html. As a processing job, the job's own time runs from its "
        "creation to its end (staging, the container, uploading the outputs, the catalog); the command's adds "
        "Python's and Prefect's start."
    )
    print(table + "\n\n" + note)
    if args.write:
        from startup import write_section

        command = " ".join(["python", "benchmarks/clarify.py", *sys.argv[1:]])
        write_section("clarify", "Clarify's SHAP: the processor against shap directly", table, note, command)


if __name__ == "__main__":
    main()
