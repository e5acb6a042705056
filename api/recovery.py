"""Jobs of the SageMaker API whose orchestrator died go back to their work pool.

A worker's flow run orchestrates a job while holding its lease. When that
process dies (the worker stopped, the machine rebooted, a SIGKILL) the lease
lapses; `dockyard serve` then hands the job to the work pool again as a new
flow run, which picks it up as a rerun on the command line does: it reattaches
to the job's containers when they still run, else restarts it from its
checkpoints. Jobs started from the command line are left to their command.

It also gives back the fleet grants of jobs that ended without giving them
back themselves (their orchestrator died in its teardown).
"""

from __future__ import annotations

import contextlib
import logging
import threading

from api.training import Context, submit
from dockyard.errors import DockyardError, LeaseHeld
from dockyard.record import JobRecord
from dockyard.status import is_final
from infra import job_log, prefect_api
from infra.fleet import Fleet
from infra.job_store import now
from tasks.validate import lease_name
from tasks.warm_pool import sweep

log = logging.getLogger("dockyard.api")


def orphans(ctx: Context) -> list[JobRecord]:
    """Unfinished jobs of a work pool that no live orchestrator holds and no live flow run is
    queued for (a run queued for a fleet host that went silent counts as none)."""
    found = []
    silent = _silent_hosts(ctx)
    fleet = Fleet(ctx.store)
    for record in ctx.store.unfinished():
        if record.work_pool is None or ctx.store.lease_live(lease_name(record.name)):
            continue
        waiting = record.queued and (record.flow_run_id is None or not prefect_api.run_ended(record.flow_run_id))
        if waiting and not {g.host for g in fleet.grants(record.name)} & silent:
            continue  # waiting for a worker
        found.append(record)
    return found


def _silent_hosts(ctx: Context) -> set[str]:
    at = now()
    return {h.name for h in Fleet(ctx.store).hosts() if not h.live(at)}


def _queue_of(ctx: Context, name: str) -> str | None:
    """The work queue of the fleet host the job holds its grants on, while that host is live: its
    worker may still have the job's containers. None (the pool's default queue) otherwise."""
    granted = {g.host for g in Fleet(ctx.store).grants(name)}
    return next(iter(granted)) if len(granted) == 1 and not granted & _silent_hosts(ctx) else None


def hand_back(ctx: Context, record: JobRecord) -> str | None:
    """Submit a new flow run for an orphaned job; its id, or None when another server did it first."""
    name, pool = record.name, record.work_pool or ctx.settings.work_pool
    try:  # one server of several resubmits it
        ctx.store.take_lease(f"resubmit/{name}", ctx.settings.lease_seconds)
    except LeaseHeld:
        return None

    def queue(current: JobRecord) -> JobRecord:
        if current.flow_run_id != record.flow_run_id:
            raise DockyardError("handed back already")
        return current.model_copy(update={"queued": True})

    try:
        ctx.store.change(name, queue)
    except DockyardError:
        return None
    if record.flow_run_id:
        with contextlib.suppress(Exception):  # the old run may be gone with its server
            prefect_api.mark_crashed(record.flow_run_id, "its orchestrator died; the job went back to the work pool")
    flow = "process" if record.kind == "processing" else "train"
    tags = ["dockyard", f"{record.kind}-job", f"job:{name}", "sagemaker-api"]
    flow_run_id = submit(flow, pool, {"job": record.spec.model_dump(mode="json")}, name, tags, _queue_of(ctx, name))
    ctx.store.update(name, flow_run_id=flow_run_id)
    job_log.append(
        ctx.settings.home, name, f"its orchestrator died: handed back to work pool '{pool}' (flow run {flow_run_id})"
    )
    return flow_run_id


def release_ended(ctx: Context) -> list[str]:
    """Give back the fleet grants of jobs that ended (or are gone) with no live orchestrator; their names."""
    fleet = Fleet(ctx.store)
    holders = sorted({grant.job_name for grant in fleet.grants()})
    records = ctx.store.find_many(holders)
    released = []
    at = now()
    for name in holders:
        record = records.get(name)
        if record is not None and record.warm_pool is not None and record.warm_pool.available(at):
            continue  # the room a warm pool keeps
        ended = record is None or is_final(record.status.secondary)
        if ended and not ctx.store.lease_live(lease_name(name)) and fleet.release(name):
            job_log.append(ctx.settings.home, name, "its fleet grants were given back by a watch, not by its teardown")
            released.append(name)
    return released


def watch(ctx: Context, stop: threading.Event) -> None:
    """Hand orphaned API jobs back to their work pool, and give back the grants of ended
    jobs, every lease period, until `stop` is set."""
    while not stop.wait(ctx.settings.lease_seconds):
        try:
            for record in orphans(ctx):
                if hand_back(ctx, record):
                    log.warning("training job %s lost its orchestrator; handed back to its work pool", record.name)
            sweep(ctx.store, ctx.settings)  # warm pools past their period end; this machine's ended ones go
            for name in release_ended(ctx):
                log.warning("training job %s ended holding fleet grants; given back", name)
        except Exception:  # the watch goes on; the next round tries again
            log.exception("looking for orphaned jobs failed")
