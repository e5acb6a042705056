"""Algorithms as products: SageMaker's CreateAlgorithm, in snake_case (PascalCase bodies as they are).

An algorithm is an image plus a specification of what it accepts: its hyperparameters (type,
range, default, required, tunable), instance types, whether it trains across instances, its
metric regexes, its training channels (content types, input modes, compression, required) and
the metrics a tuning job may optimize. A team registers one (`dockyard algorithms create`, or
CreateAlgorithm through `dockyard serve`); a job names it as `algorithm_specification.algorithm_name`
and supplies only hyperparameters and data. Validation checks the job against the specification
(`check_job`) before anything runs, as SageMaker's AlgorithmEstimator does, and fills in the
image, the default hyperparameters and the metric definitions.
"""

from __future__ import annotations

import math
import re
from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from dockyard.algorithms import ALGORITHMS, Algorithm, HpKind, suggest
from dockyard.errors import FieldProblem
from dockyard.instances import INSTANCE_TYPES

NAME_PATTERN = r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$"  # SageMaker's for jobs and algorithms alike
DIGEST_PATTERN = r"^[Ss][Hh][Aa]256:[0-9a-fA-F]{64}$"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class ParameterType(StrEnum):
    INTEGER = "Integer"
    CONTINUOUS = "Continuous"
    CATEGORICAL = "Categorical"
    FREE_TEXT = "FreeText"


class NumericRange(_Model):
    min_value: str | None = None  # None: unbounded (dockyard's built-ins; CreateAlgorithm gives both)
    max_value: str | None = None


class CategoricalRange(_Model):
    values: list[str] = Field(min_length=1, max_length=30)


class ParameterRange(_Model):
    integer_parameter_range_specification: NumericRange | None = None
    continuous_parameter_range_specification: NumericRange | None = None
    categorical_parameter_range_specification: CategoricalRange | None = None


class HyperParameterSpecification(_Model):
    name: str = Field(min_length=1, max_length=256)
    description: str = Field(default="", max_length=1024)
    type: ParameterType
    range: ParameterRange | None = None
    is_tunable: bool = False
    is_required: bool = False
    default_value: str | None = Field(default=None, max_length=2500)

    @model_validator(mode="after")
    def _range(self) -> HyperParameterSpecification:
        kinds = {ParameterType.INTEGER: "integer", ParameterType.CONTINUOUS: "continuous",
                 ParameterType.CATEGORICAL: "categorical"}  # fmt: skip
        given = [k for k, v in (self.range.model_dump(exclude_none=True) if self.range else {}).items() if v]
        wanted = f"{kinds[self.type]}_parameter_range_specification" if self.type in kinds else None
        if any(k != wanted for k in given):
            raise ValueError(
                f"{self.name}: a {self.type.value} hyperparameter's range is its {wanted or 'none'}, not {given} — "
                "give the range that matches its type"
            )
        low, high = self.bounds()
        if low > high:
            raise ValueError(f"{self.name}: its range's min_value {low:g} is above its max_value {high:g} — swap them")
        if self.default_value is not None:
            wrong = self.check(self.default_value)
            if wrong:
                raise ValueError(f"{self.name}: default_value '{self.default_value}' {wrong} — fix the default")
        if self.is_tunable and self.type is ParameterType.FREE_TEXT:
            raise ValueError(f"{self.name}: a FreeText hyperparameter cannot be tunable")
        return self

    @property
    def numeric_range(self) -> NumericRange | None:
        if self.range is None:
            return None
        if self.type is ParameterType.INTEGER:
            return self.range.integer_parameter_range_specification
        if self.type is ParameterType.CONTINUOUS:
            return self.range.continuous_parameter_range_specification
        return None

    @property
    def values(self) -> list[str] | None:
        spec = self.range.categorical_parameter_range_specification if self.range else None
        return spec.values if spec and self.type is ParameterType.CATEGORICAL else None

    def bounds(self) -> tuple[float, float]:
        """The numeric range, unbounded sides as infinities.

        Raises:
            ValueError: a bound is not a number of the hyperparameter's type.
        """
        numeric = self.numeric_range or NumericRange()
        low, high = numeric.min_value, numeric.max_value
        return (
            -math.inf if low is None else _number(low, self.type, f"{self.name}: range min_value"),
            math.inf if high is None else _number(high, self.type, f"{self.name}: range max_value"),
        )

    def check(self, value: str) -> str | None:
        """What is wrong with `value` for this hyperparameter, or None."""
        if self.type is ParameterType.FREE_TEXT:
            return None
        if self.type is ParameterType.CATEGORICAL:
            values = self.values
            return None if values is None or value in values else f"must be one of {', '.join(values)}"
        try:
            number = _number(value, self.type, "")
        except ValueError:
            return f"must be {'an integer' if self.type is ParameterType.INTEGER else 'a number'}"
        low, high = self.bounds()
        if number < low:
            return f"must be at least {low:g}"
        if number > high:
            return f"must be at most {high:g}"
        return None


