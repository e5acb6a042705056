"""The processing job spec: pydantic models mirroring CreateProcessingJob (snake_case).

A processing job is another kind of job for the same stages: `as_job` gives the
training-shaped spec the tasks carry (its inputs as channels, its image and
command, its instances), with the processing spec kept beside it for what a
processing container sees differently: its inputs and outputs at the local
paths it names under /opt/ml/processing/, /opt/ml/config/processingjobconfig.json
and resourceconfig.json, and its outputs uploaded as folders, not archives.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field, field_validator, model_validator

from dockyard.spec import (
    CHANNEL_NAME_PATTERN,
    DEFAULT_MAX_RUNTIME,
    ENV_KEY_PATTERN,
    JOB_NAME_PATTERN,
    MAX_TAGS,
    CompressionType,
    DistributionType,
    ExperimentConfig,
    InputMode,
    S3DataType,
    Tag,
    TrainingJobSpec,
    Uri,
    _Model,
)

PROCESSING_ROOT = "/opt/ml/processing/"  # every input's and output's local path is under it
MAX_INPUTS = MAX_OUTPUTS = 10


def _local_path(value: str) -> str:
    parts = value.rstrip("/").split("/")
    if not value.startswith(PROCESSING_ROOT) or value.rstrip("/") == PROCESSING_ROOT.rstrip("/"):
        raise ValueError(f"'{value}' must be a folder under {PROCESSING_ROOT}, e.g. {PROCESSING_ROOT}input/data")
    if any(p in (".", "..") for p in parts) or "//" in value:
        raise ValueError(f"'{value}' must not hold '.', '..' or empty segments")
    return value.rstrip("/")


class UploadMode(StrEnum):
    END_OF_JOB = "EndOfJob"
    CONTINUOUS = "Continuous"


class ProcessingS3Input(_Model):
    s3_uri: Uri
    local_path: str = Field(max_length=256)
    s3_data_type: S3DataType = S3DataType.S3_PREFIX
    s3_input_mode: InputMode = InputMode.FILE
    s3_data_distribution_type: DistributionType = DistributionType.FULLY_REPLICATED
    s3_compression_type: CompressionType = CompressionType.NONE

    @field_validator("local_path")
    @classmethod
    def _path(cls, value: str) -> str:
        return _local_path(value)


class ProcessingInput(_Model):
    input_name: str = Field(pattern=CHANNEL_NAME_PATTERN)
    app_managed: bool = False
    s3_input: ProcessingS3Input


class ProcessingS3Output(_Model):
    s3_uri: Uri
    local_path: str = Field(max_length=256)
    s3_upload_mode: UploadMode = UploadMode.END_OF_JOB

    @field_validator("local_path")
    @classmethod
    def _path(cls, value: str) -> str:
        return _local_path(value)


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


class ProcessingJobSpec(_Model):
    """One processing job, as CreateProcessingJob describes it (snake_case)."""

    processing_job_name: str = Field(pattern=JOB_NAME_PATTERN, max_length=63)
    processing_inputs: list[ProcessingInput] = Field(default_factory=list, max_length=MAX_INPUTS)
    processing_output_config: ProcessingOutputConfig = Field(default_factory=ProcessingOutputConfig)
    processing_resources: ProcessingResources = Field(default_factory=ProcessingResources)
    stopping_condition: ProcessingStoppingCondition = Field(default_factory=ProcessingStoppingCondition)
    app_specification: AppSpecification
    environment: dict[str, str] = Field(default_factory=dict, max_length=100)
    network_config: NetworkConfig = Field(default_factory=NetworkConfig)
    role: str | None = Field(default=None, max_length=2048)  # RoleArn
    experiment_config: ExperimentConfig | None = None
    tags: list[Tag] = Field(default_factory=list, max_length=MAX_TAGS)

    @field_validator("environment")
    @classmethod
    def _env(cls, value: dict[str, str]) -> dict[str, str]:
        import re

        for key, item in value.items():
            if not re.match(ENV_KEY_PATTERN, key) or len(key) > 256:
                raise ValueError(f"'{key}' is not a valid variable name (letters, digits, _)")
            if len(item) > 256:
                raise ValueError(f"value of '{key}' is longer than 256 characters")
        return value

    @model_validator(mode="after")
    def _paths(self) -> ProcessingJobSpec:
        named = [i.input_name for i in self.processing_inputs] + [
            o.output_name for o in self.processing_output_config.outputs
        ]
        twice = sorted({n for n in named if named.count(n) > 1})
        if twice:
            raise ValueError(f"input and output names must be unique; repeated: {twice}")
        paths = [i.s3_input.local_path for i in self.processing_inputs] + [
            o.s3_output.local_path for o in self.processing_output_config.outputs
        ]
        for i, path in enumerate(paths):
            for other in paths[i + 1 :]:
                if path == other or path.startswith(other + "/") or other.startswith(path + "/"):
                    raise ValueError(f"local paths {path} and {other} overlap: give each input and output its own")
        for item in self.processing_inputs:
            s3 = item.s3_input
            if s3.s3_input_mode is InputMode.PIPE:
                raise ValueError(
                    f"{item.input_name}: s3_input_mode Pipe is not served for processing jobs yet — use File"
                )
            if s3.s3_compression_type is CompressionType.GZIP and s3.s3_input_mode is not InputMode.PIPE:
                raise ValueError(f"{item.input_name}: s3_compression_type Gzip needs s3_input_mode Pipe")
        return self


TrainingJobSpec.model_rebuild(_types_namespace={"ProcessingJobSpec": ProcessingJobSpec})


def as_job(spec: ProcessingJobSpec, output_path: str) -> TrainingJobSpec:
    """The training-shaped spec the stages carry for `spec`: its inputs as channels, its image and
    command, its instances, and the processing spec itself; `output_path` holds what dockyard
    itself writes for the job (job.json)."""
    cluster = spec.processing_resources.cluster_config
    app = spec.app_specification
    doc = {
        "training_job_name": spec.processing_job_name,
        "algorithm_specification": {
            "training_image": app.image_uri,
            "container_entrypoint": app.container_entrypoint,
            "container_arguments": app.container_arguments,
        },
        "role": spec.role,
        "resource_config": {
            "instance_type": cluster.instance_type,
            "instance_count": cluster.instance_count,
            "volume_size_in_gb": cluster.volume_size_in_gb,
        },
        "input_data_config": [
            {
                "channel_name": item.input_name,
                "input_mode": item.s3_input.s3_input_mode.value,
                "compression_type": item.s3_input.s3_compression_type.value,
                "data_source": {
                    "s3_data_source": {
                        "s3_uri": item.s3_input.s3_uri,
                        "s3_data_type": item.s3_input.s3_data_type.value,
                        "s3_data_distribution_type": item.s3_input.s3_data_distribution_type.value,
                    }
                },
            }
            for item in spec.processing_inputs
        ],
        "output_data_config": {"s3_output_path": output_path},
        "stopping_condition": {"max_runtime_in_seconds": spec.stopping_condition.max_runtime_in_seconds},
        "environment": spec.environment,
        "enable_network_isolation": spec.network_config.enable_network_isolation,
        "experiment_config": spec.experiment_config.model_dump(exclude_none=True) if spec.experiment_config else None,
        "tags": [t.model_dump() for t in spec.tags],
    }
    # Its environment rides on the training-shaped spec alone: secrets are kept and masked there.
    carried = spec.model_copy(update={"environment": {}})
    return TrainingJobSpec.model_validate({**{k: v for k, v in doc.items() if v is not None}, "processing": carried})
