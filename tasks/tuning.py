"""Tuning's tasks: validate a tuning job, choose trials with Optuna, keep the record.

Strategies decide from the study's past trials only (ask-and-tell); the
tuning flow runs each trial as a training subflow.
"""

from __future__ import annotations

import time
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from prefect import get_run_logger, task
from prefect.cache_policies import NONE
from pydantic import ValidationError

from dockyard.algorithm_spec import AlgorithmSpec, check_objective
from dockyard.errors import FieldProblem, JobSpecError
from dockyard.instances import INSTANCE_TYPES
from dockyard.loading import build_job, field_problem, from_sagemaker_request, looks_like_sagemaker_request
from dockyard.record import JobRecord
from dockyard.settings import Settings
from dockyard.status import is_final
from dockyard.tuning import (
    ObjectiveType,
    ParameterRanges,
    Strategy,
    TuningJobConfig,
    TuningJobSpec,
    check_tuning,
    hyperband_resources,
    log_scaled,
    trial_name,
    tuning_as_references,
)
from dockyard.tuning_record import TuningRecord, warm_start_problems, warm_start_results
from infra import catalog, docker_engine
from infra import secrets as secret_blocks
from infra.job_store import JobStore, now, open_store
from tasks.validate import check_runnable, resolve_algorithm

optuna.logging.set_verbosity(optuna.logging.WARNING)


def parse_tuning(doc: dict[str, Any]) -> TuningJobSpec:
    """Raises: JobSpecError, one line per field problem."""
    if looks_like_sagemaker_request(doc):
        doc, _ = from_sagemaker_request(doc)
    definition = doc.get("training_job_definition")
    if isinstance(definition, dict) and "hyper_parameter_tuning_resource_config" in definition:
        # What the SageMaker SDK sends in place of ResourceConfig: its instance fields are the trials'.
        definition = dict(definition)
        doc = {**doc, "training_job_definition": definition}
        resources = definition.pop("hyper_parameter_tuning_resource_config") or {}
        kept = ("instance_type", "instance_count", "volume_size_in_gb", "volume_kms_key_id")
        definition.setdefault("resource_config", {k: v for k, v in resources.items() if k in kept})
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
    doc = {
        **definition,
        "training_job_name": trial_name(spec.hyper_parameter_tuning_job_name, number),
        "hyperparameters": {**static, **values},
    }
    if spec.tags:  # as SageMaker does, the tuning job's tags go to each training job it launches
        doc["tags"] = [t.model_dump() for t in spec.tags]
    return doc


def check_tuning_doc(doc: dict[str, Any], settings: Settings) -> TuningJobSpec:
    """Everything a tuning job must pass before any trial starts; creates nothing but,
    once it passed, the Secret blocks of the definition's literal secrets. Returns the
    spec, each such secret a reference to its block.

    Raises:
        JobSpecError: one line per problem, the training definition's included.
    """
    spec, literals = tuning_as_references(parse_tuning(doc))
    config = spec.hyper_parameter_tuning_job_config
    sample = trial_doc(spec, 0, first_values(config.parameter_ranges))
    try:
        training = build_job(sample, home=str(settings.home), now=now())
    except JobSpecError as exc:
        raise JobSpecError(
            [p.__class__(f"training_job_definition.{p.path}", p.problem, p.fix) for p in exc.problems]
        ) from None
    training = resolve_algorithm(training, settings)
    metrics = [n for n, _ in training.metric_pairs]
    static = spec.training_job_definition.get("static_hyper_parameters") or {}
    check_tuning(spec, metrics, static)
    if training.registered_algorithm is not None:
        raise_problems(algorithm_problems(training.registered_algorithm, config))
        # Every trial runs the algorithm as it is now, whatever becomes of the registry meanwhile.
        pinned = training.registered_algorithm.model_dump(mode="json")
        spec = spec.model_copy(
            update={"training_job_definition": {**spec.training_job_definition, "registered_algorithm": pinned}}
        )
    check_runnable(training, settings, literals)
    # As SageMaker does, every trial is told the metric tuned (the training toolkit keeps it from scripts;
    # the built-in XGBoost evaluates it, last), and DescribeHyperParameterTuningJob shows it.
    static = {**(spec.training_job_definition.get("static_hyper_parameters") or {})}
    static.setdefault("_tuning_objective_metric", config.hyper_parameter_tuning_job_objective.metric_name)
    spec = spec.model_copy(
        update={"training_job_definition": {**spec.training_job_definition, "static_hyper_parameters": static}}
    )
    store = open_store(settings)
    taken = store.tuning(spec.hyper_parameter_tuning_job_name)
    if taken is not None and not taken.queued:
        raise JobSpecError(
            f"hyper_parameter_tuning_job_name: '{spec.hyper_parameter_tuning_job_name}' is taken — choose another name"
        )
    problems = warm_start_problems(spec, parents_of(spec, store))
    if problems:
        raise JobSpecError(problems)
    secret_blocks.save(literals)
    return spec


