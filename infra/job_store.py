"""The job store: training jobs, their status history, tags, metric series,
tuning jobs and the orchestrators' leases, in one SQL database.

Embedded default: SQLite at DOCKYARD_HOME/dockyard.db; DOCKYARD_DATABASE_URL
takes any SQLAlchemy URL (PostgreSQL for a fleet). The schema is Alembic's
(infra/migrations), brought to its head when a store is first opened.

Every write is compare-and-set: a status moves only from the status the caller
expected (else StatusConflict names the actual one), and any other change of a
record is written only over the version it was computed from, so two writers
never lose each other's changes. One orchestrator per job by lease: a row with
an owner and a heartbeat, taken over only once it expired or its owner is a
dead process on this host.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import threading
import uuid
import weakref
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

from sqlalchemy import (
    Connection,
    Engine,
    Select,
    Table,
    create_engine,
    delete,
    event,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError, OperationalError

from dockyard.algorithm_spec import AlgorithmSpec
from dockyard.errors import DockyardError, LeaseHeld, StatusConflict, TransientInfraError
from dockyard.outcome import StopKind, StopReason
from dockyard.profiling import SystemSample
from dockyard.record import HostLine, JobRecord, MetricValue
from dockyard.settings import Settings
from dockyard.status import JobStatus, PrimaryStatus, SecondaryStatus, StatusTransition, is_final
from dockyard.tuning_record import TuningRecord, from_description
from dockyard.warm_pool import PoolStatus, WarmPool
from infra.store_schema import (
    MIGRATING,
    algorithms,
    job_metrics,
    job_tags,
    leases,
    log_lines,
    status_transitions,
    system_samples,
    training_jobs,
    tuning_jobs,
    tuning_tags,
    warm_pools,
)

S = SecondaryStatus
# The Alembic revision this code reads and writes (checked against the scripts by a test).
SCHEMA_REVISION = "0010"
WRITE_ATTEMPTS = 50  # optimistic writes retried over concurrent changes of the same record


def now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class JobFilter:
    """Which jobs a listing shows; None leaves a condition out."""

    name_contains: str | None = None
    name_prefix: str | None = None
    status: str | None = None  # a primary status, any case
    created_after: datetime | None = None
    created_before: datetime | None = None
    modified_after: datetime | None = None
    modified_before: datetime | None = None
    warm_pool_status: str | None = None  # Available, InUse, Reused or Terminated, as WarmPoolStatus shows it
    kind: str = "training"  # or processing: each kind is listed on its own, as SageMaker lists them
    explains: str | None = None  # processing jobs whose analysis explains this training job's model


@dataclass(frozen=True)
class JobSummary:
    """The few fields a listing shows, read without the whole record."""

    name: str
    primary: PrimaryStatus
    secondary: SecondaryStatus
    creation_time: datetime
    training_end_time: datetime | None
    last_modified_time: datetime | None = None


@dataclass(frozen=True)
class PoolEntry:
    """A warm pool as the store indexes it: whose it is, and where."""

    job_name: str
    status: PoolStatus
    host: str
    folder: str
    expires_at: datetime | None
    reused_by: str | None
    cleaned: bool


@dataclass(frozen=True)
class Owner:
    """A process that may hold leases: who it is, and how to tell it is still alive."""

    token: str
    host: str  # the host name, to show
    machine: str  # this boot of this machine and PID namespace: where `pid` means this process
    pid: int
    process_started: str

    def __str__(self) -> str:
        return f"process {self.pid} on {self.host}"


def _machine() -> str:
    """Which processes a pid can be looked up among: this boot of this machine, in this PID
    namespace. Host names repeat (cloned machines, containers sharing the host's name); this does not."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        namespace = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return f"unknown-{uuid.uuid4().hex}"  # never taken for another process's machine
    return f"{boot}/{namespace}"


def _process_started(pid: int) -> str:
    """When `pid` started (clock ticks since boot), so a reused pid is not taken for its predecessor."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


_OWNERS: dict[int, Owner] = {}


def this_process() -> Owner:
    pid = os.getpid()
    if pid not in _OWNERS:
        _OWNERS[pid] = Owner(uuid.uuid4().hex, socket.gethostname(), _machine(), pid, _process_started(pid))
    return _OWNERS[pid]


@dataclass(frozen=True)
class Lease:
    resource: str
    owner: Owner
    heartbeat_at: datetime
    expires_at: datetime

    def dead_here(self) -> bool:
        """Its owner was a process on this machine that no longer runs."""
        me = this_process()
        return self.owner.machine == me.machine and _process_started(self.owner.pid) != self.owner.process_started


def _lease_of(row: Any) -> Lease:
    return Lease(
        row.resource,
        Owner(row.owner, row.host, row.machine, row.pid, row.process_started),
        row.heartbeat_at,
        row.expires_at,
    )


def redacted(url: str) -> str:
    """A database URL fit to show: its password hidden."""
    return make_url(url).render_as_string(hide_password=True)


class JobStore:
    """The store at one database URL. Open it with `JobStore.open` (cached per URL)."""

    _opened: ClassVar[dict[str, JobStore]] = {}
    _opening: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, url: str) -> None:
        self.url = url
        parsed = make_url(url)
        self.sqlite = parsed.get_backend_name() == "sqlite"
        if self.sqlite and parsed.database in (None, "", ":memory:"):
            raise DockyardError(
                f"DOCKYARD_DATABASE_URL: {url} is an in-memory SQLite database, which each connection sees "
                "empty — name a file (sqlite:////path/dockyard.db) or a PostgreSQL database"
            )
        if self.sqlite:
            # Pooled connections: opening one (and its pragmas) costs more than most reads.
            self.engine: Engine = create_engine(url, pool_size=4, max_overflow=8, connect_args={"timeout": 60})
            event.listen(self.engine, "connect", _sqlite_connect)
            event.listen(self.engine, "begin", _sqlite_begin)
        else:
            self.engine = create_engine(url, pool_pre_ping=True, pool_size=4, max_overflow=8)
        _ENGINES.add(self.engine)

    @classmethod
    def open(cls, url: str) -> JobStore:
        """The store at `url`, its schema brought up to date on first use in this process.

        Raises:
            DockyardError: the database cannot be reached or migrated.
        """
        with cls._opening:
            store = cls._opened.get(url)
            if store is None:
                store = cls(url)
                try:
                    store.migrate()
                except OperationalError as exc:
                    raise TransientInfraError(
                        f"the job store at {redacted(url)} cannot be reached: {exc.orig} — is the database up?"
                    ) from exc
                except Exception as exc:
                    raise DockyardError(
                        f"the job store at {redacted(url)} cannot be opened: {exc} — check DOCKYARD_DATABASE_URL "
                        "and that the database is up"
                    ) from exc
                cls._opened[url] = store
            return store

    @classmethod
    def close(cls, url: str) -> None:
        """Close the store opened at `url` in this process, if any, and its connections."""
        with cls._opening:
            store = cls._opened.pop(url, None)
        if store is not None:
            store.engine.dispose()

    # -- schema ---------------------------------------------------------------

    def revision(self) -> str | None:
        with self.engine.connect() as conn:
            if not self.engine.dialect.has_table(conn, "alembic_version"):
                return None
            return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()

    def migrate(self) -> None:
        """Bring the schema to SCHEMA_REVISION with Alembic; one process at a time."""
        if self.sqlite:
            database = make_url(self.url).database
            if database and database != ":memory:":
                Path(database).parent.mkdir(parents=True, exist_ok=True)
        if self.revision() == SCHEMA_REVISION:
            return
        from infra import migrations  # Alembic loads only when the schema must change

        with MIGRATING, self._migration_lock(), self.writing() as conn:
            if not self.sqlite:
                conn.execute(text("SELECT pg_advisory_xact_lock(7315)"))
            migrations.upgrade(conn)

    @contextlib.contextmanager
    def _migration_lock(self) -> Iterator[None]:
        database = make_url(self.url).database if self.sqlite else None
        if not database or database == ":memory:":
            yield
            return
        with open(f"{database}.migrate.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    # -- training jobs --------------------------------------------------------

    def create(self, record: JobRecord) -> None:
        """Store a new job with its first status.

        Raises:
            DockyardError: a job of that name exists.
        """
        try:
            with self.writing() as conn:
                conn.execute(insert(training_jobs).values(**self._row(record), version=1, stop_requested=None))
                self._write_transitions(conn, record.name, (), record.status.transitions)
                if record.spec.tags:
                    conn.execute(
                        insert(job_tags),
                        [{"job_name": record.name, "key": t.key, "value": t.value} for t in record.spec.tags],
                    )
        except IntegrityError:
            raise DockyardError(f"a training job named {record.name} exists already — choose another name") from None

    def find(self, name: str) -> JobRecord | None:
        found = self._read(name)
        return found[0] if found else None

    def find_many(self, names: Collection[str]) -> dict[str, JobRecord]:
        """The records of the jobs named (those that exist), read together in one snapshot."""
        wanted = list(dict.fromkeys(names))
        t, st = training_jobs, status_transitions
        rows: list[Any] = []
        history: dict[str, list[StatusTransition]] = {n: [] for n in wanted}
        options = {} if self.sqlite else {"isolation_level": "REPEATABLE READ"}
        with self.engine.connect().execution_options(**options) as conn, conn.begin():
            for chunk in _chunks(wanted):
                columns = (t.c.name, t.c.primary_status, t.c.secondary_status, t.c.record)  # what _record reads
                rows += conn.execute(select(*columns).where(t.c.name.in_(chunk))).all()
                steps = conn.execute(select(st).where(st.c.job_name.in_(chunk)).order_by(st.c.job_name, st.c.seq))
                for step in steps.all():
                    history[step.job_name].append(_transition(step))
        return {row.name: _record(row, history[row.name]) for row in rows}

    def get(self, name: str) -> JobRecord:
        """Raises: DockyardError when there is no job of that name."""
        record = self.find(name)
        if record is None:
            raise DockyardError(f"no training job named '{name}' — check the name (dockyard jobs list shows them)")
        return record

    def exists(self, name: str) -> bool:
        with self.engine.connect() as conn:
            return conn.execute(select(training_jobs.c.name).where(training_jobs.c.name == name)).first() is not None

    def summaries(
        self,
        name_contains: str | None = None,
        status: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int | None = None,
        kind: str = "training",
    ) -> list[JobSummary]:
        """Jobs of one kind newest first, filtered in SQL."""
        return self.page(JobFilter(name_contains=name_contains, status=status, created_after=since,
                                   created_before=until, kind=kind), limit=limit)  # fmt: skip

    def page(
        self,
        where: JobFilter,
        sort_by: str = "CreationTime",
        ascending: bool = False,
        offset: int = 0,
        limit: int | None = None,
    ) -> list[JobSummary]:
        """One page of the jobs `where` selects, sorted by Name, CreationTime or Status, in SQL."""
        t = training_jobs
        query = select(
            t.c.name, t.c.primary_status, t.c.secondary_status, t.c.creation_time, t.c.training_end_time,
            t.c.last_modified_time,
        )  # fmt: skip
        if where.status:
            matching = [s.value for s in PrimaryStatus if s.value.lower() == where.status.lower()]
            query = query.where(t.c.primary_status.in_(matching))
        if where.warm_pool_status:
            query = query.where(t.c.name.in_(_pools_shown(where.warm_pool_status)))
        query = query.where(t.c.kind == where.kind)
        if where.explains:
            query = query.where(t.c.explains == where.explains)
        query = _listing(query, t, t.c.primary_status, where, sort_by, ascending).offset(offset).limit(limit)
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return [
            JobSummary(r.name, PrimaryStatus(r.primary_status), SecondaryStatus(r.secondary_status),
                       r.creation_time, r.training_end_time, r.last_modified_time)
            for r in rows
        ]  # fmt: skip

    def name_of(self, lowered: str) -> str | None:
        """The job whose name is `lowered` but for case (an ARN holds names in lower case)."""
        t = training_jobs
        with self.engine.connect() as conn:
            found = conn.execute(select(t.c.name).where(func.lower(t.c.name) == lowered.lower())).first()
        return str(found.name) if found else None

    def unfinished(self) -> list[JobRecord]:
        """Every job whose status is not final."""
        finals = [s.value for s in SecondaryStatus if is_final(s)]
        with self.engine.connect() as conn:
            names = list(
                conn.execute(
                    select(training_jobs.c.name).where(training_jobs.c.secondary_status.not_in(finals))
                ).scalars()
            )
        return list(self.find_many(names).values())

    def transition(
        self,
        name: str,
        expected: SecondaryStatus | Collection[SecondaryStatus],
        to: SecondaryStatus,
        message: str,
        **fields: Any,
    ) -> JobRecord:
        """Move job `name` to `to`, only from `expected` (one status or several),
        setting `fields` of the record in the same write.

        Raises:
            StatusConflict: the job's status is not what was expected.
            StatusTransitionError: the table does not allow the move.
        """
        allowed = {expected} if isinstance(expected, SecondaryStatus) else set(expected)

        def change(record: JobRecord) -> JobRecord:
            current = record.status.secondary
            if current not in allowed:
                raise StatusConflict(name, " or ".join(sorted(s.value for s in allowed)), str(current))
            at = now()
            return record.model_copy(update=fields).moved(to, message, at)

        return self.change(name, change)

    def update(self, name: str, **fields: Any) -> JobRecord:
        """Set fields of the record other than its status, over the version they were read from."""
        if "status" in fields:
            raise ValueError("statuses change through transition(), never update()")
        return self.change(name, lambda record: record.model_copy(update={**fields, "last_modified_time": now()}))

    def change(self, name: str, edit: Callable[[JobRecord], JobRecord]) -> JobRecord:
        """Apply `edit` to the current record and write the result where the record is
        still the version `edit` saw; retried over concurrent writes, so no change is lost.
        `edit` may raise to write nothing."""
        for _ in range(WRITE_ATTEMPTS):
            found = self._read(name)
            if found is None:
                raise DockyardError(f"no training job named '{name}'")
            record, version = found
            changed = edit(record)
            with self.writing() as conn:
                written = conn.execute(
                    update(training_jobs)
                    .where(training_jobs.c.name == name, training_jobs.c.version == version)
                    .values(**self._row(changed), version=version + 1)
                ).rowcount
                if written:
                    self._write_transitions(conn, name, record.status.transitions, changed.status.transitions)
                    if changed.warm_pool != record.warm_pool:
                        self._index_pool(conn, name, changed.warm_pool)
                    return changed
        raise DockyardError(f"training job {name} changed {WRITE_ATTEMPTS} times while one change was being written")

    def discard_queued(self, name: str) -> bool:
        """Delete a job that was queued and never started (its submission failed); False if it has moved on."""
        found = self._read(name)
        if found is None or not found[0].queued or found[0].status.secondary is not SecondaryStatus.STARTING:
            return False
        with self.writing() as conn:
            t = training_jobs
            if not conn.execute(delete(t).where(t.c.name == name, t.c.version == found[1])).rowcount:
                return False
            conn.execute(delete(status_transitions).where(status_transitions.c.job_name == name))
            conn.execute(delete(job_tags).where(job_tags.c.job_name == name))
        return True

    def request_stop(self, name: str, reason: str) -> None:
        """Ask the job's orchestrator, wherever it runs, to stop it.

        Raises:
            DockyardError: no such job, or it is not in progress.
        """
        with self.writing() as conn:
            asked = conn.execute(
                update(training_jobs)
                .where(
                    training_jobs.c.name == name,
                    training_jobs.c.primary_status.in_([PrimaryStatus.IN_PROGRESS.value, PrimaryStatus.STOPPING.value]),
                )
                .values(stop_requested=reason)
            ).rowcount
        if not asked:
            record = self.get(name)
            raise DockyardError(f"{name} is {record.status.primary.value}; there is nothing to stop")

    def stop_requested(self, name: str) -> str | None:
        with self.engine.connect() as conn:
            return conn.execute(
                select(training_jobs.c.stop_requested).where(training_jobs.c.name == name)
            ).scalar_one_or_none()

    def add_metrics(self, name: str, values: list[MetricValue]) -> None:
        if not values:
            return
        with self.writing() as conn:
            conn.execute(
                insert(job_metrics),
                [
                    {"job_name": name, "metric_name": v.metric_name, "host": v.host, "value": v.value,
                     "timestamp": v.timestamp}
                    for v in values
                ],
            )  # fmt: skip

    def metrics(self, name: str, metric_name: str | None = None, host: str | None = None) -> list[MetricValue]:
        """The job's scraped metric values in the order they came."""
        m = job_metrics
        query = select(m.c.metric_name, m.c.host, m.c.value, m.c.timestamp).where(m.c.job_name == name)
        if metric_name is not None:
            query = query.where(m.c.metric_name == metric_name)
        if host is not None:
            query = query.where(m.c.host == host)
        with self.engine.connect() as conn:
            return [
                MetricValue(metric_name=r.metric_name, value=r.value, timestamp=r.timestamp, host=r.host)
                for r in conn.execute(query.order_by(m.c.id))
            ]

    def add_samples(self, name: str, samples: list[SystemSample]) -> None:
        if not samples:
            return
        with self.writing() as conn:
            conn.execute(
                insert(system_samples),
                [
                    {"job_name": name, "host": s.host, "timestamp": s.timestamp, "sample": s.model_dump_json()}
                    for s in samples
                ],
            )

    def samples(self, name: str) -> list[SystemSample]:
        """The job's system metrics, every instance's, in the order they were taken."""
        t = system_samples
        with self.engine.connect() as conn:
            rows = conn.execute(select(t.c.sample).where(t.c.job_name == name).order_by(t.c.id))
            return [SystemSample.model_validate_json(r.sample) for r in rows]

    def add_log_lines(self, name: str, lines: list[HostLine]) -> None:
        if not lines:
            return
        with self.writing() as conn:
            conn.execute(
                insert(log_lines),
                [{"job_name": name, "host": x.host, "timestamp": x.at, "text": x.text} for x in lines],
            )

    def log_lines(self, name: str, host: str | None = None) -> list[HostLine]:
        """The lines the job's containers printed (`host`'s only, if given), in the order they were recorded."""
        t = log_lines
        query = select(t.c.host, t.c.timestamp, t.c.text).where(t.c.job_name == name)
        if host is not None:
            query = query.where(t.c.host == host)
        with self.engine.connect() as conn:
            return [HostLine(r.host, r.timestamp, r.text) for r in conn.execute(query.order_by(t.c.id))]

    def log_lines_after(self, name: str, after: int) -> list[tuple[int, HostLine]]:
        """The job's lines recorded at positions after `after`, each with its position. Positions
        are given out as lines are written, not as writes commit: one may appear below another that
        is already seen."""
        t = log_lines
        query = select(t.c.id, t.c.host, t.c.timestamp, t.c.text).where(t.c.job_name == name, t.c.id > after)
        with self.engine.connect() as conn:
            return [(r.id, HostLine(r.host, r.timestamp, r.text)) for r in conn.execute(query.order_by(t.c.id))]

    def tags(self, name: str, tuning: bool = False) -> dict[str, str]:
        """The tags of a training job (or, with `tuning`, of a tuning job)."""
        t = tuning_tags if tuning else job_tags
        with self.engine.connect() as conn:
            rows = conn.execute(select(t.c.key, t.c.value).where(t.c.job_name == name).order_by(t.c.key))
            return {r.key: r.value for r in rows}

    def tags_of(self, names: Collection[str]) -> dict[str, dict[str, str]]:
        """The tags of each job named, read in one go (a job without tags maps to {})."""
        found: dict[str, dict[str, str]] = {n: {} for n in names}
        t = job_tags
        with self.engine.connect() as conn:
            for chunk in _chunks(list(found)):
                rows = conn.execute(select(t).where(t.c.job_name.in_(chunk)).order_by(t.c.job_name, t.c.key))
                for r in rows.all():
                    found[r.job_name][r.key] = r.value
        return found

    def set_tags(self, name: str, tags: dict[str, str], tuning: bool = False) -> None:
        """Add tags to a training job (or tuning job), replacing the values of keys it has."""
        t = tuning_tags if tuning else job_tags
        with self.writing() as conn:
            conn.execute(delete(t).where(t.c.job_name == name, t.c.key.in_(list(tags))))
            if tags:
                conn.execute(insert(t), [{"job_name": name, "key": k, "value": v} for k, v in tags.items()])

    def delete_tags(self, name: str, keys: list[str], tuning: bool = False) -> None:
        t = tuning_tags if tuning else job_tags
        with self.writing() as conn:
            conn.execute(delete(t).where(t.c.job_name == name, t.c.key.in_(keys)))

    # -- algorithms -----------------------------------------------------------

    def create_algorithm(self, algorithm: AlgorithmSpec) -> datetime:
        """Register an algorithm; returns its creation time.

        Raises:
            DockyardError: an algorithm of that name is registered.
        """
        created = now()
        if self.algorithm(algorithm.algorithm_name) is not None:
            raise DockyardError(
                f"algorithm_name: '{algorithm.algorithm_name}' is registered already — choose another name, "
                "or delete it first (dockyard algorithms delete)"
            )
        try:
            with self.writing() as conn:
                conn.execute(insert(algorithms).values(
                    name=algorithm.algorithm_name, creation_time=created, spec=algorithm.model_dump_json()
                ))  # fmt: skip
        except IntegrityError:
            raise DockyardError(
                f"algorithm_name: '{algorithm.algorithm_name}' is registered already — choose another name, "
                "or delete it first (dockyard algorithms delete)"
            ) from None
        return created

    def algorithm(self, name: str) -> tuple[AlgorithmSpec, datetime] | None:
        """A registered algorithm and when it was registered, or None."""
        with self.engine.connect() as conn:  # names are one whatever their case (an ARN holds them lowered)
            row = conn.execute(select(algorithms).where(func.lower(algorithms.c.name) == name.lower())).first()
        return (AlgorithmSpec.model_validate_json(row.spec), row.creation_time) if row else None

    def algorithms(self, name_contains: str | None = None) -> list[tuple[AlgorithmSpec, datetime]]:
        """The registered algorithms, by name."""
        query = select(algorithms).order_by(algorithms.c.name)
        if name_contains:
            query = query.where(algorithms.c.name.contains(name_contains, autoescape=True))
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return [(AlgorithmSpec.model_validate_json(r.spec), r.creation_time) for r in rows]

    def delete_algorithm(self, name: str) -> bool:
        """Unregister an algorithm; False when none had the name. Jobs that ran it keep their copy."""
        with self.writing() as conn:
            return bool(conn.execute(delete(algorithms).where(func.lower(algorithms.c.name) == name.lower())).rowcount)

    # -- tuning jobs ----------------------------------------------------------

    def create_tuning(self, record: TuningRecord) -> None:
        """Store a new tuning job, which reserves its name.

        Raises:
            DockyardError: a tuning job of that name exists.
        """
        values = {"status": record.status.value, "last_modified_time": now(), "record": record.model_dump_json()}
        try:
            with self.writing() as conn:
                conn.execute(
                    insert(tuning_jobs).values(name=record.name, creation_time=record.creation_time or now(), **values)
                )
                if record.spec.tags:
                    conn.execute(
                        insert(tuning_tags),
                        [{"job_name": record.name, "key": t.key, "value": t.value} for t in record.spec.tags],
                    )
        except IntegrityError:
            raise DockyardError(
                f"hyper_parameter_tuning_job_name: '{record.name}' is taken — choose another name"
            ) from None

    def save_tuning(self, record: TuningRecord) -> None:
        """Store a tuning job's record, a new one or a newer version of it."""
        values = {"status": record.status.value, "last_modified_time": now(), "record": record.model_dump_json()}
        t = tuning_jobs
        with self.writing() as conn:
            if not conn.execute(update(t).where(t.c.name == record.name).values(**values)).rowcount:
                conn.execute(insert(t).values(name=record.name, creation_time=record.creation_time or now(), **values))

    def tuning_page(
        self,
        where: JobFilter,
        sort_by: str = "CreationTime",
        ascending: bool = False,
        offset: int = 0,
        limit: int | None = None,
    ) -> list[TuningRecord]:
        """One page of the tuning jobs `where` selects, sorted by Name, CreationTime or Status, in SQL."""
        t = tuning_jobs
        query = select(t.c.record)
        if where.status:
            query = query.where(func.lower(t.c.status) == where.status.lower())
        query = _listing(query, t, t.c.status, where, sort_by, ascending).offset(offset).limit(limit)
        with self.engine.connect() as conn:
            return [TuningRecord.model_validate_json(raw) for raw in conn.execute(query).scalars()]  # fmt: skip

    def tuning_name_of(self, lowered: str) -> str | None:
        """The tuning job whose name is `lowered` but for case (an ARN holds names in lower case)."""
        t = tuning_jobs
        with self.engine.connect() as conn:
            found = conn.execute(select(t.c.name).where(func.lower(t.c.name) == lowered.lower())).first()
        return str(found.name) if found else None

    def tuning(self, name: str) -> TuningRecord | None:
        with self.engine.connect() as conn:
            raw = conn.execute(select(tuning_jobs.c.record).where(tuning_jobs.c.name == name)).scalar_one_or_none()
        return TuningRecord.model_validate_json(raw) if raw else None

    # -- leases ---------------------------------------------------------------

    def take_lease(self, resource: str, ttl_seconds: float) -> Lease:
        """Make this process the holder of `resource` for `ttl_seconds` (renew to keep it).

        Raises:
            LeaseHeld: another process holds it, alive and within its lease.
        """
        me = this_process()
        mine = {
            "owner": me.token,
            "host": me.host,
            "machine": me.machine,
            "pid": me.pid,
            "process_started": me.process_started,
        }
        for _ in range(WRITE_ATTEMPTS):
            at = now()
            expiry = at + timedelta(seconds=ttl_seconds)
            with self.writing() as conn:
                row = conn.execute(select(leases).where(leases.c.resource == resource)).first()
                if row is None:
                    try:
                        with conn.begin_nested():
                            conn.execute(
                                insert(leases).values(resource=resource, heartbeat_at=at, expires_at=expiry, **mine)
                            )
                    except IntegrityError:
                        continue  # another process inserted it first: look again
                    return Lease(resource, me, at, expiry)
                held = _lease_of(row)
                if held.owner.token != me.token and held.expires_at > at and not held.dead_here():
                    raise LeaseHeld(resource, str(held.owner), (at - held.heartbeat_at).total_seconds())
                taken = conn.execute(
                    update(leases)
                    .where(leases.c.resource == resource, leases.c.owner == held.owner.token)
                    .values(heartbeat_at=at, expires_at=expiry, **mine)
                ).rowcount
                if taken:
                    return Lease(resource, me, at, expiry)
        raise DockyardError(f"could not take the lease on {resource}: it kept changing hands")

    def renew_lease(self, resource: str, ttl_seconds: float) -> bool:
        """Push this process's lease on `resource` forward; False when it no longer holds it."""
        at = now()
        with self.writing() as conn:
            return bool(
                conn.execute(
                    update(leases)
                    .where(leases.c.resource == resource, leases.c.owner == this_process().token)
                    .values(heartbeat_at=at, expires_at=at + timedelta(seconds=ttl_seconds))
                ).rowcount
            )

    def release_lease(self, resource: str) -> None:
        with self.writing() as conn:
            conn.execute(delete(leases).where(leases.c.resource == resource, leases.c.owner == this_process().token))

    def lease_live(self, resource: str) -> bool:
        """Whether a live process holds `resource` (this one included)."""
        held = self.lease(resource)
        return held is not None and held.expires_at > now() and not held.dead_here()

    def lease(self, resource: str) -> Lease | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(leases).where(leases.c.resource == resource)).first()
        return _lease_of(row) if row else None

    # -- warm pools: indexed from the records that hold them ---------------------

    def pools(
        self,
        key: str | None = None,
        status: PoolStatus | None = None,
        host: str | None = None,
        reused_by: str | None = None,
        cleaned: bool | None = None,
        names: Collection[str] | None = None,
    ) -> list[PoolEntry]:
        t = warm_pools
        query = select(t).order_by(t.c.expires_at, t.c.job_name)
        if names is not None:
            query = query.where(t.c.job_name.in_(list(names)))  # a page of names
        for column, value in (
            (t.c.match_key, key), (t.c.status, status and status.value), (t.c.host, host),
            (t.c.reused_by, reused_by), (t.c.cleaned, cleaned),
        ):  # fmt: skip
            if value is not None:
                query = query.where(column == value)
        with self.engine.connect() as conn:
            return [
                PoolEntry(row.job_name, PoolStatus(row.status), row.host, row.folder, row.expires_at,
                          row.reused_by, bool(row.cleaned))
                for row in conn.execute(query)
            ]  # fmt: skip

    def pool_cleaned(self, job_name: str) -> None:
        """A Terminated pool's folder is gone from its machine."""
        with self.writing() as conn:
            conn.execute(update(warm_pools).where(warm_pools.c.job_name == job_name).values(cleaned=True))

    @staticmethod
    def _index_pool(conn: Connection, name: str, pool: WarmPool | None) -> None:
        if pool is None:
            conn.execute(delete(warm_pools).where(warm_pools.c.job_name == name))
            return
        values = {
            "match_key": pool.key, "status": pool.status.value, "host": pool.host, "folder": pool.folder,
            "expires_at": pool.expires_at, "reused_by": pool.reused_by,
        }  # fmt: skip
        if not conn.execute(update(warm_pools).where(warm_pools.c.job_name == name).values(**values)).rowcount:
            conn.execute(insert(warm_pools).values(job_name=name, cleaned=False, **values))

    # -- internals ------------------------------------------------------------

    @contextlib.contextmanager
    def writing(self) -> Iterator[Connection]:
        """A transaction that writes: on SQLite it takes the write lock at once."""
        with self.engine.connect() as conn:
            conn = conn.execution_options(dockyard_write=True)
            with conn.begin():
                yield conn

    def _read(self, name: str) -> tuple[JobRecord, int] | None:
        """The record and its version, read in one snapshot."""
        options = {} if self.sqlite else {"isolation_level": "REPEATABLE READ"}
        with self.engine.connect().execution_options(**options) as conn, conn.begin():
            row = conn.execute(select(training_jobs).where(training_jobs.c.name == name)).first()
            if row is None:
                return None
            steps = conn.execute(
                select(status_transitions)
                .where(status_transitions.c.job_name == name)
                .order_by(status_transitions.c.seq)
            )
            history = [_transition(s) for s in steps]
        return _record(row, history), int(row.version)

    @staticmethod
    def _row(record: JobRecord) -> dict[str, Any]:
        if record.status.secondary is None:
            raise ValueError(f"training job {record.name} has no status yet: move it to Starting first")
        return {
            "name": record.name,
            "primary_status": record.status.primary.value,
            "secondary_status": record.status.secondary.value,
            "creation_time": record.creation_time,
            "last_modified_time": record.last_modified_time or record.creation_time,
            "training_end_time": record.training_end_time,
            "record": record.model_dump_json(exclude={"status"}),
            "kind": record.kind,
            "explains": record.explains,
        }

    @staticmethod
    def _write_transitions(
        conn: Connection,
        name: str,
        before: tuple[StatusTransition, ...],
        after: tuple[StatusTransition, ...],
    ) -> None:
        """Write the history's changes: the last entry closed, the new ones added."""
        t = status_transitions
        for seq, step in enumerate(after):
            if seq >= len(before):
                conn.execute(
                    insert(t).values(
                        job_name=name, seq=seq, status=step.status.value, start_time=step.start_time,
                        end_time=step.end_time, message=step.status_message,
                    )
                )  # fmt: skip
            elif before[seq] != step:
                conn.execute(update(t).where(t.c.job_name == name, t.c.seq == seq).values(end_time=step.end_time))


