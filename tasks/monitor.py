"""Stage 6, monitor: logs, metrics, stopping conditions, and the outcome.

Streams every host's output (prefixed by host) to the job log and Prefect's
logger, scrapes metric_definitions into time series, enforces
max_runtime_in_seconds, stops gracefully on a stop request, Ctrl-C, SIGTERM
or Prefect cancellation, and decides how the containers ended.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import math
import re
import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import datetime
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NONE
from prefect.exceptions import TerminationSignal
from sqlalchemy.exc import SQLAlchemyError

from dockyard import contract
from dockyard.algorithms import metric_definitions_of
from dockyard.errors import SpotInterruption, StatusConflict, TransientInfraError
from dockyard.fleet import Part
from dockyard.outcome import Ending, HostExit, Outcome, StopKind, StopReason
from dockyard.record import JobRecord, MetricValue
from dockyard.secrets import mask_text
from dockyard.settings import Settings
from dockyard.spec import TrainingJobSpec
from dockyard.spot import running_seconds
from dockyard.status import SecondaryStatus
from infra import credentials, docker_engine, job_log, pipe, prefect_api, spot, volumes
from infra import secrets as secret_blocks
from infra.checkpoint_sync import CheckpointSync
from infra.job_store import JobStore, now, open_store
from infra.retry import with_backoff
from tasks.peers import Peers
from tasks.profiler import Profiler
from tasks.provision import ProvisionPlan
from tasks.status import move
from tasks.validate import still_held

# Poll fast at first (short jobs end fast), then settle at half a second.
FIRST_POLL_SECONDS = 0.05
POLL_SECONDS = 0.5
PREFECT_CHECK_SECONDS = 2.0  # how often to ask Prefect whether the run was cancelled
LAST_LINES = 20


def compile_definitions(spec: TrainingJobSpec) -> list[tuple[str, re.Pattern[str]]]:
    """The job's metric regexes, or its built-in algorithm's defaults, compiled."""
    algo = spec.algorithm_specification
    pairs = metric_definitions_of(algo.builtin_name, [(d.name, d.regex) for d in algo.metric_definitions])
    return [(name, re.compile(regex)) for name, regex in pairs]


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


def _exit_text(exit: HostExit) -> str:
    if exit.volume_full_gb is not None:
        return (
            f"{exit.host} ran out of disk: its volume of {exit.volume_full_gb} GB (resource_config.volume_size_in_gb) "
            f"is full (exit code {exit.exit_code}) — raise volume_size_in_gb or write less"
        )
    if exit.oom_killed:
        return (
            f"{exit.host} was killed for running out of memory (exit code {exit.exit_code}) — "
            "pick an instance type with more memory or use less"
        )
    return f"{exit.host} exited with code {exit.exit_code}"


def plan_outcome(exits: list[HostExit], stop: StopReason | None, stopped: frozenset[str] = frozenset()) -> Outcome:
    """Decide the outcome from every host's exit and any stop that was asked for; `stopped`: the
    instances dockyard stopped because another failed (that one says why the job failed)."""
    if stop is not None:
        match stop.kind:
            case StopKind.MAX_RUNTIME:
                return Outcome(
                    ending=Ending.MAX_RUNTIME_EXCEEDED,
                    message="Training job reached its MaxRuntimeInSeconds and was stopped",
                )
            case StopKind.MAX_WAIT:
                return Outcome(
                    ending=Ending.MAX_WAIT_TIME_EXCEEDED,
                    message="Training job reached its MaxWaitTimeInSeconds and was stopped",
                )
            case StopKind.PIPE_FAILED:
                return Outcome(
                    ending=Ending.FAILED,
                    failure_reason=f"ClientError: {stop.detail}"[: contract.FAILURE_REASON_LIMIT],
                    message="Input data could not be streamed",
                )
            case StopKind.INTERRUPTED:
                return Outcome(ending=Ending.INTERRUPTED, message=stop.detail)
            case StopKind.REQUESTED:
                return Outcome(ending=Ending.STOPPED, message=f"Training job stopped: {stop.detail}")
    failed = sorted((e for e in exits if e.exit_code != 0), key=lambda e: e.host in stopped)
    if not failed:
        return Outcome(ending=Ending.COMPLETED, message="Training job completed")
    first = next((e for e in failed if e.volume_full_gb is not None), None)
    first = first or next((e for e in failed if e.failure_text), failed[0])
    if first.failure_text and first.volume_full_gb is None:
        reason = f"AlgorithmError: {first.failure_text}"
    else:
        tail = "\n".join(first.last_lines[-5:])
        reason = f"AlgorithmError: {_exit_text(first)}" + (f"; last lines:\n{tail}" if tail else "")
    return Outcome(
        ending=Ending.FAILED, failure_reason=reason[: contract.FAILURE_REASON_LIMIT], message=_exit_text(first)
    )


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
        # Prefect's settings and run context live in context variables.
        self.context = contextvars.copy_context()

    def run(self) -> None:
        self.context.run(self.follow)

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
        text = mask_text(raw, self.masked)
        self.last_lines.append(text)
        self.logger.info(f"[{self.host}] {text}")
        job_log.append(self.home, self.job, f"[{self.host}] {text}")
        values = scrape(raw, self.definitions)  # a metric's value is read as printed
        if values:
            at = now()
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


def _read_failure(scratch: str) -> str | None:
    path = contract.host_layout(scratch).failure_file
    try:
        with open(path, errors="replace") as f:
            return f.read(contract.FAILURE_REASON_LIMIT).strip() or None
    except FileNotFoundError:
        return None


def _deadlines(spec: TrainingJobSpec, record: JobRecord) -> tuple[float, float | None]:
    """(runtime deadline, max-wait deadline) as epoch seconds.

    Runtime counts the instances' running time over every attempt, so pending
    for spot capacity does not use it up; max wait counts from the job's creation.
    """
    at = now()
    budget = spec.stopping_condition.max_runtime_in_seconds - running_seconds(record.attempts, at)
    wait = spec.stopping_condition.max_wait_time_in_seconds
    max_wait = record.creation_time.timestamp() + wait if spec.enable_managed_spot_training and wait else None
    return at.timestamp() + budget, max_wait


def _requested_stop(store: JobStore, name: str, flow_run_id: str | None, ask_prefect: bool) -> StopReason | None:
    """A stop asked for through `dockyard jobs stop`, a tuning rule or Prefect cancellation, if any."""
    requested = store.stop_requested(name)
    if requested:
        return StopReason(kind=StopKind.REQUESTED, detail=requested)
    if ask_prefect and flow_run_id:
        try:
            if prefect_api.cancel_requested(flow_run_id):
                return StopReason(kind=StopKind.REQUESTED, detail="cancelled in Prefect")
        except Exception:  # noqa: BLE001 - an unreachable API is no reason to stop training
            return None
    return None


class _Watch:
    """Waits until every container, here and in the parts on other machines, exits or a stop is due."""

    def __init__(
        self, containers: dict[str, str], settings: Settings, name: str, syncs: list[CheckpointSync], peers: Peers
    ) -> None:
        self.containers, self.settings, self.name, self.syncs = containers, settings, name, syncs
        self.peers = peers
        self.store = open_store(settings)
        self.lost_contact = settings.monitor_lost_contact_seconds
        self.lost_contact_seen = False  # the engine was unreachable at some point
        self.notice_seconds: float | None = None  # set by a spot interruption
        self.stopped_after_failure: set[str] = set()  # stopped by dockyard because another instance failed

    def running(self) -> list[str]:
        """The instances still running, here and in the parts (which may raise TransientInfraError:
        a part's host went silent). Once one has failed, the others are stopped, as a job with a
        failed instance fails: its peers, waiting for it, would only wait until their own timeouts."""
        states = {h: docker_engine.state(cid) for h, cid in self.containers.items()}
        here = [h for h, st in states.items() if st.get("Status") not in ("exited", "dead")]
        running = here + self.peers.running()
        failed = any(int(st.get("ExitCode") or 0) != 0 for h, st in states.items() if h not in here)
        if running and not self.stopped_after_failure and (failed or self.peers.failed()):
            self.stopped_after_failure = set(running)
            grace = self.settings.stop_grace_seconds
            job_log.report(
                self.settings.home, self.name, f"an instance failed: stopping the others ({', '.join(running)})"
            )
            self.peers.stop(grace)
            stop_all([self.containers[h] for h in here], grace)
        return running

    def wait(self, deadline: float, max_wait: float | None, flow_run_id: str | None) -> StopReason | None:
        """Returns why to stop, or None when the containers ended on their own.

        Raises:
            TransientInfraError: the Docker engine or the job store stayed unreachable
                for monitor_lost_contact_seconds.
        """
        lost = {"the Docker engine": 0.0, "the job store": 0.0}  # unreachable since (monotonic), 0: reachable
        pause = FIRST_POLL_SECONDS
        next_prefect_check = time.monotonic() + PREFECT_CHECK_SECONDS
        while True:
            try:
                running = self.running()
                lost["the Docker engine"] = 0.0
            except TransientInfraError:
                raise  # a part's host went silent
            except Exception as exc:  # noqa: BLE001 - an unreachable or slow engine starts a deadline, not a failure
                self.lost_contact_seen = True
                self._lost("the Docker engine", lost, exc)
                running = list(self.containers)
            if not running:
                return None
            still_held(self.name)
            ask_prefect = time.monotonic() >= next_prefect_check
            if ask_prefect:
                next_prefect_check = time.monotonic() + PREFECT_CHECK_SECONDS
            try:
                stop = self._due(deadline, max_wait, flow_run_id, ask_prefect)
                lost["the job store"] = 0.0
            except SQLAlchemyError as exc:  # a database restart is no reason to stop training
                self._lost("the job store", lost, exc)
                stop = None
            if stop is not None:
                return stop
            time.sleep(pause)
            pause = min(pause * 1.5, POLL_SECONDS)

    def _lost(self, what: str, lost: dict[str, float], exc: Exception) -> None:
        lost[what] = lost[what] or time.monotonic()
        if time.monotonic() - lost[what] > self.lost_contact:
            raise TransientInfraError(f"lost contact with {what} for {self.lost_contact:.0f} s: {exc}") from exc

    def _due(
        self, deadline: float, max_wait: float | None, flow_run_id: str | None, ask_prefect: bool
    ) -> StopReason | None:
        """A stop that is due now: a stopping condition, a spot notice, a broken Pipe, a request."""
        if time.time() >= deadline:
            return StopReason(kind=StopKind.MAX_RUNTIME)
        if max_wait is not None:  # a spot job: it has a max wait, and a market to ask
            if time.time() >= max_wait:
                return StopReason(kind=StopKind.MAX_WAIT)
            try:
                spot.check(self.settings, self.name, sum(s.uploads for s in self.syncs))
            except SpotInterruption as notice:
                self.notice_seconds = notice.notice_seconds
                return StopReason(kind=StopKind.INTERRUPTED, detail=str(notice))
        broken = pipe.failure(self.name)
        if broken:
            return StopReason(kind=StopKind.PIPE_FAILED, detail=broken)
        return _requested_stop(self.store, self.name, flow_run_id, ask_prefect)


SIGNAL_EXITS = {128 + 15: "SIGTERM", 128 + 9: "SIGKILL"}


def platform_fault(
    exits: list[HostExit], stop: StopReason | None, lost_contact: bool, stopped: frozenset[str] = frozenset()
) -> str | None:
    """Why the containers' end was the infrastructure's doing, not the user code's, if it was.

    A container killed by a signal dockyard did not send (the Docker daemon
    restarting, the host shutting down, someone's `docker stop`) did not fail
    on its own; nor did one that ended while the engine was unreachable. `stopped`: the
    instances dockyard stopped because another failed.
    """
    if stop is not None:
        return None
    for e in exits:
        if e.exit_code in SIGNAL_EXITS and not e.oom_killed and e.host not in stopped:
            return (
                f"{e.host} was killed by {SIGNAL_EXITS[e.exit_code]}, which dockyard did not send "
                "(the Docker daemon restarting, the host shutting down, or a `docker stop`)"
            )
    if lost_contact and any(e.exit_code != 0 for e in exits):
        return "the Docker engine went away during training and took the containers with it"
    return None


def checkpoint_syncs(
    provisioned: ProvisionPlan, endpoint_url: str | None, report: Callable[[str], None]
) -> list[CheckpointSync]:
    syncs = [
        CheckpointSync(contract.host_layout(h.scratch).checkpoints, h.checkpoint_uri, endpoint_url, report)
        for h in provisioned.hosts
        if h.checkpoint_uri
    ]
    for sync in syncs:
        sync.start()
    return syncs


def host_exits(
    followers: list[Follower], scratch: dict[str, str], settings: Settings, name: str, hidden: frozenset[str]
) -> list[HostExit]:
    """How each followed container ended, its failure file and last lines masked."""
    exits = []
    for follower in followers:
        # Asked again while the engine is slow to answer, as the watch waits for it.
        state = with_backoff(
            functools.partial(docker_engine.state, follower.container_id), settings.monitor_lost_contact_seconds, 1.0
        )
        failure_text = _read_failure(scratch[follower.host])
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


@task(name="monitor", cache_policy=NONE)
def monitor(
    spec: TrainingJobSpec,
    provisioned: ProvisionPlan,
    containers: dict[str, str],
    settings: Settings,
    reattached: bool = False,
    parts: tuple[Part, ...] = (),
) -> Outcome:
    """Watch the containers until they end, with the `parts` of the job on other machines
    (tasks/peers.py); returns the Outcome.

    Not retried: a second watcher would see the same containers.

    Raises:
        TransientInfraError: the engine went away and took the containers with it.
    """
    logger = get_run_logger()
    name = spec.training_job_name
    definitions = compile_definitions(spec)
    since = now() if reattached else None
    hidden = secret_blocks.values(spec)
    followers = [Follower(h, cid, settings, name, definitions, logger, since, hidden) for h, cid in containers.items()]
    for follower in followers:
        follower.start()
    profiler = Profiler(spec, provisioned, containers, settings, scrapes=bool(definitions))
    if profiler.needed:
        profiler.start()
    try:
        outcome = _watch(spec, provisioned, containers, settings, reattached, followers, hidden, parts)
    finally:
        profiler.halt.set()  # on the way out of a failure too: no sampling of containers that are gone
    profiler.finish(final=outcome.ending is not Ending.INTERRUPTED)  # an interrupted job comes back
    return outcome


def _watch(
    spec: TrainingJobSpec,
    provisioned: ProvisionPlan,
    containers: dict[str, str],
    settings: Settings,
    reattached: bool,
    followers: list[Follower],
    hidden: frozenset[str],
    parts: tuple[Part, ...],
) -> Outcome:
    """monitor's body: wait for the containers' end or a stop, then decide the outcome."""
    name = spec.training_job_name
    store = open_store(settings)

    def report(message: str) -> None:
        job_log.report(settings.home, name, message)

    syncs = checkpoint_syncs(provisioned, settings.s3_endpoint_url, report)
    record = store.get(name)
    deadline, max_wait = _deadlines(spec, record)
    peers = Peers(settings, parts)
    watch = _Watch(containers, settings, name, syncs, peers)
    # A stop under way when the orchestrator died is carried on, not asked again.
    stop = record.stop_reason if reattached and record.secondary is not SecondaryStatus.TRAINING else None
    if reattached and stop is None and record.secondary is SecondaryStatus.STOPPING:
        stop = StopReason(kind=StopKind.REQUESTED, detail="a stop was under way when the orchestrator died")
    already_stopping = stop is not None
    try:
        if not already_stopping:
            stop = watch.wait(deadline, max_wait, record.flow_run_id)
    except (KeyboardInterrupt, TerminationSignal) as interrupt:
        detail = "interrupted by Ctrl-C" if isinstance(interrupt, KeyboardInterrupt) else "SIGTERM"
        stop = StopReason(kind=StopKind.REQUESTED, detail=detail)
    if stop is not None:
        grace = settings.stop_grace_seconds
        if watch.notice_seconds is not None:
            grace = watch.notice_seconds  # the reclaim comes when the notice runs out
        elif not already_stopping:
            # A job reattached past Training (Uploading) has no training left to stop.
            with contextlib.suppress(StatusConflict):
                move(
                    settings,
                    name,
                    SecondaryStatus.TRAINING,
                    SecondaryStatus.STOPPING,
                    f"Stopping: {stop}",
                    stop_reason=stop,
                )
        count = len(containers) + sum(len(p.instances) for p in parts)
        report(f"stopping {count} instance(s): SIGTERM, SIGKILL after {grace:g} s")
        peers.stop(grace)
        stop_all(list(containers.values()), grace)
    for follower in followers:
        follower.join(timeout=10)
    for sync in syncs:
        uploaded, deleted = sync.final_sync()
        report(
            f"checkpoints synced to {sync.uri}: {sync.uploads} upload(s) in all, "
            f"{uploaded} at the final sync, {deleted} deletion(s)"
        )
    exits = host_exits(followers, {h.host: h.scratch for h in provisioned.hosts}, settings, name, hidden)
    while peers.running():  # the parts' final syncs and archives, then their reports
        time.sleep(POLL_SECONDS)
    peers.not_started()
    exits += peers.exits()
    broken = pipe.failure(name)  # set before the reader met the cut epoch's end, so never missed
    if broken and stop is None:
        stop = StopReason(kind=StopKind.PIPE_FAILED, detail=broken)
    stopped = frozenset(watch.stopped_after_failure)
    fault = platform_fault(exits, stop, watch.lost_contact_seen, stopped)
    if fault:
        raise TransientInfraError(fault)
    outcome = plan_outcome(exits, stop, stopped)
    report(f"containers ended: {outcome.message}")
    return outcome
