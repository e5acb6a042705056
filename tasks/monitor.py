"""Stage 6, monitor: logs, metrics, stopping conditions, and the outcome.

Streams every host's output (prefixed by host) to the job log and Prefect's
logger, scrapes metric_definitions into time series (tasks/follow.py), enforces
max_runtime_in_seconds, stops gracefully on a stop request, Ctrl-C, SIGTERM
or Prefect cancellation, and decides how the containers ended, with those of
the job's parts on other machines (tasks/peers.py).
"""

from __future__ import annotations

import contextlib
import threading
import time

from prefect import get_run_logger, task
from prefect.cache_policies import NONE
from prefect.exceptions import TerminationSignal
from sqlalchemy.exc import SQLAlchemyError

from dockyard import clarify, contract
from dockyard.errors import LeaseLost, SpotInterruption, StatusConflict, TransientInfraError
from dockyard.fleet import Part
from dockyard.outcome import Ending, HostExit, Outcome, StopKind, StopReason
from dockyard.record import JobRecord
from dockyard.settings import Settings
from dockyard.spec import TrainingJobSpec
from dockyard.spot import running_seconds
from dockyard.status import SecondaryStatus
from infra import docker_engine, job_log, pipe, prefect_api, spot
from infra import secrets as secret_blocks
from infra.checkpoint_sync import CheckpointSync
from infra.job_store import JobStore, now, open_store
from tasks.follow import Follower, checkpoint_syncs, compile_definitions, host_exits, stop_all
from tasks.peers import Peers
from tasks.profiler import Profiler
from tasks.provision import ProvisionPlan
from tasks.status import move
from tasks.validate import still_held

# Poll fast at first (short jobs end fast), then settle at half a second.
FIRST_POLL_SECONDS = 0.05
POLL_SECONDS = 0.5
PREFECT_CHECK_SECONDS = 2.0  # how often to ask Prefect whether the run was cancelled


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