IN_CHUNK = 500  # names per IN (...): well under any backend's limit on bound parameters


def _chunks(names: list[str]) -> Iterator[list[str]]:
    for i in range(0, len(names), IN_CHUNK):
        yield names[i : i + IN_CHUNK]


def _transition(step: Any) -> StatusTransition:
    return StatusTransition(
        status=SecondaryStatus(step.status), start_time=step.start_time, end_time=step.end_time,
        status_message=step.message,
    )  # fmt: skip


def _record(row: Any, history: list[StatusTransition]) -> JobRecord:
    """A training_jobs row and its status history as the record."""
    status = JobStatus(
        primary=PrimaryStatus(row.primary_status),
        secondary=SecondaryStatus(row.secondary_status),
        transitions=tuple(history),
    )
    return JobRecord.model_validate_json(row.record).model_copy(update={"status": status})


def _pools_shown(status: str) -> Select[Any]:
    """The names of the jobs whose WarmPoolStatus shows `status` now: an Available pool past
    its period shows Terminated (dockyard.warm_pool.WarmPool.shown)."""
    w, at = warm_pools, now()
    query = select(w.c.job_name)
    if status == PoolStatus.AVAILABLE.value:
        return query.where(w.c.status == status, w.c.expires_at > at)
    if status == PoolStatus.TERMINATED.value:
        expired = (w.c.status == PoolStatus.AVAILABLE.value) & (w.c.expires_at <= at)
        return query.where((w.c.status == status) | expired)
    return query.where(w.c.status == status)


