"""`dockyard serve` under load, side by side with the floor, in one run.

    .venv/bin/python benchmarks/api.py load [--jobs 50] [--clients 100]
    .venv/bin/python benchmarks/api.py search [--jobs 10000]

load: starts `dockyard serve` (its own worker) on a fresh DOCKYARD_HOME, then
- 50 clients call CreateTrainingJob at once, each for a no-op container;
  every job must end Completed exactly once (one Training step, one attempt);
- DescribeTrainingJob from 100 concurrent clients: p50 and p99 latency;
- Create -> the job's containers running (its Training step), on the warm
  worker, against a bare `docker run` of the same image (invocation ->
  container started).
search: N catalogued jobs (benchmarks/catalog.py's population), a warm
server; Search (Metrics + HyperParameters filter) and ListTrainingJobs
(status filter, one page of 100) against the same queries as one SQL
statement on the same tables with sqlite3 (the floor).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

KEY, SECRET = "AKIABENCHMARK", "benchmark-secret"
IMAGE = os.environ.get("DOCKYARD_BASE_IMAGE", "dockyard/python-base:bookworm")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serve(home: Path, *extra: str) -> Iterator[str]:
    """`dockyard serve` on a free port, until the block ends."""
    port = free_port()
    env = {**os.environ, "DOCKYARD_HOME": str(home)}
    env.update({"DOCKYARD_ACCESS_KEY_ID": KEY, "DOCKYARD_SECRET_ACCESS_KEY": SECRET})
    env.pop("PREFECT_API_URL", None)
    log = open(home.parent / "serve.log", "wb")  # noqa: SIM115
    process = subprocess.Popen(
        [str(ROOT / ".venv" / "bin" / "dockyard"), "serve", "--port", str(port), *extra],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                urllib.request.urlopen(f"{url}/health", timeout=2).close()
                break
            except OSError:
                assert process.poll() is None, (home.parent / "serve.log").read_text()[-2000:]
                time.sleep(0.5)
        yield url
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(300)
        shutil.copy(home.parent / "serve.log", Path(tempfile.gettempdir()) / "dockyard-bench-serve.log")
        subprocess.run([str(ROOT / ".venv" / "bin" / "dockyard"), "server", "stop"], env=env, capture_output=True)


def client(url: str) -> Any:
    return boto3.client(
        "sagemaker",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id=KEY,
        aws_secret_access_key=SECRET,
        # No retries: a retried Create would answer ResourceInUse for a job its first try made.
        config=Config(retries={"total_max_attempts": 1}, read_timeout=600, max_pool_connections=200),
    )


def create(url: str, name: str, home: Path) -> None:
    client(url).create_training_job(
        TrainingJobName=name,
        AlgorithmSpecification={"TrainingImage": IMAGE, "TrainingInputMode": "File", "ContainerEntrypoint": ["true"]},
        RoleArn="arn:aws:iam::111111111111:role/benchmark",
        OutputDataConfig={"S3OutputPath": f"file://{home}/output"},
        ResourceConfig={"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 1},
        StoppingCondition={"MaxRuntimeInSeconds": 3600},
    )


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def training_started(body: dict[str, Any]) -> datetime | None:
    """When the job's containers started: its Training step, which the run stage enters as they start."""
    steps = [t["StartTime"] for t in body["SecondaryStatusTransitions"] if t["Status"] == "Training"]
    return steps[0] if steps else None


def bare_docker_run() -> float:
    """Invocation -> container started, for `docker run` of the same image."""
    name = f"bench-bare-{os.getpid()}-{time.time_ns()}"
    invoked = datetime.now(UTC)
    subprocess.run(["docker", "run", "--name", name, IMAGE, "true"], check=True, capture_output=True)
    started = subprocess.run(
        ["docker", "inspect", "-f", "{{.State.StartedAt}}", name], capture_output=True, text=True
    ).stdout.strip()
    subprocess.run(["docker", "rm", name], capture_output=True)
    return (datetime.fromisoformat(started[:26].rstrip("Z") + "+00:00") - invoked).total_seconds()


def wait_all(url: str, names: list[str], timeout: float) -> dict[str, dict[str, Any]]:
    sm, done, deadline = client(url), {}, time.time() + timeout
    while len(done) < len(names) and time.time() < deadline:
        for name in names:
            if name not in done:
                body = sm.describe_training_job(TrainingJobName=name)
                if body["TrainingJobStatus"] not in ("InProgress", "Stopping"):
                    done[name] = body
        time.sleep(2)
    return done


