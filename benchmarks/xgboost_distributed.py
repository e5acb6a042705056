"""Distributed XGBoost: two instances against one, on the same data, in one run.

The built-in XGBoost trains 100 rounds (depth 6, hist) on 2,000,000 synthetic
rows of 28 features (Parquet), validated on 100,000, as dockyard jobs:

- one instance, then two instances training one model together (the data
  FullyReplicated, each host taking every other row), then two with the data
  in two files ShardedByS3Key;
- each with `nthread` 1 per instance, so two instances have twice the cores
  of one (as two machines would), and with all of this machine's cores per
  instance (two instances then share them);
- beside the floor: the same training in one bare `docker run` of the image,
  no dockyard around it.

Reports the training time the container took (from its first to its last
round, read from the job's log) and the validation logloss.

    .venv/bin/python benchmarks/xgboost_distributed.py [--write]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from startup import run_as_user, write_section  # the sibling script (this folder is on sys.path)

ROOT = Path(__file__).resolve().parent.parent
IMAGE = "dockyard/xgboost:2.0"
ROWS, VALIDATION, FEATURES, ROUNDS = 2_000_000, 100_000, 28, 100
HYPERPARAMETERS = {"num_round": str(ROUNDS), "max_depth": "6", "eta": "0.2", "tree_method": "hist",
                   "objective": "binary:logistic", "eval_metric": "logloss"}  # fmt: skip


def make_data(folder: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(ROWS + VALIDATION, FEATURES))
    signal = x[:, 0] + x[:, 1] * x[:, 2] - np.abs(x[:, 3]) + np.sin(x[:, 4] * 2)
    y = (signal + rng.normal(size=len(x)) > 0).astype(float)
    rows = np.column_stack([y, x])
    parts = {
        "train/train.parquet": rows[:ROWS],
        "validation/validation.parquet": rows[ROWS:],
        "shards/part-0.parquet": rows[: ROWS // 2],
        "shards/part-1.parquet": rows[ROWS // 2 : ROWS],
    }
    for name, part in parts.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table({f"c{i}": column for i, column in enumerate(part.T)}), folder / name)


def channel(name: str, folder: Path, distribution: str = "FullyReplicated") -> dict[str, Any]:
    return {
        "channel_name": name,
        "content_type": "application/x-parquet",
        "data_source": {"s3_data_source": {"s3_uri": folder.as_uri(), "s3_data_distribution_type": distribution}},
    }


def run(work: Path, instances: int, threads: int, sharded: bool = False) -> dict[str, float]:
    name = f"xgb-dist-{instances}-{threads}-{int(sharded)}-{int(time.time())}"
    train = (
        channel("train", work / "data" / "shards", "ShardedByS3Key")
        if sharded
        else channel("train", work / "data" / "train")
    )
    spec = {
        "training_job_name": name,
        "algorithm_specification": {"algorithm_name": "xgboost"},
        "resource_config": {"instance_type": "local", "instance_count": instances},
        "input_data_config": [train, channel("validation", work / "data" / "validation")],
        "hyperparameters": HYPERPARAMETERS | {"nthread": str(threads)},
        "output_data_config": {"s3_output_path": f"file://{work}/out"},
    }
    _, body = run_as_user(
        "flows.train", spec, work / f"{name}.json", {**os.environ, "DOCKYARD_HOME": str(work / "home")}
    )
    log = (work / "home" / "jobs" / name / "job.log").read_text()
    metric = {m["MetricName"]: m["Value"] for m in body["FinalMetricDataList"]}["validation:logloss"]
    return {"seconds": round_seconds(log), "logloss": metric, "job": body["TrainingTimeInSeconds"]}


def round_seconds(log: str) -> float:
    """From the first round's line to the last's, by the timestamps the job log gives algo-1's lines."""
    stamps = re.findall(r"^(\S+) \[algo-1\] \[\d+\]\t", log, flags=re.MULTILINE)
    first, last = datetime.fromisoformat(stamps[0]), datetime.fromisoformat(stamps[-1])
    return (last - first).total_seconds()


