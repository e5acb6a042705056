"""The steps around the stages that bring a job back: waiting for spot capacity,
giving instances back before a restart, and picking up a job whose
orchestrator died (its containers watched again, or a restart from its
checkpoints)."""

from __future__ import annotations

import logging
import time
from datetime import timedelta
from typing import Any

from prefect import task
from prefect.cache_policies import NONE

from dockyard import clarify, contract
from dockyard.errors import DockyardError
from dockyard.fleet import Demand, Grant, Shortfall, demand_of, fits_in_full, free_capacity
from dockyard.record import JobRecord
from dockyard.settings import Settings
from dockyard.spec import InputMode, TrainingJobSpec
from dockyard.status import SecondaryStatus
from infra import credentials, docker_engine, job_log, prefect_api, spot
from infra.fleet import Fleet, UnknownHost
from infra.job_store import now, open_store
from infra.retry import task_retry_options, with_backoff
from tasks.provision import ProvisionPlan, give_back, grants_of, plan_provision, remove_instances, warm_folder
from tasks.status import move
from tasks.validate import let_go
from tasks.warm_pool import take_over

S = SecondaryStatus
# Statuses in which a job's containers may still hold its work.
REATTACHABLE = {S.TRAINING, S.STOPPING, S.UPLOADING}


INFRA_FAULT = "infrastructure fault: "  # how an attempt ended by one is marked


def restarts_used(record: JobRecord) -> int:
    """The restarts after infrastructure faults a job has had, whichever orchestrators ran them:
    a job handed from host to host keeps one retry budget."""
    return sum(1 for a in record.attempts if a.ended_by.startswith(INFRA_FAULT))


class MaxWaitExceeded(DockyardError):
    """No spot capacity came within stopping_condition.max_wait_time_in_seconds."""


class NoRoom(DockyardError):
    """No host of the fleet could hold the job's instances even empty."""


class StoppedWhilePending(DockyardError):
    """A stop was requested while the job waited for capacity."""


FLEET_POLL_SECONDS = 2.0
STORE_PATIENCE = 600.0  # how long a job waiting for room waits out a job store that does not answer


def _said_busy(exc: BaseException, delay: float) -> None:
    logging.getLogger("dockyard").warning(f"the job store did not answer ({exc}); asking again in {delay:.0f} s")


def _wait_for_the_fleet(spec: TrainingJobSpec, settings: Settings, host: str, anywhere: bool) -> tuple[str, bool]:
    """Take room for all the job's instances on one host of the fleet (`anywhere`; else on
    `host`, this worker's), Pending while there is none; returns the host granted and whether it waited.

    Raises:
        NoRoom: no host could ever hold them.
        StoppedWhilePending: a stop came first.
        MaxWaitExceeded: a spot job's max_wait_time_in_seconds ran out first (as on SageMaker,
            waiting for capacity counts against it).
    """
    store = open_store(settings)
    name = spec.training_job_name
    said = ""
    demand = demand_of(spec)
    max_wait = spec.stopping_condition.max_wait_time_in_seconds if spec.enable_managed_spot_training else None
    waits_until = None if max_wait is None else store.get(name).creation_time + timedelta(seconds=max_wait)

    # A restart stays on this host, unless its engine is gone: then anywhere else. Judged once per
    # wait, on two pings 2 s apart, so one slow answer neither moves a job nor flips the choice.
    engine_gone = not anywhere and not _answers_twice()
    # A job spread over hosts because this one alone cannot give it in full is placed afresh, this
    # host preferred (its instances elsewhere went with their attempt).
    anywhere = anywhere or (not engine_gone and _spreads_from(demand, Fleet(store), host))
    if engine_gone:
        job_log.report(settings.home, name, "this host's Docker engine does not answer: restarting on another host")

    def ask() -> list[Grant] | Shortfall:  # the store out for a while is waited out, not a failure
        return with_backoff(
            lambda: _ask(Fleet(store), demand, host, anywhere, engine_gone), STORE_PATIENCE, 1.0, _said_busy
        )

    while isinstance(answer := ask(), Shortfall):
        if answer.never:
            raise NoRoom(answer.message)
        if store.stop_requested(name):
            raise StoppedWhilePending(f"{spec.kind.capitalize()} job stopped while it waited for capacity")
        if take_over(spec, settings) is not None:
            continue  # a matching job ended meanwhile and kept its instances: its room is this job's now
        if answer.message != said:
            record = store.get(name)
            if record.status.secondary is S.PENDING:
                job_log.report(settings.home, name, answer.message)
            else:
                move(settings, name, record.secondary, S.PENDING, answer.message[:1].upper() + answer.message[1:])
            said = answer.message
        left = float("inf") if waits_until is None else (waits_until - now()).total_seconds()
        if left <= 0:
            raise MaxWaitExceeded(
                f"no room in the fleet within MaxWaitTimeInSeconds ({max_wait} s): {said} — raise "
                "stopping_condition.max_wait_time_in_seconds, or free room (`dockyard hosts` shows what runs where)"
            )
        time.sleep(min(FLEET_POLL_SECONDS, left))
    for grant in answer:
        gpus = f", GPUs {','.join(map(str, grant.gpu_ids))}" if grant.gpu_ids else ""
        job_log.report(
            settings.home,
            name,
            f"{grant.instance} granted on host {grant.host}: {grant.vcpus} vCPUs, "
            f"{grant.memory_bytes / 1024**3:.1f} GiB{gpus}",
        )
    first = min(answer, key=lambda g: g.number)
    return first.host, bool(said)  # algo-1's host: its orchestrator's


