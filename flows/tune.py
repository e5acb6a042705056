"""The tuning flow: trials chosen by Optuna, each one a training subflow.

    python -m flows.tune TUNING.yaml     (a CreateHyperParameterTuningJob body works too)

At most max_parallel_training_jobs trials run at once, and never more vCPUs
than the host has across them: each trial holds slots of the Prefect global
concurrency limit `dockyard-host-vcpus` while it runs. Under `dockyard worker`
the fleet's grants share the hosts out instead, and a trial granted on another
host runs there, under its worker. The flow waits for every trial it started.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import sys
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import optuna
from prefect import flow, get_run_logger, runtime
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.client.orchestration import get_client
from prefect.concurrency.asyncio import ConcurrencySlotAcquisitionError
from prefect.concurrency.sync import concurrency
from prefect.exceptions import TerminationSignal
from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

from dockyard import secrets
from dockyard.charts import objective_over_trials
from dockyard.errors import DockyardError
from dockyard.record import JobRecord
from dockyard.settings import Settings
from dockyard.status import PrimaryStatus
from dockyard.tuning import (
    EarlyStopping,
    Strategy,
    TuningJobConfig,
    TuningJobSpec,
    completion_reason,
    grid,
    hyperband_resources,
    median_rule,
    objective_value,
    trial_name,
)
from dockyard.tuning_record import (
    ObjectiveStatus,
    TrialSummary,
    TuningRecord,
    TuningStatus,
    best_of,
    tuning_record,
)
from flows.train import final_record, run_name, train
from infra.job_store import JobStore, now, open_store
from infra.retry import with_backoff
from tasks.tuning import (
    distributions,
    ended_elsewhere,
    host_slots,
    hyperparameters_of,
    make_study,
    parents_of,
    record_tuning,
    seed_study,
    trial_doc,
    trial_slots,
    validate_tuning,
)
from tasks.validate import label_run, read_job_file

HOST_LIMIT = "dockyard-host-vcpus"
CHECK_SECONDS = 1.0  # how often running trials' metric streams are read
SLOT_PATIENCE = 300.0  # a busy Prefect server (its SQLite locked under load) answers 503: ask again this long


def trial_heartbeats_off() -> contextlib.AbstractContextManager[Any]:
    """Prefect settings without flow-run heartbeats, for a trial's subflow: it runs in the tuning
    flow's process, whose own heartbeats say whether that process lives, and the job store's lease
    says whether its orchestrator does. Prefect ends a flow run by joining its heartbeat thread,
    which looks at its stop flag once a second: half a second a trial, on average, of waiting."""
    return temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None})


@dataclass
class Trial:
    """A trial while it runs: what was asked, and what its metric stream has told the study so far."""

    name: str
    hyperparameters: dict[str, str]
    asked: optuna.trial.Trial | None  # None for Grid, which does not ask the study
    reported: int = 0  # objective values reported to the study (Hyperband's resource: epochs)
    stopped_because: str | None = None
    full_budget: bool = False  # stopped at Hyperband's max_resource: fully trained


def _run_trial(doc: dict[str, Any], slots: int, settings: Settings) -> JobRecord | str:
    """One training subflow, holding its share of the host while it runs; returns the
    trial's final record, or why its flow run broke down before the job ended."""
    name = doc["training_job_name"]
    held = contextlib.ExitStack()
    try:
        if settings.fleet_host is None:  # in a fleet, the fleet's grants share the hosts out
            with_backoff(
                lambda: held.enter_context(concurrency(HOST_LIMIT, occupy=slots)),
                SLOT_PATIENCE,
                first_delay=1.0,
                on_retry=lambda exc, wait: get_run_logger().warning(
                    f"trial {name}: Prefect did not hand out its host slots ({exc}); asking again in {wait:.0f} s"
                ),
            )
    except ConcurrencySlotAcquisitionError as exc:
        return (
            f"the trial did not start: Prefect did not hand out its share of the host ({exc}) — see the Prefect "
            "server's log; a busy local server does better on PostgreSQL (README, Prefect)"
        )
    try:
        with trial_heartbeats_off():
            state = train(doc, return_state=True)
    finally:
        try:
            held.close()
        except Exception as exc:  # noqa: BLE001 - the slots' lease runs out on its own; the trial's result stands
            get_run_logger().warning(f"trial {name}: its host slots were not given back ({exc}); their lease ends them")
    if state.is_completed() and settings.fleet_host is not None:  # it may have gone to another host
        return ended_elsewhere(settings, name) or str(state.message)
    return final_record(name, settings) or str(state.message)


def _summary(ended: JobRecord | str, trial: Trial, metric: str) -> TrialSummary:
    if isinstance(ended, str):
        return TrialSummary(
            training_job_name=trial.name,
            training_job_status=PrimaryStatus.FAILED,
            tuned_hyper_parameters=trial.hyperparameters,
            failure_reason=ended,
        )
    status = ended.status.primary
    value = objective_value(ended.final_metrics, metric)
    trained = status is PrimaryStatus.COMPLETED or trial.full_budget
    return TrialSummary(
        training_job_name=trial.name,
        training_job_status=status,
        tuned_hyper_parameters=trial.hyperparameters,
        final_objective=value,
        objective_status=ObjectiveStatus.SUCCEEDED if trained and value is not None else ObjectiveStatus.FAILED,
        training_start_time=ended.training_start_time,
        training_end_time=ended.training_end_time,
        failure_reason=ended.failure_reason,
        stopped_because=trial.stopped_because if status is PrimaryStatus.STOPPED else None,
    )