def load(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="dockyard-bench-api-"))
    home = work / "home"
    figures: dict[str, Any] = {"machine": f"{os.cpu_count()} cores", "image": IMAGE}
    try:
        with serve(home) as url:
            # Warm the worker: one job through, so the pool, deployments and images are ready.
            create(url, "warm-up", home)
            wait_all(url, ["warm-up"], 600)

            # Create -> container running, one job at a time on the warm worker, against a bare docker run.
            ours, bare = [], []
            for i in range(args.repeat):
                name = f"latency-{i}"
                asked = datetime.now(UTC)
                create(url, name, home)
                started = training_started(wait_all(url, [name], 600)[name])
                if started is not None:
                    ours.append((started - asked).total_seconds())
                bare.append(bare_docker_run())
            figures["create_to_running_s"] = round(statistics.median(ours), 2)
            figures["bare_docker_run_to_running_s"] = round(statistics.median(bare), 2)
            figures["create_to_running_over_bare_s"] = round(statistics.median(ours) - statistics.median(bare), 2)

            # 50 clients create at once; every job completes exactly once.
            names = [f"load-{i:03d}" for i in range(args.jobs)]
            began = time.perf_counter()
            barrier = threading.Barrier(len(names))

            def one(name: str) -> None:
                barrier.wait()
                create(url, name, home)

            with ThreadPoolExecutor(len(names)) as pool:
                list(pool.map(one, names))
            figures["concurrent_creates_s"] = round(time.perf_counter() - began, 2)
            ended = wait_all(url, names, args.timeout)
            figures["jobs_all_done_s"] = round(time.perf_counter() - began, 2)
            statuses = [b["TrainingJobStatus"] for b in ended.values()]
            trained_once = [
                [t["Status"] for t in b["SecondaryStatusTransitions"]].count("Training") == 1 for b in ended.values()
            ]
            figures["jobs"] = len(names)
            figures["completed"] = statuses.count("Completed")
            figures["completed_exactly_once"] = sum(trained_once)
            figures["lost"] = len(names) - len(ended)

            # DescribeTrainingJob from 100 concurrent clients.
            latencies: list[float] = []
            lock = threading.Lock()

            def describe(i: int) -> None:
                sm = client(url)
                mine = []
                for k in range(args.describes):
                    t0 = time.perf_counter()
                    sm.describe_training_job(TrainingJobName=names[(i + k) % len(names)])
                    mine.append(time.perf_counter() - t0)
                with lock:
                    latencies.extend(mine)

            with ThreadPoolExecutor(args.clients) as pool:
                list(pool.map(describe, range(args.clients)))
            figures["describe_clients"] = args.clients
            figures["describe_p50_ms"] = round(percentile(latencies, 50) * 1000, 1)
            figures["describe_p99_ms"] = round(percentile(latencies, 99) * 1000, 1)
    finally:
        prune = ["docker", "container", "prune", "-f", "--filter", "label=dockyard.managed"]
        subprocess.run(prune, capture_output=True)
        shutil.rmtree(work, ignore_errors=True)
    return figures


def _timed(fn: Callable[[], Any], runs: int) -> float:
    fn()  # warm
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def search(args: argparse.Namespace) -> dict[str, Any]:
    from benchmarks.catalog import FLOOR_SQL, populate

    work = Path(tempfile.mkdtemp(prefix="dockyard-bench-search-"))
    home = work / "home"
    home.mkdir(parents=True)
    try:
        os.environ["DOCKYARD_HOME"] = str(home)
        _, matches = populate(home, args.jobs)
        with serve(home, "--no-worker") as url:
            sm = client(url)
            expression = {
                "Filters": [
                    {"Name": "Metrics.validation:auc", "Operator": "GreaterThan", "Value": "0.9"},
                    {"Name": "HyperParameters.eta", "Operator": "LessThan", "Value": "0.3"},
                ]
            }
            found = sm.search(Resource="TrainingJob", SearchExpression=expression, MaxResults=100)["Results"]
            ours_search = _timed(
                lambda: sm.search(Resource="TrainingJob", SearchExpression=expression, MaxResults=100), args.runs
            )
            ours_list = _timed(lambda: sm.list_training_jobs(StatusEquals="Completed", MaxResults=100), args.runs)
        mlflow_db = sqlite3.connect(home / "mlflow.db")
        floor_search = _timed(lambda: mlflow_db.execute(FLOOR_SQL + " LIMIT 100").fetchall(), args.runs)
        store_db = sqlite3.connect(home / "dockyard.db")
        list_sql = (
            "SELECT name, primary_status, secondary_status, creation_time, training_end_time, last_modified_time "
            "FROM training_jobs WHERE primary_status = 'Completed' ORDER BY creation_time DESC LIMIT 101"
        )
        floor_list = _timed(lambda: store_db.execute(list_sql).fetchall(), args.runs)
        return {
            "jobs": args.jobs,
            "search_matches": matches,
            "search_results_page": len(found),
            "search_ms": round(ours_search * 1000, 1),
            "search_floor_ms": round(floor_search * 1000, 2),
            "search_ratio": round(ours_search / floor_search, 1),
            "list_ms": round(ours_list * 1000, 1),
            "list_floor_ms": round(floor_list * 1000, 2),
            "list_ratio": round(ours_list / floor_list, 1),
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    l_ = sub.add_parser("load")
    l_.add_argument("--jobs", type=int, default=50)
    l_.add_argument("--clients", type=int, default=100)
    l_.add_argument("--describes", type=int, default=20, help="DescribeTrainingJob calls per client")
    l_.add_argument("--repeat", type=int, default=3, help="Create -> running measurements")
    l_.add_argument("--timeout", type=float, default=3600)
    s_ = sub.add_parser("search")
    s_.add_argument("--jobs", type=int, default=10_000)
    s_.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    figures = load(args) if args.what == "load" else search(args)
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