def _number(text: str, kind: ParameterType, what: str) -> float:
    try:
        number = float(int(text)) if kind is ParameterType.INTEGER else float(text)
    except ValueError:
        raise ValueError(
            f"{what} '{text}' is not {'an integer' if kind is ParameterType.INTEGER else 'a number'}"
        ) from None
    if not math.isfinite(number):
        raise ValueError(f"{what} '{text}' is not a finite number")
    return number


class MetricDefinition(_Model):
    """A metric's name and the regex whose one group captures its value from the log (a job's
    metric_definitions and an algorithm's alike)."""

    name: str = Field(min_length=1, max_length=255)
    regex: str = Field(min_length=1, max_length=500)

    @field_validator("regex")
    @classmethod
    def _one_group(cls, value: str) -> str:
        try:
            groups = re.compile(value).groups
        except re.error as exc:
            raise ValueError(f"is not a valid regular expression ({exc})") from None
        if groups != 1:
            raise ValueError(
                f"must have exactly one capture group (the metric value), has {groups}; "
                "wrap the number in (...) and make other groups (?:...)"
            )
        return value


class ChannelSpecification(_Model):
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9\.\-_]+$")
    description: str = Field(default="", max_length=1024)
    is_required: bool = False
    supported_content_types: list[str] = Field(min_length=1)
    supported_compression_types: list[str] = Field(default_factory=lambda: ["None"])
    supported_input_modes: list[str] = Field(min_length=1)

    @model_validator(mode="after")
    def _modes(self) -> ChannelSpecification:
        unknown = sorted(set(self.supported_input_modes) - {"File", "Pipe", "FastFile"})
        if unknown:
            raise ValueError(f"channel {self.name}: input modes {unknown} are none of File, Pipe, FastFile")
        unknown = sorted(set(self.supported_compression_types) - {"None", "Gzip"})
        if unknown:
            raise ValueError(f"channel {self.name}: compression types {unknown} are none of None, Gzip")
        return self


class ObjectiveType(StrEnum):
    MAXIMIZE = "Maximize"
    MINIMIZE = "Minimize"


class TuningObjective(_Model):
    type: ObjectiveType
    metric_name: str = Field(min_length=1, max_length=255)


class TrainingSpecification(_Model):
    training_image: str = Field(min_length=1, max_length=255)
    training_image_digest: str | None = Field(default=None, pattern=DIGEST_PATTERN)
    supported_hyper_parameters: list[HyperParameterSpecification] = Field(default_factory=list, max_length=100)
    supported_training_instance_types: list[str] = Field(min_length=1)
    supports_distributed_training: bool = False
    metric_definitions: list[MetricDefinition] = Field(default_factory=list, max_length=40)
    training_channels: list[ChannelSpecification] = Field(min_length=1, max_length=8)
    supported_tuning_job_objective_metrics: list[TuningObjective] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique(self) -> TrainingSpecification:
        for what, names in (("supported_hyper_parameters", [h.name for h in self.supported_hyper_parameters]),
                            ("training_channels", [c.name for c in self.training_channels]),
                            ("metric_definitions", [m.name for m in self.metric_definitions])):  # fmt: skip
            twice = sorted({n for n in names if names.count(n) > 1})
            if twice:
                raise ValueError(f"{what}: names must be unique; repeated: {twice}")
        defined = {m.name for m in self.metric_definitions}
        missing = [o.metric_name for o in self.supported_tuning_job_objective_metrics if o.metric_name not in defined]
        if missing:
            raise ValueError(f"supported_tuning_job_objective_metrics: {missing} have no metric_definitions entry")
        return self

    def hyperparameter(self, name: str) -> HyperParameterSpecification | None:
        return next((h for h in self.supported_hyper_parameters if h.name == name), None)


class AlgorithmSpec(_Model):
    """One algorithm, as CreateAlgorithm describes it (snake_case), with dockyard's version."""

    algorithm_name: str = Field(pattern=NAME_PATTERN, max_length=63)
    algorithm_description: str = Field(default="", max_length=1024)
    algorithm_version: str = Field(default="1", min_length=1, max_length=64)  # dockyard's own
    training_specification: TrainingSpecification
    certify_for_marketplace: bool = False  # recorded


