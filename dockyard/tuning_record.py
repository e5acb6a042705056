"""The tuning record: a tuning job's trials and outcome, typed; DescribeHyperParameterTuningJob's
shape is made from it only at the edges (`describe`). Warm start from parent tuning jobs'
records lives here too: pure functions."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict

from dockyard.errors import FieldProblem
from dockyard.secrets import block_of, is_secret_name, masked
from dockyard.status import PrimaryStatus
from dockyard.tuning import DEFINITION_SECRET_MAPS, TuningJobSpec, WarmStartType


class ObjectiveStatus(StrEnum):
    SUCCEEDED = "Succeeded"  # the trial trained fully (or to Hyperband's max_resource) and reported the objective
    FAILED = "Failed"  # no objective value, or a trial stopped early


class TuningStatus(StrEnum):
    IN_PROGRESS = "InProgress"
    COMPLETED = "Completed"  # at least one trial gave an objective value
    FAILED = "Failed"  # no trial did
    STOPPED = "Stopped"  # stopped by request


class TrialSummary(BaseModel):
    """One trial as the tuning record lists it (a TrainingJobSummary)."""

    model_config = ConfigDict(frozen=True)

    training_job_name: str
    training_job_status: PrimaryStatus
    tuned_hyper_parameters: dict[str, str]
    final_objective: float | None = None
    objective_status: ObjectiveStatus = ObjectiveStatus.FAILED
    training_start_time: datetime | None = None
    training_end_time: datetime | None = None
    failure_reason: str | None = None
    stopped_because: str | None = None  # the early-stopping or Hyperband rule that stopped it

    @property
    def scored(self) -> bool:
        return self.objective_status is ObjectiveStatus.SUCCEEDED and self.final_objective is not None

    def describe(self) -> dict[str, Any]:
        """A TrainingJobSummary of DescribeHyperParameterTuningJob (with dockyard's StoppedBecause)."""
        body = {
            "TrainingJobName": self.training_job_name,
            "TrainingJobStatus": self.training_job_status.value,
            "TunedHyperParameters": self.tuned_hyper_parameters,
            "FinalHyperParameterTuningJobObjectiveMetric": self.final_objective,
            "ObjectiveStatus": self.objective_status.value,
            "TrainingStartTime": self.training_start_time.isoformat() if self.training_start_time else None,
            "TrainingEndTime": self.training_end_time.isoformat() if self.training_end_time else None,
            "FailureReason": self.failure_reason,
            "StoppedBecause": self.stopped_because,
        }
        return body  # every key, None included: readers look each one up


class TuningRecord(BaseModel):
    """What a tuning job is and how it went."""

    model_config = ConfigDict(frozen=True)

    spec: TuningJobSpec
    status: TuningStatus
    creation_time: datetime | None = None
    end_time: datetime | None = None
    trials: tuple[TrialSummary, ...] = ()
    best: TrialSummary | None = None
    overall_best: TrialSummary | None = None  # with warm start: the best of this job's and its parents'
    failure_reason: str | None = None
    completion_reason: str | None = None  # a completion criterion that ended the search early
    flow_run_id: str | None = None  # the tune flow run carrying it out
    queued: bool = False  # created through the SageMaker API, waiting for a worker's flow run

    @property
    def name(self) -> str:
        return self.spec.hyper_parameter_tuning_job_name

    def describe(self) -> dict[str, Any]:
        """DescribeHyperParameterTuningJob's answer."""
        counts: dict[str, int] = {}
        for t in self.trials:
            counts[t.training_job_status.value] = counts.get(t.training_job_status.value, 0) + 1
        succeeded = sum(t.objective_status is ObjectiveStatus.SUCCEEDED for t in self.trials)
        warm = self.spec.warm_start_config
        body = {
            "HyperParameterTuningJobName": self.name,
            "HyperParameterTuningJobStatus": self.status.value,
            "CreationTime": self.creation_time.isoformat() if self.creation_time else None,
            "HyperParameterTuningEndTime": self.end_time.isoformat() if self.end_time else None,
            "HyperParameterTuningJobConfig": self.spec.hyper_parameter_tuning_job_config.model_dump(mode="json"),
            "TrainingJobDefinition": shown_definition(self.spec.training_job_definition),
            "WarmStartConfig": warm.model_dump(mode="json") if warm else None,
            "TrainingJobStatusCounters": counts,
            "ObjectiveStatusCounters": {"Succeeded": succeeded, "Failed": len(self.trials) - succeeded},
            "BestTrainingJob": self.best.describe() if self.best else None,
            "OverallBestTrainingJob": self.overall_best.describe() if self.overall_best else None,
            "TrainingJobSummaries": [t.describe() for t in self.trials],
            "FailureReason": self.failure_reason,
            "CompletionReason": self.completion_reason,
        }
        return {k: v for k, v in body.items() if v is not None}


def shown_definition(definition: dict[str, Any]) -> dict[str, Any]:
    """A training job definition as answered: literal secrets masked (references stay), and
    without the copy of its registered algorithm that dockyard pins its trials to."""
    return {
        k: masked(v) if k in DEFINITION_SECRET_MAPS.values() and isinstance(v, dict) else v
        for k, v in definition.items()
        if k != "registered_algorithm"
    }


def best_of(trials: list[TrialSummary], maximize: bool) -> TrialSummary | None:
    """The trial with the best objective among those whose objective succeeded."""
    scored = [t for t in trials if t.scored]
    pick = max if maximize else min
    return pick(scored, key=lambda t: t.final_objective or 0.0) if scored else None


def tuning_record(
    spec: TuningJobSpec,
    trials: list[TrialSummary],
    stopped: bool,
    completed_because: str | None,
    parents: list[TuningRecord],
    times: tuple[datetime, datetime] | None = None,
) -> TuningRecord:
    """The finished tuning job's record."""
    maximize = spec.hyper_parameter_tuning_job_config.maximize
    best = best_of(trials, maximize)
    if stopped:
        status, reason = TuningStatus.STOPPED, "the tuning job was stopped"
    elif best is None:
        reasons = sorted({t.failure_reason or "no objective value" for t in trials})
        status, reason = TuningStatus.FAILED, "no trial produced the objective metric: " + "; ".join(reasons)[:900]
    else:
        status, reason = TuningStatus.COMPLETED, None
    overall = None
    if spec.warm_start_config is not None:
        candidates = [p.overall_best or p.best for p in parents]
        overall = best_of([c for c in [best, *candidates] if c], maximize)
    return TuningRecord(
        spec=spec,
        status=status,
        creation_time=times[0] if times else None,
        end_time=times[1] if times else None,
        trials=tuple(trials),
        best=best,
        overall_best=overall,
        failure_reason=reason,
        completion_reason=completed_because,
    )


def _same(parent: dict[str, Any], child: dict[str, Any], key: str) -> bool:
    if key == "static_hyper_parameters":  # a secret (each job's own block) is no part of the algorithm
        return _without_secrets(parent.get(key)) == _without_secrets(child.get(key))
    return parent.get(key) == child.get(key)


def _without_secrets(entries: dict[str, Any] | None) -> dict[str, Any]:
    return {k: v for k, v in (entries or {}).items() if not (is_secret_name(k) or block_of(str(v)) is not None)}


def warm_start_problems(spec: TuningJobSpec, parents: dict[str, TuningRecord | None]) -> list[FieldProblem]:
    """What keeps the parents (their tuning records, None where missing) from seeding this job."""
    warm = spec.warm_start_config
    if warm is None:
        return []
    problems = []
    objective = spec.hyper_parameter_tuning_job_config.hyper_parameter_tuning_job_objective
    for i, (name, record) in enumerate(parents.items()):
        at = f"warm_start_config.parent_hyper_parameter_tuning_jobs[{i}].hyper_parameter_tuning_job_name"
        if record is None or record.status is TuningStatus.IN_PROGRESS:
            problems.append(FieldProblem(at, f"no tuning job '{name}' has finished here", "name a finished one"))
            continue
        theirs = record.spec.hyper_parameter_tuning_job_config.hyper_parameter_tuning_job_objective
        if (theirs.metric_name, theirs.type) != (objective.metric_name, objective.type):
            problems.append(
                FieldProblem(
                    at,
                    f"'{name}' {theirs.type.value}s {theirs.metric_name}, this job "
                    f"{objective.type.value}s {objective.metric_name}",
                    "warm start from parents with the same objective",
                )
            )
        if warm.warm_start_type is WarmStartType.IDENTICAL_DATA_AND_ALGORITHM:
            parent, child = record.spec.training_job_definition, spec.training_job_definition
            differ = [
                what
                for what, same in (
                    ("algorithm", _same(parent, child, "algorithm_specification")),
                    ("input data", _same(parent, child, "input_data_config")),
                    ("static hyperparameters", _same(parent, child, "static_hyper_parameters")),
                )
                if not same
            ]
            if differ:
                problems.append(
                    FieldProblem(
                        at,
                        f"'{name}' differs in its {', '.join(differ)}, which IdenticalDataAndAlgorithm keeps",
                        "use warm_start_type TransferLearning",
                    )
                )
    return problems


def warm_start_results(parents: list[TuningRecord]) -> list[tuple[dict[str, Any], float]]:
    """The parents' scored trials as (hyperparameters, objective), the hyperparameters
    taken from each trial's tuned values and its job's static ones."""
    out = []
    for record in parents:
        static = record.spec.training_job_definition.get("static_hyper_parameters") or {}
        for trial in record.trials:
            if trial.scored and trial.final_objective is not None:
                out.append(({**static, **trial.tuned_hyper_parameters}, trial.final_objective))
    return out


def from_description(body: dict[str, Any]) -> TuningRecord:
    """A record from DescribeHyperParameterTuningJob's shape, as earlier dockyards stored it."""

    def trial(s: dict[str, Any]) -> TrialSummary:
        return TrialSummary(
            training_job_name=s["TrainingJobName"],
            training_job_status=PrimaryStatus(s["TrainingJobStatus"]),
            tuned_hyper_parameters=s.get("TunedHyperParameters") or {},
            final_objective=s.get("FinalHyperParameterTuningJobObjectiveMetric"),
            objective_status=ObjectiveStatus(s.get("ObjectiveStatus", "Succeeded")),
            training_start_time=s.get("TrainingStartTime"),
            training_end_time=s.get("TrainingEndTime"),
            failure_reason=s.get("FailureReason"),
            stopped_because=s.get("StoppedBecause"),
        )

    spec = TuningJobSpec.model_validate(
        {
            "hyper_parameter_tuning_job_name": body["HyperParameterTuningJobName"],
            "hyper_parameter_tuning_job_config": body["HyperParameterTuningJobConfig"],
            "training_job_definition": body.get("TrainingJobDefinition") or {},
            "warm_start_config": body.get("WarmStartConfig"),
        }
    )
    best, overall = body.get("BestTrainingJob"), body.get("OverallBestTrainingJob")
    return TuningRecord(
        spec=spec,
        status=TuningStatus(body["HyperParameterTuningJobStatus"]),
        creation_time=body.get("CreationTime"),
        end_time=body.get("HyperParameterTuningEndTime"),
        trials=tuple(trial(s) for s in body.get("TrainingJobSummaries", [])),
        best=trial(best) if best else None,
        overall_best=trial(overall) if overall else None,
        failure_reason=body.get("FailureReason"),
        completion_reason=body.get("CompletionReason"),
    )
