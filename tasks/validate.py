"""Stage 1, validate: the spec's rules, the host's limits, the locations.

Nothing is created until this stage has passed; then the job record is.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
from collections.abc import Collection
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NONE
from pydantic import BaseModel, ConfigDict

from dockyard import clarify, debugger, script_mode, secrets
from dockyard.algorithm_spec import AlgorithmSpec, with_defaults
from dockyard.errors import DockyardError, JobSpecError, LeaseHeld, LeaseLost
from dockyard.loading import build_job, build_processing_job, parse_document
from dockyard.processing import as_job
from dockyard.record import JobRecord
from dockyard.rules import HostFacts, check_job
from dockyard.settings import Settings
from dockyard.spec import InputMode, TrainingJobSpec
from dockyard.status import SecondaryStatus, is_final
from infra import docker_engine, fuse, job_log, prefect_api, spot, storage
from infra import secrets as secret_blocks
from infra.job_store import LeaseKeeper, now, open_store, this_process
from infra.retry import task_retry_options


class Location(BaseModel):
    model_config = ConfigDict(frozen=True)

    field: str
    uri: str


class ValidatePlan(BaseModel):
    model_config = ConfigDict(frozen=True)

    job: TrainingJobSpec
    readable: tuple[Location, ...]
    writable: tuple[Location, ...]


def plan_validate(spec: TrainingJobSpec, host: HostFacts) -> ValidatePlan:
    """Check the rules that need no I/O and list the locations to check.

    Raises:
        JobSpecError: the spec breaks a rule on this host.
    """
    check_job(spec, host)
    readable = tuple(
        Location(field=_input_field(spec, i), uri=c.data_source.s3_data_source.s3_uri)
        for i, c in enumerate(spec.input_data_config)
        if c.data_source.s3_data_source is not None
    )
    code = script_mode.code_source(spec)
    if code:
        readable += (Location(field=code.field, uri=code.uri),)
    writable: tuple[Location, ...] = (
        Location(field="output_data_config.s3_output_path", uri=spec.output_data_config.s3_output_path),
    )
    model = spec.processing.analyzed_model if spec.processing else None
    if model is not None:
        readable += (Location(field="analysis_config.json: predictor.model_name", uri=model.model_data),)
    if spec.processing is not None:
        writable += tuple(
            Location(field=f"processing_output_config.outputs[{i}].s3_output.s3_uri", uri=o.s3_output.s3_uri)
            for i, o in enumerate(spec.processing.processing_output_config.outputs)
        )
    return ValidatePlan(job=spec, readable=readable, writable=writable)


def _input_field(spec: TrainingJobSpec, index: int) -> str:
    """Where the user wrote input `index`'s URI: a channel's, or a processing job's input's."""
    if spec.processing is not None:
        return f"processing_inputs[{index}].s3_input.s3_uri"
    return f"input_data_config[{index}].data_source.s3_data_source.s3_uri"


class JobRunning(DockyardError):
    """The job has a live orchestrator already."""


def read_job_file(path: str) -> dict[str, Any]:
    """The job (or tuning) document in a YAML or JSON file; a relative `source_dir`
    is taken relative to the file's folder.

    Raises:
        JobSpecError: the file is missing, does not parse, or is not a mapping.
    """
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise JobSpecError(f"{path}: cannot read the job file ({exc.strerror}) — check the path") from None
    doc = parse_document(text, path)
    source = doc.get("source_dir")
    if isinstance(source, str) and source and "://" not in source and not source.startswith(("/", "${")):
        doc["source_dir"] = str((Path(path).resolve().parent / source).resolve())
    return doc


def same_job(a: TrainingJobSpec, b: TrainingJobSpec) -> bool:
    """The same spec but for the name; a secret is the same as the reference to it that a job named
    as `a` keeps (so a spec file with literals matches the job it made, and a rotated value too)."""

    def shown(spec: TrainingJobSpec) -> dict[str, Any]:
        named = spec.model_copy(update={"training_job_name": a.training_job_name})
        return secrets.as_references(named)[0].model_dump(exclude={"training_job_name"})

    return shown(a) == shown(b)


def resolve_algorithm(spec: TrainingJobSpec, settings: Settings, kept: AlgorithmSpec | None = None) -> TrainingJobSpec:
    """A job that names a registered algorithm (by name or ARN), with the algorithm's specification
    (`kept`, the copy an unfinished job of this name was checked against, when it is that
    algorithm's; else the registry's now) and its default hyperparameters for those the job
    leaves out; any other job as it is. An unknown name is left for the rules to report."""
    algo = spec.algorithm_specification
    if spec.registered_algorithm is not None:  # pinned (a tuning job's trial): its defaults all the same
        hyperparameters = with_defaults(spec.registered_algorithm, spec.hyperparameters)
        return spec.model_copy(update={"hyperparameters": hyperparameters})
    if not algo.algorithm_name or algo.builtin_name:
        return spec
    name = algo.algorithm_name.rsplit(":algorithm/", 1)[-1]  # an ARN names it after algorithm/
    if kept is not None and kept.algorithm_name.lower() == name.lower():
        registered = kept
    else:
        found = open_store(settings).algorithm(name)
        if found is None:
            return spec
        registered = found[0]
    return spec.model_copy(
        update={"registered_algorithm": registered, "hyperparameters": with_defaults(registered, spec.hyperparameters)}
    )


def check_runnable(spec: TrainingJobSpec, settings: Settings, pending_secrets: Collection[str] = ()) -> None:
    """The rules on this host, the Secret blocks the spec references (those in
    `pending_secrets` are about to be saved) and the locations: all of validate but the name.

    Raises:
        JobSpecError: the spec cannot run here as written.
    """
    plan = plan_validate(spec, docker_engine.host_facts())
    missing = secret_blocks.problems(spec, pending_secrets)
    if missing:
        raise JobSpecError(missing)
    for i, channel in enumerate(spec.input_data_config):
        source = channel.data_source.s3_data_source
        fast = spec.channel_mode(channel) is InputMode.FAST_FILE
        if fast and source is not None and source.s3_uri.startswith("s3://") and not fuse.available():
            raise JobSpecError(
                f"input_data_config[{i}]: FastFile mounts s3:// with s3fs-fuse, which this host lacks "
                "(no s3fs or no /dev/fuse) — apt-get install s3fs, or use input_mode File or Pipe"
            )
    for loc in plan.readable:
        storage.check_readable_prefix(loc.uri, loc.field, settings.s3_endpoint_url)
    for i, channel in enumerate(spec.input_data_config):
        system = channel.data_source.file_system_data_source
        if system is not None and not os.path.isdir(system.directory_path):
            raise JobSpecError(
                f"input_data_config[{i}].data_source.file_system_data_source.directory_path: "
                f"{system.directory_path} is not a directory here — mount the file system there, or fix the path"
            )
    for loc in plan.writable:
        storage.check_writable_location(loc.uri, loc.field, settings.s3_endpoint_url)
    if spec.enable_managed_spot_training:
        spot.market(settings)  # a spot simulation that does not parse is the user's to fix


def processing_job(doc: dict[str, Any], settings: Settings) -> TrainingJobSpec:
    """A processing job document (snake_case or a CreateProcessingJob body) in the training-shaped
    form the stages carry (dockyard.processing.as_job); what dockyard writes of it (job.json)
    goes under DOCKYARD_HOME/processing.

    Raises:
        JobSpecError: the document is not a valid processing job.
    """
    spec = build_processing_job(doc, home=str(settings.home), now=now())
    config = clarify.config_location(spec)
    if config is not None and storage.exists(config[0], settings.s3_endpoint_url):  # else the location check says so
        text = storage.read_bytes(config[0], settings.s3_endpoint_url)
        model = clarify.analyzed_model(spec, text, config[1], open_store(settings).find)
        spec = spec.model_copy(update={"analyzed_model": model})
    return as_job(spec, (settings.home / "processing").as_uri())


def check_spec(doc: dict[str, Any], settings: Settings) -> tuple[TrainingJobSpec, bool]:
    """Everything validate checks, creating nothing but the Secret blocks of the
    spec's literal secrets once it passed; returns the spec (each such secret
    a reference to its block) and whether it picks up an unfinished job whose
    orchestrator died.

    A job is picked up by its name or, for a spec that names none, when an
    unfinished job has exactly this spec. This process then holds the job's
    lease. The locations are checked once per process and spec: the command
    line checks before it starts the flow, whose validate task then does not
    list them again.

    Raises:
        JobSpecError: the spec cannot run here as written, or its name is taken by a finished job.
        JobRunning: a live orchestrator is running the job already.
    """
    store = open_store(settings)
    spec = build_job(doc, home=str(settings.home), now=now())
    named = doc.get("training_job_name") or doc.get("TrainingJobName")
    prior = store.find(spec.training_job_name) if named else None  # picked up: the algorithm it was checked with
    spec = resolve_algorithm(spec, settings, prior.spec.registered_algorithm if prior is not None else None)
    if not named:
        orphans = (r for r in store.unfinished() if not store.lease_live(lease_name(r.name)))
        spec = next((r.spec for r in orphans if same_job(r.spec, spec)), spec)
    spec, literals = secrets.as_references(spec)
    fingerprint = spec.model_dump_json()
    if fingerprint not in _CHECKED:
        check_runnable(spec, settings, literals)
        _CHECKED.add(fingerprint)
    old = store.find(spec.training_job_name)
    field = f"{spec.kind}_job_name"  # training and processing jobs share one namespace of names
    if old is not None:
        if is_final(old.status.secondary):
            raise JobSpecError(
                f"{field}: '{spec.training_job_name}' already names a {old.kind} job "
                f"({old.status.primary.value}, created {old.creation_time:%Y-%m-%d %H:%M}) — "
                "choose another name, or omit it to have one generated"
            )
        if not same_job(old.spec, spec):
            raise JobSpecError(
                f"{field}: '{spec.training_job_name}' names an unfinished {old.kind} job with a different spec — "
                "rerun it with its own spec to finish it, or choose another name"
            )
    hold(settings, spec.training_job_name)
    secret_blocks.save(literals)  # held: no live orchestrator's job reads these blocks now
    # A queued job still at Starting has not begun: its first run is no pick-up.
    return spec, old is not None and not (old.queued and old.status.secondary is SecondaryStatus.STARTING)


_CHECKED: set[str] = set()  # specs whose rules and locations this process has checked
_HELD: dict[str, LeaseKeeper] = {}  # the jobs this process orchestrates


def lease_name(job_name: str) -> str:
    return f"training-job/{job_name}"


def hold(settings: Settings, name: str) -> None:
    """Make this process the job's one orchestrator, until `let_go`.

    Raises:
        JobRunning: another live process holds the job's lease.
    """
    if name not in _HELD:
        keeper = LeaseKeeper(open_store(settings), lease_name(name), settings.lease_seconds)
        try:
            keeper.take()
        except LeaseHeld as held:
            raise JobRunning(
                f"training job {name} is being run by {held.holder} (last heartbeat {held.heartbeat_age:.0f} s "
                f"ago) — wait for it, or stop it with `dockyard jobs stop {name}`"
            ) from None
        atexit.unregister(_let_go_all)  # registered once: a process that ends before its flows frees their jobs
        atexit.register(_let_go_all)
        _HELD[name] = keeper


def _let_go_all() -> None:
    for name in list(_HELD):
        let_go(name)


def still_held(name: str) -> None:
    """Raises: LeaseLost when another process took this job over; this one must leave it be."""
    keeper = _HELD.get(name)
    if keeper is not None and keeper.lost:
        raise LeaseLost(
            f"training job {name} was taken over by another orchestrator while this one could not renew "
            "its lease; this one leaves the job to it"
        )


def let_go(name: str) -> None:
    """Give up the job's lease: its orchestration is over."""
    keeper = _HELD.pop(name, None)
    if keeper is not None:
        keeper.release()