def _listing(query: Select[Any], t: Table, status: Any, where: JobFilter, sort_by: str, ascending: bool) -> Select[Any]:
    """A listing's name and time filters, and its order: by Name, Status or CreationTime, then name."""
    if where.name_contains:
        query = query.where(t.c.name.contains(where.name_contains, autoescape=True))
    if where.name_prefix:
        query = query.where(t.c.name.startswith(where.name_prefix, autoescape=True))
    for column, after, before in (
        (t.c.creation_time, where.created_after, where.created_before),
        (t.c.last_modified_time, where.modified_after, where.modified_before),
    ):
        if after:
            query = query.where(column >= after)
        if before:
            query = query.where(column < before)
    key = {"Name": t.c.name, "Status": status}.get(sort_by, t.c.creation_time)
    return query.order_by(key.asc() if ascending else key.desc(), t.c.name.asc())


_ENGINES: weakref.WeakSet[Engine] = weakref.WeakSet()  # every store's engine, for _after_fork


def _after_fork() -> None:
    """In a forked child, leave the parent's pooled connections to the parent (SQLAlchemy's
    advice): the child opens its own on first use."""
    for engine in list(_ENGINES):
        engine.dispose(close=False)


os.register_at_fork(after_in_child=_after_fork)


def _sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    # Transactions are begun by _sqlite_begin, not by the driver's guesswork.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=60000")
    cursor.close()


