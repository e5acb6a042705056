"""Spec rules that need the catalogs or the host: what cannot work here.

`check_job` is pure: host facts come in as a value, gathered by infra/.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from dockyard import debugger, image_classification, script_mode, xgboost
from dockyard.algorithm_spec import BUILTINS
from dockyard.algorithm_spec import check_job as check_registered
from dockyard.algorithms import ALGORITHMS, IMAGE_CLASSIFICATION, XGBOOST, suggest
from dockyard.errors import FieldProblem, JobSpecError
from dockyard.instances import INSTANCE_TYPES, InstanceType
from dockyard.spec import (
    CompressionType,
    DistributionType,
    InputMode,
    RecordWrapperType,
    S3DataType,
    TrainingJobSpec,
)


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
    """The job against its algorithm's specification: a registered one's, or a built-in's (one mechanism)."""
    if spec.registered_algorithm is not None:
        return check_registered(spec.registered_algorithm, spec)
    name = spec.algorithm_specification.builtin_name
    given = spec.algorithm_specification.algorithm_name
    if given and not name:
        hint = suggest(given, list(ALGORITHMS))
        return [
            FieldProblem(
                "algorithm_specification.algorithm_name",
                f"no algorithm '{given}': neither a built-in nor a registered one",
                hint
                or f"use a built-in ({', '.join(ALGORITHMS)}), one `dockyard algorithms list` shows, "
                "or give training_image",
            )
        ]
    if not name:
        return []
    problems = check_registered(BUILTINS[name], spec, label=f"the built-in {name}")
    if name == IMAGE_CLASSIFICATION.name:  # its own rules say more about a channel than its specification can
        specific = image_classification.problems(spec)
        said = {s.path for s in specific if s.path.endswith(".content_type")}
        problems = [p for p in problems if p.path not in said] + specific
    if name == XGBOOST.name:
        problems += xgboost.problems(spec)
    return problems


def _pipe_only(spec: TrainingJobSpec, i: int) -> list[FieldProblem]:
    """Options that only a Pipe channel can honour (as in SageMaker)."""
    channel = spec.input_data_config[i]
    at = f"input_data_config[{i}]"
    mode = spec.channel_mode(channel).value
    problems = []
    if channel.compression_type is CompressionType.GZIP:
        problems.append(
            FieldProblem(
                f"{at}.compression_type",
                f"Gzip is decompressed only on the way through a Pipe channel; this one is {mode}",
                "set input_mode: Pipe, or decompress the data and drop compression_type",
            )
        )
    if channel.record_wrapper_type is RecordWrapperType.RECORD_IO:
        problems.append(
            FieldProblem(
                f"{at}.record_wrapper_type",
                f"RecordIO wrapping applies to Pipe channels only; this one is {mode}",
                "set input_mode: Pipe, or drop record_wrapper_type",
            )
        )
    if channel.shuffle_config is not None:
        problems.append(
            FieldProblem(
                f"{at}.shuffle_config",
                f"shuffling reorders a Pipe channel's objects each epoch; this one is {mode}",
                "set input_mode: Pipe, or drop shuffle_config",
            )
        )
    return problems


