"""The training job spec: pydantic v2 models mirroring CreateTrainingJob.

Field names are CreateTrainingJob's in snake_case; `from_sagemaker_request`
turns a boto3 `create_training_job` body into this shape. The models check
what a spec can check on its own (SageMaker's limits and patterns);
`dockyard.rules.check_job` adds what needs the catalogs and host facts.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from dockyard.algorithm_spec import NAME_PATTERN, AlgorithmSpec, MetricDefinition
from dockyard.algorithms import ALGORITHMS, metric_definitions_of, sagemaker_builtin

JOB_NAME_PATTERN = NAME_PATTERN
EXPERIMENT_NAME_PATTERN = r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,119}$"
CHANNEL_NAME_PATTERN = r"^[A-Za-z0-9._-]{1,64}$"
ENV_KEY_PATTERN = r"^[a-zA-Z_][a-zA-Z0-9_]{0,511}$"
URI_SCHEMES = ("s3://", "file://")
RESERVED_ENV_PREFIX = "AWS_CONTAINER_"  # the container-credentials protocol's (infra/credentials.py)

MAX_CHANNELS = 20
MAX_HYPERPARAMETERS = 100
MAX_METRIC_DEFINITIONS = 40
MAX_ENVIRONMENT = 100
MAX_TAGS = 50
DEFAULT_MAX_RUNTIME = 86400


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class InputMode(StrEnum):
    FILE = "File"
    PIPE = "Pipe"
    FAST_FILE = "FastFile"


class S3DataType(StrEnum):
    S3_PREFIX = "S3Prefix"
    MANIFEST_FILE = "ManifestFile"
    AUGMENTED_MANIFEST_FILE = "AugmentedManifestFile"


class DistributionType(StrEnum):
    FULLY_REPLICATED = "FullyReplicated"
    SHARDED_BY_S3_KEY = "ShardedByS3Key"


class CompressionType(StrEnum):
    NONE = "None"
    GZIP = "Gzip"


class RecordWrapperType(StrEnum):
    NONE = "None"
    RECORD_IO = "RecordIO"


def _check_uri(value: str) -> str:
    if not value.startswith(URI_SCHEMES):
        raise ValueError(f"must start with s3:// or file:// — got '{value}'")
    if value.startswith("s3://") and not value[5:].split("/", 1)[0]:
        raise ValueError(f"names no bucket — got '{value}'; write s3://BUCKET/PREFIX")
    if value.startswith("file://") and not value[7:].startswith("/"):
        raise ValueError(f"a file:// URI needs an absolute path — got '{value}'; write file:///abs/path")
    return value


Uri = Annotated[str, Field(min_length=6, max_length=1024), AfterValidator(_check_uri)]


class AlgorithmSpecification(_Model):
    training_image: str | None = Field(default=None, min_length=1, max_length=255)
    algorithm_name: str | None = Field(default=None, min_length=1, max_length=170)
    training_input_mode: InputMode = InputMode.FILE
    metric_definitions: list[MetricDefinition] = Field(default_factory=list, max_length=MAX_METRIC_DEFINITIONS)
    container_entrypoint: list[str] | None = Field(default=None, min_length=1, max_length=100)
    container_arguments: list[str] | None = Field(default=None, min_length=1, max_length=100)
    enable_sage_maker_metrics_time_series: bool = False

    @property
    def builtin_name(self) -> str | None:
        """The built-in this job runs: algorithm_name when it names one, or the one a SageMaker
        algorithm image URI names; None for an image of the user's, or a registered algorithm."""
        if self.algorithm_name:
            name = self.algorithm_name.rsplit(":algorithm/", 1)[-1].lower()  # its name, or its ARN
            return name if name in ALGORITHMS else None
        return sagemaker_builtin(self.training_image)

    @model_validator(mode="after")
    def _image_or_algorithm(self) -> AlgorithmSpecification:
        if bool(self.training_image) == bool(self.algorithm_name):
            raise ValueError(
                "give exactly one of training_image (your own container) or algorithm_name (a built-in, e.g. xgboost)"
            )
        return self


