"""Spec rules that need the catalogs or the host: what cannot work here.

`check_job` is pure: host facts come in as a value, gathered by infra/.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from dockyard.algorithms import ALGORITHMS, check_hyperparameters, suggest
from dockyard.errors import FieldProblem, JobSpecError
from dockyard.instances import INSTANCE_TYPES, InstanceType
from dockyard.spec import (
    CompressionType,
    InputMode,
    RecordWrapperType,
    S3DataType,
    TrainingJobSpec,
)

NOT_YET = "not supported yet"


class HostFacts(BaseModel):
    """What the machine that runs the containers offers."""

    model_config = ConfigDict(frozen=True)

    cpus: int
    memory_bytes: int
    gpus: int


def instance_type_of(spec: TrainingJobSpec) -> InstanceType:
    return INSTANCE_TYPES[spec.resource_config.instance_type]


def _resources(spec: TrainingJobSpec, host: HostFacts) -> list[FieldProblem]:
    name = spec.resource_config.instance_type
    itype = INSTANCE_TYPES.get(name)
    if itype is None:
        hint = suggest(name, list(INSTANCE_TYPES))
        return [
            FieldProblem(
                "resource_config.instance_type",
                f"unknown instance type '{name}'",
                hint or "use 'local' (no limits) or an ml.* type listed in README.md",
            )
        ]
    if itype.gpus != 0 and host.gpus == 0:
        return [
            FieldProblem(
                "resource_config.instance_type",
                f"{name} needs GPUs and this host has none",
                "pick a CPU type such as ml.m5.xlarge, or 'local'",
            )
        ]
    if itype.gpus > host.gpus > 0:
        return [
            FieldProblem(
                "resource_config.instance_type",
                f"{name} needs {itype.gpus} GPUs and this host has {host.gpus}",
                "pick a type with fewer GPUs, or 'local_gpu' for all of them",
            )
        ]
    return []


def _algorithm(spec: TrainingJobSpec) -> list[FieldProblem]:
    algo_spec = spec.algorithm_specification
    if not algo_spec.algorithm_name:
        return []
    algo = ALGORITHMS.get(algo_spec.algorithm_name)
    if algo is None:
        hint = suggest(algo_spec.algorithm_name, list(ALGORITHMS))
        return [
            FieldProblem(
                "algorithm_specification.algorithm_name",
                f"no built-in algorithm '{algo_spec.algorithm_name}'",
                hint or f"use one of: {', '.join(ALGORITHMS)}, or give training_image",
            )
        ]
    problems = check_hyperparameters(algo, spec.hyperparameters)
    if spec.resource_config.instance_count > 1 and not algo.distributed:
        problems.append(
            FieldProblem(
                "resource_config.instance_count",
                f"the built-in {algo.name} trains on one instance only, got {spec.resource_config.instance_count}",
                "set instance_count: 1",
            )
        )
    names = [c.channel_name for c in spec.input_data_config]
    for i, name in enumerate(names):
        if name not in algo.channels:
            problems.append(
                FieldProblem(
                    f"input_data_config[{i}].channel_name",
                    f"the built-in {algo.name} reads no channel '{name}'",
                    suggest(name, algo.channels) or f"use one of: {', '.join(algo.channels)}",
                )
            )
    for required in algo.required_channels:
        if required not in names:
            problems.append(
                FieldProblem(
                    "input_data_config",
                    f"the built-in {algo.name} needs a '{required}' channel",
                    f"add a channel with channel_name: {required}",
                )
            )
    return problems


def _channels(spec: TrainingJobSpec) -> list[FieldProblem]:
    problems = []
    job_mode = spec.algorithm_specification.training_input_mode
    if job_mode is not InputMode.FILE:
        problems.append(
            FieldProblem(
                "algorithm_specification.training_input_mode", f"{job_mode.value} mode is {NOT_YET}", "use File"
            )
        )
    for i, channel in enumerate(spec.input_data_config):
        at = f"input_data_config[{i}]"
        if channel.input_mode and channel.input_mode is not InputMode.FILE:
            problems.append(
                FieldProblem(f"{at}.input_mode", f"{channel.input_mode.value} mode is {NOT_YET}", "use File")
            )
        source = channel.data_source.s3_data_source
        if source.s3_data_type is not S3DataType.S3_PREFIX:
            problems.append(
                FieldProblem(
                    f"{at}.data_source.s3_data_source.s3_data_type",
                    f"{source.s3_data_type.value} is {NOT_YET}",
                    "use S3Prefix",
                )
            )
        if channel.compression_type is CompressionType.GZIP:
            problems.append(
                FieldProblem(
                    f"{at}.compression_type",
                    "Gzip is only allowed in Pipe mode (as in SageMaker)",
                    "decompress the data or drop compression_type",
                )
            )
        if channel.record_wrapper_type is RecordWrapperType.RECORD_IO:
            problems.append(
                FieldProblem(
                    f"{at}.record_wrapper_type",
                    "RecordIO wrapping is only allowed in Pipe mode",
                    "drop record_wrapper_type",
                )
            )
        if channel.shuffle_config is not None:
            problems.append(
                FieldProblem(f"{at}.shuffle_config", "shuffling applies to Pipe mode only", "drop shuffle_config")
            )
    return problems


def _managed(spec: TrainingJobSpec) -> list[FieldProblem]:
    problems = []
    stop = spec.stopping_condition
    if spec.enable_managed_spot_training and stop.max_wait_time_in_seconds is None:
        problems.append(
            FieldProblem(
                "stopping_condition.max_wait_time_in_seconds",
                "required for managed spot training",
                f"set it to at least max_runtime_in_seconds ({stop.max_runtime_in_seconds})",
            )
        )
    if (
        spec.enable_managed_spot_training
        and (stop.max_wait_time_in_seconds or 0)
        and (stop.max_wait_time_in_seconds or 0) < stop.max_runtime_in_seconds
    ):
        problems.append(
            FieldProblem(
                "stopping_condition.max_wait_time_in_seconds",
                f"{stop.max_wait_time_in_seconds} is less than max_runtime_in_seconds ({stop.max_runtime_in_seconds})",
                "make it at least as long as the runtime",
            )
        )
    if spec.checkpoint_config is not None:
        path = spec.checkpoint_config.local_path
        taken = ("/opt/ml/input", "/opt/ml/model", "/opt/ml/output")
        if not path.startswith("/") or any(path == t or path.startswith(t + "/") for t in taken) or path == "/opt/ml":
            problems.append(
                FieldProblem(
                    "checkpoint_config.local_path",
                    f"'{path}' cannot hold checkpoints",
                    "use an absolute path outside /opt/ml/input, model and output (default /opt/ml/checkpoints)",
                )
            )
    if stop.max_wait_time_in_seconds is not None and not spec.enable_managed_spot_training:
        problems.append(
            FieldProblem(
                "stopping_condition.max_wait_time_in_seconds",
                "only applies to managed spot training",
                "drop it, or enable managed spot training",
            )
        )
    metric_names = [m.name for m in spec.algorithm_specification.metric_definitions]
    twice = sorted({n for n in metric_names if metric_names.count(n) > 1})
    if twice:
        problems.append(
            FieldProblem(
                "algorithm_specification.metric_definitions",
                f"metric names repeat: {', '.join(twice)}",
                "give each metric its own name",
            )
        )
    return problems


def check_job(spec: TrainingJobSpec, host: HostFacts) -> None:
    """Raise JobSpecError listing every rule `spec` breaks on this host.

    Raises:
        JobSpecError: one line per problem, each with its field path and fix.
    """
    problems = _resources(spec, host) + _algorithm(spec) + _channels(spec) + _managed(spec)
    if problems:
        raise JobSpecError(problems)