@flow(
    name="tune",
    flow_run_name=run_name("hyper_parameter_tuning_job_name", "HyperParameterTuningJobName", default="tune"),
    log_prints=True,
)
def tune(job: dict[str, Any] | str) -> dict[str, Any]:
    """Run a tuning job; returns its DescribeHyperParameterTuningJob-shaped record.

    `job` is the tuning spec as a mapping, or the path of a YAML or JSON file holding one."""
    settings = Settings.from_env(os.environ)
    created = now()
    store = open_store(settings)
    if isinstance(job, str):
        job = read_job_file(job)
    spec = validate_tuning(job, settings)
    flow_run_id = str(runtime.flow_run.id) if runtime.flow_run.id else None
    definition = job.get("training_job_definition") or job.get("TrainingJobDefinition")
    if flow_run_id and isinstance(definition, dict) and secrets.holds_literals(definition):
        # A Python caller's document holds secret values, and Prefect recorded it as the run's parameter.
        kept = label_run(flow_run_id, spec.hyper_parameter_tuning_job_name, ["dockyard"], spec.model_dump(mode="json"))
        if kept:
            get_run_logger().warning(kept)
    queued = store.tuning(spec.hyper_parameter_tuning_job_name)
    if queued is not None and queued.queued:  # created through the API: this run carries it out
        created = queued.creation_time or created
        store.save_tuning(queued.model_copy(update={"queued": False, "flow_run_id": flow_run_id}))
    else:
        store.create_tuning(
            TuningRecord(spec=spec, status=TuningStatus.IN_PROGRESS, creation_time=created, flow_run_id=flow_run_id)
        )
    config = spec.hyper_parameter_tuning_job_config
    name, metric = spec.hyper_parameter_tuning_job_name, config.hyper_parameter_tuning_job_objective.metric_name
    limits = config.resource_limits
    static = spec.training_job_definition.get("static_hyper_parameters") or {}
    slots_total = host_slots()
    with get_client(sync_client=True) as client:
        client.upsert_global_concurrency_limit_by_name(HOST_LIMIT, slots_total)
    slots = trial_slots(spec.training_job_definition, slots_total)
    study = make_study(config, static)
    space = distributions(config.parameter_ranges)
    parents = [p for p in parents_of(spec, store).values() if p is not None]
    if parents:
        seeded = seed_study(study, space, config.parameter_ranges, parents)
        print(f"warm start: {seeded} trials of {len(parents)} parent tuning job(s) seed the search")
    points = grid(config.parameter_ranges) if config.strategy is Strategy.GRID else None
    total = len(points) if points is not None else limits.max_number_of_training_jobs
    watch = _Watch(store, metric, config, static)
    summaries: list[TrialSummary] = []
    running: dict[Future[JobRecord | str], Trial] = {}
    stopped = False
    completed_because: str | None = None
    started = 0
    with ThreadPoolExecutor(max_workers=limits.max_parallel_training_jobs, thread_name_prefix="trial") as pool:
        try:
            while started < total or running:
                completed_because = completed_because or completion_reason(
                    config.tuning_job_completion_criteria,
                    [s.final_objective for s in summaries if s.scored and s.final_objective is not None],
                    config.maximize,
                )
                while (
                    not stopped
                    and not completed_because
                    and started < total
                    and len(running) < limits.max_parallel_training_jobs
                ):
                    if points is not None:
                        trial = Trial(trial_name(name, started), points[started], None)
                    else:
                        asked = study.ask(space)
                        hps = hyperparameters_of(asked.params, config.parameter_ranges)
                        trial = Trial(trial_name(name, started), hps, asked)
                    doc = trial_doc(spec, started, trial.hyperparameters)
                    context = contextvars.copy_context()  # so each trial is a subflow of this run
                    running[pool.submit(context.run, _run_trial, doc, slots, settings)] = trial
                    started += 1
                if not running:
                    break
                done, _ = wait(list(running), timeout=CHECK_SECONDS, return_when=FIRST_COMPLETED)
                watch.check(list(running.values()), summaries)
                for future in done:
                    trial = running.pop(future)
                    summaries.append(_summary(future.result(), trial, metric))
                    _tell(study, trial, summaries[-1])
                    store.save_tuning(_progress(spec, summaries, created, flow_run_id))
        except (KeyboardInterrupt, TerminationSignal):
            # Every running trial stops gracefully, uploads what it has, and is recorded.
            stopped = True
            for trial in running.values():
                with contextlib.suppress(DockyardError):  # not created yet, or already ended
                    store.request_stop(trial.name, "the tuning job was stopped")
            for future, trial in list(running.items()):
                summaries.append(_summary(future.result(), trial, metric))
    record = tuning_record(spec, summaries, stopped, completed_because, parents, (created, now()))
    record = record.model_copy(update={"flow_run_id": flow_run_id})
    record_tuning(settings, record)
    _artifacts(record)
    return record.describe()


