"""One machine's part of a job whose instances span machines (tasks/peers.py is
the orchestrator's side): make, stage, run and watch the instances granted on
this fleet host, sync their checkpoints, and once they have ended leave their
model and output data for persist, clean up, and report how they ended.

The part moves no status: the orchestrator, on algo-1's machine, does. It
stops its containers when the orchestrator asks, or when the attempt it
belongs to is over (the orchestrator died and another restarted the job, or
the job ended); a part that starts after that does nothing.
"""

from __future__ import annotations

import functools
import logging
import os
import tempfile
import time

from prefect import get_run_logger

from dockyard import contract
from dockyard.outcome import HostExit
from dockyard.secrets import mask_text
from dockyard.settings import Settings
from dockyard.spec import TrainingJobSpec
from dockyard.status import is_final
from infra import docker_engine, job_log, pipe, storage
from infra import secrets as secret_blocks
from infra.fleet import Fleet
from infra.job_store import open_store
from infra.retry import is_transient, with_backoff
from tasks.follow import Follower, checkpoint_syncs, compile_definitions, host_exits, stop_all
from tasks.peers import NOT_STARTED, NOT_STARTED_TRANSIENT, PIPE_BROKEN
from tasks.persist import MODEL, OUTPUT, archive_uri, pack
from tasks.provision import PART_CLEANUP_PATIENCE, ProvisionPlan, make_instances, plan_here, remove_instances
from tasks.pull_image import pull_image
from tasks.run import run
from tasks.stage_data import stage_data

POLL_SECONDS = 0.5
REPORT_PATIENCE = 600.0  # how long a report waits out a job store that does not answer


def told_to_stop(spec: TrainingJobSpec, attempt: int, settings: Settings) -> float | None:
    """The grace to stop the part's containers with, once the orchestrator asked for it or the
    part's attempt is over; None while they should run on."""
    name = spec.training_job_name
    part = Fleet(open_store(settings)).part(name, attempt, settings.fleet_host or "")
    if part is not None and part.stop_grace is not None:
        return part.stop_grace
    record = open_store(settings).get(name)
    over = is_final(record.status.secondary) or len(record.attempts) != attempt or record.attempts[-1].end is not None
    return settings.stop_grace_seconds if over else None


def _running(containers: dict[str, str]) -> bool:
    return any(docker_engine.state(cid).get("Status") not in ("exited", "dead") for cid in containers.values())


def watch_part(
    spec: TrainingJobSpec, plan: ProvisionPlan, containers: dict[str, str], settings: Settings, attempt: int
) -> tuple[list[HostExit], str | None]:
    """Follow the containers' output into the log and metrics and sync their checkpoints until
    they end or are told to stop; returns how they ended, and why a Pipe channel broke if one did.
    The engine and the job store unreachable for a while are waited out, as the monitor does."""
    name = spec.training_job_name

    def report(message: str) -> None:
        job_log.report(settings.home, name, message)

    hidden = secret_blocks.values(spec)
    followers = [
        Follower(h, cid, settings, name, compile_definitions(spec), get_run_logger(), hidden=hidden)
        for h, cid in containers.items()
    ]
    for follower in followers:
        follower.start()
    syncs = checkpoint_syncs(plan, settings.s3_endpoint_url, report)
    broken = None
    patience = settings.monitor_lost_contact_seconds
    while with_backoff(functools.partial(_running, containers), patience, 1.0):
        grace = with_backoff(functools.partial(told_to_stop, spec, attempt, settings), patience, 1.0)
        broken = pipe.failure(name)
        if broken:
            grace = settings.stop_grace_seconds
        if grace is not None:
            report(f"stopping {', '.join(containers)}: SIGTERM, SIGKILL after {grace:g} s")
            stop_all(list(containers.values()), grace)
            break
        time.sleep(POLL_SECONDS)
    for follower in followers:
        follower.join(timeout=10)
    for sync in syncs:
        uploaded, deleted = sync.final_sync()
        report(f"checkpoints synced to {sync.uri}: {sync.uploads} upload(s), {uploaded} at the end, {deleted} deleted")
    exits = host_exits(followers, {h.host: h.scratch for h in plan.hosts}, settings, name, hidden)
    return exits, broken or pipe.failure(name)