@task(name="validate", cache_policy=NONE, **task_retry_options())
def validate(doc: dict[str, Any], settings: Settings, flow_run_id: str | None) -> tuple[TrainingJobSpec, bool]:
    """Validate the job document and create its record (Starting), or pick up
    the unfinished job it names; returns the spec and whether it was picked up."""
    spec, resumed = check_spec(doc, settings)
    # A Python caller's document holds secret values, and Prefect recorded it as the run's parameter.
    passed = spec.model_dump(mode="json") if secrets.holds_literals(doc) else None
    try:
        _create_or_pick_up(spec, resumed, settings, flow_run_id, passed)
    except BaseException:
        let_go(spec.training_job_name)  # the flow will not get to release it
        raise
    return spec, resumed


def create_record(
    spec: TrainingJobSpec,
    settings: Settings,
    flow_run_id: str | None,
    message: str = "Validated the job; preparing the instances",
    work_pool: str | None = None,
    request_extras: dict[str, Any] | None = None,
    queued: bool | None = None,
) -> JobRecord:
    """Store the new job's record, Starting: queued for a flow run of `work_pool` (unless
    `queued` is False: its flow run is this one), whose workers take it up again if its
    orchestrator dies.

    Raises:
        DockyardError: a job of that name exists.
    """
    at = now()
    ratio = spot.market(settings).price_ratio if spec.enable_managed_spot_training else None
    record = JobRecord(
        spec=spec,
        creation_time=at,
        flow_run_id=flow_run_id,
        spot_price_ratio=ratio,
        queued=work_pool is not None if queued is None else queued,
        work_pool=work_pool,
        request_extras=request_extras or {},
        rule_evaluations=debugger.starting(spec, at),
    ).moved(SecondaryStatus.STARTING, message, at)
    open_store(settings).create(record)
    return record


