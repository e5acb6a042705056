"""Warm pools (dockyard/warm_pool.py) carried out: taken over by a job that matches one
before it is placed, kept at a job's end, and ended when their period runs out.

A pool moves between records by compare-and-set on the record that holds it, so two
jobs never take over the same one; in a fleet its grants move with it (Fleet.hand_on),
and the room stays reserved while it waits.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from datetime import timedelta

from prefect import task
from prefect.cache_policies import NONE

from dockyard.errors import DockyardError
from dockyard.outcome import Outcome
from dockyard.record import JobRecord
from dockyard.settings import Settings
from dockyard.spec import TrainingJobSpec
from dockyard.status import is_final
from dockyard.warm_pool import MAX_KEEP_ALIVE_SECONDS, PoolStatus, WarmPool, kept, match_key, retained
from infra import job_log
from infra.fleet import Fleet
from infra.job_store import JobStore, PoolEntry, now, open_store
from infra.retry import task_retry_options
from tasks.provision import pool_host, remove_instances


class _Gone(DockyardError):
    """The pool was taken over or ended meanwhile."""


def _taken_by(name: str) -> Callable[[JobRecord], JobRecord]:
    def take(record: JobRecord) -> JobRecord:
        pool = record.warm_pool
        at = now()
        if pool is None or not pool.available(at):
            raise _Gone(record.name)
        given = pool.model_copy(update={"status": PoolStatus.REUSED, "ended_at": at, "reused_by": name})
        return record.model_copy(update={"warm_pool": given})

    return take


def _usable_hosts(store: JobStore, settings: Settings) -> set[str]:
    """Where this job may take a pool: this machine outside a fleet; in a fleet, the live hosts
    that are not draining."""
    if settings.fleet_host is None:
        return {pool_host(settings)}
    at = now()
    return {h.name for h in Fleet(store).hosts() if h.live(at) and not h.draining}


def _adopt(store: JobStore, settings: Settings, name: str, previous: PoolEntry) -> WarmPool:
    """The pool given to job `name` becomes its own, its grants with it."""
    if settings.fleet_host is not None:
        Fleet(store).hand_on(previous.job_name, name)
    record = store.get(name)
    pool = WarmPool(status=PoolStatus.IN_USE, key=match_key(record.spec), host=previous.host, folder=previous.folder)
    store.change(name, lambda r: r.model_copy(update={"warm_pool": pool}))
    job_log.report(
        settings.home,
        name,
        f"took over the warm pool of {previous.job_name} on {previous.host}: its instances, image and staged data",
    )
    return pool


def take_over(spec: TrainingJobSpec, settings: Settings) -> WarmPool | None:
    """The warm pool the job took over already, else an Available one it matches, taken over;
    None when there is none, or the job may not take one: a spot job, a restart, or a job that
    holds fleet room already (its place is decided)."""
    store = open_store(settings)
    name = spec.training_job_name
    record = store.get(name)
    if record.warm_pool is not None:
        return record.warm_pool if record.warm_pool.status is PoolStatus.IN_USE else None
    given = store.pools(reused_by=name)
    if given:  # taken over before this orchestrator died
        return _adopt(store, settings, name, given[0])
    if record.attempts or spec.enable_managed_spot_training or Fleet(store).grants(name):
        return None
    matching = store.pools(key=match_key(spec), status=PoolStatus.AVAILABLE)
    usable = _usable_hosts(store, settings) if matching else set()
    for entry in matching:
        if entry.host not in usable:
            continue
        try:
            store.change(entry.job_name, _taken_by(name))
        except _Gone:
            continue
        return _adopt(store, settings, name, entry)
    return None


@task(name="take-warm-pool", cache_policy=NONE, **task_retry_options())
def take_warm_pool(spec: TrainingJobSpec, settings: Settings) -> WarmPool | None:
    """Before a job is placed: the pools past their period ended, then take_over."""
    sweep(open_store(settings), settings)
    return take_over(spec, settings)


def keep_or_end(
    spec: TrainingJobSpec, outcome: Outcome, settings: Settings, scratch_root: str | None
) -> WarmPool | None:
    """The job's warm pool as its end leaves it: kept (Available) when it asked for one and its
    instances, all on this machine, were made; else the one it took over, Terminated; else None."""
    store = open_store(settings)
    name = spec.training_job_name
    current = store.get(name).warm_pool
    hosts = {g.host for g in Fleet(store).grants(name)}
    ran = scratch_root is not None and os.path.isdir(scratch_root)
    if kept(spec, outcome.failure_reason, ran) and hosts <= {pool_host(settings)} and scratch_root is not None:
        key = current.key if current else None
        return retained(spec, pool_host(settings), os.path.basename(scratch_root), now(), key)
    if spec.resource_config.keep_alive_period_in_seconds and len(hosts) > 1:
        job_log.report(
            settings.home, name, "warm pools keep the instances of a job on one machine: this one spanned several",
            logging.WARNING,
        )  # fmt: skip
    if current is not None and current.status is PoolStatus.IN_USE:
        return current.model_copy(update={"status": PoolStatus.TERMINATED, "ended_at": now()})
    return None


def _ended(expired_only: bool) -> Callable[[JobRecord], JobRecord]:
    def end(record: JobRecord) -> JobRecord:
        pool, at = record.warm_pool, now()
        if pool is None or pool.status is not PoolStatus.AVAILABLE or (expired_only and pool.available(at)):
            raise _Gone(record.name)  # taken over, ended, or given a longer period meanwhile
        ended = pool.model_copy(update={"status": PoolStatus.TERMINATED, "ended_at": min(at, pool.expires_at or at)})
        return record.model_copy(update={"warm_pool": ended})

    return end


def end_pool(store: JobStore, settings: Settings, job_name: str, expired_only: bool = False) -> bool:
    """End a job's Available pool (with `expired_only`, only once its period is over): its room
    given back; its folder goes at the next sweep on its machine. False when there was none to end."""
    try:
        store.change(job_name, _ended(expired_only))
    except _Gone:
        return False
    Fleet(store).release(job_name)
    job_log.append(settings.home, job_name, "its warm pool ended: the room is given back")
    return True


def end_pools_on(store: JobStore, settings: Settings, host: str) -> list[str]:
    """End the Available pools on fleet host `host` (it is drained, or leaves); their jobs' names."""
    return [
        e.job_name for e in store.pools(status=PoolStatus.AVAILABLE, host=host) if end_pool(store, settings, e.job_name)
    ]


