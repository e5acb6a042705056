"""One machine's part of a job whose instances span machines (tasks/peers.py is
the orchestrator's side): make, stage, run and watch the instances granted on
this fleet host, sync their checkpoints, and once they have ended leave their
model and output data for persist, report how they ended, and clean up.

The part moves no status: the orchestrator, on algo-1's machine, does. It
stops its containers when the orchestrator asks, or when the attempt it
belongs to is over (the orchestrator died and another restarted the job, or
the job ended).
"""

from __future__ import annotations

import logging
import os
import tempfile
import time

from prefect import get_run_logger

from dockyard import contract
from dockyard.outcome import HostExit
from dockyard.settings import Settings
from dockyard.spec import TrainingJobSpec
from dockyard.status import is_final
from infra import docker_engine, job_log, storage
from infra import secrets as secret_blocks
from infra.fleet import Fleet
from infra.job_store import open_store
from infra.retry import with_backoff
from tasks.monitor import Follower, checkpoint_syncs, compile_definitions, host_exits, stop_all
from tasks.peers import NOT_STARTED
from tasks.persist import MODEL, OUTPUT, archive_uri, pack
from tasks.provision import ProvisionPlan, make_instances, plan_here, remove_instances
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


def watch_part(
    spec: TrainingJobSpec, plan: ProvisionPlan, containers: dict[str, str], settings: Settings, attempt: int
) -> list[HostExit]:
    """Follow the containers' output into the log and metrics and sync their checkpoints until
    they end or are told to stop; returns how they ended."""
    name = spec.training_job_name

    def report(message: str) -> None:
        job_log.report(settings.home, name, message)

    hidden = secret_blocks.values(spec)
    logger = get_run_logger()
    followers = [
        Follower(h, cid, settings, name, compile_definitions(spec), logger, hidden=hidden)
        for h, cid in containers.items()
    ]
    for follower in followers:
        follower.start()
    syncs = checkpoint_syncs(plan, settings.s3_endpoint_url, report)
    while any(docker_engine.state(cid).get("Status") not in ("exited", "dead") for cid in containers.values()):
        grace = told_to_stop(spec, attempt, settings)
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
    return host_exits(followers, {h.host: h.scratch for h in plan.hosts}, settings, name, hidden)


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


def _after_the_last_part(spec: TrainingJobSpec, attempt: int, settings: Settings) -> None:
    """Wait until an earlier attempt's part on this host has cleaned up (it removes the job's
    containers here before it reports), for at most the stop grace and REPORT_PATIENCE."""
    fleet = Fleet(open_store(settings))
    deadline = time.monotonic() + settings.stop_grace_seconds + REPORT_PATIENCE
    earlier = [fleet.part(spec.training_job_name, a, settings.fleet_host or "") for a in range(1, attempt)]
    for part in (p for p in earlier if p is not None and p.exits is None):
        while (now_part := fleet.part(part.job_name, part.attempt, part.host)) and now_part.exits is None:
            if time.monotonic() > deadline:
                return  # its worker died with it: nothing is cleaning up
            time.sleep(POLL_SECONDS)


def run_part(spec: TrainingJobSpec, attempt: int, settings: Settings) -> list[HostExit]:
    """The part of attempt `attempt` of the job on this fleet host, from making its instances
    to reporting how they ended; returns that."""
    name, host = spec.training_job_name, settings.fleet_host or ""
    plan = plan_here(spec, settings).part(host)
    exits: list[HostExit] = []
    try:
        _after_the_last_part(spec, attempt, settings)
        make_instances(spec, plan, settings)
        stage_data(spec, plan, settings, as_part=True)
        image = pull_image(spec, settings, as_part=True)
        if told_to_stop(spec, attempt, settings) is None:
            containers = run(spec, plan, image, settings, as_part=True)
            exits = watch_part(spec, plan, containers, settings, attempt)
        leave_archives(spec, plan, settings, attempt)
    except Exception as exc:  # noqa: BLE001 - reported to the orchestrator, which decides the job's end
        job_log.report(settings.home, name, f"this part failed: {type(exc).__name__}: {exc}", logging.ERROR)
        if not exits:
            exits = [
                HostExit(
                    host=h.host,
                    exit_code=NOT_STARTED,
                    failure_text=f"{h.host} could not be run on host {host}: {type(exc).__name__}: {exc}",
                )
                for h in plan.hosts
            ]
    finally:
        try:  # before the report: the next attempt's part on this host waits for it
            removed = remove_instances(name, plan.scratch_root, engine_may_be_gone=True)
            job_log.append(settings.home, name, f"removed {removed} Docker object(s) and the scratch space")
        except Exception as exc:  # noqa: BLE001 - the report must go out all the same
            job_log.report(settings.home, name, f"could not clean up: {exc}", logging.WARNING)
        fleet = Fleet(open_store(settings))
        with_backoff(lambda: fleet.report_part(name, attempt, host, exits), REPORT_PATIENCE, 1.0)
        ended = ", ".join(f"{e.host} exit code {e.exit_code}" for e in exits) or "none started"
        job_log.report(settings.home, name, f"reported to the orchestrator: {ended}")
    return exits
