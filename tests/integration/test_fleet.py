"""The fleet's records in the job store, against SQLite and a real PostgreSQL:
hosts and heartbeats, draining, and grants that are compare-and-set, so racing
schedulers in separate processes never hand out the same GPU or vCPU."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
import time
from collections import defaultdict
from pathlib import Path

import pytest

from api.recovery import release_ended
from api.training import Context
from dockyard.errors import DockyardError
from dockyard.fleet import Demand, Grant, Host, Shortfall
from dockyard.instances import INSTANCE_TYPES
from dockyard.settings import Settings
from dockyard.status import SecondaryStatus as S
from infra.fleet import Fleet, UnknownHost
from infra.job_store import JobStore
from tests.conftest import ROOT
from tests.integration.test_job_store import job, unique

pytestmark = pytest.mark.integration
GIB = 1024**3


@pytest.fixture(params=["sqlite", "postgresql"])
def fleet(request: pytest.FixtureRequest, tmp_path: Path) -> Fleet:
    if request.param == "sqlite":
        return Fleet(JobStore.open(f"sqlite:///{tmp_path / 'store.db'}"))
    return Fleet(JobStore.open(str(request.getfixturevalue("postgres_database"))))


def demand(job: str, itype: str, count: int = 1) -> Demand:
    return Demand(
        job_name=job, instance_type=INSTANCE_TYPES[itype], instances=tuple(f"algo-{i + 1}" for i in range(count))
    )


def test_a_host_registers_beats_drains_and_its_grants_come_back_for_a_retried_step(fleet: Fleet) -> None:
    fleet.register(Host(name="gpu-1", address="10.0.0.1", vcpus=8, memory_bytes=32 * GIB, gpus=2,
                        gpu_kind="NVIDIA L4", labels={"rack": "a"}))  # fmt: skip
    assert fleet.heartbeat("gpu-1", disk_free_bytes=5 * GIB)
    assert not fleet.heartbeat("nobody")
    [host] = fleet.hosts()
    assert (host.gpu_kind, host.labels, host.disk_free_bytes) == ("NVIDIA L4", {"rack": "a"}, 5 * GIB)
    first = fleet.grant(demand("j1", "ml.g5.xlarge"))
    assert isinstance(first, list) and first[0].gpu_ids == (0,)
    assert fleet.grant(demand("j1", "ml.g5.xlarge")) == first  # a retried step gets the same GPU
    assert fleet.drain("gpu-1").draining
    assert fleet.register(host.model_copy(update={"draining": False})).draining  # a restarted worker keeps it
    drained = fleet.grant(demand("j2", "ml.g5.xlarge"))
    assert isinstance(drained, Shortfall) and "gpu-1 draining" in drained.message and not drained.never
    assert not fleet.drain("gpu-1", draining=False).draining
    second = fleet.grant(demand("j2", "ml.g5.xlarge"))
    assert isinstance(second, list) and second[0].gpu_ids == (1,)
    assert isinstance(fleet.grant(demand("j3", "ml.g5.xlarge")), Shortfall)
    assert fleet.release("j1") == first and fleet.release("j1") == []
    third = fleet.grant(demand("j3", "ml.g5.xlarge"))
    assert isinstance(third, list) and third[0].gpu_ids == (0,)
    assert [(event, g.job_name) for _, event, g in fleet.history()] == [
        ("grant", "j1"), ("grant", "j2"), ("release", "j1"), ("grant", "j3"),
    ]  # fmt: skip
    with pytest.raises(UnknownHost, match="no host named 'gpu-9' in the fleet \\(registered: gpu-1\\)"):
        fleet.drain("gpu-9")
    with pytest.raises(DockyardError, match="host gpu-1 holds instances of j2, j3: stop those jobs first"):
        fleet.remove("gpu-1")
    fleet.release("j2")
    fleet.release("j3")
    assert fleet.remove("gpu-1").name == "gpu-1" and fleet.hosts() == []


SCHEDULER = textwrap.dedent(
    """
    import json, random, sys, time
    from dockyard.fleet import Demand, Shortfall
    from dockyard.instances import INSTANCE_TYPES
    from infra.fleet import Fleet
    from infra.job_store import JobStore
    url, start, me, jobs = sys.argv[1], float(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    fleet = Fleet(JobStore.open(url))
    rng = random.Random(me)
    time.sleep(max(0.0, start - time.time()))
    placed = waited = 0
    for i in range(jobs):
        itype = rng.choice(["ml.g5.xlarge", "ml.g5.2xlarge", "ml.m5.xlarge", "ml.g5.12xlarge"])
        count = 1 if itype == "ml.g5.12xlarge" else rng.choice([1, 1, 2])  # one host has 4 GPUs
        demand = Demand(job_name=f"{me}-{i}", instance_type=INSTANCE_TYPES[itype],
                        instances=tuple(f"algo-{n + 1}" for n in range(count)))
        while isinstance(answer := fleet.grant(demand), Shortfall):
            assert not answer.never, answer.message
            waited += 1
            fleet.release(f"{me}-{rng.randrange(i)}") if i else time.sleep(0.01)
        placed += 1
        if rng.random() < 0.5:
            fleet.release(f"{me}-{rng.randrange(i + 1)}")
    for i in range(jobs):  # done: leave the fleet to the others
        fleet.release(f"{me}-{i}")
    print(json.dumps({"placed": placed, "waited": waited}))
    """
)


def no_double_booking(fleet: Fleet) -> int:
    """Replay the grant history: at no moment did two instances hold one GPU, or a host's grants
    add up to more vCPUs or memory than it has. Returns the most instances held at once."""
    hosts = {h.name: h for h in fleet.hosts()}
    held: dict[tuple[str, str], Grant] = {}
    most = 0
    for _, event, grant in fleet.history():
        key = (grant.job_name, grant.instance)
        if event == "release":
            assert held.pop(key) == grant
            continue
        assert key not in held
        held[key] = grant
        by_host: dict[str, list[Grant]] = defaultdict(list)
        for g in held.values():
            by_host[g.host].append(g)
        for name, mine in by_host.items():
            gpus = [i for g in mine for i in g.gpu_ids]
            assert len(gpus) == len(set(gpus)), f"GPU granted twice on {name}: {mine}"
            assert max(gpus, default=-1) < hosts[name].gpus
            assert sum(g.vcpus for g in mine) <= hosts[name].vcpus, f"vCPUs overbooked on {name}"
            assert sum(g.memory_bytes for g in mine) <= hosts[name].memory_bytes
        most = max(most, len(held))
    return most


def test_schedulers_in_four_processes_placing_40_jobs_at_once_never_double_book(fleet: Fleet) -> None:
    for n, gpus in enumerate([4, 2, 1, 1]):
        fleet.register(Host(name=f"h{n}", vcpus=16, memory_bytes=64 * GIB, gpus=gpus))
    stop = threading.Event()

    def workers_beat() -> None:
        while not stop.wait(2):
            for n in range(4):
                fleet.heartbeat(f"h{n}")

    beats = threading.Thread(target=workers_beat, daemon=True)
    beats.start()
    start = time.time() + 4  # every scheduler has imported and connected by then
    schedulers = [
        subprocess.Popen(
            [sys.executable, "-c", SCHEDULER, fleet.store.url, str(start), f"s{k}", "10"],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        for k in range(4)
    ]
    try:
        results = [json.loads(p.communicate(timeout=120)[0]) for p in schedulers]
    finally:
        stop.set()
        beats.join()
        for scheduler in schedulers:  # one that never finished must not spin on
            scheduler.kill()
            scheduler.wait()
    assert [r["placed"] for r in results] == [10, 10, 10, 10]
    assert sum(r["waited"] for r in results) > 0  # the fleet was full at times: the race was real
    assert no_double_booking(fleet) >= 4


def test_the_watch_gives_back_the_grants_of_jobs_that_ended_without_giving_them_back(
    fleet: Fleet, tmp_path: Path
) -> None:
    fleet.register(Host(name="h", vcpus=8, memory_bytes=32 * GIB, gpus=1))
    running, ended = job(unique("running")), job(unique("ended"))
    for record in (running, ended):
        fleet.store.create(record)
        assert isinstance(fleet.grant(demand(record.name, "ml.m5.xlarge")), list)
    fleet.store.transition(ended.name, S.STARTING, S.FAILED, "its orchestrator died in its teardown")
    ctx = Context(Settings.from_env({"DOCKYARD_HOME": str(tmp_path)}), fleet.store)
    assert release_ended(ctx) == [ended.name]
    assert [g.job_name for g in fleet.grants()] == [running.name]


def test_a_warm_pool_keeps_its_room_until_a_matching_job_takes_it_over_or_its_period_ends(
    fleet: Fleet, tmp_path: Path
) -> None:
    from datetime import timedelta

    from dockyard.warm_pool import PoolStatus, retained
    from infra.job_store import now
    from tasks.warm_pool import end_pools_on, sweep, take_warm_pool

    def end_keeping(name: str, seconds: float) -> None:  # as finalize ends a job that keeps its instances
        pool = retained(fleet.store.get(name).spec, "h", kept.name, now())
        pool = pool.model_copy(update={"expires_at": now() + timedelta(seconds=seconds)})
        fleet.store.transition(name, fleet.store.get(name).secondary, S.FAILED, "AlgorithmError", warm_pool=pool)

    fleet.register(Host(name="h", vcpus=8, memory_bytes=32 * GIB, gpus=1))
    kept, taker, expired = job(unique("kept")), job(unique("taker")), job(unique("expired"))
    settings = Settings.from_env(
        {"DOCKYARD_HOME": str(tmp_path), "DOCKYARD_DATABASE_URL": fleet.store.url, "DOCKYARD_FLEET_HOST": "other"}
    )
    for record, itype, seconds in ((kept, "ml.g5.xlarge", 600), (expired, "ml.m5.xlarge", 0)):
        fleet.store.create(record)
        assert isinstance(fleet.grant(demand(record.name, itype)), list)
        end_keeping(record.name, seconds)
    ctx = Context(settings, fleet.store)
    assert release_ended(ctx) == [expired.name]  # the watch leaves the room of an Available pool alone
    fleet.store.create(taker)
    placed = job(unique("placed"))
    fleet.store.create(placed)
    assert isinstance(fleet.grant(demand(placed.name, "ml.m5.xlarge")), list)
    assert take_warm_pool.fn(placed.spec, settings) is None  # its place is decided: it takes no pool
    fleet.release(placed.name)
    pool = take_warm_pool.fn(taker.spec, settings)  # a job orchestrated on another host takes it over
    assert pool is not None and (pool.status, pool.host, pool.folder) == (PoolStatus.IN_USE, "h", kept.name)
    assert [(g.job_name, g.gpu_ids) for g in fleet.grants()] == [(taker.name, (0,))]  # its room and GPU with it
    given = fleet.store.get(kept.name).warm_pool
    assert given is not None and (given.status, given.reused_by) == (PoolStatus.REUSED, taker.name)
    assert take_warm_pool.fn(taker.spec, settings) == pool  # a retried step: the same pool
    assert no_double_booking(fleet) >= 1

    end_keeping(taker.name, 0)
    sweep(fleet.store, settings, clean=False)  # its period is over: the room goes back
    assert fleet.grants() == []
    assert fleet.store.get(taker.name).warm_pool.status is PoolStatus.TERMINATED  # type: ignore[union-attr]

    drained = job(unique("drained"))
    fleet.store.create(drained)
    assert isinstance(fleet.grant(demand(drained.name, "ml.g5.xlarge")), list)
    end_keeping(drained.name, 600)
    assert end_pools_on(fleet.store, settings, "h") == [drained.name]  # as `dockyard hosts drain h` does
    assert fleet.grants() == []
