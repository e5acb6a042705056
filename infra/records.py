"""The local job record store: DOCKYARD_HOME/jobs/<name>/.

Per job: record.json (the JobRecord, rewritten atomically on every status
change), job.log (every stage's and host's lines), metrics.jsonl (scraped
metric values) and stop-requested (present once a stop was asked for).
"""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dockyard.errors import DockyardError
from dockyard.record import JobRecord, MetricValue
from dockyard.spot import Attempt
from dockyard.status import SecondaryStatus, is_final

RECORD_FILE = "record.json"
LOG_FILE = "job.log"
METRICS_FILE = "metrics.jsonl"
STOP_FILE = "stop-requested"
LOCK_FILE = "orchestrator.lock"


def now() -> datetime:
    return datetime.now(UTC)


def job_dir(home: str, name: str) -> Path:
    return Path(home) / "jobs" / name


def tuning_dir(home: str, name: str) -> Path:
    return Path(home) / "tuning" / name


def load_tuning(home: str, name: str) -> dict[str, Any] | None:
    """A finished tuning job's record (DescribeHyperParameterTuningJob's shape), or None."""
    path = tuning_dir(home, name) / RECORD_FILE
    return json.loads(path.read_text()) if path.exists() else None


def save_tuning(home: str, name: str, body: dict[str, Any]) -> None:
    folder = tuning_dir(home, name)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{RECORD_FILE}"
    tmp.write_text(json.dumps(body, indent=2))
    os.replace(tmp, folder / RECORD_FILE)


def exists(home: str, name: str) -> bool:
    return (job_dir(home, name) / RECORD_FILE).exists()


def load(home: str, name: str) -> JobRecord:
    """Raises: DockyardError when there is no record of `name`."""
    path = job_dir(home, name) / RECORD_FILE
    try:
        return JobRecord.model_validate_json(path.read_text())
    except FileNotFoundError:
        raise DockyardError(
            f"no training job named '{name}' under {home} — check the name (dockyard jobs list shows them)"
        ) from None


def job_names(home: str) -> list[str]:
    folder = Path(home) / "jobs"
    return sorted(p.name for p in folder.iterdir() if (p / RECORD_FILE).exists()) if folder.exists() else []


def summary(home: str, name: str) -> dict[str, Any]:
    """The few fields a listing shows, read straight from the record's JSON (fast for thousands of jobs)."""
    raw = json.loads((job_dir(home, name) / RECORD_FILE).read_text())
    status = raw.get("status", {})
    return {
        "TrainingJobName": name,
        "TrainingJobStatus": status.get("primary", "InProgress"),
        "SecondaryStatus": status.get("secondary") or "-",
        "CreationTime": raw["creation_time"],
        "TrainingEndTime": raw.get("training_end_time"),
    }


def save(home: str, record: JobRecord) -> None:
    folder = job_dir(home, record.name)
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".record.")
    with os.fdopen(fd, "w") as f:
        f.write(record.model_dump_json(indent=2))
    os.replace(tmp, folder / RECORD_FILE)


def transition(home: str, name: str, to: SecondaryStatus, message: str) -> JobRecord:
    """Move job `name` to `to` through the one status writer, and persist it."""
    record = load(home, name).moved(to, message, now())
    save(home, record)
    append_log(home, name, f"status: {record.status.primary.value}/{to.value} — {message}")
    return record


def update(home: str, name: str, **fields: object) -> JobRecord:
    record = load(home, name).model_copy(update={**fields, "last_modified_time": now()})
    save(home, record)
    return record


_LOCKS: dict[str, int] = {}  # lock files this process holds, by path


def hold_lock(home: str, name: str) -> None:
    """Make this process the one orchestrating job `name`, for as long as it lives.

    The lock dies with the process, however it dies, so a rerun can pick the job up.

    Raises:
        DockyardError: another live process is running the job.
    """
    folder = job_dir(home, name)
    path = str(folder / LOCK_FILE)
    if path in _LOCKS:
        return
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        owner = os.read(fd, 64).decode().strip() or "another process"
        os.close(fd)
        raise DockyardError(
            f"training job {name} is being run by process {owner} — wait for it, or stop it with "
            f"`dockyard jobs stop {name}`"
        ) from None
    os.ftruncate(fd, 0)
    os.write(fd, str(os.getpid()).encode())
    _LOCKS[path] = fd


def unfinished(home: str) -> list[JobRecord]:
    """Every job whose record is not final."""
    folder = Path(home) / "jobs"
    found = []
    for path in sorted(folder.glob(f"*/{RECORD_FILE}")) if folder.exists() else []:
        record = JobRecord.model_validate_json(path.read_text())
        if not is_final(record.status.secondary):
            found.append(record)
    return found


def start_attempt(home: str, name: str) -> None:
    """A new stretch of running instances begins (the last one, if open, ends)."""
    record = load(home, name)
    attempts = list(record.attempts)
    if attempts and attempts[-1].end is None:
        attempts[-1] = attempts[-1].model_copy(update={"end": now(), "ended_by": "orchestrator restarted"})
    save(home, record.model_copy(update={"attempts": (*attempts, Attempt(start=now()))}))


def end_attempt(home: str, name: str, ended_by: str = "") -> None:
    record = load(home, name)
    if record.attempts and record.attempts[-1].end is None:
        last = record.attempts[-1].model_copy(update={"end": now(), "ended_by": ended_by})
        save(home, record.model_copy(update={"attempts": (*record.attempts[:-1], last)}))


def append_log(home: str, name: str, line: str) -> None:
    folder = job_dir(home, name)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / LOG_FILE, "a") as f:
        f.write(f"{now().isoformat(timespec='milliseconds')} {line}\n")


def append_metrics(home: str, name: str, values: list[MetricValue]) -> None:
    with open(job_dir(home, name) / METRICS_FILE, "a") as f:
        for value in values:
            f.write(value.model_dump_json() + "\n")


def read_metrics(home: str, name: str) -> list[MetricValue]:
    path = job_dir(home, name) / METRICS_FILE
    if not path.exists():
        return []
    return [MetricValue.model_validate(json.loads(line)) for line in path.read_text().splitlines() if line]


def request_stop(home: str, name: str, reason: str) -> None:
    (job_dir(home, name) / STOP_FILE).write_text(reason)


def stop_requested(home: str, name: str) -> str | None:
    path = job_dir(home, name) / STOP_FILE
    return path.read_text() or "stop requested" if path.exists() else None
