"""The tuning flow: trials chosen by Optuna, each one a training subflow.

    python -m flows.tune TUNING.yaml     (a CreateHyperParameterTuningJob body works too)

At most max_parallel_training_jobs trials run at once, and never more vCPUs
than the host has across them: each trial holds slots of the Prefect global
concurrency limit `dockyard-host-vcpus` while it runs. The flow waits for
every trial it started.
"""

from __future__ import annotations

import contextvars
import os
import sys
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any

import optuna
from prefect import flow, runtime
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.client.orchestration import get_client
from prefect.concurrency.sync import concurrency
from prefect.exceptions import TerminationSignal

from dockyard.settings import Settings
from dockyard.tuning import (
    EarlyStopping,
    Strategy,
    TuningJobSpec,
    completion_reason,
    grid,
    median_rule,
    objective_value,
)
from flows.train import train
from infra import records
from tasks.tuning import (
    distributions,
    host_slots,
    hyperparameters_of,
    make_study,
    record_tuning,
    trial_doc,
    trial_slots,
    validate_tuning,
)

HOST_LIMIT = "dockyard-host-vcpus"
EARLY_STOP_CHECK_SECONDS = 1.0


def _run_trial(doc: dict[str, Any], slots: int) -> dict[str, Any]:
    """One training subflow, holding its share of the host while it runs."""
    with concurrency(HOST_LIMIT, occupy=slots):
        state = train(doc, return_state=True)
    if state.is_completed():
        return dict(state.result())
    name = doc["training_job_name"]
    home = str(Settings.from_env(os.environ).home)
    if records.exists(home, name):
        from dockyard.record import describe

        return describe(records.load(home, name))
    return {"TrainingJobName": name, "TrainingJobStatus": "Failed", "FailureReason": str(state.message)}


def _summary(body: dict[str, Any], hps: dict[str, str], metric: str) -> dict[str, Any]:
    return {
        "TrainingJobName": body["TrainingJobName"],
        "TrainingJobStatus": body["TrainingJobStatus"],
        "TunedHyperParameters": hps,
        "FinalHyperParameterTuningJobObjectiveMetric": objective_value(body.get("FinalMetricDataList", []), metric),
        "TrainingStartTime": body.get("TrainingStartTime"),
        "TrainingEndTime": body.get("TrainingEndTime"),
        "FailureReason": body.get("FailureReason"),
    }


def _run_name() -> str:
    job = runtime.flow_run.parameters.get("job") or {}
    return str(job.get("hyper_parameter_tuning_job_name") or "tune") if isinstance(job, dict) else "tune"


@flow(name="tune", flow_run_name=_run_name, log_prints=True)
def tune(job: dict[str, Any]) -> dict[str, Any]:
    """Run a tuning job; returns its DescribeHyperParameterTuningJob-shaped record."""
    settings = Settings.from_env(os.environ)
    home = str(settings.home)
    spec = TuningJobSpec.model_validate(validate_tuning(job, home, settings.s3_endpoint_url))
    config = spec.hyper_parameter_tuning_job_config
    name, metric = spec.hyper_parameter_tuning_job_name, config.hyper_parameter_tuning_job_objective.metric_name
    limits = config.resource_limits
    slots_total = host_slots()
    with get_client(sync_client=True) as client:
        client.upsert_global_concurrency_limit_by_name(HOST_LIMIT, slots_total)
    slots = trial_slots(spec.training_job_definition, slots_total)
    study = make_study(config)
    space = distributions(config.parameter_ranges)
    points = grid(config.parameter_ranges) if config.strategy is Strategy.GRID else None
    total = len(points) if points is not None else limits.max_number_of_training_jobs
    summaries: list[dict[str, Any]] = []
    running: dict[Future[dict[str, Any]], tuple[optuna.trial.Trial | None, dict[str, str], str]] = {}
    stopped = False
    completed_because: str | None = None
    early_stopped: set[str] = set()
    started = 0
    with ThreadPoolExecutor(max_workers=limits.max_parallel_training_jobs, thread_name_prefix="trial") as pool:
        try:
            while started < total or running:
                completed_because = completed_because or completion_reason(
                    config.tuning_job_completion_criteria,
                    [s["FinalHyperParameterTuningJobObjectiveMetric"] for s in summaries],
                    config.maximize,
                )
                while (
                    not stopped
                    and not completed_because
                    and started < total
                    and len(running) < limits.max_parallel_training_jobs
                ):
                    trial: optuna.trial.Trial | None = None
                    if points is not None:
                        hps = points[started]
                    else:
                        trial = study.ask(space)
                        hps = hyperparameters_of(trial.params, config.parameter_ranges)
                    doc = trial_doc(spec, started, hps)
                    context = contextvars.copy_context()  # so each trial is a subflow of this run
                    running[pool.submit(context.run, _run_trial, doc, slots)] = (trial, hps, doc["training_job_name"])
                    started += 1
                if not running:
                    break
                done, _ = wait(list(running), timeout=EARLY_STOP_CHECK_SECONDS, return_when=FIRST_COMPLETED)
                if config.training_job_early_stopping_type is EarlyStopping.AUTO:
                    _stop_early(home, metric, config.maximize, running, summaries, early_stopped)
                for future in done:
                    trial, hps, _ = running.pop(future)
                    body = future.result()
                    summaries.append(_summary(body, hps, metric))
                    value = summaries[-1]["FinalHyperParameterTuningJobObjectiveMetric"]
                    if trial is not None:
                        study.tell(trial, value, state=None if value is not None else optuna.trial.TrialState.FAIL)
        except (KeyboardInterrupt, TerminationSignal):
            # Every running trial stops gracefully, uploads what it has, and is recorded.
            stopped = True
            for _, _, trial_name in running.values():
                if records.exists(home, trial_name):
                    records.request_stop(home, trial_name, "the tuning job was stopped")
            for future, (_, hps, _) in list(running.items()):
                summaries.append(_summary(future.result(), hps, metric))
    body = _tuning_record(spec, summaries, stopped, completed_because)
    record_tuning(home, name, body)
    _artifacts(name, body)
    return body