def _channel(spec: TrainingJobSpec, i: int) -> list[FieldProblem]:
    channel = spec.input_data_config[i]
    at = f"input_data_config[{i}]"
    mode = spec.channel_mode(channel)
    problems = [] if mode is InputMode.PIPE else _pipe_only(spec, i)
    if channel.data_source.file_system_data_source is not None:
        if mode is not InputMode.FILE:
            problems.append(
                FieldProblem(
                    f"{at}.input_mode",
                    f"a file system channel is mounted as it is, so it is File mode only, not {mode.value}",
                    "set this channel's input_mode: File",
                )
            )
        return problems
    source = channel.data_source.s3_data_source
    assert source is not None
    source_at = f"{at}.data_source.s3_data_source"
    if source.s3_data_type is S3DataType.AUGMENTED_MANIFEST_FILE:
        if mode is not InputMode.PIPE:
            problems.append(
                FieldProblem(
                    f"{source_at}.s3_data_type",
                    f"AugmentedManifestFile streams records, so it needs Pipe mode, not {mode.value}",
                    "set input_mode: Pipe",
                )
            )
        if not source.attribute_names:
            problems.append(
                FieldProblem(
                    f"{source_at}.attribute_names",
                    "an AugmentedManifestFile channel needs the attributes to send",
                    "list them, e.g. attribute_names: [source-ref, class]",
                )
            )
    elif source.attribute_names:
        problems.append(
            FieldProblem(
                f"{source_at}.attribute_names", "applies to AugmentedManifestFile only", "drop attribute_names"
            )
        )
    if mode is InputMode.FAST_FILE:
        if source.s3_data_type is not S3DataType.S3_PREFIX:
            problems.append(
                FieldProblem(
                    f"{source_at}.s3_data_type",
                    f"FastFile mounts a prefix, so it takes S3Prefix only, not {source.s3_data_type.value}",
                    "use S3Prefix, or input_mode File or Pipe for a manifest",
                )
            )
        if source.s3_data_distribution_type is DistributionType.SHARDED_BY_S3_KEY:
            problems.append(
                FieldProblem(
                    f"{source_at}.s3_data_distribution_type",
                    "FastFile mounts the whole prefix on every host; dockyard does not shard it",
                    "use FullyReplicated, or input_mode File or Pipe to shard",
                )
            )
    return problems


def _channels(spec: TrainingJobSpec) -> list[FieldProblem]:
    return [problem for i in range(len(spec.input_data_config)) for problem in _channel(spec, i)]


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
    if spec.enable_managed_spot_training and spec.resource_config.keep_alive_period_in_seconds:
        problems.append(
            FieldProblem(
                "resource_config.keep_alive_period_in_seconds",
                "warm pools do not keep spot instances (as on SageMaker)",
                "drop keep_alive_period_in_seconds, or enable_managed_spot_training",
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


def _script(spec: TrainingJobSpec) -> list[FieldProblem]:
    """Script mode's two fields go together, and the script lies inside the code folder."""
    if spec.source_dir and not spec.entry_point:
        return [FieldProblem("entry_point", "source_dir is given but no entry point", "name the script, e.g. train.py")]
    if spec.entry_point and not spec.source_dir:
        return [
            FieldProblem("source_dir", f"entry_point {spec.entry_point} needs the folder it is in", "add source_dir")
        ]
    problems = []
    if spec.entry_point and (wrong := script_mode.entry_point_problem(spec.entry_point)):
        problems.append(FieldProblem("entry_point", wrong, "give the script's path relative to source_dir"))
    if spec.source_dir and "://" not in spec.source_dir and not spec.source_dir.startswith("/"):
        problems.append(
            FieldProblem(
                "source_dir",
                f"a local folder must be an absolute path — got '{spec.source_dir}'",
                "write it as /abs/path, ${DOCKYARD_HOME}/..., file:// or s3://",
            )
        )
    if spec.source_dir and spec.algorithm_specification.algorithm_name:
        problems.append(
            FieldProblem(
                "source_dir",
                "an algorithm (a built-in or a registered one) runs its own code, not a script",
                "give training_image (a framework image such as dockyard/pytorch:2.13) instead of algorithm_name",
            )
        )
    return problems


def check_job(spec: TrainingJobSpec, host: HostFacts) -> None:
    """Raise JobSpecError listing every rule `spec` breaks on this host.

    Raises:
        JobSpecError: one line per problem, each with its field path and fix.
    """
    problems = _resources(spec, host) + _algorithm(spec) + _channels(spec) + _managed(spec) + _script(spec)
    problems += debugger.problems(spec)
    if problems:
        raise JobSpecError(problems)