def plan_outcome(
    exits: list[HostExit], stop: StopReason | None, stopped: frozenset[str] = frozenset(), kind: str = "training"
) -> Outcome:
    """Decide the outcome from every host's exit and any stop that was asked for; `stopped`: the
    instances dockyard stopped because another failed (that one says why the job failed); `kind`:
    the job's (training or processing), for the messages."""
    job = f"{kind.capitalize()} job"
    if stop is not None:
        match stop.kind:
            case StopKind.MAX_RUNTIME:
                return Outcome(
                    ending=Ending.MAX_RUNTIME_EXCEEDED,
                    message=f"{job} reached its MaxRuntimeInSeconds and was stopped",
                )
            case StopKind.MAX_WAIT:
                return Outcome(
                    ending=Ending.MAX_WAIT_TIME_EXCEEDED,
                    message=f"{job} reached its MaxWaitTimeInSeconds and was stopped",
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
                return Outcome(ending=Ending.STOPPED, message=f"{job} stopped: {stop.detail}")
    failed = sorted((e for e in exits if e.exit_code != 0), key=lambda e: e.host in stopped)
    if not failed:
        return Outcome(ending=Ending.COMPLETED, message=f"{job} completed")
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
        # Set as a container here exits, so the watch sees the end at once rather than at its next look.
        self.exited = threading.Event()
        for container_id in containers.values():
            threading.Thread(target=self._await_exit, args=(container_id,), name="exit-watch", daemon=True).start()

    def _await_exit(self, container_id: str) -> None:
        docker_engine.wait_for_exit(container_id)
        self.exited.set()

    def running_here(self) -> tuple[list[str], bool]:
        """The instances on this machine still running, and whether one that ended failed."""
        states = {h: docker_engine.state(cid) for h, cid in self.containers.items()}
        here = [h for h, st in states.items() if st.get("Status") not in ("exited", "dead")]
        return here, any(int(st.get("ExitCode") or 0) != 0 for h, st in states.items() if h not in here)

    def stop_after_failure(self, here: list[str], running: list[str]) -> None:
        """One instance failed: stop the others, as a job with a failed instance fails (its peers,
        waiting for it, would only wait until their own timeouts)."""
        self.stopped_after_failure = set(running)
        grace = self.settings.stop_grace_seconds
        job_log.report(self.settings.home, self.name, f"an instance failed: stopping the others ({', '.join(running)})")
        self.peers.stop(grace)
        stop_all([self.containers[h] for h in here], grace)

    def wait(self, deadline: float, max_wait: float | None, flow_run_id: str | None) -> StopReason | None:
        """Returns why to stop, or None when the containers, here and in the parts, ended on their own.

        Raises:
            TransientInfraError: the Docker engine or the job store stayed unreachable
                for monitor_lost_contact_seconds, or a part's host was lost (tasks/peers.py).
        """
        lost = {"the Docker engine": 0.0, "the job store": 0.0}  # unreachable since (monotonic), 0: reachable
        pause = FIRST_POLL_SECONDS
        next_prefect_check = time.monotonic() + PREFECT_CHECK_SECONDS
        while True:
            failed = False
            try:
                here, failed = self.running_here()
                lost["the Docker engine"] = 0.0
            except Exception as exc:  # noqa: BLE001 - an unreachable or slow engine starts a deadline, not a failure
                self.lost_contact_seen = True
                self._lost("the Docker engine", lost, exc)
                here = list(self.containers)
            try:
                there = self.peers.running()
                failed = failed or self.peers.failed()
                lost["the job store"] = 0.0
            except SQLAlchemyError as exc:  # a database restart is no reason to stop training
                self._lost("the job store", lost, exc)
                there = [i for p in self.peers.parts for i in p.instances]
            running = here + there
            if not running:
                return None
            if failed and not self.stopped_after_failure:
                self.stop_after_failure(here, running)
            still_held(self.name)
            ask_prefect = time.monotonic() >= next_prefect_check
            if ask_prefect:
                next_prefect_check = time.monotonic() + PREFECT_CHECK_SECONDS
            try:
                stop = self._due(deadline, max_wait, flow_run_id, ask_prefect)
                lost["the job store"] = 0.0
            except SQLAlchemyError as exc:
                self._lost("the job store", lost, exc)
                stop = None
            if stop is not None:
                return stop
            if self.exited.wait(pause):
                self.exited.clear()
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
        broken = pipe.failure(self.name) or self.peers.broken_pipe()
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
    # A Clarify job's served model (tasks/run.py plan_shadow): its lines too, until the processors end.
    shadow_id = _served_model_container(spec)
    shadow = Follower(clarify.SHADOW_HOST, shadow_id, settings, name, [], logger, since, hidden) if shadow_id else None
    if shadow is not None:
        shadow.start()
    profiler = Profiler(spec, provisioned, containers, settings, scrapes=bool(definitions))
    if profiler.needed:
        profiler.start()
    handed_on = False  # another orchestrator has the job: what serves it is its to stop
    try:
        outcome = _watch(spec, provisioned, containers, settings, reattached, followers, hidden, parts)
    except LeaseLost:
        handed_on = True
        raise
    finally:
        profiler.halt.set()  # on the way out of a failure too: no sampling of containers that are gone
        if shadow is not None and shadow_id is not None and not handed_on:
            stop_all([shadow_id], 2)
            shadow.join(timeout=10)
    profiler.finish(final=outcome.ending is not Ending.INTERRUPTED)  # an interrupted job comes back
    return outcome


def _served_model_container(spec: TrainingJobSpec) -> str | None:
    """The container serving a Clarify job's model (tasks/run.py plan_shadow), if the job has one
    and the engine answers."""
    if spec.processing is None or spec.processing.served_model_image is None:
        return None
    try:
        return docker_engine.job_containers(spec.training_job_name).get(clarify.SHADOW_HOST)
    except Exception:  # noqa: BLE001 - its lines are a help, not the job's: the watch goes on without them
        return None


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

    syncs = checkpoint_syncs(provisioned, settings.s3_endpoint_url, report, spec)
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
            f"{sync.what} synced to {sync.uri}: {sync.uploads} upload(s) in all, "
            f"{uploaded} at the final sync, {deleted} deletion(s)"
        )
    exits = host_exits(
        followers, {h.host: h.scratch for h in provisioned.hosts}, settings, name, hidden, spec.processing is not None
    )
    try:
        while peers.running():  # the parts' final syncs and archives, then their reports
            time.sleep(POLL_SECONDS)
    except TransientInfraError as exc:
        if stop is None and not watch.stopped_after_failure:
            raise
        report(f"warning: {exc}; the job ends as it was stopped all the same")
    peers.not_started()
    exits += peers.exits()
    broken = pipe.failure(name) or peers.broken_pipe()  # set before the reader met the cut epoch's end
    if broken and stop is None:
        stop = StopReason(kind=StopKind.PIPE_FAILED, detail=broken)
    stopped = frozenset(watch.stopped_after_failure)
    fault = platform_fault(exits, stop, watch.lost_contact_seen, stopped)
    if fault:
        raise TransientInfraError(fault)
    outcome = plan_outcome(exits, stop, stopped, spec.kind)
    report(f"containers ended: {outcome.message}")
    return outcome
