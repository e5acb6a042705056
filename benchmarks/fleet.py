"""Fleet: what `dockyard worker` adds to a job's start when it is placed on
another host, and to each trial of a tuning job run by a warm worker.

(a) Hand-over: the same do-nothing job submitted to host A's own work queue,
    run on A (B drained: placed locally) and handed over (A drained: placed on
    B and handed to B's worker, a second flow run), against `docker run` of the
    same container (the floor): submit -> the job's final status, median of N.
(b) Trials on warm workers: a tuning job of M one-epoch Branin trials, one at a
    time, submitted to the pool while both workers are warm, against the same M
    containers run back to back with `docker run`: per-trial overhead.

Both hosts are workers on this machine's engine (one job store, one Prefect
server): placement, the hand-over and the second flow run are measured, not a
second machine's network.

    .venv/bin/python benchmarks/fleet.py [--jobs 5] [--trials 6] [--write]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from prefect.context import refresh_global_settings_context
from startup import build_image  # the sibling script (this folder is on sys.path)
from tuning import IMAGE, floor_run, tuning_doc

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dockyard.settings import Settings  # noqa: E402 - after the repository is on sys.path
from infra import prefect_api  # noqa: E402
from infra.fleet import Fleet  # noqa: E402
from infra.job_store import open_store  # noqa: E402
from tasks.warm_pool import end_pools_on, sweep  # noqa: E402

HOSTS = ("bench-a", "bench-b")
POOL = "dockyard-bench-fleet"


def start_worker(host: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "cli.main", "worker", "--name", host, "--jobs", "2"],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip


def job(work: Path, name: str) -> dict[str, Any]:
    return {
        "training_job_name": name,
        "algorithm_specification": {"training_image": IMAGE},
        "resource_config": {"instance_type": "ml.m5.4xlarge", "instance_count": 1},  # a whole host
        "hyperparameters": {"mode": "branin", "epochs": "1", "epoch_seconds": "0", "x1": "1", "x2": "2"},
        "output_data_config": {"s3_output_path": f"file://{work}/out"},
    }


def until_ended(settings: Settings, name: str, tuning: bool = False) -> float:
    """Seconds until the job (or tuning job) `name` reaches a final status."""
    store = open_store(settings)
    start = time.perf_counter()
    while True:
        if tuning:
            record = store.tuning(name)
            done = record is not None and record.status.value != "InProgress"
        else:
            found = store.find(name)
            done = found is not None and found.status.primary != "InProgress"
        if done:
            return time.perf_counter() - start
        if time.perf_counter() - start > 600:
            raise SystemExit(f"{name} did not end within 10 minutes")
        time.sleep(0.05)


def hand_over(work: Path, settings: Settings, jobs: int) -> tuple[str, str]:
    fleet = Fleet(open_store(settings))
    timings: dict[str, list[float]] = {"local": [], "handed over": []}
    for index in range(jobs * 2 + 1):
        where = "local" if index % 2 else "handed over"
        fleet.drain("bench-b" if where == "local" else "bench-a")
        fleet.drain("bench-a" if where == "local" else "bench-b", draining=False)
        name = f"bench-fleet-{index}-{os.urandom(2).hex()}"
        prefect_api.submit("train", POOL, {"job": job(work, name)}, name, [], work_queue="bench-a")
        elapsed = until_ended(settings, name)
        if index:  # the first warms both workers and the image
            timings[where].append(elapsed)
    fleet.drain("bench-a", draining=False)
    hyperparameters = job(work, "x")["hyperparameters"]
    floor = statistics.median(floor_run(work, i, hyperparameters) for i in range(jobs))
    local, handed = statistics.median(timings["local"]), statistics.median(timings["handed over"])
    lines = ["| how | median s | x floor |", "|---|---|---|"]
    for label, value in (("floor: docker run", floor), ("placed on its worker's host", local),
                         ("placed on the other host, handed to its worker", handed)):  # fmt: skip
        lines.append(f"| {label} | {value:.2f} | {value / floor:.1f} |")
    note = (
        f"{jobs} do-nothing jobs each way, submitted to host bench-a's queue, timed from submit to the final status. "
        f"A hand-over adds {handed - local:.2f} s to a job's start (a second flow run, on the other host's worker, "
        f"which polls every {prefect_api.WORKER_QUERY_SECONDS} s)."
    )
    return "\n".join(lines), note


def trials(work: Path, settings: Settings, count: int) -> tuple[str, str]:
    """The same tuning job twice: its trials on fresh instances, then each trial on the warm pool
    the one before it kept (keep_alive_period_in_seconds), against the containers alone."""
    totals, cycles = {}, {}
    store = open_store(settings)
    for keep_alive in (None, 60):
        doc = yaml.safe_load(tuning_doc(work, "fleet-overhead", "Random", count, 1, 0, epochs=1).read_text())
        name = doc["hyper_parameter_tuning_job_name"] = f"bench-tune-{os.urandom(2).hex()}"
        if keep_alive:
            doc["training_job_definition"]["resource_config"] = {
                "instance_type": "local", "keep_alive_period_in_seconds": keep_alive,
            }  # fmt: skip
        prefect_api.submit("tune", POOL, {"job": doc}, name, [])
        totals[keep_alive] = until_ended(settings, name, tuning=True)
        tuning = store.tuning(name)
        assert tuning is not None
        records = [store.get(trial.training_job_name) for trial in tuning.trials]
        ends = [r.training_end_time for r in records if r.training_end_time is not None]
        cycles[keep_alive] = (max(ends) - min(r.creation_time for r in records)).total_seconds()
    for host in HOSTS:  # the last trial's pool: its room given back, its instances off the disk
        end_pools_on(store, settings, host)
        sweep(store, settings.model_copy(update={"fleet_host": host}))
    hyperparameters = job(work, "x")["hyperparameters"]
    floor = sum(floor_run(work, 100 + i, hyperparameters) for i in range(count))
    lines = [
        "| what | total s | per trial s | overhead per trial s | trials alone: per trial s | overhead per trial s |",
        "|---|---|---|---|---|---|",
        f"| floor: docker run, back to back | {floor:.1f} | {floor / count:.2f} | - | {floor / count:.2f} | - |",
    ]
    for keep_alive, label in ((None, "fresh instances"), (60, "each on the warm pool the one before kept")):
        tuned, cycle = totals[keep_alive], cycles[keep_alive]
        lines.append(
            f"| tuning job through a warm worker, 1 at a time, {label} | {tuned:.1f} | {tuned / count:.2f} "
            f"| {(tuned - floor) / count:.2f} | {cycle / count:.2f} | {(cycle - floor) / count:.2f} |"
        )
    note = (
        f"{count} one-epoch Branin trials. The tuning job is timed from its submission to its final status, so "
        "its own start (the worker's pick-up, a fresh Python, Prefect, Optuna, validation) and end count too; "
        "\"trials alone\" runs from the first trial's creation to the last one's end. The goal: at most 1.5 s "
        "of overhead a trial."
    )
    return "\n".join(lines), note


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=5)
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--write", action="store_true", help="write the figures to benchmarks/RESULTS.md")
    args = parser.parse_args()
    build_image(IMAGE, ROOT / "tests/images/probe")
    work = Path(tempfile.mkdtemp(prefix="dockyard-bench-fleet-"))
    home = str(work / "home")
    os.environ["PREFECT_API_URL"] = prefect_api.ensure_api(home, print)
    refresh_global_settings_context()  # Prefect read its settings at import: this process's client must see it
    env = {**os.environ, "DOCKYARD_HOME": home, "DOCKYARD_WORK_POOL": POOL}
    settings = Settings.from_env(env)
    workers = [start_worker(h, env, work / f"{h}.log") for h in HOSTS]
    try:
        fleet = Fleet(open_store(settings))
        deadline = time.time() + 120
        while {h.name for h in fleet.hosts()} != set(HOSTS):
            assert time.time() < deadline and all(w.poll() is None for w in workers), "the workers did not register"
            time.sleep(0.5)
        handed_table, handed_note = hand_over(work, settings, args.jobs)
        trials_table, trials_note = trials(work, settings, args.trials)
    finally:
        for worker in workers:
            os.killpg(worker.pid, signal.SIGTERM)
            worker.wait(timeout=90)
        prefect_api.stop_server(home)
        shutil.rmtree(work, ignore_errors=True)
    print(f"{handed_table}\n\n{handed_note}\n\n{trials_table}\n\n{trials_note}")
    if args.write:
        from startup import write_section  # the sibling script (this folder is on sys.path)

        command = " ".join(["python", "benchmarks/fleet.py", *sys.argv[1:]])
        write_section("fleet-handover", "Fleet: a job handed to another host", handed_table, handed_note, command)
        write_section("fleet-trials", "Fleet: tuning trials on warm workers", trials_table, trials_note, command)


if __name__ == "__main__":
    main()