def _sqlite_begin(conn: Connection) -> None:
    # A writer takes the write lock up front, so a read inside it cannot go stale
    # and the write never meets a lock it would have to give up on.
    immediate = conn.get_execution_options().get("dockyard_write")
    conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


class LeaseKeeper:
    """Holds this process's lease on a resource, renewing it from a thread until released."""

    def __init__(self, store: JobStore, resource: str, ttl_seconds: float) -> None:
        self.store, self.resource, self.ttl = store, resource, ttl_seconds
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.lost = False  # someone else took the lease over

    def take(self) -> None:
        """Raises: LeaseHeld when another live process holds the lease."""
        self.store.take_lease(self.resource, self.ttl)
        if self._thread is None:
            self._thread = threading.Thread(target=self._beat, name=f"lease-{self.resource}", daemon=True)
            self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            try:
                if not self.store.renew_lease(self.resource, self.ttl):
                    self.lost = True
                    return
            except Exception:  # noqa: BLE001 - a missed beat is retried at the next one
                continue

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with contextlib.suppress(Exception):
            self.store.release_lease(self.resource)


_IMPORTED_MARK = ".in-job-store"
_HOMES_CHECKED: set[tuple[Path, str]] = set()  # (home, store) pairs this process has imported


def open_store(settings: Settings) -> JobStore:
    """The job store `settings` name, with the home's job folders of earlier versions imported once.

    Raises:
        DockyardError: the database cannot be reached or migrated.
    """
    store = JobStore.open(settings.store_url())
    if (settings.home, store.url) in _HOMES_CHECKED:  # called on hot paths: look at the folder once a process
        return store
    jobs = settings.home / "jobs"
    if jobs.is_dir() and not (jobs / _IMPORTED_MARK).exists():
        with open(jobs / ".import.lock", "a") as lock:  # one importing process at a time
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not (jobs / _IMPORTED_MARK).exists():
                import_home(store, settings.home)
        _HOMES_CHECKED.add((settings.home, store.url))
    return store