def _spreads_from(demand: Demand, fleet: Fleet, host: str) -> bool:
    """Whether `demand` may spread and host `host`, empty, cannot give it in full alone."""
    if not demand.may_spread():
        return False
    try:
        empty = free_capacity([fleet.host(host)], [])
    except UnknownHost:
        return True  # removed from the fleet: anywhere else
    return not fits_in_full(demand.model_copy(update={"spreads": False}), list(empty.values()))


def _answers_twice() -> bool:
    """Whether this host's engine answers a ping, asked again 2 s later before saying no."""
    if docker_engine.answers():
        return True
    time.sleep(2)
    return docker_engine.answers()


def _ask(fleet: Fleet, demand: Demand, host: str, anywhere: bool, engine_gone: bool) -> list[Grant] | Shortfall:
    if engine_gone:
        return fleet.grant(demand, avoid=host)
    if anywhere:
        return fleet.grant(demand, prefer=host)
    return fleet.grant(demand, only=host)


@task(name="wait-for-capacity", cache_policy=NONE)
def wait_for_capacity(spec: TrainingJobSpec, settings: Settings) -> str | None:
    """Wait, Pending, until the spot market has capacity for the job, then (under
    `dockyard worker`) until a host of the fleet has room for it; a job that ran before
    moves to Restarting. Returns the fleet host of algo-1 (None outside a fleet): a job's
    first attempt takes the hosts with the most room (this worker's among equals), a
    restart this worker's host — another when this host's Docker engine does not answer,
    and any (this one preferred) for a job spread over hosts because this one cannot hold it.

    Raises:
        MaxWaitExceeded: max_wait_time_in_seconds ran out first.
        NoRoom: no host of the fleet could ever hold the job's instances.
        StoppedWhilePending: a stop came while it waited for the fleet.
    """
    store = open_store(settings)
    name = spec.training_job_name
    record = store.get(name)
    restarting = bool(record.attempts)
    if spec.enable_managed_spot_training:
        market = spot.market(settings)
        max_wait = spec.stopping_condition.max_wait_time_in_seconds or 0
        while (wait := market.capacity_in(record, spot.elapsed(record))) > 0:
            if record.status.secondary is not S.PENDING:
                record = move(
                    settings, name, record.secondary, S.PENDING, f"Waiting for spot capacity (about {wait:.0f} s)"
                )
            if spot.elapsed(record) >= max_wait:
                raise MaxWaitExceeded(f"no spot capacity within MaxWaitTimeInSeconds ({max_wait} s)")
            time.sleep(min(wait, 1.0, max(0.1, max_wait - spot.elapsed(record))))
            record = store.get(name)
        if record.status.secondary is S.PENDING and not restarting:
            record = move(settings, name, S.PENDING, S.STARTING, "Spot capacity available; preparing the instances")
    granted = None
    if settings.fleet_host is not None:
        granted, waited = _wait_for_the_fleet(spec, settings, settings.fleet_host, anywhere=not restarting)
        record = store.get(name)
        if waited and not restarting:
            record = move(
                settings, name, S.PENDING, S.STARTING, f"Capacity granted on host {granted}; preparing the instances"
            )
    if restarting and record.status.secondary is not S.RESTARTING:
        move(settings, name, record.secondary, S.RESTARTING, "Restarting training from the last checkpoint")
    return granted


