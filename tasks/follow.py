"""Following a job's containers, for the monitor (tasks/monitor.py) and for a
part of a job on another machine (tasks/part.py): their output into the job
log, the job store (every host's lines, read from any machine), Prefect and the
metric series, their checkpoints synced, stopping them,
and how each ended.
"""

from __future__ import annotations

import contextvars
import functools
import math
import os
import re
import stat
import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import datetime
from typing import Any

from dockyard import contract
from dockyard.outcome import HostExit
from dockyard.record import HostLine, MetricValue
from dockyard.secrets import mask_text
from dockyard.settings import Settings
from dockyard.spec import TrainingJobSpec, UploadMode
from infra import credentials, docker_engine, job_log, volumes
from infra.checkpoint_sync import CheckpointSync
from infra.job_store import now, open_store
from infra.retry import with_backoff
from tasks.provision import ProvisionPlan

LAST_LINES = 20
SHIP_SECONDS = 0.5  # how often a host's new lines go to the job store
SHIP_PATIENCE = 30.0  # how long the last lines are offered to a store that does not take them


def compile_definitions(spec: TrainingJobSpec) -> list[tuple[str, re.Pattern[str]]]:
    """The job's metric regexes, or its built-in algorithm's defaults, compiled."""
    return [(name, re.compile(regex)) for name, regex in spec.metric_pairs]


def scrape(line: str, definitions: list[tuple[str, re.Pattern[str]]]) -> list[tuple[str, float]]:
    """The metric values one log line carries, by metric_definitions.

    A capture that is no number, or is NaN or infinite (a diverged loss), is no
    value: CloudWatch takes none of those either, and JSON cannot carry them.
    """
    found = []
    for name, pattern in definitions:
        match = pattern.search(line)
        if match:
            try:
                value = float(match.group(1))
            except (TypeError, ValueError):
                continue
            if math.isfinite(value):
                found.append((name, value))
    return found


def _volume_filled(scratch: str, last_lines: list[str], failure_text: str | None) -> int | None:
    """The size of the host's volume when the host filled it (no room left, and its last
    lines and failure text say so or say nothing), else None."""
    if not volumes.is_full(scratch):
        return None
    text = "\n".join([*last_lines[-20:], failure_text or ""])
    if text.strip() and "No space left on device" not in text and "ENOSPC" not in text:
        return None  # nearly full, but the container failed for a reason of its own
    return volumes.size_gb(scratch)


class Follower(threading.Thread):
    """Streams one host's output into the log, Prefect and the metric series."""

    def __init__(
        self,
        host: str,
        container_id: str,
        settings: Settings,
        job: str,
        definitions: list[tuple[str, re.Pattern[str]]],
        logger: Any,
        since: datetime | None = None,
        hidden: frozenset[str] = frozenset(),
    ) -> None:
        super().__init__(name=f"logs-{host}", daemon=True)
        self.since = since  # when reattaching, the lines before were someone else's to record
        self.hidden = hidden  # the job's secret values: a line that prints one shows it masked
        self.served_at, self.masked = -1, hidden  # `hidden` and the credentials served, as of served_at
        self.host, self.container_id, self.home, self.job = host, container_id, settings.home, job
        self.store = open_store(settings)
        self.definitions, self.logger = definitions, logger
        self.last_lines: deque[str] = deque(maxlen=LAST_LINES)
        self.unshipped: list[HostLine] = []  # lines not yet in the job store
        self.unshipped_lock = threading.Lock()
        self.shipping_failed = False
        # Prefect's settings and run context live in context variables.
        self.context = contextvars.copy_context()

    def run(self) -> None:
        followed = threading.Event()
        shipper = threading.Thread(  # in a context of its own: one context runs in one thread at a time
            target=self.context.copy().run, args=(self.ship, followed), name=f"log-lines-{self.host}", daemon=True
        )
        shipper.start()
        try:
            self.context.run(self.follow)
        finally:
            followed.set()
            shipper.join(SHIP_PATIENCE + SHIP_SECONDS)

    def ship(self, followed: threading.Event) -> None:
        """The new lines into the job store every SHIP_SECONDS, and the last when the stream ends:
        every machine of a fleet reads a job's lines there, whichever host printed them. Lines the
        store does not take are offered again, at the end for SHIP_PATIENCE; those it never takes
        are in this machine's job log, which `dockyard jobs logs` reads beside the store."""
        while not followed.wait(SHIP_SECONDS):
            self.ship_now()
        deadline = time.monotonic() + SHIP_PATIENCE
        while not self.ship_now() and time.monotonic() < deadline:
            time.sleep(1.0)
        if self.unshipped:
            self.logger.warning(
                f"[{self.host}] {len(self.unshipped)} log line(s) are not in the job store, which did not take "
                f"them: they are in the job log of this machine ({job_log.path(self.home, self.job)})"
            )

    def ship_now(self) -> bool:
        """Offer the store the lines it does not have yet; True once it has them all."""
        with self.unshipped_lock:
            lines = list(self.unshipped)
        if not lines:
            return True
        try:
            self.store.add_log_lines(self.job, lines)
        except Exception as exc:  # noqa: BLE001 - offered again at the next beat
            if not self.shipping_failed:
                self.logger.warning(
                    f"[{self.host}] the job store did not take {len(lines)} log line(s) ({type(exc).__name__}); "
                    "offering them again"
                )
            self.shipping_failed = True
            return False
        with self.unshipped_lock:
            del self.unshipped[: len(lines)]
        if self.shipping_failed:
            self.logger.info(f"[{self.host}] the job store takes log lines again")
            self.shipping_failed = False
        return True

    def follow(self) -> None:
        buffer = b""
        try:
            for chunk in docker_engine.follow_logs(self.container_id, self.since):
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for raw in lines:
                    self.line(raw.decode(errors="replace").rstrip("\r"))
        except Exception as exc:  # noqa: BLE001 - losing the stream must not end the job
            self.logger.warning(f"[{self.host}] log stream ended early: {exc}")
        if buffer:
            self.line(buffer.decode(errors="replace"))

    def line(self, raw: str) -> None:
        if self.served_at != credentials.changes():  # new credentials were served: mask those too
            self.served_at = credentials.changes()
            self.masked = self.hidden | credentials.secret_values(self.job)
        text = mask_text(raw, self.masked).replace("\x00", "\ufffd")  # PostgreSQL's text takes no NUL
        self.last_lines.append(text)
        self.logger.info(f"[{self.host}] {text}")
        at = now()
        job_log.append(self.home, self.job, f"[{self.host}] {text}", at)
        with self.unshipped_lock:
            self.unshipped.append(HostLine(self.host, at, text))
        values = scrape(raw, self.definitions)  # a metric's value is read as printed
        if values:
            try:
                self.store.add_metrics(
                    self.job, [MetricValue(metric_name=n, value=v, timestamp=at, host=self.host) for n, v in values]
                )
            except Exception as exc:  # noqa: BLE001 - a lost metric value must not stop the log stream
                self.logger.warning(f"[{self.host}] metric values not recorded: {exc}")