def _series(home: str, name: str, metric: str) -> list[float]:
    return [m.value for m in records.read_metrics(home, name) if m.metric_name == metric and m.host == "algo-1"]


def _stop_early(
    home: str,
    metric: str,
    maximize: bool,
    running: dict[Any, tuple[Any, dict[str, str], str]],
    summaries: list[dict[str, Any]],
    early_stopped: set[str],
) -> None:
    """Apply the median rule to every running trial, from the finished trials' curves."""
    earlier = [_series(home, s["TrainingJobName"], metric) for s in summaries if s["TrainingJobStatus"] != "Failed"]
    for _, _, name in running.values():
        if name in early_stopped or not records.exists(home, name):
            continue
        if median_rule(_series(home, name, metric), earlier, maximize):
            early_stopped.add(name)
            records.request_stop(home, name, f"early stopping: {metric} worse than the median of earlier trials")


def _tuning_record(
    spec: TuningJobSpec, summaries: list[dict[str, Any]], stopped: bool, completed_because: str | None
) -> dict[str, Any]:
    config = spec.hyper_parameter_tuning_job_config
    maximize = config.hyper_parameter_tuning_job_objective.type.value == "Maximize"
    scored = [
        s
        for s in summaries
        if s["FinalHyperParameterTuningJobObjectiveMetric"] is not None and s["TrainingJobStatus"] == "Completed"
    ]
    best = (
        (max if maximize else min)(scored, key=lambda s: s["FinalHyperParameterTuningJobObjectiveMetric"])
        if scored
        else None
    )
    counts: dict[str, int] = {}
    for s in summaries:
        counts[s["TrainingJobStatus"]] = counts.get(s["TrainingJobStatus"], 0) + 1
    if stopped:
        status, reason = "Stopped", "the tuning job was stopped"
    elif best is None:
        reasons = sorted({str(s.get("FailureReason") or "no objective value") for s in summaries})
        status, reason = "Failed", "no trial produced the objective metric: " + "; ".join(reasons)[:900]
    else:
        status, reason = "Completed", None
    body = {
        "HyperParameterTuningJobName": spec.hyper_parameter_tuning_job_name,
        "HyperParameterTuningJobStatus": status,
        "HyperParameterTuningJobConfig": config.model_dump(mode="json"),
        "TrainingJobStatusCounters": counts,
        "ObjectiveStatusCounters": {"Succeeded": len(scored), "Failed": len(summaries) - len(scored)},
        "BestTrainingJob": best,
        "TrainingJobSummaries": summaries,
        "FailureReason": reason,
        "CompletionReason": completed_because,
    }
    return {k: v for k, v in body.items() if v is not None}


def _artifacts(name: str, body: dict[str, Any]) -> None:
    rows = [
        {
            "trial": s["TrainingJobName"],
            **s["TunedHyperParameters"],
            "objective": s["FinalHyperParameterTuningJobObjectiveMetric"],
            "status": s["TrainingJobStatus"],
            "start": s.get("TrainingStartTime"),
            "end": s.get("TrainingEndTime"),
        }
        for s in body["TrainingJobSummaries"]
    ]
    key = f"tuning-{name.lower()}"[:100]
    create_table_artifact(key=key, table=rows, description=f"trials of tuning job {name}")
    best = body.get("BestTrainingJob")
    outcome = body.get("FailureReason", "")
    if best:
        outcome = (
            f"Best: **{best['TrainingJobName']}**, objective "
            f"{best['FinalHyperParameterTuningJobObjectiveMetric']}, "
            f"hyperparameters `{best['TunedHyperParameters']}`"
        )
    create_markdown_artifact(
        key=f"{key}-best"[:100],
        markdown=(f"# {name}: {body['HyperParameterTuningJobStatus']}\n\n" + outcome),
    )


def main(argv: list[str] | None = None) -> int:
    from flows.cli import run_tuning

    return run_tuning(argv if argv is not None else sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
