"""The catalog at scale: list and search over N recorded jobs with metrics.

Builds a DOCKYARD_HOME of N finished jobs (record, log, 2 metrics x 20 steps,
3 hyperparameters each) in the job store, and writes each into the MLflow
SQLite catalog through dockyard's own catalog code, then times, side by side
in one run:

- list: `dockyard jobs list --status Completed` (a whole process) against the
  floor, the same listing as one SQL query on the job store with sqlite3;
- search: `dockyard search "metrics.validation:auc > 0.9 and params.eta < '0.3'"`
  (a whole process) against the floor, the same filter as one SQL query on
  MLflow's tables with sqlite3.

    .venv/bin/python benchmarks/catalog.py [--jobs 10000] [--write]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

QUERY = "metrics.validation:auc > 0.9 and params.eta < '0.3'"
FLOOR_SQL = """
SELECT r.run_uuid FROM runs r
JOIN latest_metrics m ON m.run_uuid = r.run_uuid AND m.key = 'validation:auc' AND m.value > 0.9
JOIN params p ON p.run_uuid = r.run_uuid AND p.key = 'eta' AND CAST(p.value AS REAL) < 0.3
JOIN tags t ON t.run_uuid = r.run_uuid AND t.key = 'dockyard.kind' AND t.value = 'training-job'
"""


LIST_FLOOR_SQL = """
SELECT name, primary_status, secondary_status, creation_time, training_end_time FROM training_jobs
WHERE primary_status = 'Completed' ORDER BY creation_time DESC
"""


def populate(home: Path, jobs: int) -> tuple[float, int]:
    """N finished jobs in the record store and the catalog; returns (seconds per catalog write, matches)."""
    from dockyard.record import JobRecord, MetricValue, describe
    from dockyard.settings import Settings
    from dockyard.spec import TrainingJobSpec
    from dockyard.status import SecondaryStatus
    from infra import catalog, job_log
    from infra.job_store import open_store

    rng = random.Random(0)
    settings = Settings.from_env({"DOCKYARD_HOME": str(home)})
    store = open_store(settings)
    uri = settings.catalog_uri()
    start = datetime(2026, 11, 1, tzinfo=UTC)
    writing = 0.0
    matches = 0
    for i in range(jobs):
        eta, auc = rng.uniform(0.01, 0.6), rng.uniform(0.7, 0.99)
        matches += eta < 0.3 and auc > 0.9
        created = start + timedelta(minutes=i)
        spec = TrainingJobSpec.model_validate(
            {
                "training_job_name": f"bench-{i:05d}",
                "algorithm_specification": {"algorithm_name": "xgboost"},
                "hyperparameters": {"eta": f"{eta:.4f}", "max_depth": str(rng.randint(2, 8)), "num_round": "20"},
                "output_data_config": {"s3_output_path": f"file://{home}/out"},
            }
        )
        record = JobRecord(spec=spec, creation_time=created, training_start_time=created)
        for step, message in (
            (SecondaryStatus.STARTING, "Starting"),
            (SecondaryStatus.DOWNLOADING, "Downloading"),
            (SecondaryStatus.TRAINING, "Training"),
            (SecondaryStatus.UPLOADING, "Uploading"),
            (SecondaryStatus.COMPLETED, "Completed"),
        ):
            record = record.moved(step, message, created)
        values = [
            MetricValue(metric_name=name, value=final - (19 - k) * 0.001, timestamp=created + timedelta(seconds=k))
            for k in range(20)
            for name, final in (("validation:auc", auc), ("train:auc", min(auc + 0.01, 1.0)))
        ]
        record = record.model_copy(
            update={"training_end_time": created + timedelta(seconds=20), "final_metrics": tuple(values[-2:])}
        )
        store.create(record)
        store.add_metrics(record.name, values)
        job_log.append(home, record.name, "trained")
        began = time.perf_counter()
        catalog.record_job(str(home), uri, describe(record), values, job_log.whole(home, record.name, []))
        writing += time.perf_counter() - began
        if i % 1000 == 999:
            print(f"{i + 1} jobs recorded", file=sys.stderr)
    return writing / jobs, matches


def in_process(home: Path) -> Callable[..., None]:
    """Run a `dockyard` command inside this process, its output discarded."""
    from cli.main import main

    os.environ["DOCKYARD_HOME"] = str(home)

    def run(*argv: str) -> None:
        with contextlib.redirect_stdout(io.StringIO()):
            assert main(list(argv)) == 0

    return run


def timed(fn: object, runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        began = time.perf_counter()
        fn()  # type: ignore[operator]
        out.append(time.perf_counter() - began)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--write", action="store_true", help="write the figures to benchmarks/RESULTS.md")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="dockyard-bench-catalog-"))
    home = work / "home"
    env = {**os.environ, "DOCKYARD_HOME": str(home)}
    env.pop("MLFLOW_TRACKING_URI", None)
    dockyard = [sys.executable, "-c", "import sys; from cli.main import main; sys.exit(main())"]
    try:
        per_write, matches = populate(home, args.jobs)

        def cli(*argv: str) -> str:
            result = subprocess.run([*dockyard, *argv], cwd=ROOT, env=env, capture_output=True, text=True)
            if result.returncode != 0:
                raise SystemExit(result.stderr[-2000:])
            return result.stdout

        listed = cli("jobs", "list", "--status", "Completed", "--max-results", str(args.jobs), "--json")
        found = cli("search", QUERY, "--max-results", str(args.jobs), "--json")
        assert len(json.loads(listed)) == args.jobs and len(json.loads(found)) == matches, "wrong answers"
        db = sqlite3.connect(home / "mlflow.db")
        assert len(db.execute(FLOOR_SQL).fetchall()) == matches

        jobs_db = sqlite3.connect(home / "dockyard.db")

        def list_floor() -> None:
            found = jobs_db.execute(LIST_FLOOR_SQL).fetchall()
            assert len(found) == args.jobs

        rows = {
            "list: one SQL query on the job store (floor)": timed(list_floor, args.runs),
            "list: dockyard jobs list --status Completed": timed(
                lambda: cli("jobs", "list", "--status", "Completed", "--max-results", str(args.jobs)), args.runs
            ),
            "search: one SQL query on MLflow's tables (floor)": timed(
                lambda: db.execute(FLOOR_SQL).fetchall(), args.runs
            ),
            "search: dockyard search (MLflow + the param check), every match": timed(
                lambda: cli("search", QUERY, "--max-results", str(args.jobs)), args.runs
            ),
            "search: dockyard search, the best 50 by validation:auc": timed(
                lambda: cli("search", QUERY, "--order-by", "metrics.validation:auc DESC"), args.runs
            ),
        }
        warm = in_process(home)
        warm("search", QUERY)  # MLflow imported and the store opened once, as in a long-lived process
        rows["list: the same listing in a warm process"] = timed(
            lambda: warm("jobs", "list", "--status", "Completed", "--max-results", str(args.jobs)), args.runs
        )
        rows["search: every match, in a warm process"] = timed(
            lambda: warm("search", QUERY, "--max-results", str(args.jobs)), args.runs
        )
        rows["search: the best 50, in a warm process"] = timed(
            lambda: warm("search", QUERY, "--order-by", "metrics.validation:auc DESC"), args.runs
        )
        baseline = timed(lambda: cli("--help"), args.runs)  # the process and import cost of any command
    finally:
        shutil.rmtree(work, ignore_errors=True)
    lines = ["| what | median s | x floor |", "|---|---|---|"]
    floors = {"list": statistics.median(next(iter(rows.values()))), "search": statistics.median(list(rows.values())[2])}
    for name, values in rows.items():
        median = statistics.median(values)
        lines.append(f"| {name} | {median:.3f} | {median / floors[name.split(':')[0]]:.1f} |")
    table = "\n".join(lines)
    note = (
        f"{args.jobs} finished jobs, each with 3 hyperparameters and 2 metrics x 20 steps; {matches} match the "
        f"search `{QUERY}`. Writing one job into the catalog (run, params, tags, 40 metric values, 2 artifacts) took "
        f"{per_write * 1000:.0f} ms. The `dockyard` rows are whole processes (`dockyard --help` alone takes "
        f"{statistics.median(baseline):.2f} s); the warm-process rows run the same commands in one process that has "
        f"MLflow loaded and its store open, so the gap between the two is mostly importing MLflow and opening the "
        f"store. Median of {args.runs} runs."
    )
    print(f"{table}\n\n{note}")
    if args.write:
        from startup import write_section  # the sibling script (this folder is on sys.path)

        command = " ".join(["python", "benchmarks/catalog.py", *sys.argv[1:]])
        write_section("catalog", "The catalog at scale: list and search", table, note, command)


if __name__ == "__main__":
    main()