def check_job(algorithm: AlgorithmSpec, job: Any, label: str = "") -> list[FieldProblem]:
    """Every way the training job `job` (a dockyard.spec.TrainingJobSpec) breaks `algorithm`'s
    specification, as SageMaker's AlgorithmEstimator checks it: instance type and count, channels
    (required ones, names, content types, input modes, compression), hyperparameters (names,
    types, ranges, required ones). `label` names the algorithm in the messages (algorithm NAME)."""
    name, spec = algorithm.algorithm_name, algorithm.training_specification
    of = label or f"algorithm {name}"
    problems: list[FieldProblem] = []
    resources = job.resource_config
    itype = resources.instance_type  # local types are this host's; one dockyard does not know, the rules report
    supported = spec.supported_training_instance_types
    if itype in INSTANCE_TYPES and not itype.startswith("local") and itype not in supported:
        problems.append(FieldProblem(
            "resource_config.instance_type", f"{of} does not train on {resources.instance_type}",
            f"use one of: {', '.join(spec.supported_training_instance_types)}",
        ))  # fmt: skip
    if resources.instance_count > 1 and not spec.supports_distributed_training:
        problems.append(FieldProblem(
            "resource_config.instance_count", f"{of} trains on one instance only, got {resources.instance_count}",
            "set instance_count: 1",
        ))  # fmt: skip
    channels = {c.name: c for c in spec.training_channels}
    given = [c.channel_name for c in job.input_data_config]
    for i, channel in enumerate(job.input_data_config):
        at = f"input_data_config[{i}]"
        wanted = channels.get(channel.channel_name)
        if wanted is None:
            problems.append(FieldProblem(
                f"{at}.channel_name", f"{of} reads no channel '{channel.channel_name}'",
                suggest(channel.channel_name, list(channels)) or f"use one of: {', '.join(channels)}",
            ))  # fmt: skip
            continue
        mode = job.channel_mode(channel).value
        if mode not in wanted.supported_input_modes:
            problems.append(FieldProblem(
                f"{at}.input_mode" if channel.input_mode else "algorithm_specification.training_input_mode",
                f"{of} reads channel {wanted.name} in {' or '.join(wanted.supported_input_modes)} mode, not {mode}",
                f"set it to {wanted.supported_input_modes[0]}",
            ))  # fmt: skip
        stated = (channel.content_type or "").strip().lower()
        accepted = {t.lower() for t in wanted.supported_content_types}
        media = stated.split(";")[0].strip()  # text/csv;label_size=1 is text/csv
        if stated and "*/*" not in accepted and stated not in accepted and media not in accepted:
            problems.append(FieldProblem(
                f"{at}.content_type", f"{of} reads channel {wanted.name} as "
                f"{', '.join(wanted.supported_content_types)}, not {channel.content_type}",
                f"convert the data, or set content_type to {wanted.supported_content_types[0]}",
            ))  # fmt: skip
        compression = channel.compression_type.value
        if compression not in wanted.supported_compression_types:
            problems.append(FieldProblem(
                f"{at}.compression_type",
                f"{of} reads channel {wanted.name} compressed as {', '.join(wanted.supported_compression_types)}, "
                f"not {compression}", f"set it to {wanted.supported_compression_types[0]}",
            ))  # fmt: skip
    for channel in spec.training_channels:
        if channel.is_required and channel.name not in given:
            problems.append(FieldProblem(
                "input_data_config",
                f"{of} needs a '{channel.name}' channel" + (f" ({channel.description})" if channel.description else ""),
                f"add a channel with channel_name: {channel.name}",
            ))  # fmt: skip
    known = [h.name for h in spec.supported_hyper_parameters]
    for key, value in job.hyperparameters.items():
        hp = spec.hyperparameter(key)
        if hp is None:
            if not key.startswith(("_", "sagemaker_")):  # SageMaker's own (_tuning_objective_metric, ...)
                problems.append(FieldProblem(
                    f"hyperparameters.{key}", f"not a hyperparameter of {of}",
                    suggest(key, known) or f"remove it; known: {', '.join(sorted(known))}",
                ))  # fmt: skip
            continue
        wrong = hp.check(value)
        if wrong:
            problems.append(FieldProblem(
                f"hyperparameters.{key}", f"{wrong} — got '{value}'", suggest(value, hp.values or []) or "fix the value"
            ))  # fmt: skip
    for hp in spec.supported_hyper_parameters:
        if hp.is_required and hp.name not in job.hyperparameters:
            problems.append(FieldProblem(
                f"hyperparameters.{hp.name}", f"required by {of}", f"add it ({hp.description or hp.type.value})"
            ))  # fmt: skip
    return problems


