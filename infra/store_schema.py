"""The job store's tables, as the code reads and writes them.

The database gets them from the Alembic migrations in infra/migrations; a
test checks that the two agree.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
)

# Alembic's `op` and `context` are global to the process: two migrations at once
# (the job store's, and MLflow's when it opens a new catalog) would run each
# other's steps. Whoever migrates, or may, holds this.
MIGRATING = threading.Lock()


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on every backend (SQLite keeps no time zone)."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:  # noqa: ARG002
        return value.astimezone(UTC).replace(tzinfo=None) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:  # noqa: ARG002
        return value.replace(tzinfo=UTC) if value is not None else None


metadata = MetaData()

training_jobs = Table(
    "training_jobs",
    metadata,
    Column("name", String(63), primary_key=True),
    Column("primary_status", String(16), nullable=False),
    Column("secondary_status", String(32), nullable=False),
    Column("creation_time", UTCDateTime, nullable=False, index=True),
    Column("last_modified_time", UTCDateTime, nullable=False),
    Column("training_end_time", UTCDateTime),
    Column("version", Integer, nullable=False),
    Column("stop_requested", Text),
    Column("record", Text, nullable=False),  # the JobRecord but its status, as JSON
    Column("kind", String(16), nullable=False, server_default="training", index=True),  # or processing
    Column("explains", String(63), nullable=True, index=True),  # a Clarify job's: the training job whose model
)

status_transitions = Table(
    "training_job_status_transitions",
    metadata,
    Column("job_name", String(63), primary_key=True),
    Column("seq", Integer, primary_key=True),
    Column("status", String(32), nullable=False),
    Column("start_time", UTCDateTime, nullable=False),
    Column("end_time", UTCDateTime),
    Column("message", Text, nullable=False),
)


def _tags(name: str, name_length: int) -> Table:
    """A tags table: a row per (job, key), SageMaker's lengths."""
    return Table(
        name,
        metadata,
        Column("job_name", String(name_length), primary_key=True),
        Column("key", String(128), primary_key=True),
        Column("value", String(256), nullable=False),
    )


job_tags = _tags("training_job_tags", 63)

job_metrics = Table(
    "training_job_metrics",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("job_name", String(63), nullable=False, index=True),
    Column("metric_name", String(255), nullable=False),
    Column("host", String(32), nullable=False),
    Column("value", Float, nullable=False),
    Column("timestamp", UTCDateTime, nullable=False),
)

system_samples = Table(
    "training_job_system_samples",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("job_name", String(63), nullable=False, index=True),
    Column("host", String(32), nullable=False),
    Column("timestamp", UTCDateTime, nullable=False),
    Column("sample", Text, nullable=False),  # the SystemSample, as JSON
)

log_lines = Table(
    "training_job_log_lines",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("job_name", String(63), nullable=False, index=True),
    Column("host", String(32), nullable=False),
    Column("timestamp", UTCDateTime, nullable=False),
    Column("text", Text, nullable=False),
)

tuning_jobs = Table(
    "tuning_jobs",
    metadata,
    Column("name", String(32), primary_key=True),
    Column("status", String(16), nullable=False),
    Column("creation_time", UTCDateTime, nullable=False),
    Column("last_modified_time", UTCDateTime, nullable=False),
    Column("record", Text, nullable=False),  # the TuningRecord, as JSON
)

tuning_tags = _tags("tuning_job_tags", 32)

leases = Table(
    "orchestrator_leases",
    metadata,
    Column("resource", String(128), primary_key=True),
    Column("owner", String(64), nullable=False),
    Column("host", String(255), nullable=False),
    Column("machine", String(80), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("process_started", String(32), nullable=False),
    Column("heartbeat_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
)

# The fleet (infra/fleet.py): hosts registered by their workers, the instances
# granted on them, and every grant and release ever made.
hosts = Table(
    "fleet_hosts",
    metadata,
    Column("name", String(63), primary_key=True),
    Column("address", String(255), nullable=False),
    Column("vcpus", Integer, nullable=False),
    Column("memory_bytes", BigInteger, nullable=False),
    Column("gpus", Integer, nullable=False),
    Column("gpu_kind", String(128), nullable=False),
    Column("disk_free_bytes", BigInteger, nullable=False),
    Column("labels", Text, nullable=False),  # JSON
    Column("draining", Boolean, nullable=False),
    Column("registered_at", UTCDateTime, nullable=False),
    Column("heartbeat_at", UTCDateTime, nullable=False),
    Column("version", Integer, nullable=False),  # raised by every grant on the host: the compare-and-set
)

grants = Table(
    "fleet_grants",
    metadata,
    Column("job_name", String(63), primary_key=True),
    Column("instance", String(16), primary_key=True),
    Column("host", String(63), nullable=False, index=True),
    Column("vcpus", Integer, nullable=False),
    Column("memory_bytes", BigInteger, nullable=False),
    Column("gpu_ids", String(255), nullable=False),  # comma-separated GPU indices on the host
    Column("granted_at", UTCDateTime, nullable=False),
)

grant_history = Table(
    "fleet_grant_history",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", UTCDateTime, nullable=False),
    Column("event", String(8), nullable=False),  # grant | release
    Column("job_name", String(63), nullable=False),
    Column("instance", String(16), nullable=False),
    Column("host", String(63), nullable=False),
    Column("vcpus", Integer, nullable=False),
    Column("memory_bytes", BigInteger, nullable=False),
    Column("gpu_ids", String(255), nullable=False),
)

# A job whose instances span hosts: the instances on a host other than its orchestrator's
# are that host's worker's to run (flows/instances.py), one row per attempt and host.
parts = Table(
    "fleet_parts",
    metadata,
    Column("job_name", String(63), primary_key=True),
    Column("attempt", Integer, primary_key=True),
    Column("host", String(63), primary_key=True),
    Column("instances", Text, nullable=False),  # comma-separated: algo-2,algo-3
    Column("flow_run_id", String(64), nullable=False),
    Column("stop_grace", Float),  # the orchestrator asks them to stop: SIGKILL after this many seconds
    Column("exits", Text),  # how they ended, once all have: HostExits as JSON
)

# Warm pools (dockyard.warm_pool): the pool in each job's record, indexed here for the jobs
# that look for one to take over, and for the sweep that ends them; written with the record.
warm_pools = Table(
    "warm_pools",
    metadata,
    Column("job_name", String(63), primary_key=True),
    Column("match_key", String(64), nullable=False, index=True),
    Column("status", String(16), nullable=False),
    Column("host", String(63), nullable=False),
    Column("folder", String(63), nullable=False),
    Column("expires_at", UTCDateTime),
    Column("reused_by", String(63), index=True),
    Column("cleaned", Boolean, nullable=False),  # a Terminated pool's folder is gone from its machine
)

algorithms = Table(
    "algorithms",
    metadata,
    Column("name", String(63), primary_key=True),
    Column("creation_time", UTCDateTime, nullable=False),
    Column("spec", Text, nullable=False),  # dockyard.algorithm_spec.AlgorithmSpec as JSON
)
