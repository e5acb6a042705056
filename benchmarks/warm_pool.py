"""Warm pools: a job's start on the instances a matching job kept, against a cold start.

The same do-nothing probe job, its File channel a prefix of OBJECTS objects of
OBJECT_MB MB on moto's S3 server over HTTP, run with `python -m flows.train`
as users run it, keep_alive_period_in_seconds 600: the first of each pair
starts cold (its own instances, every object downloaded), the second takes its
pool over (the same folders, the data already there). Timed: the job's start,
from its creation to Training (its record's transitions), and the whole run;
median of N pairs in one DOCKYARD_HOME (after a job that starts its Prefect
server and makes its catalog), each pair on data of its own.

    .venv/bin/python benchmarks/warm_pool.py [--pairs 3] [--write]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from input_modes import start_moto  # the sibling script (this folder is on sys.path)
from startup import build_image, run_as_user

ROOT = Path(__file__).resolve().parent.parent
IMAGE = "dockyard-bench/probe:1"
OBJECTS, OBJECT_MB = 32, 4
BUCKET = "bench-warm-pool"


def job(name: str, bucket_uri: str, output: str) -> dict[str, Any]:
    return {
        "training_job_name": name,
        "algorithm_specification": {"training_image": IMAGE},
        "resource_config": {"instance_type": "ml.m5.large", "keep_alive_period_in_seconds": 600},
        "input_data_config": [{"channel_name": "train", "data_source": {"s3_data_source": {"s3_uri": bucket_uri}}}],
        "hyperparameters": {"mode": "noop"},
        "output_data_config": {"s3_output_path": output},
    }


def run_job(spec: dict[str, Any], work: Path, env: dict[str, str]) -> tuple[float, float, str]:
    """Run one job as a user does; returns its start (creation to Training), its wall time and its log."""
    wall, body = run_as_user("flows.train", spec, work / f"{spec['training_job_name']}.json", env)
    steps = {t["Status"]: t["StartTime"] for t in body["SecondaryStatusTransitions"]}
    start = _seconds(steps["Training"]) - _seconds(body["CreationTime"])
    log = Path(env["DOCKYARD_HOME"], "jobs", spec["training_job_name"], "job.log").read_text()
    return start, wall, log


def _seconds(stamp: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(stamp).timestamp()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--write", action="store_true", help="write the figures to benchmarks/RESULTS.md")
    args = parser.parse_args()
    build_image(IMAGE, ROOT / "tests/images/probe")
    creds = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1"}
    os.environ.update(creds)
    server, endpoint = start_moto()
    work = Path(tempfile.mkdtemp(prefix="dockyard-bench-warm-"))
    cold: list[tuple[float, float]] = []
    warm: list[tuple[float, float]] = []
    try:
        import boto3

        s3 = boto3.client("s3", endpoint_url=endpoint)
        s3.create_bucket(Bucket=BUCKET)
        env = {**os.environ, "DOCKYARD_HOME": str(work / "home"), "DOCKYARD_S3_ENDPOINT_URL": endpoint}
        output = f"s3://{BUCKET}/output"
        s3.put_object(Bucket=BUCKET, Key="warm-up/empty", Body=b"")
        warm_up = job("warm-up", f"s3://{BUCKET}/warm-up", output)
        warm_up["resource_config"].pop("keep_alive_period_in_seconds")
        run_job(warm_up, work, env)  # the home's Prefect server started and its catalog made, once
        for pair in range(args.pairs):  # each pair on data of its own: a pool matches its own pair only
            for i in range(OBJECTS):
                body = os.urandom(OBJECT_MB * 1024 * 1024)
                s3.put_object(Bucket=BUCKET, Key=f"train-{pair}/part-{i:03d}", Body=body)
            data = f"s3://{BUCKET}/train-{pair}"
            first = run_job(job(f"cold-{pair}", data, output), work, env)
            second = run_job(job(f"warm-{pair}", data, output), work, env)
            if f"took over the warm pool of cold-{pair}" not in second[2]:
                raise SystemExit(f"warm-{pair} did not take the pool over:\n{second[2][-2000:]}")
            cold.append(first[:2])
            warm.append(second[:2])
            print(f"pair {pair}: cold start {first[0]:.2f} s, warm start {second[0]:.2f} s", flush=True)
    finally:
        stop = {**os.environ, "DOCKYARD_HOME": str(work / "home")}
        for pair in range(args.pairs):  # their instances (volumes mounted) leave the disk
            end = [sys.executable, "-m", "cli.main", "jobs", "keep-alive", f"warm-{pair}", "0"]
            subprocess.run(end, cwd=ROOT, env=stop, capture_output=True)
        subprocess.run([sys.executable, "-m", "cli.main", "server", "stop"], cwd=ROOT, env=stop, capture_output=True)
        server.terminate()
        shutil.rmtree(work, ignore_errors=True)
    rows = []
    for label, runs in (
        ("cold: its own instances, every object downloaded", cold),
        ("warm: a kept pool taken over", warm),
    ):
        start, wall = statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)
        rows.append((label, start, wall))
    base = rows[0][1]
    table = "\n".join(
        ["| start | creation to Training s | x cold | whole run s |", "|---|---|---|---|"]
        + [f"| {label} | {start:.2f} | {start / base:.2f} | {wall:.2f} |" for label, start, wall in rows]
    )
    note = (
        f"A do-nothing job whose File channel is {OBJECTS} objects of {OBJECT_MB} MB ({OBJECTS * OBJECT_MB} MB) on "
        f"moto's S3 server over HTTP, keep_alive_period_in_seconds 600; median of {args.pairs} pairs, the second "
        "job of each taking the first's pool over. The whole run includes Python's start, Prefect's and the "
        "catalog write."
    )
    print(f"{table}\n\n{note}")
    if args.write:
        from startup import write_section

        command = " ".join(["python", "benchmarks/warm_pool.py", *sys.argv[1:]])
        write_section(
            "warm-pool", "Warm pools: a job's start on a kept pool against a cold start", table, note, command
        )


if __name__ == "__main__":
    main()