def with_defaults(algorithm: AlgorithmSpec, hyperparameters: dict[str, str]) -> dict[str, str]:
    """The job's hyperparameters with the algorithm's defaults for those it leaves out."""
    defaults = {
        h.name: h.default_value for h in algorithm.training_specification.supported_hyper_parameters
        if h.default_value is not None
    }  # fmt: skip
    return {**defaults, **hyperparameters}


def check_objective(algorithm: AlgorithmSpec, metric: str, kind: str) -> list[FieldProblem]:
    """A tuning job's objective against the algorithm's supported objective metrics."""
    supported = algorithm.training_specification.supported_tuning_job_objective_metrics
    if not supported or any(o.metric_name == metric and o.type.value == kind for o in supported):
        return []
    offered = ", ".join(f"{o.type.value} {o.metric_name}" for o in supported)
    return [FieldProblem(
        "hyper_parameter_tuning_job_config.hyper_parameter_tuning_job_objective",
        f"algorithm {algorithm.algorithm_name} is not tuned on {kind} {metric}", f"tune on one of: {offered}",
    )]  # fmt: skip


def describe_algorithm(algorithm: AlgorithmSpec, created: datetime, arn: str) -> dict[str, Any]:
    """DescribeAlgorithm's answer."""
    from dockyard.wire import to_pascal

    body = to_pascal(algorithm.model_dump(mode="json", exclude_none=True, exclude={"algorithm_version"}))
    for hp in body["TrainingSpecification"].get("SupportedHyperParameters", []):
        ranges = hp.get("Range", {})
        if any(not {"MinValue", "MaxValue"} <= set(r) for k, r in ranges.items() if "Categorical" not in k):
            del hp["Range"]  # a built-in's unbounded side: SageMaker's ranges have both (the SDK reads both)
    return {**body, "AlgorithmArn": arn, "CreationTime": created.isoformat(), "AlgorithmStatus": "Completed",
            "AlgorithmStatusDetails": {}, "AlgorithmVersion": algorithm.algorithm_version}  # fmt: skip


_TYPES = {HpKind.INT: ParameterType.INTEGER, HpKind.FLOAT: ParameterType.CONTINUOUS,
          HpKind.CHOICE: ParameterType.CATEGORICAL, HpKind.STRING: ParameterType.FREE_TEXT}  # fmt: skip


def builtin_spec(algorithm: Algorithm) -> AlgorithmSpec:
    """A built-in as the registry shows it and as jobs are checked against it: one mechanism."""
    hyperparameters = []
    for name, hp in algorithm.hyperparameters.items():
        kind = _TYPES[hp.kind]
        shown = (lambda v: str(int(v))) if kind is ParameterType.INTEGER else repr  # never 1e+06 for an integer
        bounds = NumericRange(
            min_value=None if hp.min is None else shown(hp.min), max_value=None if hp.max is None else shown(hp.max)
        )
        if kind is ParameterType.INTEGER:
            ranges: ParameterRange | None = ParameterRange(integer_parameter_range_specification=bounds)
        elif kind is ParameterType.CONTINUOUS:
            ranges = ParameterRange(continuous_parameter_range_specification=bounds)
        elif kind is ParameterType.CATEGORICAL:
            ranges = ParameterRange(categorical_parameter_range_specification=CategoricalRange(values=list(hp.choices)))
        else:
            ranges = None
        hyperparameters.append(HyperParameterSpecification(
            name=name, description=hp.description, type=kind, range=ranges, is_required=hp.required,
            is_tunable=kind is not ParameterType.FREE_TEXT,
        ))  # fmt: skip
    return AlgorithmSpec(
        algorithm_name=algorithm.name,
        algorithm_description=algorithm.description,
        training_specification=TrainingSpecification(
            training_image=algorithm.image,
            supported_hyper_parameters=hyperparameters,
            supported_training_instance_types=sorted(INSTANCE_TYPES),
            supports_distributed_training=algorithm.distributed,
            metric_definitions=[MetricDefinition(name=m.name, regex=m.regex) for m in algorithm.metric_definitions],
            training_channels=[
                ChannelSpecification(
                    name=channel,
                    is_required=channel in algorithm.required_channels,
                    supported_content_types=list(algorithm.content_types[channel]),
                    supported_compression_types=["None", "Gzip"],
                    supported_input_modes=list(algorithm.input_modes),
                )
                for channel in algorithm.channels
            ],
        ),
    )


BUILTINS: dict[str, AlgorithmSpec] = {name: builtin_spec(a) for name, a in ALGORITHMS.items()}
