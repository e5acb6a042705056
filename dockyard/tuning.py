"""The tuning job spec (HyperParameterTuningJobConfig + TrainingJobDefinition)
and the pure parts of tuning: search spaces and the tuning record.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from dockyard import secrets
from dockyard.errors import FieldProblem, JobSpecError
from dockyard.record import MetricValue
from dockyard.spec import JOB_NAME_PATTERN, MAX_TAGS, Tag


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class Strategy(StrEnum):
    RANDOM = "Random"
    GRID = "Grid"
    BAYESIAN = "Bayesian"
    HYPERBAND = "Hyperband"


class ObjectiveType(StrEnum):
    MAXIMIZE = "Maximize"
    MINIMIZE = "Minimize"


class Scaling(StrEnum):
    AUTO = "Auto"
    LINEAR = "Linear"
    LOGARITHMIC = "Logarithmic"
    REVERSE_LOGARITHMIC = "ReverseLogarithmic"


class Objective(_Model):
    type: ObjectiveType
    metric_name: str = Field(min_length=1, max_length=255)


class ResourceLimits(_Model):
    max_number_of_training_jobs: int = Field(default=10, ge=1, le=500)
    max_parallel_training_jobs: int = Field(default=1, ge=1, le=100)
    max_runtime_in_seconds: int | None = Field(default=None, ge=120)


class _NumericRange(_Model):
    name: str = Field(min_length=1, max_length=256)
    scaling_type: Scaling = Scaling.AUTO
    min_value: float
    max_value: float

    @model_validator(mode="after")
    def _bounds(self) -> Any:
        low, high = float(self.min_value), float(self.max_value)
        if low >= high:
            raise ValueError(f"min_value ({low:g}) must be less than max_value ({high:g})")
        if self.scaling_type is Scaling.LOGARITHMIC and low <= 0:
            raise ValueError("Logarithmic scaling needs min_value > 0")
        if self.scaling_type is Scaling.REVERSE_LOGARITHMIC and not (low >= 0 and high < 1):
            raise ValueError("ReverseLogarithmic scaling needs 0 <= min_value and max_value < 1")
        return self


class IntegerRange(_NumericRange):
    min_value: int
    max_value: int


class ContinuousRange(_NumericRange):
    min_value: float
    max_value: float


class CategoricalRange(_Model):
    name: str = Field(min_length=1, max_length=256)
    values: list[str] = Field(min_length=1, max_length=30)


class ParameterRanges(_Model):
    integer_parameter_ranges: list[IntegerRange] = Field(default_factory=list)
    continuous_parameter_ranges: list[ContinuousRange] = Field(default_factory=list)
    categorical_parameter_ranges: list[CategoricalRange] = Field(default_factory=list)

    def names(self) -> list[str]:
        numeric: list[_NumericRange] = [*self.integer_parameter_ranges, *self.continuous_parameter_ranges]
        return [r.name for r in numeric] + [r.name for r in self.categorical_parameter_ranges]


class EarlyStopping(StrEnum):
    OFF = "Off"
    AUTO = "Auto"  # SageMaker's median rule


class NotImproving(_Model):
    max_number_of_training_jobs_not_improving: int = Field(ge=3)


class OnConvergence(StrEnum):
    DISABLED = "Disabled"
    ENABLED = "Enabled"


class ConvergenceDetected(_Model):
    complete_on_convergence: OnConvergence = OnConvergence.DISABLED


class CompletionCriteria(_Model):
    target_objective_metric_value: float | None = None
    best_objective_not_improving: NotImproving | None = None
    convergence_detected: ConvergenceDetected | None = None


class HyperbandConfig(_Model):
    min_resource: int = Field(default=1, ge=1)
    max_resource: int | None = Field(default=None, ge=1, le=20_000)


class StrategyConfig(_Model):
    hyperband_strategy_config: HyperbandConfig | None = None


class TuningJobConfig(_Model):
    strategy: Strategy = Strategy.BAYESIAN
    strategy_config: StrategyConfig | None = None
    hyper_parameter_tuning_job_objective: Objective
    resource_limits: ResourceLimits = Field(default_factory=ResourceLimits)
    parameter_ranges: ParameterRanges
    training_job_early_stopping_type: EarlyStopping = EarlyStopping.OFF
    tuning_job_completion_criteria: CompletionCriteria | None = None
    random_seed: int | None = None

    @property
    def maximize(self) -> bool:
        return self.hyper_parameter_tuning_job_objective.type is ObjectiveType.MAXIMIZE


class WarmStartType(StrEnum):
    IDENTICAL_DATA_AND_ALGORITHM = "IdenticalDataAndAlgorithm"  # same image, data and static hyperparameters
    TRANSFER_LEARNING = "TransferLearning"  # anything may differ; the parents' results still guide the search


class ParentJob(_Model):
    hyper_parameter_tuning_job_name: str = Field(pattern=JOB_NAME_PATTERN, max_length=32)


class WarmStartConfig(_Model):
    parent_hyper_parameter_tuning_jobs: list[ParentJob] = Field(min_length=1, max_length=5)
    warm_start_type: WarmStartType


class TuningJobSpec(_Model):
    hyper_parameter_tuning_job_name: str = Field(pattern=JOB_NAME_PATTERN, max_length=32)
    hyper_parameter_tuning_job_config: TuningJobConfig
    training_job_definition: dict[str, Any]  # a training job spec less its name; checked per trial
    warm_start_config: WarmStartConfig | None = None
    tags: list[Tag] = Field(default_factory=list, max_length=MAX_TAGS)  # the tuning job's, and each trial's


def check_tuning(spec: TuningJobSpec, metric_names: list[str], static_hyperparameters: dict[str, Any]) -> None:
    """The rules that tie the config to the training definition.

    Raises:
        JobSpecError: one line per problem.
    """
    config = spec.hyper_parameter_tuning_job_config
    at = "hyper_parameter_tuning_job_config"
    problems = []
    objective = config.hyper_parameter_tuning_job_objective.metric_name
    if objective not in metric_names:
        problems.append(
            FieldProblem(
                f"{at}.hyper_parameter_tuning_job_objective.metric_name",
                f"'{objective}' is not one of the training definition's metrics ({', '.join(metric_names) or 'none'})",
                "name one of them, or add it to algorithm_specification.metric_definitions",
            )
        )
    ranges = config.parameter_ranges
    names = ranges.names()
    if not names:
        problems.append(FieldProblem(f"{at}.parameter_ranges", "no ranges to tune", "add at least one range"))
    twice = sorted({n for n in names if names.count(n) > 1} | (set(names) & set(static_hyperparameters)))
    if twice:
        problems.append(
            FieldProblem(
                f"{at}.parameter_ranges",
                f"named more than once: {', '.join(twice)}",
                "give each hyperparameter one range, and none in static_hyper_parameters",
            )
        )
    if config.strategy is Strategy.GRID and (ranges.integer_parameter_ranges or ranges.continuous_parameter_ranges):
        problems.append(
            FieldProblem(
                f"{at}.strategy",
                "Grid accepts only categorical_parameter_ranges",
                "list the values to try as categorical ranges, or pick Random or Bayesian",
            )
        )
    problems += _hyperband_problems(config, static_hyperparameters)
    limits = config.resource_limits
    if limits.max_parallel_training_jobs > limits.max_number_of_training_jobs:
        problems.append(
            FieldProblem(
                f"{at}.resource_limits.max_parallel_training_jobs",
                "is more than max_number_of_training_jobs",
                "lower it",
            )
        )
    if problems:
        raise JobSpecError(problems)


EPOCH_HYPERPARAMETERS = ("epochs", "numepochs", "n-epochs", "n_epochs", "num_epochs")


def hyperband_resources(config: TuningJobConfig, static_hyperparameters: dict[str, Any]) -> tuple[int, int | None]:
    """Hyperband's (min, max) resource in epochs; max falls back on an epochs-like static hyperparameter."""
    hyperband = (config.strategy_config or StrategyConfig()).hyperband_strategy_config or HyperbandConfig()
    if hyperband.max_resource is not None:
        return hyperband.min_resource, hyperband.max_resource
    for key in EPOCH_HYPERPARAMETERS:
        if str(static_hyperparameters.get(key, "")).isdigit():
            return hyperband.min_resource, int(static_hyperparameters[key])
    return hyperband.min_resource, None