def stop_all(container_ids: list[str], grace: float) -> None:
    threads = [threading.Thread(target=docker_engine.stop, args=(cid, grace)) for cid in container_ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def read_container_file(path: str, limit: int = contract.FAILURE_REASON_LIMIT) -> str | None:
    """The first `limit` bytes of a file a container wrote, as text; None when there is none. A
    link or anything but a plain file is not read: the container made it, and the reader is not
    confined as the container is (a link to a host file would leak it)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except (FileNotFoundError, OSError):
        return None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            return None
        return f.read(limit).decode(errors="replace").strip() or None


def _read_failure(scratch: str, processing: bool) -> str | None:
    """What the container said of its failure: /opt/ml/output/failure, or a processing
    container's /opt/ml/output/message."""
    layout = contract.host_layout(scratch)
    return read_container_file(layout.on_host(contract.EXIT_MESSAGE_FILE) if processing else layout.failure_file)


def checkpoint_syncs(
    provisioned: ProvisionPlan,
    endpoint_url: str | None,
    report: Callable[[str], None],
    spec: TrainingJobSpec | None = None,
) -> list[CheckpointSync]:
    """The running syncs of the instances' checkpoints, and of a processing job's (`spec`'s)
    Continuous outputs: each instance's folder uploaded file by file as it is written."""
    syncs = [
        CheckpointSync(contract.host_layout(h.scratch).checkpoints, h.checkpoint_uri, endpoint_url, report)
        for h in provisioned.hosts
        if h.checkpoint_uri
    ]
    for output in spec.processing.processing_output_config.outputs if spec and spec.processing else []:
        if output.s3_output.s3_upload_mode is UploadMode.CONTINUOUS:
            syncs += [
                CheckpointSync(
                    contract.host_layout(h.scratch).on_host(output.s3_output.local_path), output.s3_output.s3_uri,
                    endpoint_url, report, deletions=False, what=f"output {output.output_name}",
                )
                for h in provisioned.hosts
            ]  # fmt: skip
    for sync in syncs:
        sync.start()
    return syncs


def host_exits(
    followers: list[Follower],
    scratch: dict[str, str],
    settings: Settings,
    name: str,
    hidden: frozenset[str],
    processing: bool = False,
) -> list[HostExit]:
    """How each followed container ended, its failure file and last lines masked."""
    exits = []
    for follower in followers:
        # Asked again while the engine is slow to answer, as the watch waits for it.
        state = with_backoff(
            functools.partial(docker_engine.state, follower.container_id), settings.monitor_lost_contact_seconds, 1.0
        )
        failure_text = _read_failure(scratch[follower.host], processing)
        failure_text = mask_text(failure_text, hidden | credentials.secret_values(name)) if failure_text else None
        exits.append(
            HostExit(
                host=follower.host,
                exit_code=int(state.get("ExitCode", -1)),
                oom_killed=bool(state.get("OOMKilled")),
                failure_text=failure_text,
                last_lines=tuple(follower.last_lines),
                volume_full_gb=_volume_filled(scratch[follower.host], list(follower.last_lines), failure_text),
            )
        )
    return exits