class ResourceConfig(_Model):
    instance_type: str = "local"
    instance_count: int = Field(default=1, ge=1, le=100)
    volume_size_in_gb: int = Field(default=30, ge=1, le=16384)
    # SageMaker's managed warm pools: the instances kept this long after the job (dockyard.warm_pool)
    keep_alive_period_in_seconds: int | None = Field(default=None, ge=0, le=3600)


class S3DataSource(_Model):
    s3_uri: Uri
    s3_data_type: S3DataType = S3DataType.S3_PREFIX
    s3_data_distribution_type: DistributionType = DistributionType.FULLY_REPLICATED
    attribute_names: list[str] | None = None


class FileSystemAccessMode(StrEnum):
    RW = "rw"
    RO = "ro"


class FileSystemType(StrEnum):
    EFS = "EFS"
    FSX_LUSTRE = "FSxLustre"


class FileSystemDataSource(_Model):
    """A file system channel: here, a host directory or network mount (the EFS / FSx analogue)."""

    file_system_id: str = Field(min_length=1, max_length=256)  # recorded; the directory is what is mounted
    file_system_access_mode: FileSystemAccessMode = FileSystemAccessMode.RO
    file_system_type: FileSystemType = FileSystemType.EFS
    directory_path: str = Field(min_length=1, max_length=4096)

    @field_validator("directory_path")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError(f"must be an absolute path on this host — got '{value}'")
        return value


class DataSource(_Model):
    s3_data_source: S3DataSource | None = None
    file_system_data_source: FileSystemDataSource | None = None

    @model_validator(mode="after")
    def _one_source(self) -> DataSource:
        if (self.s3_data_source is None) == (self.file_system_data_source is None):
            raise ValueError("give exactly one of s3_data_source or file_system_data_source")
        return self


class ShuffleConfig(_Model):
    seed: int


class Channel(_Model):
    channel_name: str = Field(pattern=CHANNEL_NAME_PATTERN)
    data_source: DataSource
    content_type: str | None = Field(default=None, max_length=256)
    compression_type: CompressionType = CompressionType.NONE
    record_wrapper_type: RecordWrapperType = RecordWrapperType.NONE
    input_mode: InputMode | None = None
    shuffle_config: ShuffleConfig | None = None

    @field_validator("channel_name")
    @classmethod
    def _safe_segment(cls, value: str) -> str:
        if value in (".", ".."):
            raise ValueError(f"'{value}' is not a usable directory name; use letters, digits, . - _")
        return value


class OutputDataConfig(_Model):
    s3_output_path: Uri
    kms_key_id: str | None = None
    compression_type: str | None = None


class StoppingCondition(_Model):
    max_runtime_in_seconds: int = Field(default=DEFAULT_MAX_RUNTIME, ge=1, le=28 * 86400)
    max_wait_time_in_seconds: int | None = Field(default=None, ge=1)
    max_pending_time_in_seconds: int | None = Field(default=None, ge=7200, le=2419200)


class CheckpointConfig(_Model):
    s3_uri: Uri
    local_path: str = "/opt/ml/checkpoints"


class RetryStrategy(_Model):
    maximum_retry_attempts: int = Field(ge=1, le=30)


class Tag(_Model):
    key: str = Field(min_length=1, max_length=128)
    value: str = Field(default="", max_length=256)


class ExperimentConfig(_Model):
    """Where the job lands in the catalog: the MLflow experiment, and names within it."""

    experiment_name: str | None = Field(default=None, pattern=EXPERIMENT_NAME_PATTERN)
    trial_name: str | None = Field(default=None, pattern=EXPERIMENT_NAME_PATTERN)
    trial_component_display_name: str | None = Field(default=None, max_length=120)
    run_name: str | None = Field(default=None, max_length=120)