def _hyperband_problems(config: TuningJobConfig, static_hyperparameters: dict[str, Any]) -> list[FieldProblem]:
    at = "hyper_parameter_tuning_job_config"
    given = config.strategy_config is not None and config.strategy_config.hyperband_strategy_config is not None
    if config.strategy is not Strategy.HYPERBAND:
        if not given:
            return []
        return [
            FieldProblem(
                f"{at}.strategy_config.hyperband_strategy_config",
                f"applies only to the Hyperband strategy, not {config.strategy.value}",
                "set strategy to Hyperband, or drop strategy_config",
            )
        ]
    problems = []
    if config.training_job_early_stopping_type is EarlyStopping.AUTO:
        problems.append(
            FieldProblem(
                f"{at}.training_job_early_stopping_type",
                "Hyperband stops trials itself and cannot be combined with Auto early stopping",
                "set it to Off",
            )
        )
    low, high = hyperband_resources(config, static_hyperparameters)
    if high is None:
        problems.append(
            FieldProblem(
                f"{at}.strategy_config.hyperband_strategy_config.max_resource",
                "is missing, and no static hyperparameter (" + ", ".join(EPOCH_HYPERPARAMETERS) + ") gives it",
                "set max_resource to the most epochs a trial may train",
            )
        )
    elif low >= high:
        problems.append(
            FieldProblem(
                f"{at}.strategy_config.hyperband_strategy_config.min_resource",
                f"({low}) must be less than max_resource ({high})",
                "lower min_resource or raise max_resource",
            )
        )
    return problems


