"""Tuning's tasks: validate a tuning job, choose trials with Optuna, keep the record.

Strategies decide from the study's past trials only (ask-and-tell); the
tuning flow runs each trial as a training subflow.
"""

from __future__ import annotations

import json
import os
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from prefect import task
from prefect.cache_policies import NONE
from pydantic import ValidationError

from dockyard.algorithms import metric_definitions_of
from dockyard.errors import JobSpecError
from dockyard.loading import build_job, field_problem, from_sagemaker_request, looks_like_sagemaker_request
from dockyard.tuning import (
    ObjectiveType,
    ParameterRanges,
    Strategy,
    TuningJobConfig,
    TuningJobSpec,
    check_tuning,
    log_scaled,
    trial_name,
)
from infra import docker_engine, records
from tasks.validate import check_runnable

optuna.logging.set_verbosity(optuna.logging.WARNING)


def parse_tuning(doc: dict[str, Any]) -> TuningJobSpec:
    """Raises: JobSpecError, one line per field problem."""
    if looks_like_sagemaker_request(doc):
        doc, _ = from_sagemaker_request(doc)
    try:
        return TuningJobSpec.model_validate(doc)
    except ValidationError as exc:
        raise JobSpecError([field_problem(e) for e in exc.errors()]) from None


def first_values(ranges: ParameterRanges) -> dict[str, str]:
    """One point of the search space (each range's lowest), to validate the definition with."""
    point = {r.name: str(r.min_value) for r in (*ranges.integer_parameter_ranges, *ranges.continuous_parameter_ranges)}
    point.update({r.name: r.values[0] for r in ranges.categorical_parameter_ranges})
    return point


def trial_doc(spec: TuningJobSpec, number: int, values: dict[str, str]) -> dict[str, Any]:
    """The training job spec of one trial: the definition, its name, its hyperparameters."""
    definition = dict(spec.training_job_definition)
    static = {str(k): v for k, v in (definition.pop("static_hyper_parameters", None) or {}).items()}
    definition.pop("hyperparameters", None)
    return {
        **definition,
        "training_job_name": trial_name(spec.hyper_parameter_tuning_job_name, number),
        "hyperparameters": {**static, **values},
    }


def check_tuning_doc(doc: dict[str, Any], home: str, endpoint_url: str | None) -> TuningJobSpec:
    """Everything a tuning job must pass before any trial starts; creates nothing.

    Raises:
        JobSpecError: one line per problem, the training definition's included.
    """
    spec = parse_tuning(doc)
    config = spec.hyper_parameter_tuning_job_config
    sample = trial_doc(spec, 0, first_values(config.parameter_ranges))
    try:
        training = build_job(sample, home=home, now=records.now())
    except JobSpecError as exc:
        raise JobSpecError(
            [p.__class__(f"training_job_definition.{p.path}", p.problem, p.fix) for p in exc.problems]
        ) from None
    algo = training.algorithm_specification
    metrics = [
        n for n, _ in metric_definitions_of(algo.algorithm_name, [(m.name, m.regex) for m in algo.metric_definitions])
    ]
    static = spec.training_job_definition.get("static_hyper_parameters") or {}
    check_tuning(spec, metrics, static)
    check_runnable(training, endpoint_url)
    if (records.tuning_dir(home, spec.hyper_parameter_tuning_job_name) / "record.json").exists():
        raise JobSpecError(
            f"hyper_parameter_tuning_job_name: '{spec.hyper_parameter_tuning_job_name}' is taken — choose another name"
        )
    return spec


def make_study(config: TuningJobConfig) -> optuna.Study:
    seed = config.random_seed
    sampler: optuna.samplers.BaseSampler
    if config.strategy is Strategy.BAYESIAN:
        sampler = optuna.samplers.TPESampler(
            seed=seed,
            n_startup_trials=min(5, max(2, config.resource_limits.max_number_of_training_jobs // 3)),
            constant_liar=True,
        )
    else:
        sampler = optuna.samplers.RandomSampler(seed=seed)
    maximize = config.hyper_parameter_tuning_job_objective.type is ObjectiveType.MAXIMIZE
    direction = optuna.study.StudyDirection.MAXIMIZE if maximize else optuna.study.StudyDirection.MINIMIZE
    return optuna.create_study(direction=direction, sampler=sampler)


def distributions(ranges: ParameterRanges) -> dict[str, BaseDistribution]:
    """The search space in Optuna's terms. ReverseLogarithmic ranges are drawn
    log-uniformly on 1 - value and mapped back by `hyperparameters_of`."""
    space: dict[str, BaseDistribution] = {}
    for r in ranges.integer_parameter_ranges:
        space[r.name] = IntDistribution(r.min_value, r.max_value, log=log_scaled(r))
    for c in ranges.continuous_parameter_ranges:
        if c.scaling_type.value == "ReverseLogarithmic":
            space[c.name] = FloatDistribution(1 - c.max_value, 1 - c.min_value, log=True)
        else:
            space[c.name] = FloatDistribution(c.min_value, c.max_value, log=log_scaled(c))
    for k in ranges.categorical_parameter_ranges:
        space[k.name] = CategoricalDistribution(k.values)
    return space


def hyperparameters_of(params: dict[str, Any], ranges: ParameterRanges) -> dict[str, str]:
    reverse = {c.name for c in ranges.continuous_parameter_ranges if c.scaling_type.value == "ReverseLogarithmic"}
    out = {}
    for name, value in params.items():
        value = 1 - value if name in reverse else value
        out[name] = f"{value:.6g}" if isinstance(value, float) else str(value)
    return out


def host_slots() -> int:
    return docker_engine.host_facts().cpus


def trial_slots(training: dict[str, Any], slots: int) -> int:
    """The host's vCPU slots one trial occupies: its instances times their vCPUs (1 for local types)."""
    from dockyard.instances import INSTANCE_TYPES

    resources = training.get("resource_config") or {}
    itype = INSTANCE_TYPES.get(resources.get("instance_type", "local"))
    vcpus = (itype.vcpus if itype and itype.vcpus else 1) * int(resources.get("instance_count", 1))
    return max(1, min(slots, vcpus))


@task(name="validate-tuning", cache_policy=NONE)
def validate_tuning(doc: dict[str, Any], home: str, endpoint_url: str | None) -> dict[str, Any]:
    return check_tuning_doc(doc, home, endpoint_url).model_dump(mode="json")


@task(name="record-tuning", cache_policy=NONE)
def record_tuning(home: str, name: str, body: dict[str, Any]) -> None:
    """Write the tuning record (DescribeHyperParameterTuningJob's shape)."""
    folder = records.tuning_dir(home, name)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / ".record.json"
    tmp.write_text(json.dumps(body, indent=2))
    os.replace(tmp, folder / "record.json")