def _environment(value: dict[str, str], max_value: int) -> dict[str, str]:
    """A container environment's checks: size, names, value lengths, and dockyard's own variables."""
    if len(value) > MAX_ENVIRONMENT:
        raise ValueError(f"has {len(value)} entries, at most {MAX_ENVIRONMENT} allowed")
    for key, item in value.items():
        if not re.match(ENV_KEY_PATTERN, key):
            raise ValueError(f"'{key}' is not a valid variable name (letters, digits, _)")
        if len(item) > max_value:
            raise ValueError(f"value of '{key}' is longer than {max_value} characters")
        if key.upper().startswith(RESERVED_ENV_PREFIX):
            raise ValueError(f"'{key}' is dockyard's to set (the job's credentials come from its role): remove it")
    return value


def _to_wire_string(value: Any) -> Any:
    """Hyperparameters travel as strings; YAML's numbers and booleans become them."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return value


def _wire_strings(value: Any) -> Any:
    """A map's keys and values as strings, as they travel (before validation)."""
    if isinstance(value, dict):
        return {str(k): _to_wire_string(v) for k, v in value.items()}
    return value


PROFILING_INTERVALS_MS = (100, 200, 500, 1000, 5000, 60000)  # what SageMaker accepts
MAX_RULES = 20
RULE_NAME_PATTERN = r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,255}$"


class ProfilerConfig(_Model):
    """How often each instance's system metrics are sampled, and where their files go."""

    s3_output_path: Uri | None = None  # default: output_data_config.s3_output_path
    profiling_interval_in_milliseconds: int = 500
    profiling_parameters: dict[str, str] = Field(default_factory=dict)  # framework profiling: recorded
    disable_profiler: bool = False

    @field_validator("profiling_interval_in_milliseconds")
    @classmethod
    def _interval(cls, value: int) -> int:
        if value not in PROFILING_INTERVALS_MS:
            allowed = ", ".join(str(ms) for ms in PROFILING_INTERVALS_MS)
            raise ValueError(f"{value} ms is not an interval SageMaker accepts — use one of {allowed}")
        return value


class RuleConfiguration(_Model):
    """A Debugger or Profiler rule, as SageMaker names it. dockyard evaluates the
    built-in rules itself (dockyard.debugger); rule_parameters.rule_to_invoke names one."""

    rule_configuration_name: str = Field(pattern=RULE_NAME_PATTERN, max_length=256)
    local_path: str | None = Field(default=None, max_length=4096)
    s3_output_path: Uri | None = None
    rule_evaluator_image: str | None = Field(default=None, max_length=255)  # SageMaker's rule container: recorded
    instance_type: str | None = None  # where SageMaker would run the rule: recorded
    volume_size_in_gb: int | None = Field(default=None, ge=0)
    rule_parameters: dict[str, str] = Field(default_factory=dict, max_length=100)

    _strings = field_validator("rule_parameters", mode="before")(_wire_strings)


class CollectionConfiguration(_Model):
    collection_name: str | None = Field(default=None, min_length=1, max_length=256)
    collection_parameters: dict[str, str] = Field(default_factory=dict)


class DebugHookConfig(_Model):
    """Where a framework's Debugger hook would save tensors. Accepted and recorded (the
    SageMaker SDK sends it by default); dockyard's debugger rules read the scraped metrics."""

    local_path: str | None = Field(default=None, max_length=4096)
    s3_output_path: Uri
    hook_parameters: dict[str, str] = Field(default_factory=dict)
    collection_configurations: list[CollectionConfiguration] = Field(default_factory=list, max_length=20)