def raise_problems(problems: list[FieldProblem]) -> None:
    if problems:
        raise JobSpecError(problems)


def algorithm_problems(algorithm: AlgorithmSpec, config: TuningJobConfig) -> list[FieldProblem]:
    """A tuning job against its registered algorithm: a supported objective, and ranges over its
    tunable hyperparameters only, of their kind and within their own ranges (SageMaker refuses
    these at creation, not trial by trial)."""
    objective = config.hyper_parameter_tuning_job_objective
    problems = check_objective(algorithm, objective.metric_name, objective.type.value)
    at = "hyper_parameter_tuning_job_config.parameter_ranges"
    ranges = config.parameter_ranges
    kinds: list[tuple[str, list[Any]]] = [
        ("Integer", ranges.integer_parameter_ranges), ("Continuous", ranges.continuous_parameter_ranges),
        ("Categorical", ranges.categorical_parameter_ranges),
    ]  # fmt: skip
    for kind, given in kinds:
        for r in given:
            hp = algorithm.training_specification.hyperparameter(r.name)
            if hp is None:
                continue  # the trial's own check names an unknown hyperparameter
            if not hp.is_tunable:
                problems.append(FieldProblem(
                    at, f"algorithm {algorithm.algorithm_name} does not let {r.name} be tuned",
                    "give it as a static hyperparameter",
                ))  # fmt: skip
                continue
            if hp.type.value != kind:
                problems.append(FieldProblem(
                    at, f"{r.name} is {hp.type.value} in algorithm {algorithm.algorithm_name}, not {kind}",
                    f"give it a {hp.type.value.lower()} range",
                ))  # fmt: skip
                continue
            ends = list(r.values) if kind == "Categorical" else [str(r.min_value), str(r.max_value)]
            wrong = next((f"'{v}' {w}" for v in ends if (w := hp.check(v))), None)
            if wrong:
                problems.append(FieldProblem(at, f"{r.name}: {wrong} in algorithm {algorithm.algorithm_name}",
                                             "keep the range within the algorithm's"))  # fmt: skip
    return problems


def parents_of(spec: TuningJobSpec, store: JobStore) -> dict[str, TuningRecord | None]:
    """The warm start parents' records by name (None where there is none)."""
    warm = spec.warm_start_config
    names = [p.hyper_parameter_tuning_job_name for p in warm.parent_hyper_parameter_tuning_jobs] if warm else []
    return {name: store.tuning(name) for name in names}


HYPERBAND_REDUCTION_FACTOR = 3  # Hyperband's eta: a third of a rung's trials go on to the next