def grid(ranges: ParameterRanges) -> list[dict[str, str]]:
    """Every combination of the categorical values, in order."""
    names = [r.name for r in ranges.categorical_parameter_ranges]
    values = [r.values for r in ranges.categorical_parameter_ranges]
    return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*values)]


def log_scaled(r: IntegerRange | ContinuousRange) -> bool:
    """Auto scales like SageMaker's default: linearly, unless the range spans decades from above zero."""
    if r.scaling_type is Scaling.LOGARITHMIC:
        return True
    return r.scaling_type is Scaling.AUTO and r.min_value > 0 and r.max_value / r.min_value >= 100


def trial_name(tuning_name: str, number: int) -> str:
    return f"{tuning_name}-{number + 1:03d}"


def objective_value(final_metrics: Sequence[MetricValue], metric: str) -> float | None:
    """The objective's final value, when the trial reported a finite one."""
    for m in final_metrics:
        if m.metric_name == metric and math.isfinite(m.value):
            return m.value
    return None


MEDIAN_RULE_MIN_TRIALS = 2  # earlier trials needed before the median rule stops anything


def median_rule(series: list[float], earlier: list[list[float]], maximize: bool) -> bool:
    """SageMaker's Auto early stopping: stop a trial whose objective at step k is
    worse than the median of the earlier trials' running averages at step k."""
    k = len(series)
    averages = sorted(sum(e[:k]) / k for e in earlier if len(e) >= k) if k else []
    if len(averages) < MEDIAN_RULE_MIN_TRIALS:
        return False
    middle = len(averages) // 2
    median = averages[middle] if len(averages) % 2 else (averages[middle - 1] + averages[middle]) / 2
    return series[-1] < median if maximize else series[-1] > median


def completion_reason(
    criteria: CompletionCriteria | None, objectives: list[float | None], maximize: bool
) -> str | None:
    """Why the tuning job may end now (its completion criteria are met), or None.

    `objectives` are the finished trials' objective values, in finishing order.
    """
    if criteria is None:
        return None
    scored = [v for v in objectives if v is not None]
    target = criteria.target_objective_metric_value
    if target is not None and scored:
        best = max(scored) if maximize else min(scored)
        if (best >= target) if maximize else (best <= target):
            return f"the objective reached the target {target:g} (best {best:g})"
    if criteria.convergence_detected and criteria.convergence_detected.complete_on_convergence is OnConvergence.ENABLED:
        reason = _converged(scored, maximize)
        if reason:
            return reason
    if criteria.best_objective_not_improving and scored:
        patience = criteria.best_objective_not_improving.max_number_of_training_jobs_not_improving
        best_at, best = 0, scored[0]
        for i, v in enumerate(scored):
            if (v > best) if maximize else (v < best):
                best_at, best = i, v
        if len(scored) - 1 - best_at >= patience:
            return f"the best objective did not improve over the last {patience} trials"
    return None


CONVERGENCE_MIN_TRIALS = 10  # scored trials before convergence is judged
CONVERGENCE_WINDOW = 5  # the latest trials whose gain is weighed
CONVERGENCE_TOLERANCE = 0.01  # of the observed objectives' range


def _converged(scored: list[float], maximize: bool) -> str | None:
    """Converged: the latest CONVERGENCE_WINDOW trials moved the best objective by
    less than 1 % of the range the objective has spanned so far."""
    if len(scored) < CONVERGENCE_MIN_TRIALS:
        return None
    pick = max if maximize else min
    gain = abs(pick(scored) - pick(scored[:-CONVERGENCE_WINDOW]))
    spread = max(scored) - min(scored)
    if gain > CONVERGENCE_TOLERANCE * spread:
        return None
    return (
        f"the search converged: the last {CONVERGENCE_WINDOW} trials improved the best objective by {gain:g}, "
        f"under {CONVERGENCE_TOLERANCE:.0%} of the objectives' range ({spread:g})"
    )


# The maps of a training job definition whose entries may be secrets, by the spec's map they become.
DEFINITION_SECRET_MAPS = {"hyperparameters": "static_hyper_parameters", "environment": "environment"}


def tuning_as_references(spec: TuningJobSpec) -> tuple[TuningJobSpec, dict[str, str]]:
    """`as_references` for a tuning job: its training definition's static hyperparameters and
    environment, in blocks named for the tuning job that all its trials reference."""
    definition = spec.training_job_definition
    maps = {k: definition[m] for k, m in DEFINITION_SECRET_MAPS.items() if isinstance(definition.get(m), dict)}
    changed, literals = secrets.referenced(spec.hyper_parameter_tuning_job_name, maps, "hyper-parameter-tuning-job")
    if not changed:
        return spec, literals
    definition = {**definition, **{DEFINITION_SECRET_MAPS[kind]: entries for kind, entries in changed.items()}}
    return spec.model_copy(update={"training_job_definition": definition}), literals
