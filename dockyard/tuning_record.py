"""The tuning record (DescribeHyperParameterTuningJob's shape) and warm start from
parent tuning jobs' records: pure functions over plain dicts."""

from __future__ import annotations

from typing import Any

from dockyard.errors import FieldProblem
from dockyard.tuning import TuningJobSpec, WarmStartType


def _same(parent: dict[str, Any], child: dict[str, Any], key: str) -> bool:
    return parent.get(key) == child.get(key)


def warm_start_problems(spec: TuningJobSpec, parents: dict[str, dict[str, Any] | None]) -> list[FieldProblem]:
    """What keeps the parents (their tuning records, None where missing) from seeding this job."""
    warm = spec.warm_start_config
    if warm is None:
        return []
    problems = []
    config = spec.hyper_parameter_tuning_job_config
    objective = config.hyper_parameter_tuning_job_objective
    for i, (name, record) in enumerate(parents.items()):
        at = f"warm_start_config.parent_hyper_parameter_tuning_jobs[{i}].hyper_parameter_tuning_job_name"
        if record is None:
            problems.append(FieldProblem(at, f"no tuning job '{name}' has finished here", "name a finished one"))
            continue
        theirs = record["HyperParameterTuningJobConfig"]["hyper_parameter_tuning_job_objective"]
        if (theirs["metric_name"], theirs["type"]) != (objective.metric_name, objective.type.value):
            problems.append(
                FieldProblem(
                    at,
                    f"'{name}' {theirs['type']}s {theirs['metric_name']}, this job "
                    f"{objective.type.value}s {objective.metric_name}",
                    "warm start from parents with the same objective",
                )
            )
        if warm.warm_start_type is WarmStartType.IDENTICAL_DATA_AND_ALGORITHM:
            parent, child = record.get("TrainingJobDefinition", {}), spec.training_job_definition
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


def warm_start_results(parents: list[dict[str, Any]]) -> list[tuple[dict[str, Any], float]]:
    """The parents' scored trials as (hyperparameters, objective), the hyperparameters
    taken from each trial's tuned values and its job's static ones."""
    out = []
    for record in parents:
        static = record.get("TrainingJobDefinition", {}).get("static_hyper_parameters") or {}
        for summary in record.get("TrainingJobSummaries", []):
            value = summary.get("FinalHyperParameterTuningJobObjectiveMetric")
            if value is None or summary.get("ObjectiveStatus", "Succeeded") != "Succeeded":
                continue
            out.append(({**static, **summary["TunedHyperParameters"]}, float(value)))
    return out


def best_of(summaries: list[dict[str, Any]], maximize: bool) -> dict[str, Any] | None:
    """The summary with the best objective among those whose objective succeeded."""
    scored = [s for s in summaries if s.get("ObjectiveStatus") == "Succeeded"]
    pick = max if maximize else min
    return pick(scored, key=lambda s: s["FinalHyperParameterTuningJobObjectiveMetric"]) if scored else None


def tuning_record(
    spec: TuningJobSpec,
    summaries: list[dict[str, Any]],
    stopped: bool,
    completed_because: str | None,
    parents: list[dict[str, Any]],
) -> dict[str, Any]:
    """The tuning record, shaped like DescribeHyperParameterTuningJob's answer."""
    config = spec.hyper_parameter_tuning_job_config
    best = best_of(summaries, config.maximize)
    counts: dict[str, int] = {}
    for s in summaries:
        counts[s["TrainingJobStatus"]] = counts.get(s["TrainingJobStatus"], 0) + 1
    succeeded = sum(s.get("ObjectiveStatus") == "Succeeded" for s in summaries)
    if stopped:
        status, reason = "Stopped", "the tuning job was stopped"
    elif best is None:
        reasons = sorted({str(s.get("FailureReason") or "no objective value") for s in summaries})
        status, reason = "Failed", "no trial produced the objective metric: " + "; ".join(reasons)[:900]
    else:
        status, reason = "Completed", None
    overall = None
    if spec.warm_start_config is not None:
        candidates = [p.get("OverallBestTrainingJob") or p.get("BestTrainingJob") for p in parents]
        overall = best_of([c for c in [best, *candidates] if c], config.maximize)
    body = {
        "HyperParameterTuningJobName": spec.hyper_parameter_tuning_job_name,
        "HyperParameterTuningJobStatus": status,
        "HyperParameterTuningJobConfig": config.model_dump(mode="json"),
        "TrainingJobDefinition": spec.training_job_definition,
        "WarmStartConfig": spec.warm_start_config.model_dump(mode="json") if spec.warm_start_config else None,
        "TrainingJobStatusCounters": counts,
        "ObjectiveStatusCounters": {"Succeeded": succeeded, "Failed": len(summaries) - succeeded},
        "BestTrainingJob": best,
        "OverallBestTrainingJob": overall,
        "TrainingJobSummaries": summaries,
        "FailureReason": reason,
        "CompletionReason": completed_because,
    }
    return {k: v for k, v in body.items() if v is not None}
