"""The job store's suite, run against SQLite and against a real PostgreSQL alike."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from dockyard.errors import DockyardError, LeaseHeld, StatusConflict, StatusTransitionError
from dockyard.record import HostLine, JobRecord, MetricValue
from dockyard.settings import Settings
from dockyard.spec import TrainingJobSpec
from dockyard.status import SecondaryStatus
from dockyard.tuning import TuningJobSpec
from dockyard.tuning_record import TuningRecord, TuningStatus
from infra import migrations
from infra.job_store import SCHEMA_REVISION, JobStore, LeaseKeeper, import_home, open_store
from infra.store_schema import metadata
from tests.conftest import ROOT

pytestmark = pytest.mark.integration
S = SecondaryStatus
T0 = datetime(2026, 11, 29, 9, 0, tzinfo=UTC)


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    return str(request.getfixturevalue("postgres_database"))


@pytest.fixture
def store(store_url: str) -> JobStore:
    return JobStore.open(store_url)


def job(name: str, **fields: object) -> JobRecord:
    spec = TrainingJobSpec.model_validate(
        {
            "training_job_name": name,
            "algorithm_specification": {"training_image": "probe:1"},
            "output_data_config": {"s3_output_path": "file:///tmp/out"},
            "tags": [{"key": "team", "value": "vision"}],
        }
    )
    return JobRecord(spec=spec, creation_time=T0, **fields).moved(S.STARTING, "Validated", T0)  # type: ignore[arg-type]


def tuning_job(name: str) -> TuningRecord:
    spec = TuningJobSpec.model_validate(
        {
            "hyper_parameter_tuning_job_name": name,
            "hyper_parameter_tuning_job_config": {
                "strategy": "Random",
                "hyper_parameter_tuning_job_objective": {"type": "Minimize", "metric_name": "loss"},
                "resource_limits": {"max_number_of_training_jobs": 2, "max_parallel_training_jobs": 1},
                "parameter_ranges": {"categorical_parameter_ranges": [{"name": "a", "values": ["1", "2"]}]},
            },
            "training_job_definition": {"algorithm_specification": {"training_image": "probe:1"}},
        }
    )
    return TuningRecord(spec=spec, status=TuningStatus.IN_PROGRESS, creation_time=T0)


def unique(prefix: str) -> str:
    return f"{prefix}-{os.urandom(4).hex()}"


def test_the_schema_is_the_migrations_head_and_matches_the_tables(store: JobStore) -> None:
    assert migrations.head() == SCHEMA_REVISION
    assert store.revision() == SCHEMA_REVISION
    with store.engine.connect() as conn:
        differences = compare_metadata(MigrationContext.configure(conn), metadata)
    assert differences == []


def test_a_record_round_trips_with_its_history_and_tags(store: JobStore) -> None:
    name = unique("round-trip")
    store.create(job(name))
    record = store.transition(name, S.STARTING, S.DOWNLOADING, "Downloading input data", training_start_time=T0)
    assert record == store.get(name)
    assert [t.status for t in record.status.transitions] == [S.STARTING, S.DOWNLOADING]
    assert record.status.transitions[0].end_time is not None and record.training_start_time == T0
    assert store.tags(name) == {"team": "vision"}
    with pytest.raises(DockyardError, match="exists already"):
        store.create(job(name))
    with pytest.raises(DockyardError, match="no training job named 'nope'"):
        store.get("nope")


def test_a_page_of_records_reads_in_one_go_as_each_reads_alone(store: JobStore) -> None:
    names = [unique(f"many-{i}") for i in range(3)]
    for name in names:
        store.create(job(name))
    store.transition(names[1], S.STARTING, S.DOWNLOADING, "Downloading input data")
    store.set_tags(names[2], {"stage": "dev"})
    store.delete_tags(names[0], ["team"])
    asked = [names[2], "nope", names[0], names[1], names[2]]
    assert store.find_many(asked) == {n: store.get(n) for n in names}
    assert store.tags_of(asked) == {n: store.tags(n) for n in [*names, "nope"]}
    assert store.tags_of([names[0], "nope"]) == {names[0]: {}, "nope": {}}
    assert store.find_many([]) == {} and store.tags_of([]) == {}


def test_a_transition_from_another_status_than_expected_names_the_actual_one(store: JobStore) -> None:
    name = unique("cas")
    store.create(job(name))
    store.transition(name, S.STARTING, S.DOWNLOADING, "")
    with pytest.raises(StatusConflict, match="is Downloading, not Starting"):
        store.transition(name, S.STARTING, S.DOWNLOADING, "")
    with pytest.raises(StatusTransitionError, match="allowed next"):
        store.transition(name, S.DOWNLOADING, S.COMPLETED, "")
    store.transition(name, {S.STARTING, S.DOWNLOADING}, S.FAILED, "boom", failure_reason="AlgorithmError: boom")
    with pytest.raises(StatusTransitionError, match="it is final"):
        store.transition(name, S.FAILED, S.TRAINING, "")
    assert store.get(name).failure_reason == "AlgorithmError: boom"


RACER = textwrap.dedent(
    """
    import json, sys, time
    from dockyard.errors import StatusConflict
    from dockyard.status import SecondaryStatus as S
    from infra.job_store import JobStore
    url, start, names = sys.argv[1], float(sys.argv[2]), sys.argv[3:]
    store = JobStore.open(url)
    results = {}
    for round, name in enumerate(names):  # each round's racers start at the same moment
        time.sleep(max(0.0, start + round - time.time()))
        try:
            store.transition(name, S.STARTING, S.DOWNLOADING, "won")
            results[name] = {"won": True}
        except StatusConflict as exc:
            results[name] = {"won": False, "actual": exc.actual}
    print(json.dumps(results))
    """
)


def test_processes_racing_the_same_transition_exactly_one_wins(store: JobStore, store_url: str) -> None:
    names = [unique("race") for _ in range(3)]
    for name in names:
        store.create(job(name))
    start = time.time() + 4  # every racer has imported and connected by then
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", RACER, store_url, str(start), *names], cwd=ROOT, stdout=subprocess.PIPE, text=True
        )
        for _ in range(4)
    ]
    results = [json.loads(p.communicate(timeout=60)[0]) for p in racers]
    for name in names:
        outcomes = [r[name] for r in results]
        assert sum(o["won"] for o in outcomes) == 1, outcomes
        assert all(o["actual"] == "Downloading" for o in outcomes if not o["won"]), outcomes
        assert [t.status for t in store.get(name).status.transitions] == [S.STARTING, S.DOWNLOADING]


def test_concurrent_updates_lose_nothing(store: JobStore) -> None:
    name = unique("updates")
    store.create(job(name))

    def add_attempts() -> None:
        for _ in range(5):
            store.change(name, lambda r: r.ended_attempt(T0).attempt_started(T0))

    threads = [threading.Thread(target=add_attempts) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(store.get(name).attempts) == 20
    with pytest.raises(ValueError, match="transition"):
        store.update(name, status=store.get(name).status)


def test_log_lines_of_every_host_come_back_in_the_order_they_were_recorded(store: JobStore) -> None:
    name, other = unique("logged"), unique("other")
    first = [HostLine("algo-2", T0 + timedelta(seconds=1), "b1\r b2"), HostLine("algo-1", T0, "a1 ünïcode")]
    store.add_log_lines(name, first)
    store.add_log_lines(other, [HostLine("algo-1", T0, "not mine")])
    store.add_log_lines(name, [HostLine("model", T0 + timedelta(seconds=2, microseconds=1234), "")])
    store.add_log_lines(name, [])
    lines = [*first, HostLine("model", T0 + timedelta(seconds=2, microseconds=1234), "")]
    assert store.log_lines(name) == lines
    assert store.log_lines(name, host="algo-1") == [lines[1]]
    recorded = store.log_lines_after(name, 0)
    assert [line for _, line in recorded] == lines
    positions = [position for position, _ in recorded]
    assert positions == sorted(positions)
    assert [line.text for _, line in store.log_lines_after(name, positions[0])] == ["a1 ünïcode", ""]
    assert store.log_lines_after(name, positions[-1]) == []


def test_metrics_stop_requests_listings_and_tuning_records(store: JobStore) -> None:
    running, finished = unique("running"), unique("finished")
    store.create(job(running))
    store.create(job(finished))
    store.transition(finished, S.STARTING, S.FAILED, "")
    values = [
        MetricValue(metric_name=m, value=v, timestamp=T0 + timedelta(seconds=v), host=h)
        for v, (m, h) in enumerate([("loss", "algo-1"), ("loss", "algo-2"), ("auc", "algo-1"), ("loss", "algo-1")])
    ]
    store.add_metrics(running, values)
    assert store.metrics(running) == values
    assert [v.value for v in store.metrics(running, metric_name="loss", host="algo-1")] == [0, 3]
    assert store.stop_requested(running) is None
    store.request_stop(running, "stop requested by ana")
    assert store.stop_requested(running) == "stop requested by ana"
    with pytest.raises(DockyardError, match="is Failed; there is nothing to stop"):
        store.request_stop(finished, "too late")
    listed = {s.name: s for s in store.summaries(name_contains=running)}
    assert listed[running].secondary is S.STARTING
    assert [s.name for s in store.summaries(name_contains=finished, status="failed")] == [finished]
    assert store.summaries(name_contains=finished, since=T0 + timedelta(seconds=1)) == []
    assert running in {r.name for r in store.unfinished()} and finished not in {r.name for r in store.unfinished()}
    tuning = tuning_job(unique("tuning")[:32])
    assert store.tuning(tuning.name) is None
    store.save_tuning(tuning)
    done = tuning.model_copy(update={"status": TuningStatus.COMPLETED})
    store.save_tuning(done)
    assert store.tuning(tuning.name) == done


HOLDER = textwrap.dedent(
    """
    import sys, time
    from infra.job_store import JobStore
    store = JobStore.open(sys.argv[1])
    store.take_lease(sys.argv[2], float(sys.argv[3]))
    print("held", flush=True)
    time.sleep(600)
    """
)


def hold_in_another_process(url: str, resource: str, ttl: float) -> subprocess.Popen[str]:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, url, resource, str(ttl)], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    return holder


def test_a_live_lease_is_refused_and_a_dead_holders_lease_is_taken_over(store: JobStore, store_url: str) -> None:
    resource = unique("training-job/lease")
    holder = hold_in_another_process(store_url, resource, 600)
    try:
        with pytest.raises(LeaseHeld, match=f"{resource} is held by process {holder.pid} on "):
            store.take_lease(resource, 30)
    finally:
        holder.kill()
        holder.wait()
    lease = store.take_lease(resource, 30)  # its holder died on this host: no need to wait for the expiry
    assert lease.owner.pid == os.getpid()
    store.take_lease(resource, 30)  # a holder may take its own lease again
    store.release_lease(resource)
    assert store.lease(resource) is None


def test_an_expired_lease_is_taken_over_and_a_kept_one_is_not(store: JobStore, store_url: str) -> None:
    short, kept = unique("training-job/short"), unique("training-job/kept")
    keeper = LeaseKeeper(store, kept, ttl_seconds=1.5)
    keeper.take()
    holder = hold_in_another_process(store_url, short, 1.5)
    try:
        # Another machine's holder (even one of the same host name) cannot be seen dying:
        # only the expiry frees its lease.
        with store.engine.begin() as conn:
            conn.exec_driver_sql(
                f"UPDATE orchestrator_leases SET machine = 'another-boot/1' WHERE resource = '{short}'"
            )
        with pytest.raises(LeaseHeld):
            store.take_lease(short, 30)
        time.sleep(2)
        assert store.take_lease(short, 30).owner.pid == os.getpid()
        lease = store.lease(kept)
        assert lease is not None and lease.expires_at > datetime.now(UTC)  # renewed by the keeper's heartbeat
    finally:
        holder.kill()
        holder.wait()
        keeper.release()
    assert store.lease(kept) is None


def test_a_home_of_an_earlier_version_is_imported_without_losing_a_job(tmp_path: Path, store_url: str) -> None:
    home = tmp_path / "old-home"
    old = job("old-job").moved(S.DOWNLOADING, "Downloading input data", T0)
    folder = home / "jobs" / "old-job"
    folder.mkdir(parents=True)
    (folder / "record.json").write_text(old.model_dump_json(indent=2))
    value = MetricValue(metric_name="loss", value=0.5, timestamp=T0)
    (folder / "metrics.jsonl").write_text(value.model_dump_json() + "\n")
    (folder / "stop-requested").write_text("stop requested by ana")
    (folder / "job.log").write_text("a line\n")
    (home / "tuning" / "old-tuning").mkdir(parents=True)
    old_tuning = tuning_job("old-tuning").model_copy(update={"status": TuningStatus.COMPLETED})
    (home / "tuning" / "old-tuning" / "record.json").write_text(json.dumps(old_tuning.describe()))
    environ = {"DOCKYARD_HOME": str(home)}
    if store_url.startswith("postgresql"):
        environ["DOCKYARD_DATABASE_URL"] = store_url
    store = open_store(Settings.from_env(environ))
    assert store.get("old-job") == old
    assert store.metrics("old-job") == [value]
    assert store.stop_requested("old-job") == "stop requested by ana"
    assert store.tuning("old-tuning") == old_tuning
    assert (folder / "record.json.imported").exists() and (folder / "job.log").exists()
    assert import_home(store, home) == 0  # nothing twice


def test_a_keeper_notices_when_its_lease_was_taken_over(store: JobStore) -> None:
    resource = unique("training-job/taken")
    keeper = LeaseKeeper(store, resource, ttl_seconds=0.6)
    keeper.take()
    try:
        with store.engine.begin() as conn:  # as another orchestrator does once the lease expired
            conn.exec_driver_sql(f"UPDATE orchestrator_leases SET owner = 'someone-else' WHERE resource = '{resource}'")
        deadline = time.time() + 10
        while not keeper.lost and time.time() < deadline:
            time.sleep(0.1)
        assert keeper.lost
    finally:
        keeper.release()
    lease = store.lease(resource)
    assert lease is not None and lease.owner.token == "someone-else"  # releasing never frees another's lease