class TrainingJobSpec(_Model):
    """One training job, as CreateTrainingJob describes it (snake_case)."""

    training_job_name: str = Field(pattern=JOB_NAME_PATTERN, max_length=63)
    algorithm_specification: AlgorithmSpecification
    role: str | None = Field(default=None, max_length=2048)
    resource_config: ResourceConfig = Field(default_factory=ResourceConfig)
    input_data_config: list[Channel] = Field(default_factory=list, max_length=MAX_CHANNELS)
    hyperparameters: dict[str, str] = Field(default_factory=dict)
    output_data_config: OutputDataConfig
    stopping_condition: StoppingCondition = Field(default_factory=StoppingCondition)
    environment: dict[str, str] = Field(default_factory=dict)
    tags: list[Tag] = Field(default_factory=list, max_length=MAX_TAGS)
    enable_managed_spot_training: bool = False
    checkpoint_config: CheckpointConfig | None = None
    retry_strategy: RetryStrategy | None = None
    enable_network_isolation: bool = False
    experiment_config: ExperimentConfig | None = None
    debug_hook_config: DebugHookConfig | None = None
    debug_rule_configurations: list[RuleConfiguration] = Field(default_factory=list, max_length=MAX_RULES)
    profiler_config: ProfilerConfig | None = None
    profiler_rule_configurations: list[RuleConfiguration] = Field(default_factory=list, max_length=MAX_RULES)
    # dockyard's own: a Completed job registers model.tar.gz as a new version of this model
    model_package_group_name: str | None = Field(default=None, pattern=JOB_NAME_PATTERN, max_length=63)
    # dockyard's own, for script mode (dockyard.script_mode): the code folder (a local path,
    # file:// or s3://, a folder or a .tar.gz) and the script in it that the image's toolkit runs
    source_dir: str | None = Field(default=None, min_length=1, max_length=1024)
    entry_point: str | None = Field(default=None, min_length=1, max_length=256)
    # dockyard's own, set by dockyard.processing.as_job: this job is that processing job, carried by
    # the same stages; what its container sees differs (dockyard.contract's processing_* functions)
    processing: ProcessingJobSpec | None = None
    # dockyard's own, set at validation: the registered algorithm algorithm_name names, as it was
    # then (dockyard.algorithm_spec); the job keeps its copy if the algorithm is deleted
    registered_algorithm: AlgorithmSpec | None = None

    _strings = field_validator("hyperparameters", mode="before")(_wire_strings)

    @field_validator("hyperparameters")
    @classmethod
    def _hp_limits(cls, value: dict[str, str]) -> dict[str, str]:
        if len(value) > MAX_HYPERPARAMETERS:
            raise ValueError(f"has {len(value)} entries, at most {MAX_HYPERPARAMETERS} allowed")
        for key, item in value.items():
            if not 1 <= len(key) <= 256:
                raise ValueError(f"name '{key[:40]}' must be 1 to 256 characters")
            if len(item) > 2500:
                raise ValueError(f"value of '{key}' is {len(item)} characters, at most 2500 allowed")
        return value

    _env_strings = field_validator("environment", mode="before")(_wire_strings)

    @field_validator("environment")
    @classmethod
    def _env_limits(cls, value: dict[str, str]) -> dict[str, str]:
        return _environment(value, max_value=512)

    @model_validator(mode="after")
    def _processing(self) -> TrainingJobSpec:
        if self.processing is not None and self.processing.environment:
            raise ValueError(
                "processing: dockyard's own field (a processing job's form): run processing jobs with "
                "`python -m flows.process`"
            )
        return self

    @model_validator(mode="after")
    def _channels(self) -> TrainingJobSpec:
        names = [c.channel_name for c in self.input_data_config]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"input_data_config: channel names must be unique; repeated: {twice}")
        return self

    @property
    def image(self) -> str:
        """The image the job runs: its own, its registered algorithm's, or its built-in's."""
        algo = self.algorithm_specification
        if self.registered_algorithm is not None:
            return self.registered_algorithm.training_specification.training_image
        builtin = algo.builtin_name
        return ALGORITHMS[builtin].image if builtin else str(algo.training_image or algo.algorithm_name)

    @property
    def metric_pairs(self) -> list[tuple[str, str]]:
        """The (name, regex) pairs to scrape: the spec's own, else its algorithm's defaults."""
        given = [(m.name, m.regex) for m in self.algorithm_specification.metric_definitions]
        if given or self.registered_algorithm is None:
            return metric_definitions_of(self.algorithm_specification.builtin_name, given)
        return [(m.name, m.regex) for m in self.registered_algorithm.training_specification.metric_definitions]

    @property
    def kind(self) -> str:
        """training, or processing (a processing job in the form the stages carry)."""
        return "training" if self.processing is None else "processing"

    @property
    def profiling(self) -> bool:
        """Whether system metrics are sampled: a profiler rule asks for them, or profiler_config does."""
        config = self.profiler_config
        return bool(self.profiler_rule_configurations) or (config is not None and not config.disable_profiler)

    @property
    def profiling_interval_seconds(self) -> float:
        return (self.profiler_config or ProfilerConfig()).profiling_interval_in_milliseconds / 1000

    def channel_mode(self, channel: Channel) -> InputMode:
        """The input mode a channel really uses: its own, else the job's."""
        return channel.input_mode or self.algorithm_specification.training_input_mode


