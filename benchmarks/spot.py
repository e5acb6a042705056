"""Managed spot training: what an interruption costs.

For the built-in XGBoost (600 rounds on 30,000 synthetic rows), one spot
interruption 6 s after the job starts, measured in one run:

- resume latency: from the interruption notice to `train` running again
  (no capacity wait is simulated), beside a bare `docker run` (the floor);
- work lost: rounds trained twice, against the checkpoint interval, with no
  notice (SIGKILL at once) and with a 5 s notice (the container checkpoints
  on SIGTERM).

    .venv/bin/python benchmarks/spot.py [--write]
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

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
ROUNDS = 600


def make_data(folder: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30000, 30))
    y = (x[:, 0] + x[:, 1] * x[:, 2] + rng.normal(size=30000) * 0.5 > 0).astype(float)
    folder.mkdir(parents=True)
    np.savetxt(folder / "train.csv", np.column_stack([y, x]), delimiter=",", fmt="%.5g")


def run(work: Path, every: int, notice: float) -> dict[str, float]:
    name = f"spot-bench-{every}-{int(notice)}-{int(time.time())}"
    spec = {
        "training_job_name": name,
        "algorithm_specification": {"algorithm_name": "xgboost"},
        "input_data_config": [
            {
                "channel_name": "train",
                "content_type": "text/csv",
                "data_source": {"s3_data_source": {"s3_uri": f"file://{work}/data"}},
            }
        ],
        "hyperparameters": {
            "num_round": ROUNDS,
            "max_depth": 8,
            "eta": 0.05,
            "objective": "binary:logistic",
            "eval_metric": "auc",
            "checkpoint_frequency": every,
        },
        "output_data_config": {"s3_output_path": f"file://{work}/out"},
        "enable_managed_spot_training": True,
        "checkpoint_config": {"s3_uri": f"file://{work}/ckpt/{name}"},
        "stopping_condition": {"max_runtime_in_seconds": 900, "max_wait_time_in_seconds": 1800},
    }
    path = work / f"{name}.json"
    path.write_text(json.dumps(spec))
    env = {
        **os.environ,
        "DOCKYARD_HOME": str(work / "home"),
        "DOCKYARD_SPOT_SIMULATION": f"interrupt_at=6; notice={notice:g}",
    }
    result = subprocess.run(
        [sys.executable, "-m", "flows.train", str(path), "--json"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    if result.returncode != 0:
        raise SystemExit(result.stderr[-2000:])
    body = json.loads(result.stdout)
    notice_at = datetime.fromisoformat(body["SpotInterruptions"][0]["Time"])
    transitions = body["SecondaryStatusTransitions"]
    back = next(
        datetime.fromisoformat(t["StartTime"])
        for t in transitions
        if t["Status"] == "Training" and datetime.fromisoformat(t["StartTime"]) > notice_at
    )
    log = (work / "home" / "jobs" / name / "job.log").read_text()
    trained = len(re.findall(r"\[algo-1\] \[\d+\]\t", log))
    return {
        "latency": (back - notice_at).total_seconds(),
        "lost": trained - ROUNDS,
        "billable": body["BillableTimeInSeconds"],
        "training": body["TrainingTimeInSeconds"],
    }


def floor() -> float:
    start = time.perf_counter()
    subprocess.run(["docker", "run", "--rm", "dockyard/xgboost:2.0", "true"], check=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="write the figures to benchmarks/RESULTS.md")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="dockyard-spot-bench-"))
    make_data(work / "data")
    rows = [
        "| checkpoint every | notice s | notice to training again s | rounds trained twice | billable / training s |",
        "|---|---|---|---|---|",
    ]
    latencies = []
    for every, notice in ((1, 0), (10, 0), (50, 0), (50, 5)):
        r = run(work, every, notice)
        latencies.append(r["latency"])
        rows.append(
            f"| {every} rounds | {notice:g} | {r['latency']:.2f} | {r['lost']:.0f} | "
            f"{r['billable']:.0f} / {r['training']:.0f} |"
        )
    subprocess.run(
        [sys.executable, "-c", f"from infra.prefect_api import stop_server; stop_server('{work}/home')"],
        cwd=ROOT,
        check=True,
    )
    shutil.rmtree(work, ignore_errors=True)
    bare = floor()
    table = "\n".join(rows)
    note = (
        f"Notice to training again: {min(latencies):.2f}–{max(latencies):.2f} s, against "
        f"{bare:.2f} s for a bare `docker run` of the image (the floor), "
        f"{min(latencies) / bare:.1f}–{max(latencies) / bare:.1f}x. It covers the SIGTERM grace, "
        "the final checkpoint sync, releasing the instances, provisioning, restoring checkpoints, "
        "staging the data again and starting the container; the built-in checkpoints on SIGTERM and exits, "
        "so a notice costs no waiting. Work is lost only without notice (SIGKILL at once): up to the "
        "checkpoint interval, in rounds."
    )
    print(table + "\n\n" + note)
    if args.write:
        from startup import write_section  # the sibling script

        write_section(
            "spot", "Spot interruptions: resume latency and work lost", table, note, "python benchmarks/spot.py --write"
        )


if __name__ == "__main__":
    main()