def _create_or_pick_up(
    spec: TrainingJobSpec,
    resumed: bool,
    settings: Settings,
    flow_run_id: str | None,
    passed: dict[str, Any] | None = None,
) -> None:
    store = open_store(settings)
    name = spec.training_job_name
    old = store.find(name)
    if old is not None and old.queued and not resumed:  # created through the API: this run starts it
        store.update(name, queued=False, flow_run_id=flow_run_id)
        job_log.append(settings.home, name, f"started by {this_process()} (flow run {flow_run_id})")
    elif resumed:
        previous = store.get(name).flow_run_id
        if previous and previous != flow_run_id:
            with contextlib.suppress(Exception):  # the old run may live on another server
                prefect_api.mark_crashed(previous, f"its orchestrator died; flow run {flow_run_id} carries on")
        store.update(name, flow_run_id=flow_run_id, queued=False)
        job_log.append(settings.home, name, f"picked up again by {this_process()} (flow run {flow_run_id})")
    else:  # a fleet's job (run by a worker) goes back to the pool should its orchestrator die
        pool = settings.work_pool if settings.fleet_host is not None and flow_run_id else None
        create_record(spec, settings, flow_run_id, work_pool=pool, queued=False)
    if flow_run_id:
        experiment = spec.experiment_config.experiment_name if spec.experiment_config else None
        tags = ["dockyard", "training-job", f"job:{name}"] + ([f"experiment:{experiment}"] if experiment else [])
        kept = label_run(flow_run_id, name, tags, passed)
        if kept:
            job_log.report(settings.home, name, kept, logging.WARNING)


def label_run(flow_run_id: str, name: str, tags: list[str], passed: dict[str, Any] | None) -> str | None:
    """Name and tag the flow run after its job and, with `passed` (the spec holding references), make
    that its `job` parameter in place of the document a Python caller passed with secret values;
    returns why the parameter still holds them, when it does."""
    try:
        prefect_api.label_flow_run(flow_run_id, name, tags, job=passed)
    except Exception as exc:  # noqa: BLE001 - a label is a convenience; the job runs without it
        if passed is not None:
            return (
                f"the flow run's 'job' parameter still holds the secret values it was passed ({exc}): delete "
                f"flow run {flow_run_id} in Prefect, and pass Secret block references from Python"
            )
    return None