def set_keep_alive(store: JobStore, settings: Settings, job_name: str, seconds: int) -> JobRecord:
    """UpdateTrainingJob's ResourceConfig.KeepAlivePeriodInSeconds: the period of a running job's
    pool to be, or of its Available pool, counted from when it was kept; 0 ends that pool now.

    Raises:
        DockyardError: the period is out of range, or the job keeps no pool to update.
    """
    if not 0 <= seconds <= MAX_KEEP_ALIVE_SECONDS:
        raise DockyardError(
            f"ResourceConfig.KeepAlivePeriodInSeconds must be 0 to {MAX_KEEP_ALIVE_SECONDS} "
            f"(got {seconds}): the warm pool's period, 0 to end it"
        )
    record, at = store.get(job_name), now()
    pool = record.warm_pool
    if is_final(record.status.secondary) and not (pool and pool.available(at)):
        shown = pool.shown(at)["Status"] if pool else "none"
        raise DockyardError(f"{job_name} has ended with no warm pool to update (WarmPoolStatus {shown})")
    if not record.spec.resource_config.keep_alive_period_in_seconds and not is_final(record.status.secondary):
        raise DockyardError(f"{job_name} was created without KeepAlivePeriodInSeconds: it keeps no warm pool")

    def change(record: JobRecord) -> JobRecord:
        resources = record.spec.resource_config.model_copy(update={"keep_alive_period_in_seconds": seconds})
        updated = record.model_copy(update={"spec": record.spec.model_copy(update={"resource_config": resources})})
        pool = record.warm_pool
        if pool is not None and pool.available(now()) and pool.retained_at is not None and seconds:
            expires = pool.retained_at + timedelta(seconds=seconds)
            updated = updated.model_copy(update={"warm_pool": pool.model_copy(update={"expires_at": expires})})
        return updated

    store.change(job_name, change)
    if not seconds:
        end_pool(store, settings, job_name)
    return store.get(job_name)


def sweep(store: JobStore, settings: Settings, clean: bool = True) -> None:
    """End the Available pools past their period (their room given back), and, with `clean`,
    remove the folders of ended pools on this machine."""
    at = now()
    for entry in store.pools(status=PoolStatus.AVAILABLE):
        if entry.expires_at is not None and entry.expires_at <= at:
            end_pool(store, settings, entry.job_name, expired_only=True)
    if not clean:
        return
    for entry in store.pools(status=PoolStatus.TERMINATED, host=pool_host(settings), cleaned=False):
        remove_instances(entry.job_name, os.path.join(str(settings.scratch_root()), entry.folder))
        store.pool_cleaned(entry.job_name)