@task(name="hand-over", cache_policy=NONE, **task_retry_options())
def hand_over(spec: TrainingJobSpec, settings: Settings, host: str) -> JobRecord:
    """Give a job granted on another host of the fleet to that host's worker: the job
    is queued again and a flow run of it submitted to the host's work queue; this
    process lets go of it first, so that run can take it up."""
    store = open_store(settings)
    name = spec.training_job_name
    record = store.change(name, lambda r: r.model_copy(update={"queued": True, "work_pool": settings.work_pool}))
    let_go(name)
    parameters: dict[str, Any] = {"job": spec.model_dump(mode="json")}
    flow = "process" if spec.processing is not None else "train"
    if settings.spot_simulation and flow == "train":
        parameters["spot_simulation"] = settings.spot_simulation
    flow_run_id = prefect_api.submit(
        flow, settings.work_pool, parameters, name, ["dockyard"], work_queue=host,
        idempotency_key=f"hand-over/{name}/{record.flow_run_id}/{host}",  # a retry of this task: the same run
    )  # fmt: skip
    # The run this one hands over to is now the job's: a watch for orphaned jobs must not hand it on again.
    record = store.update(name, flow_run_id=flow_run_id)
    job_log.report(settings.home, name, f"placed on host {host}: handed to its worker (flow run {flow_run_id})")
    return record


@task(name="reclaim", cache_policy=NONE, **task_retry_options())
def reclaim(spec: TrainingJobSpec, settings: Settings, scratch_root: str, reason: str, interrupted: bool) -> None:
    """Give the instances back before a restart: spot reclaim or an infrastructure fault."""
    store = open_store(settings)
    name = spec.training_job_name
    to, message = (
        (S.INTERRUPTED, reason)
        if interrupted
        else (S.RESTARTING, f"Restarting after an infrastructure fault: {reason}")
    )
    ended_by = reason if interrupted else f"{INFRA_FAULT}{reason}"  # counted against retry_strategy
    record = store.change(name, lambda r: r.ended_attempt(now(), ended_by))
    if record.status.secondary is not to:  # a retry of this task has been here
        move(settings, name, record.secondary, to, message)
    removed = remove_instances(name, scratch_root, engine_may_be_gone=True)
    give_back(settings, name)
    job_log.append(settings.home, name, f"released the instances ({removed} Docker objects and the scratch space)")


def _piped(spec: TrainingJobSpec) -> bool:
    return any(spec.channel_mode(c) is InputMode.PIPE for c in spec.input_data_config)


def _serve_credentials_again(spec: TrainingJobSpec, settings: Settings, container_id: str) -> None:
    """The containers ask the dead orchestrator's credentials endpoint: this one takes its place."""
    try:
        uri = credentials.resume(spec, settings, docker_engine.environment(container_id))
    except Exception as exc:  # noqa: BLE001 - the job runs on; its containers' credentials lapse within the hour
        job_log.report(
            settings.home,
            spec.training_job_name,
            f"the containers' credentials are not served again ({exc}): they lapse when those they hold expire",
            logging.WARNING,
        )
        return
    if uri:
        job_log.report(settings.home, spec.training_job_name, f"serving the containers' credentials again at {uri}")


@task(name="reattach", cache_policy=NONE, **task_retry_options())
def reattach(spec: TrainingJobSpec, settings: Settings) -> tuple[ProvisionPlan, dict[str, str]] | None:
    """Pick up a job whose orchestrator died: its containers, if they still
    exist, are watched again (returns the plan and container ids by host);
    otherwise it restarts from its checkpoints (None)."""
    store = open_store(settings)
    name = spec.training_job_name
    record: JobRecord = store.get(name)
    found = docker_engine.job_containers(name)
    found.pop(clarify.SHADOW_HOST, None)  # a Clarify job's served model: it serves on, not an instance
    hosts = contract.host_names(spec.resource_config.instance_count)
    # Pipe channels were fed by the dead orchestrator's threads: such a job restarts instead.
    if record.status.secondary in REATTACHABLE and sorted(found) == hosts and not _piped(spec):
        scratch = record.scratch_root or str(settings.scratch_root())
        provisioned = plan_provision(
            spec, docker_engine.host_facts(), scratch, grants_of(settings, name),
            warm_folder=warm_folder(settings, name),
        )  # fmt: skip
        job_log.append(settings.home, name, f"reattached to {len(found)} running container(s)")
        _serve_credentials_again(spec, settings, next(iter(found.values())))
        return provisioned, found
    record = store.change(name, lambda r: r.ended_attempt(now(), "orchestrator restarted"))
    held = {g.host for g in grants_of(settings, name)}
    if held != {settings.fleet_host}:  # kept when handed here with room taken here (a restart placed elsewhere)
        give_back(settings, name)  # its instances are gone with their host: it is placed afresh
    if record.status.secondary is not S.RESTARTING:
        move(
            settings,
            name,
            record.secondary,
            S.RESTARTING,
            "The orchestrator restarted; restarting from the last checkpoint",
        )
    return None
