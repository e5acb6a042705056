"""`dockyard serve` under load, side by side with the floor, in one run.

    .venv/bin/python benchmarks/api.py load [--jobs 50] [--clients 100]
    .venv/bin/python benchmarks/api.py search [--jobs 10000] [--runs 5] [--home DIR]

load: starts `dockyard serve` (its own worker) on a fresh DOCKYARD_HOME, then
- 50 clients call CreateTrainingJob at once, each for a no-op container;
  every job must end Completed exactly once (one Training step, one attempt);
- DescribeTrainingJob from 100 concurrent clients: p50 and p99 latency, the
  clients calling back to back (and the calls a second that gives), then
  each calling once every --poll seconds, as watchers of jobs do;
- Create -> the job's containers running (its Training step), on the warm
  worker, against a bare `docker run` of the same image (invocation ->
  container started).
search: N catalogued jobs (benchmarks/catalog.py's population), a warm
server; Search (Metrics + HyperParameters filter) and ListTrainingJobs
(status filter, one page of 100), each through boto3 (what a client waits,
botocore's parsing included) and as the server's answer alone (a signed
request, its bytes read), against the same page as one SQL statement on the
same tables with sqlite3 (the floor; the script checks that it answers the
same jobs in the same order).
"""

from __future__ import annotations

import argparse
import json
import os
import random
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
        # botocore's own retries, as clients have them: a Create retried after a lost answer or a
        # ThrottlingException (Prefect busy) answers the job the first try made, never a second job.
        config=Config(retries={"mode": "standard", "max_attempts": 8}, read_timeout=600, max_pool_connections=200),
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

            began = time.perf_counter()
            with ThreadPoolExecutor(args.clients) as pool:
                list(pool.map(describe, range(args.clients)))
            figures["describe_clients"] = args.clients
            figures["describe_p50_ms"] = round(percentile(latencies, 50) * 1000, 1)
            figures["describe_p99_ms"] = round(percentile(latencies, 99) * 1000, 1)
            figures["describe_per_s"] = round(len(latencies) / (time.perf_counter() - began), 1)

            # The same clients polling as watchers of jobs do (the SDK's wait polls every 5 s, its log tailing
            # every 10): each asks once every --poll seconds, at a random phase, rather than back to back.
            paced: list[float] = []

            def watch(i: int) -> None:
                sm = client(url)
                sm.describe_training_job(TrainingJobName=names[0])  # the client's connection, made before timing
                rng = random.Random(i)
                time.sleep(rng.uniform(0, args.poll))
                mine = []
                for k in range(args.describes):
                    due = time.perf_counter() + args.poll
                    t0 = time.perf_counter()
                    sm.describe_training_job(TrainingJobName=names[(i + k) % len(names)])
                    mine.append(time.perf_counter() - t0)
                    time.sleep(max(0.0, due - time.perf_counter()))
                with lock:
                    paced.extend(mine)

            with ThreadPoolExecutor(args.clients) as pool:
                list(pool.map(watch, range(args.clients)))
            figures["describe_poll_s"] = args.poll
            figures["describe_paced_p50_ms"] = round(percentile(paced, 50) * 1000, 1)
            figures["describe_paced_p99_ms"] = round(percentile(paced, 99) * 1000, 1)
    finally:
        prune = ["docker", "container", "prune", "-f", "--filter", "label=dockyard.managed"]
        subprocess.run(prune, capture_output=True)
        shutil.rmtree(work, ignore_errors=True)
    return figures


def server_seconds(url: str, operation: str, params: dict[str, Any]) -> float:
    """How long the server alone takes to answer `operation`: the request signed beforehand, the
    answer's bytes read but not parsed (botocore's parsing of a page is the client's time)."""
    import http.client
    from urllib.parse import urlsplit

    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    request = AWSRequest(
        "POST",
        f"{url}/",
        data=json.dumps(params).encode(),
        headers={"X-Amz-Target": f"SageMaker.{operation}", "Content-Type": "application/x-amz-json-1.1"},
    )
    SigV4Auth(Credentials(KEY, SECRET), "sagemaker", "us-east-1").add_auth(request)
    prepared = request.prepare()
    where = urlsplit(url)
    connection = http.client.HTTPConnection(str(where.hostname), where.port, timeout=600)
    connection.connect()
    began = time.perf_counter()
    connection.request("POST", "/", body=prepared.body, headers=dict(prepared.headers))
    response = connection.getresponse()
    body = response.read()
    seconds = time.perf_counter() - began
    connection.close()
    assert response.status == 200, body[:500]
    return seconds


def _seconds(fn: Callable[[], Any]) -> float:
    began = time.perf_counter()
    fn()
    return time.perf_counter() - began