def _progress(
    spec: TuningJobSpec, summaries: list[TrialSummary], created: datetime, flow_run_id: str | None
) -> TuningRecord:
    """The record of a tuning job still running: its trials so far and the best of them."""
    maximize = spec.hyper_parameter_tuning_job_config.maximize
    return TuningRecord(
        spec=spec,
        status=TuningStatus.IN_PROGRESS,
        creation_time=created,
        trials=tuple(summaries),
        best=best_of(summaries, maximize),
        flow_run_id=flow_run_id,
    )


def _tell(study: optuna.Study, trial: Trial, summary: TrialSummary) -> None:
    if trial.asked is None:
        return
    value = summary.final_objective
    if value is None:
        study.tell(trial.asked, state=optuna.trial.TrialState.FAIL)
    elif summary.training_job_status is PrimaryStatus.STOPPED and not trial.full_budget:
        study.tell(trial.asked, state=optuna.trial.TrialState.PRUNED)
    else:
        study.tell(trial.asked, value)


class _Watch:
    """Reads running trials' objective streams and stops the ones the rules say to:
    Auto early stopping's median rule, or Hyperband's rungs and max_resource."""

    def __init__(self, store: JobStore, metric: str, config: TuningJobConfig, static: dict[str, Any]) -> None:
        self.store, self.metric, self.maximize = store, metric, config.maximize
        self.median_rule = config.training_job_early_stopping_type is EarlyStopping.AUTO
        self.hyperband = config.strategy is Strategy.HYPERBAND
        self.max_resource = hyperband_resources(config, static)[1]
        self.finished: dict[str, list[float]] = {}  # a finished trial's curve no longer changes: read it once

    def series(self, name: str) -> list[float]:
        return [m.value for m in self.store.metrics(name, metric_name=self.metric, host="algo-1")]

    def check(self, running: list[Trial], summaries: list[TrialSummary]) -> None:
        if not (self.median_rule or self.hyperband):
            return
        earlier = []
        for s in summaries if self.median_rule else []:
            if s.training_job_status is not PrimaryStatus.FAILED:
                name = s.training_job_name
                if name not in self.finished:
                    self.finished[name] = self.series(name)
                earlier.append(self.finished[name])
        for trial in running:
            if trial.stopped_because or not self.store.exists(trial.name):
                continue
            series = self.series(trial.name)
            if self.median_rule and median_rule(series, earlier, self.maximize):
                self.stop(trial, f"early stopping: {self.metric} worse than the median of earlier trials")
            elif self.hyperband:
                self.hyperband_check(trial, series)

    def hyperband_check(self, trial: Trial, series: list[float]) -> None:
        assert trial.asked is not None
        for epoch in range(trial.reported, len(series)):
            trial.asked.report(series[epoch], step=epoch + 1)
        trial.reported = len(series)
        if self.max_resource is not None and len(series) >= self.max_resource:
            trial.full_budget = True
            self.stop(trial, f"Hyperband: reached max_resource ({self.max_resource} epochs)")
        elif series and trial.asked.should_prune():
            self.stop(trial, f"Hyperband: stopped at its rung after {len(series)} epochs")

    def stop(self, trial: Trial, reason: str) -> None:
        trial.stopped_because = reason
        with contextlib.suppress(DockyardError):  # it ended on its own meanwhile
            self.store.request_stop(trial.name, reason)


def _artifacts(record: TuningRecord) -> None:
    """The trials table, the objective over trials and the best trial, on the flow run and printed."""
    name, config = record.name, record.spec.hyper_parameter_tuning_job_config
    rows = [
        {
            "trial": t.training_job_name,
            **t.tuned_hyper_parameters,
            "objective": t.final_objective,
            "status": t.training_job_status.value,
            "start": t.training_start_time.isoformat() if t.training_start_time else None,
            "end": t.training_end_time.isoformat() if t.training_end_time else None,
        }
        for t in record.trials
    ]
    key = f"tuning-{name.lower()}"[:100]
    create_table_artifact(key=key, table=rows, description=f"trials of tuning job {name}")
    metric = config.hyper_parameter_tuning_job_objective.metric_name
    chart = objective_over_trials([t.final_objective for t in record.trials], metric, config.maximize)
    outcome = record.failure_reason or ""
    if record.best:
        outcome = (
            f"Best: **{record.best.training_job_name}**, objective {record.best.final_objective}, "
            f"hyperparameters `{record.best.tuned_hyper_parameters}`"
        )
    if record.completion_reason:
        outcome += f"\n\nEnded early: {record.completion_reason}."
    print(f"{name}: {record.status.value}\n{chart}")
    create_markdown_artifact(
        key=f"{key}-best"[:100],
        markdown=f"# {name}: {record.status.value}\n\n{outcome}\n\n```\n{chart}\n```",
    )


if __name__ == "__main__":
    # `python -m flows.tune` hands over to the command line, which imports this module.
    from cli.tune import main

    sys.exit(main())