# -- processing jobs: CreateProcessingJob's shape (dockyard.processing carries them through the stages) --

PROCESSING_ROOT = "/opt/ml/processing/"  # every input's and output's local path is under it
MAX_INPUTS = MAX_OUTPUTS = 10


def _local_path(value: str) -> str:
    parts = value.rstrip("/").split("/")
    if not value.startswith(PROCESSING_ROOT) or value.rstrip("/") == PROCESSING_ROOT.rstrip("/"):
        raise ValueError(f"'{value}' must be a folder under {PROCESSING_ROOT}, e.g. {PROCESSING_ROOT}input/data")
    if any(p in (".", "..") for p in parts) or "//" in value:
        raise ValueError(f"'{value}' must not hold '.', '..' or empty segments")
    return value.rstrip("/")


LocalPath = Annotated[str, Field(max_length=256), AfterValidator(_local_path)]  # a processing input's or output's


class UploadMode(StrEnum):
    END_OF_JOB = "EndOfJob"
    CONTINUOUS = "Continuous"


class ProcessingS3Input(_Model):
    s3_uri: Uri
    local_path: LocalPath
    s3_data_type: S3DataType = S3DataType.S3_PREFIX
    s3_input_mode: InputMode = InputMode.FILE
    s3_data_distribution_type: DistributionType = DistributionType.FULLY_REPLICATED
    s3_compression_type: CompressionType = CompressionType.NONE

    @property
    def container_path(self) -> str:
        """Where the container reads it: the folder at local_path (File), or the FIFO at local_path
        with _0 added (Pipe, as a training channel's FIFO is its folder's name with _0)."""
        return f"{self.local_path}_0" if self.s3_input_mode is InputMode.PIPE else self.local_path


class ProcessingInput(_Model):
    input_name: str = Field(pattern=CHANNEL_NAME_PATTERN)
    app_managed: bool = False
    s3_input: ProcessingS3Input


class ProcessingS3Output(_Model):
    s3_uri: Uri
    local_path: LocalPath
    s3_upload_mode: UploadMode = UploadMode.END_OF_JOB


class ProcessingOutput(_Model):
    output_name: str = Field(pattern=CHANNEL_NAME_PATTERN)
    app_managed: bool = False
    s3_output: ProcessingS3Output


class ProcessingOutputConfig(_Model):
    outputs: list[ProcessingOutput] = Field(default_factory=list, max_length=MAX_OUTPUTS)
    kms_key_id: str | None = Field(default=None, max_length=2048)


class ClusterConfig(_Model):
    instance_count: int = Field(default=1, ge=1, le=100)
    instance_type: str = "local"
    volume_size_in_gb: int = Field(default=30, ge=1, le=16384)
    volume_kms_key_id: str | None = None


class ProcessingResources(_Model):
    cluster_config: ClusterConfig = Field(default_factory=ClusterConfig)


class ProcessingStoppingCondition(_Model):
    max_runtime_in_seconds: int = Field(default=DEFAULT_MAX_RUNTIME, ge=1, le=777600)