def floor(work: Path, threads: int) -> dict[str, float]:
    """The same training in one bare container: load the data, train, evaluate on both channels each
    round (as the built-in does), timed as the jobs are (from the end of the first round to the end
    of the last)."""
    script = f"""
import json, time, numpy as np, xgboost as xgb
import pyarrow.parquet as pq
t, v = (np.column_stack([c.to_numpy() for c in pq.read_table(f'/d/{{n}}/{{n}}.parquet').columns])
        for n in ('train', 'validation'))
dt, dv = xgb.DMatrix(t[:, 1:], label=t[:, 0]), xgb.DMatrix(v[:, 1:], label=v[:, 0])
params = {json.dumps({k: v for k, v in HYPERPARAMETERS.items() if k != "num_round"})}
params['nthread'] = {threads}
log, ends = {{}}, []
class Clock(xgb.callback.TrainingCallback):
    def after_iteration(self, model, epoch, evals_log):
        ends.append(time.perf_counter())
        return False
xgb.train(params, dt, {ROUNDS}, evals=[(dt, 'train'), (dv, 'validation')], evals_result=log, verbose_eval=False,
          callbacks=[Clock()])
print(json.dumps({{'seconds': ends[-1] - ends[0], 'logloss': log['validation']['logloss'][-1]}}))
"""
    done = subprocess.run(
        ["docker", "run", "--rm", "-v", f"{work}/data:/d:ro", IMAGE, "python3", "-c", script],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return json.loads(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="write the figures to benchmarks/RESULTS.md")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="dockyard-xgb-bench-"))
    make_data(work / "data")
    cores = os.cpu_count() or 1
    rows = [
        "| run | threads per instance | training s (first to last round) | job's TrainingTimeInSeconds | "
        "validation logloss | speed against one instance |",
        "|---|---|---|---|---|---|",
    ]
    ratios = []
    try:
        for threads in sorted({1, cores}):
            bare = floor(work, threads)
            rows.append(f"| bare `docker run`, no dockyard (floor) | {threads} | {bare['seconds']:.1f} | – | "
                        f"{bare['logloss']:.4f} | – |")  # fmt: skip
            one = run(work, 1, threads)
            rows.append(
                f"| one instance | {threads} | {one['seconds']:.1f} | {one['job']:.0f} | {one['logloss']:.4f} | 1.00x |"
            )
            for label, sharded in (("two instances, FullyReplicated", False), ("two instances, ShardedByS3Key", True)):
                two = run(work, 2, threads, sharded)
                ratio = one["seconds"] / two["seconds"]
                ratios.append((threads, label, ratio, two["logloss"] - one["logloss"]))
                rows.append(f"| {label} | {threads} | {two['seconds']:.1f} | {two['job']:.0f} | {two['logloss']:.4f} | "
                            f"{ratio:.2f}x |")  # fmt: skip
    finally:
        subprocess.run(
            [sys.executable, "-c", f"from infra.prefect_api import stop_server; stop_server('{work}/home')"], cwd=ROOT
        )
        shutil.rmtree(work, ignore_errors=True)
    table = "\n".join(rows)
    own, shared = [r[2] for r in ratios if r[0] == 1], [r[2] for r in ratios if r[0] != 1]

    def span(values: list[float]) -> str:
        return f"{min(values):.2f}x" if f"{min(values):.2f}" == f"{max(values):.2f}" else (
            f"{min(values):.2f}–{max(values):.2f}x")  # fmt: skip

    note = (
        f"On this machine ({cores} cores, both instances on it). With a core per instance, as two machines would "
        f"have, two instances train at {span(own)} the speed of one"
        + (f"; sharing the same {cores} cores, at {span(shared)} (the same work, plus the communication)" if shared
           else "")
        + f". The validation logloss of two instances is within {max(abs(r[3]) for r in ratios):.4f} of one "
        "instance's. The one-instance job trains as fast as the bare container (the floor)."
    )  # fmt: skip
    print(table + "\n\n" + note)
    if args.write:
        write_section(
            "xgboost-distributed", "Distributed XGBoost: two instances against one", table, note,
            "python benchmarks/xgboost_distributed.py --write",
        )  # fmt: skip


if __name__ == "__main__":
    main()