def make_study(config: TuningJobConfig, static_hyperparameters: dict[str, Any]) -> optuna.Study:
    """Random: RandomSampler. Bayesian: TPE. Hyperband: TPE proposing, HyperbandPruner stopping
    trials at its rungs (Optuna's recommended pairing). Grid does not ask the study."""
    seed = config.random_seed
    sampler: optuna.samplers.BaseSampler
    pruner: optuna.pruners.BasePruner = optuna.pruners.NopPruner()
    if config.strategy in (Strategy.BAYESIAN, Strategy.HYPERBAND):
        sampler = optuna.samplers.TPESampler(
            seed=seed,
            n_startup_trials=min(5, max(2, config.resource_limits.max_number_of_training_jobs // 3)),
            constant_liar=True,
        )
    else:
        sampler = optuna.samplers.RandomSampler(seed=seed)
    if config.strategy is Strategy.HYPERBAND:
        low, high = hyperband_resources(config, static_hyperparameters)
        pruner = optuna.pruners.HyperbandPruner(
            min_resource=low, max_resource=high or "auto", reduction_factor=HYPERBAND_REDUCTION_FACTOR
        )
    maximize = config.hyper_parameter_tuning_job_objective.type is ObjectiveType.MAXIMIZE
    direction = optuna.study.StudyDirection.MAXIMIZE if maximize else optuna.study.StudyDirection.MINIMIZE
    return optuna.create_study(direction=direction, sampler=sampler, pruner=pruner)


def seed_study(
    study: optuna.Study, space: dict[str, BaseDistribution], ranges: ParameterRanges, parents: list[TuningRecord]
) -> int:
    """Add the warm start parents' scored trials that fit this search space to the study;
    returns how many were added."""
    used = 0
    for hyperparameters, value in warm_start_results(parents):
        params = params_of(hyperparameters, space, ranges)
        if params is None:
            continue
        study.add_trial(optuna.trial.create_trial(params=params, distributions=space, value=value))
        used += 1
    return used


def params_of(
    hyperparameters: dict[str, Any], space: dict[str, BaseDistribution], ranges: ParameterRanges
) -> dict[str, Any] | None:
    """Hyperparameter strings as Optuna params of this space (the inverse of `hyperparameters_of`),
    or None when one is missing or falls outside its range."""
    reverse = {c.name for c in ranges.continuous_parameter_ranges if c.scaling_type.value == "ReverseLogarithmic"}
    params: dict[str, Any] = {}
    for name, dist in space.items():
        raw = hyperparameters.get(name)
        if raw is None:
            return None
        if isinstance(dist, CategoricalDistribution):
            if str(raw) not in dist.choices:
                return None
            params[name] = str(raw)
            continue
        assert isinstance(dist, IntDistribution | FloatDistribution)
        try:
            value = int(float(raw)) if isinstance(dist, IntDistribution) else float(raw)
        except ValueError:
            return None
        value = 1 - value if name in reverse else value
        if not dist.low <= value <= dist.high:
            return None
        params[name] = value
    return params


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
    resources = training.get("resource_config") or {}
    itype = INSTANCE_TYPES.get(resources.get("instance_type", "local"))
    vcpus = (itype.vcpus if itype and itype.vcpus else 1) * int(resources.get("instance_count", 1))
    return max(1, min(slots, vcpus))


TRIAL_POLL_SECONDS = 2.0


def ended_elsewhere(settings: Settings, name: str) -> JobRecord | None:
    """The final record of a trial whose flow run handed it to another fleet host, once
    that host's worker has run it to its end; None when the trial has no record."""
    store = open_store(settings)
    while (record := store.find(name)) is not None and not is_final(record.status.secondary):
        time.sleep(TRIAL_POLL_SECONDS)
    return record


@task(name="validate-tuning", cache_policy=NONE)
def validate_tuning(doc: dict[str, Any], settings: Settings) -> TuningJobSpec:
    return check_tuning_doc(doc, settings)


@task(name="record-tuning", cache_policy=NONE)
def record_tuning(settings: Settings, record: TuningRecord) -> None:
    """Write the tuning record into the job store, and the tuning job into the catalog
    as an MLflow parent run of its trials' runs."""
    open_store(settings).save_tuning(record)
    try:
        run_id = catalog.record_tuning(str(settings.home), settings.catalog_uri(), record.describe())
        get_run_logger().info(f"catalogued as MLflow run {run_id}, its trials nested under it")
    except Exception as exc:  # noqa: BLE001 - the record is written; the catalog is a view of it
        get_run_logger().warning(f"the tuning job is not in the MLflow catalog: {exc}")