# The Search below as one SQL query: the page's jobs, newest first, with their stored records.
SEARCH_FLOOR_SQL = """
SELECT j.name, j.record FROM runs r
JOIN latest_metrics m ON m.run_uuid = r.run_uuid AND m.key = 'validation:auc' AND m.value > 0.9
JOIN params p ON p.run_uuid = r.run_uuid AND p.key = 'eta' AND CAST(p.value AS REAL) < 0.3
JOIN tags k ON k.run_uuid = r.run_uuid AND k.key = 'dockyard.kind' AND k.value = 'training-job'
JOIN tags n ON n.run_uuid = r.run_uuid AND n.key = 'dockyard.job_name'
JOIN store.training_jobs j ON j.name = n.value
ORDER BY r.start_time DESC, r.run_uuid LIMIT 101
"""
# The ListTrainingJobs below as one SQL query on the job store, in the order the store pages it.
LIST_FLOOR_SQL = """
SELECT name, primary_status, secondary_status, creation_time, training_end_time, last_modified_time
FROM training_jobs WHERE primary_status = 'Completed' ORDER BY creation_time DESC, name ASC LIMIT 101
"""


def populated(home: Path, jobs: int) -> int:
    """A home of `jobs` catalogued jobs (benchmarks/catalog.py's), made unless it holds them; its matches."""
    from benchmarks.catalog import FLOOR_SQL, populate

    os.environ["DOCKYARD_HOME"] = str(home)
    if (home / "mlflow.db").exists():
        with sqlite3.connect(home / "dockyard.db") as db:
            held = db.execute("SELECT count(*) FROM training_jobs").fetchone()[0]
        assert held == jobs, f"{home} holds {held} jobs, not {jobs}: use another --home"
        with sqlite3.connect(home / "mlflow.db") as db:
            return len(db.execute(FLOOR_SQL).fetchall())
    home.mkdir(parents=True, exist_ok=True)
    return populate(home, jobs)[1]


def search(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="dockyard-bench-search-"))
    home = Path(args.home) if args.home else work / "home"
    try:
        matches = populated(home, args.jobs)
        search_params = {
            "Resource": "TrainingJob",
            "SearchExpression": {
                "Filters": [
                    {"Name": "Metrics.validation:auc", "Operator": "GreaterThan", "Value": "0.9"},
                    {"Name": "HyperParameters.eta", "Operator": "LessThan", "Value": "0.3"},
                ]
            },
            "MaxResults": 100,
        }
        list_params = {"StatusEquals": "Completed", "MaxResults": 100}
        catalog_db = sqlite3.connect(home / "mlflow.db")
        catalog_db.execute("ATTACH DATABASE ? AS store", (str(home / "dockyard.db"),))
        store_db = sqlite3.connect(home / "dockyard.db")
        with serve(home, "--no-worker") as url:
            sm = client(url)
            found, listed = sm.search(**search_params), sm.list_training_jobs(**list_params)
            # The floors answer what the API answered: the same jobs, in the same order.
            floor_page = catalog_db.execute(SEARCH_FLOOR_SQL).fetchall()
            assert [r[0] for r in floor_page[:100]] == [r["TrainingJob"]["TrainingJobName"] for r in found["Results"]]
            assert ("NextToken" in found) == (len(floor_page) > 100)
            floor_rows = store_db.execute(LIST_FLOOR_SQL).fetchall()
            assert [r[0] for r in floor_rows[:100]] == [j["TrainingJobName"] for j in listed["TrainingJobSummaries"]]
            # Each run times every row once, in turn, so that a busy moment of the machine falls on all alike.
            times: dict[str, list[float]] = {}
            for _ in range(args.runs):
                for row, seconds in {
                    "search_floor": lambda: _seconds(lambda: catalog_db.execute(SEARCH_FLOOR_SQL).fetchall()),
                    "search_server": lambda: server_seconds(url, "Search", search_params),
                    "search_boto3": lambda: _seconds(lambda: sm.search(**search_params)),
                    "list_floor": lambda: _seconds(lambda: store_db.execute(LIST_FLOOR_SQL).fetchall()),
                    "list_server": lambda: server_seconds(url, "ListTrainingJobs", list_params),
                    "list_boto3": lambda: _seconds(lambda: sm.list_training_jobs(**list_params)),
                    "one_row_list_server": lambda: server_seconds(url, "ListTrainingJobs", {"MaxResults": 1}),
                }.items():
                    times.setdefault(row, []).append(seconds())
        ms = {row: statistics.median(values) * 1000 for row, values in times.items()}
        figures: dict[str, Any] = {"jobs": args.jobs, "runs": args.runs, "search_matches": matches,
                                   "search_results_page": len(found["Results"])}  # fmt: skip
        for row, value in ms.items():
            figures[f"{row}_ms"] = round(value, 2)
            floor = ms.get(f"{row.split('_')[0]}_floor")
            if floor and not row.endswith("_floor") and not row.startswith("one_row"):
                figures[f"{row}_ratio"] = round(value / floor, 1)
        return figures
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
    l_.add_argument("--poll", type=float, default=1.0, help="seconds between a paced client's Describes")
    l_.add_argument("--timeout", type=float, default=3600)
    s_ = sub.add_parser("search")
    s_.add_argument("--jobs", type=int, default=10_000)
    s_.add_argument("--runs", type=int, default=5)
    s_.add_argument("--home", help="a DOCKYARD_HOME to populate once and keep, or one populated before")
    args = parser.parse_args()
    figures = load(args) if args.what == "load" else search(args)
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