class AppSpecification(_Model):
    image_uri: str = Field(min_length=1, max_length=255)
    container_entrypoint: list[str] | None = Field(default=None, min_length=1, max_length=100)
    container_arguments: list[str] | None = Field(default=None, min_length=1, max_length=100)


class NetworkConfig(_Model):
    enable_inter_container_traffic_encryption: bool = False  # recorded: the containers' traffic stays on the host
    enable_network_isolation: bool = False
    vpc_config: dict[str, list[str]] | None = None  # recorded; the containers run on the job's own network


class AnalyzedModel(_Model):
    """The model a Clarify job explains: its analysis_config's predictor.model_name (a training
    job's name, or a model.tar.gz URI), as dockyard resolved it at validation (dockyard.clarify)."""

    model_data: Uri  # the model.tar.gz
    # the image that serves it by SageMaker's inference contract, beside the processor (Clarify's
    # shadow endpoint); None: the processor loads it itself (the built-in XGBoost's models)
    image: str | None = Field(default=None, min_length=1, max_length=255)
    training_job_name: str | None = Field(default=None, pattern=JOB_NAME_PATTERN, max_length=63)


class ProcessingJobSpec(_Model):
    """One processing job, as CreateProcessingJob describes it (snake_case)."""

    processing_job_name: str = Field(pattern=JOB_NAME_PATTERN, max_length=63)
    processing_inputs: list[ProcessingInput] = Field(default_factory=list, max_length=MAX_INPUTS)
    processing_output_config: ProcessingOutputConfig = Field(default_factory=ProcessingOutputConfig)
    processing_resources: ProcessingResources = Field(default_factory=ProcessingResources)
    stopping_condition: ProcessingStoppingCondition = Field(default_factory=ProcessingStoppingCondition)
    app_specification: AppSpecification
    environment: dict[str, str] = Field(default_factory=dict)
    network_config: NetworkConfig = Field(default_factory=NetworkConfig)
    role: str | None = Field(default=None, max_length=2048)  # RoleArn
    experiment_config: ExperimentConfig | None = None
    tags: list[Tag] = Field(default_factory=list, max_length=MAX_TAGS)
    # dockyard's own, set at validation (never by a user's spec): the model a Clarify job explains
    analyzed_model: AnalyzedModel | None = None

    _env_strings = field_validator("environment", mode="before")(_wire_strings)

    @property
    def served_model_image(self) -> str | None:
        """The image that serves a Clarify job's model beside its processor, if it has one."""
        return self.analyzed_model.image if self.analyzed_model is not None else None

    @field_validator("environment")
    @classmethod
    def _env(cls, value: dict[str, str]) -> dict[str, str]:
        return _environment(value, max_value=256)  # SageMaker's limit for processing jobs

    @model_validator(mode="after")
    def _paths(self) -> ProcessingJobSpec:
        named = [i.input_name for i in self.processing_inputs] + [
            o.output_name for o in self.processing_output_config.outputs
        ]
        twice = sorted({n for n in named if named.count(n) > 1})
        if twice:
            raise ValueError(f"input and output names must be unique; repeated: {twice}")
        paths = [i.s3_input.container_path for i in self.processing_inputs] + [
            o.s3_output.local_path for o in self.processing_output_config.outputs
        ]
        for i, path in enumerate(paths):
            for other in paths[i + 1 :]:
                if path == other or path.startswith(other + "/") or other.startswith(path + "/"):
                    raise ValueError(f"local paths {path} and {other} overlap: give each input and output its own")
        for item in self.processing_inputs:
            s3 = item.s3_input
            if s3.s3_input_mode not in (InputMode.FILE, InputMode.PIPE):
                raise ValueError(f"{item.input_name}: s3_input_mode must be File or Pipe (FastFile is for training)")
            if s3.s3_compression_type is CompressionType.GZIP and s3.s3_input_mode is not InputMode.PIPE:
                raise ValueError(f"{item.input_name}: s3_compression_type Gzip needs s3_input_mode Pipe — use None")
        return self


TrainingJobSpec.model_rebuild()  # its `processing` field, now that ProcessingJobSpec is defined