def _stopping(record: JobRecord) -> StopReason | None:
    """The stop an old record was making in its last attempt, read from its history
    (earlier versions kept no stop reason): the message after "Stopping: "."""
    for step in reversed(record.status.transitions):
        if step.status is S.TRAINING:
            return None
        if step.status is S.STOPPING:
            detail = step.status_message.removeprefix("Stopping: ")
            kinds = {k.value: k for k in (StopKind.MAX_RUNTIME, StopKind.MAX_WAIT)}
            return StopReason(kind=kinds.get(detail, StopKind.REQUESTED), detail=detail)
    return None


def import_home(store: JobStore, home: Path) -> int:
    """Move the job and tuning records that earlier versions kept as files under
    `home` into the store (each file is kept, renamed *.imported); returns how many."""
    count = 0
    for record_file in sorted(home.glob("jobs/*/record.json")):
        record = JobRecord.model_validate_json(record_file.read_text())
        if not store.exists(record.name):
            if record.secondary is S.STOPPING or (record.secondary is S.UPLOADING and _stopping(record)):
                record = record.model_copy(update={"stop_reason": _stopping(record)})
            store.create(record)
            metrics = record_file.parent / "metrics.jsonl"
            if metrics.exists():
                store.add_metrics(
                    record.name,
                    [MetricValue.model_validate_json(line) for line in metrics.read_text().splitlines() if line],
                )
            stop = record_file.parent / "stop-requested"
            if stop.exists() and not is_final(record.status.secondary):
                store.request_stop(record.name, stop.read_text() or "stop requested")
            count += 1
        for old in (record_file, record_file.parent / "metrics.jsonl", record_file.parent / "stop-requested"):
            if old.exists():
                old.rename(old.with_name(old.name + ".imported"))
    for record_file in sorted(home.glob("tuning/*/record.json")):
        if store.tuning(record_file.parent.name) is None:
            store.save_tuning(from_description(json.loads(record_file.read_text())))
            count += 1
        record_file.rename(record_file.with_name("record.json.imported"))
    (home / "jobs").mkdir(parents=True, exist_ok=True)
    (home / "jobs" / _IMPORTED_MARK).write_text(f"job records imported into {redacted(store.url)}\n")
    return count
