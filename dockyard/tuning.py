"""The tuning job spec (HyperParameterTuningJobConfig + TrainingJobDefinition)
and the pure parts of tuning: search spaces and the tuning record.
"""

from __future__ import annotations

import itertools
import math
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from dockyard.errors import FieldProblem, JobSpecError
from dockyard.spec import JOB_NAME_PATTERN

NOT_YET = "not supported yet"


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


class TuningJobConfig(_Model):
    strategy: Strategy = Strategy.BAYESIAN
    hyper_parameter_tuning_job_objective: Objective
    resource_limits: ResourceLimits = Field(default_factory=ResourceLimits)
    parameter_ranges: ParameterRanges
    training_job_early_stopping_type: str = "Off"
    random_seed: int | None = None


class TuningJobSpec(_Model):
    hyper_parameter_tuning_job_name: str = Field(pattern=JOB_NAME_PATTERN, max_length=32)
    hyper_parameter_tuning_job_config: TuningJobConfig
    training_job_definition: dict[str, Any]  # a training job spec less its name; checked per trial


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
    if config.strategy is Strategy.HYPERBAND:
        problems.append(FieldProblem(f"{at}.strategy", f"Hyperband is {NOT_YET}", "use Random, Grid or Bayesian"))
    if config.training_job_early_stopping_type != "Off":
        problems.append(
            FieldProblem(
                f"{at}.training_job_early_stopping_type",
                f"'{config.training_job_early_stopping_type}' early stopping is {NOT_YET}",
                "use Off",
            )
        )
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


def reverse_log(value: float, r: ContinuousRange) -> float:
    """Map a log-uniform draw on [1-max, 1-min] back to the range (ReverseLogarithmic)."""
    return 1 - value if r.scaling_type is Scaling.REVERSE_LOGARITHMIC else value


def trial_name(tuning_name: str, number: int) -> str:
    return f"{tuning_name}-{number + 1:03d}"


def objective_value(final_metrics: list[dict[str, Any]], metric: str) -> float | None:
    for m in final_metrics:
        if m.get("MetricName") == metric and math.isfinite(float(m["Value"])):
            return float(m["Value"])
    return None