def leave_archives(spec: TrainingJobSpec, plan: ProvisionPlan, settings: Settings, attempt: int) -> None:
    """Pack the instances' /opt/ml/model and /opt/ml/output/data where persist finds them."""
    with tempfile.TemporaryDirectory(prefix="dockyard-part-") as tmp:
        for kind in (MODEL, OUTPUT):
            layouts = [contract.host_layout(h.scratch) for h in plan.hosts]
            sources = tuple(layout.model if kind == MODEL else layout.output_data for layout in layouts)
            archive = os.path.join(tmp, f"{kind}.tar.gz")
            pack(sources, archive)
            uri = archive_uri(spec, attempt, settings.fleet_host or "", kind)
            storage.upload_file(archive, uri, settings.s3_endpoint_url)


def _failed(plan: ProvisionPlan, host: str, exc: Exception, hidden: frozenset[str]) -> list[HostExit]:
    """What a part that could not run its instances reports: for now or for good, and why."""
    code = NOT_STARTED_TRANSIENT if is_transient(exc) else NOT_STARTED
    why = mask_text(f"{type(exc).__name__}: {exc}", hidden)
    return [
        HostExit(host=h.host, exit_code=code, failure_text=f"{h.host} could not be run on host {host}: {why}")
        for h in plan.hosts
    ]


def _cut_short(exits: list[HostExit]) -> bool:
    return all(e.exit_code == NOT_STARTED_TRANSIENT for e in exits)


def run_part(spec: TrainingJobSpec, attempt: int, settings: Settings) -> list[HostExit]:
    """The part of attempt `attempt` of the job on this fleet host, from making its instances
    to reporting how they ended; returns that."""
    name, host = spec.training_job_name, settings.fleet_host or ""
    fleet = Fleet(open_store(settings))
    if told_to_stop(spec, attempt, settings) is not None:  # started late: its attempt is over
        job_log.report(settings.home, name, f"attempt {attempt} is over before its part on host {host} started")
        fleet.report_part(name, attempt, host, [])
        return []
    deadline = time.monotonic() + 30  # the orchestrator records the part just after submitting its run
    while (mine := fleet.part(name, attempt, host)) is None and time.monotonic() < deadline:
        time.sleep(0.5)
    wanted = set(mine.instances) if mine else set()
    plan = plan_here(spec, settings)
    plan = plan.model_copy(update={"hosts": tuple(h for h in plan.hosts if h.host in wanted)})
    # Reported should the part be cut short (its worker stopped, the run cancelled): not "none ran".
    exits = [
        HostExit(host=h.host, exit_code=NOT_STARTED_TRANSIENT, failure_text=f"{h.host}: its part on host {host} "
                 "was interrupted before it ended (its worker stopped?)")
        for h in plan.hosts
    ]  # fmt: skip
    made = False
    try:
        fleet.await_earlier_parts(name, attempt, host, settings.stop_grace_seconds + PART_CLEANUP_PATIENCE)
        made = True
        make_instances(spec, plan, settings)
        stage_data(spec, plan, settings, as_part=True)
        image = pull_image(spec, settings, as_part=True)
        broken = None
        if told_to_stop(spec, attempt, settings) is None:
            containers = run(spec, plan, image, settings, as_part=True)
            exits, broken = watch_part(spec, plan, containers, settings, attempt)
        else:
            exits = []  # stopped before its containers started
        leave_archives(spec, plan, settings, attempt)
        if broken:
            exits = [HostExit(host=e.host, exit_code=PIPE_BROKEN, failure_text=broken) for e in exits]
    except Exception as exc:  # noqa: BLE001 - reported to the orchestrator, which decides the job's end
        job_log.report(settings.home, name, f"this part failed: {type(exc).__name__}: {exc}", logging.ERROR)
        if exits and _cut_short(exits):  # no real exits yet: say why
            exits = _failed(plan, host, exc, secret_blocks.values(spec))
    finally:
        if made:  # before the report: the next attempt's instances here wait for it
            try:
                removed = remove_instances(name, plan.scratch_root, engine_may_be_gone=True)
                job_log.append(settings.home, name, f"removed {removed} Docker object(s) and the scratch space")
            except Exception as exc:  # noqa: BLE001 - the report must go out all the same
                job_log.report(settings.home, name, f"could not clean up: {exc}", logging.WARNING)
        with_backoff(lambda: fleet.report_part(name, attempt, host, exits), REPORT_PATIENCE, 1.0)
        ended = ", ".join(f"{e.host} exit code {e.exit_code}" for e in exits) or "none started"
        job_log.report(settings.home, name, f"reported to the orchestrator: {ended}")
    return exits
