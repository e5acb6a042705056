"""Placement: how fast the job store hands out a fleet's capacity.

A simulated fleet of 50 host records (no engines: 10 with 8 GPUs, 15 with 4,
25 CPU-only) and a queue of 100 jobs (a mix of GPU and CPU types, one to four
instances each). One scheduler takes the queue in order, each job granted
compare-and-set in the job store (infra/fleet.py) and given back three jobs
later; each job's instances go to one host, as dockyard places them; side by side in one run:

- floor: the same decisions in memory (dockyard.fleet.place over the same
  records), no database;
- the job store on SQLite (the embedded default) and, with --postgres URL,
  on PostgreSQL (a fleet's store);
- four schedulers at once (threads, each its own share of the queue) on the
  same store, for throughput under contention.

    .venv/bin/python benchmarks/placement.py [--postgres postgresql+psycopg://...] [--write]
"""

from __future__ import annotations

import argparse
import random
import shutil
import statistics
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dockyard.fleet import Demand, Grant, Host, Shortfall, place  # noqa: E402
from dockyard.instances import INSTANCE_TYPES  # noqa: E402

GIB = 1024**3
TYPES = ["ml.g5.xlarge", "ml.g5.2xlarge", "ml.g5.12xlarge", "ml.m5.xlarge", "ml.m5.2xlarge", "ml.c5.4xlarge"]
HOLD = 3  # a job gives its instances back this many placements later


def fleet_hosts(at: datetime) -> list[Host]:
    sizes = [(96, 8)] * 10 + [(48, 4)] * 15 + [(32, 0)] * 25
    return [
        Host(name=f"h{n:02d}", vcpus=vcpus, memory_bytes=vcpus * 4 * GIB, gpus=gpus, heartbeat_at=at)
        for n, (vcpus, gpus) in enumerate(sizes)
    ]


def queue(count: int, seed: int = 7) -> list[Demand]:
    rng = random.Random(seed)
    out = []
    for n in range(count):
        itype = rng.choice(TYPES)
        instances = 1 if itype == "ml.g5.12xlarge" else rng.choice([1, 1, 2, 4])
        out.append(
            Demand(
                job_name=f"job-{n:03d}",
                instance_type=INSTANCE_TYPES[itype],
                instances=tuple(f"algo-{i + 1}" for i in range(instances)),
            )
        )
    return out


def in_memory(demands: list[Demand], hosts: list[Host]) -> list[float]:
    held: list[Grant] = []
    times = []
    for n, demand in enumerate(demands):
        began = time.perf_counter()
        answer = place(demand, hosts, held, datetime.now(UTC))
        times.append(time.perf_counter() - began)
        if isinstance(answer, list):
            held += answer
        if n >= HOLD:
            gone = demands[n - HOLD].job_name
            held = [g for g in held if g.job_name != gone]
    return times


def in_store(fleet: object, demands: list[Demand]) -> tuple[list[float], int]:
    times, placed = [], 0
    for n, demand in enumerate(demands):
        began = time.perf_counter()
        answer = fleet.grant(demand)  # type: ignore[attr-defined]
        times.append(time.perf_counter() - began)
        placed += not isinstance(answer, Shortfall)
        if n >= HOLD:
            fleet.release(demands[n - HOLD].job_name)  # type: ignore[attr-defined]
    return times, placed


def fresh_fleet(url: str, hosts: list[Host]) -> object:
    from infra.fleet import Fleet
    from infra.job_store import JobStore
    from infra.store_schema import grant_history, grants
    from infra.store_schema import hosts as host_table

    fleet = Fleet(JobStore.open(url))
    with fleet.store.writing() as conn:
        for table in (grants, grant_history, host_table):
            conn.execute(table.delete())
    for host in hosts:
        fleet.register(host)
    return fleet


def concurrently(fleet: object, demands: list[Demand], schedulers: int) -> float:
    shares = [demands[k::schedulers] for k in range(schedulers)]
    threads = [threading.Thread(target=in_store, args=(fleet, share)) for share in shares]
    began = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - began


def row(name: str, times: list[float], floor: float, placed: int | str) -> str:
    p50 = statistics.median(times) * 1000
    p99 = sorted(times)[int(len(times) * 0.99) - 1] * 1000
    rate = len(times) / sum(times)
    return f"| {name} | {p50:.2f} | {p99:.2f} | {rate:.0f} | {p50 / floor:.0f} | {placed} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--postgres", help="a PostgreSQL URL whose database may be emptied of fleet records")
    parser.add_argument("--write", action="store_true", help="write the figures to benchmarks/RESULTS.md")
    args = parser.parse_args()
    hosts = fleet_hosts(datetime.now(UTC))
    demands = queue(args.jobs)
    floor_times = in_memory(demands, hosts)
    floor = statistics.median(floor_times) * 1000
    lines = [
        "| where | p50 ms | p99 ms | jobs/s | x floor (p50) | granted on first ask |",
        "|---|---|---|---|---|---|",
        row("floor: dockyard.fleet.place in memory", floor_times, floor, "-"),
    ]
    work = Path(tempfile.mkdtemp(prefix="dockyard-bench-placement-"))
    stores = {"job store on SQLite": f"sqlite:///{work / 'store.db'}"}
    if args.postgres:
        stores["job store on PostgreSQL"] = args.postgres
    contention = []
    try:
        for name, url in stores.items():
            times, placed = in_store(fresh_fleet(url, hosts), demands)
            lines.append(row(name, times, floor, placed))
            seconds = concurrently(fresh_fleet(url, hosts), demands, 4)
            contention.append(f"{name}: 4 schedulers at once placed the {args.jobs} jobs in {seconds:.2f} s "
                              f"({args.jobs / seconds:.0f} jobs/s)")  # fmt: skip
    finally:
        shutil.rmtree(work, ignore_errors=True)
    table = "\n".join(lines)
    note = (
        f"{args.jobs} queued jobs ({', '.join(TYPES)}; 1 to 4 instances) on 50 simulated hosts (10 x 8 GPUs, "
        f"15 x 4 GPUs, 25 CPU-only); each job gives its instances back {HOLD} placements later. A placement in the "
        "store is two reads (hosts, grants) and one compare-and-set write (each chosen host's version, the grants, "
        "their history). " + "; ".join(contention) + ". Not measured yet: what a hand-over to another host "
        "(a second flow run, on that host's worker) adds to a job's start."
    )
    print(f"{table}\n\n{note}")
    if args.write:
        from startup import write_section  # the sibling script (this folder is on sys.path)

        command = " ".join(["python", "benchmarks/placement.py", *sys.argv[1:]])
        write_section("placement", "Placement: granting a fleet's capacity", table, note, command)


if __name__ == "__main__":
    main()
