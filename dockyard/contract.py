"""The SageMaker container contract: paths, config files, environment.

Constants and pure functions only. What a container sees under /opt/ml and in
its environment is decided here and nowhere else.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from dockyard import script_mode
from dockyard.spec import CompressionType, InputMode, TrainingJobSpec
from dockyard.wire import to_pascal

ML = "/opt/ml"
INPUT_DIR = f"{ML}/input"
INPUT_CONFIG_DIR = f"{INPUT_DIR}/config"
INPUT_DATA_DIR = f"{INPUT_DIR}/data"
MODEL_DIR = f"{ML}/model"
OUTPUT_DIR = f"{ML}/output"
OUTPUT_DATA_DIR = f"{OUTPUT_DIR}/data"
OUTPUT_INTERMEDIATE_DIR = f"{OUTPUT_DIR}/intermediate"
FAILURE_FILE = f"{OUTPUT_DIR}/failure"
CHECKPOINT_DIR = f"{ML}/checkpoints"
CODE_DIR = f"{ML}/code"
PROCESSING_CONFIG_DIR = f"{ML}/config"  # a processing job's config files
PROCESSING_CONFIG_FILE = "processingjobconfig.json"
EXIT_MESSAGE_FILE = f"{OUTPUT_DIR}/message"  # a processing job's ExitMessage

HYPERPARAMETERS_FILE = "hyperparameters.json"
INPUT_DATA_CONFIG_FILE = "inputdataconfig.json"
RESOURCE_CONFIG_FILE = "resourceconfig.json"
CHECKPOINT_CONFIG_FILE = "checkpointconfig.json"

NETWORK_INTERFACE = "eth0"
DEFAULT_COMMAND = ["train"]
FAILURE_REASON_LIMIT = 1024
MODEL_ARCHIVE = "model.tar.gz"
OUTPUT_ARCHIVE = "output.tar.gz"

# The platform directories, each mounted on its own (never a volume over all
# of /opt/ml: images may ship /opt/ml/code and the like). Input is read-only.
MOUNTS = {"input": (INPUT_DIR, True), "model": (MODEL_DIR, False), "output": (OUTPUT_DIR, False)}


@dataclass(frozen=True)
class HostLayout:
    """One instance's /opt/ml as folders on the host, under its scratch folder:
    the one place host-side paths are built, each from its container path."""

    scratch: str

    def on_host(self, container_path: str) -> str:
        """The host folder behind a path under /opt/ml."""
        return self.scratch + container_path.removeprefix(ML)

    @property
    def input(self) -> str:
        return self.on_host(INPUT_DIR)

    @property
    def input_config(self) -> str:
        return self.on_host(INPUT_CONFIG_DIR)

    @property
    def input_data(self) -> str:
        return self.on_host(INPUT_DATA_DIR)

    def channel(self, name: str) -> str:
        return self.on_host(channel_dir(name))

    @property
    def model(self) -> str:
        return self.on_host(MODEL_DIR)

    @property
    def output(self) -> str:
        return self.on_host(OUTPUT_DIR)

    @property
    def output_data(self) -> str:
        return self.on_host(OUTPUT_DATA_DIR)

    @property
    def failure_file(self) -> str:
        return self.on_host(FAILURE_FILE)

    @property
    def checkpoints(self) -> str:
        """Synced to the checkpoint URI, and bound at checkpoint_config.local_path (default /opt/ml/checkpoints)."""
        return self.on_host(CHECKPOINT_DIR)

    def folders(self) -> tuple[str, ...]:
        """Every folder an instance starts with."""
        return (self.input_config, self.input_data, self.model, self.output_data, self.checkpoints)


def host_layout(scratch: str) -> HostLayout:
    return HostLayout(scratch.rstrip("/"))


def host_names(count: int) -> list[str]:
    """algo-1 .. algo-N, sorted as SageMaker lists them."""
    return [f"algo-{i}" for i in range(1, count + 1)]


def job_arn(name: str, kind: str = "training-job") -> str:
    return f"arn:aws:sagemaker:local:000000000000:{kind}/{name.lower()}"


def channel_dir(channel: str) -> str:
    return f"{INPUT_DATA_DIR}/{channel}"


def input_data_config(spec: TrainingJobSpec) -> dict[str, dict[str, str]]:
    """inputdataconfig.json: per channel its content type, mode and distribution."""
    config = {}
    for channel in spec.input_data_config:
        entry = {
            "TrainingInputMode": spec.channel_mode(channel).value,
            "RecordWrapperType": channel.record_wrapper_type.value,
        }
        source = channel.data_source.s3_data_source
        if source is not None:
            entry["S3DistributionType"] = source.s3_data_distribution_type.value
        if channel.compression_type is not CompressionType.NONE:
            entry["CompressionType"] = channel.compression_type.value
        if channel.content_type:
            entry["ContentType"] = channel.content_type
        config[channel.channel_name] = entry
    return config


def resource_config(
    current_host: str, hosts: list[str], instance_type: str, interface: str = NETWORK_INTERFACE
) -> dict[str, Any]:
    """resourceconfig.json for one host; `interface`, the network interface its peers reach it on."""
    return {
        "current_host": current_host,
        "current_instance_type": instance_type,
        "current_group_name": "homogeneousCluster",
        "hosts": sorted(hosts),
        "instance_groups": [
            {
                "instance_group_name": "homogeneousCluster",
                "instance_type": instance_type,
                "hosts": sorted(hosts),
            }
        ],
        "network_interface_name": interface,
    }


def checkpoint_config(local_path: str, s3_uri: str) -> dict[str, str]:
    return {"LocalPath": local_path, "S3Uri": s3_uri}


def config_files(
    spec: TrainingJobSpec, current_host: str, hosts: list[str], interface: str = NETWORK_INTERFACE
) -> dict[str, str]:
    """The files under input/config for one host, by file name."""
    files = {
        HYPERPARAMETERS_FILE: script_mode.container_hyperparameters(spec),
        INPUT_DATA_CONFIG_FILE: input_data_config(spec),
        RESOURCE_CONFIG_FILE: resource_config(current_host, hosts, spec.resource_config.instance_type, interface),
    }
    if spec.checkpoint_config:
        files[CHECKPOINT_CONFIG_FILE] = checkpoint_config(
            spec.checkpoint_config.local_path, spec.checkpoint_config.s3_uri
        )
    return {name: json.dumps(content, indent=2, sort_keys=True) for name, content in files.items()}


def _decoded(value: str) -> Any:
    try:
        return json.loads(value)
    except ValueError:
        return value


def user_args(hyperparameters: dict[str, str]) -> list[str]:
    """Hyperparameters as command-line arguments, as the toolkit passes them."""
    args: list[str] = []
    for key, value in sorted(hyperparameters.items()):
        args += [f"--{key}", value]
    return args


def sm_environment(
    spec: TrainingJobSpec,
    current_host: str,
    hosts: list[str],
    num_cpus: int,
    num_gpus: int,
    interface: str = NETWORK_INTERFACE,
) -> dict[str, str]:
    """The environment of one host's container: the job's own entries, then the
    variables SageMaker's training toolkit sets (SM_*), which win on a clash."""
    channels = sorted(c.channel_name for c in spec.input_data_config)
    hyperparameters = script_mode.container_hyperparameters(spec)  # as hyperparameters.json has them
    hps = {k: _decoded(v) for k, v in hyperparameters.items()}
    rc = resource_config(current_host, hosts, spec.resource_config.instance_type, interface)
    idc = input_data_config(spec)
    env = {
        "SM_MODEL_DIR": MODEL_DIR,
        "SM_INPUT_DIR": INPUT_DIR,
        "SM_INPUT_CONFIG_DIR": INPUT_CONFIG_DIR,
        "SM_OUTPUT_DIR": OUTPUT_DIR,
        "SM_OUTPUT_DATA_DIR": OUTPUT_DATA_DIR,
        "SM_OUTPUT_INTERMEDIATE_DIR": OUTPUT_INTERMEDIATE_DIR,
        "SM_CHANNELS": json.dumps(channels),
        "SM_HPS": json.dumps(hps, sort_keys=True),
        "SM_HOSTS": json.dumps(sorted(hosts)),
        "SM_CURRENT_HOST": current_host,
        "SM_CURRENT_INSTANCE_TYPE": spec.resource_config.instance_type,
        "SM_NUM_CPUS": str(num_cpus),
        "SM_NUM_GPUS": str(num_gpus),
        "SM_NETWORK_INTERFACE_NAME": interface,
        "SM_RESOURCE_CONFIG": json.dumps(rc, sort_keys=True),
        "SM_INPUT_DATA_CONFIG": json.dumps(idc, sort_keys=True),
        "SM_USER_ARGS": json.dumps(user_args(hyperparameters)),
    }
    for channel in channels:
        env[f"SM_CHANNEL_{channel.upper()}"] = channel_dir(channel)
    for key, value in hyperparameters.items():
        env[f"SM_HP_{key.upper()}"] = value
    env["SM_TRAINING_ENV"] = json.dumps(
        {
            "channel_input_dirs": {c: channel_dir(c) for c in channels},
            "current_host": current_host,
            "hosts": sorted(hosts),
            "hyperparameters": hps,
            "input_config_dir": INPUT_CONFIG_DIR,
            "input_data_config": idc,
            "input_dir": INPUT_DIR,
            "job_name": spec.training_job_name,
            "model_dir": MODEL_DIR,
            "network_interface_name": interface,
            "num_cpus": num_cpus,
            "num_gpus": num_gpus,
            "output_data_dir": OUTPUT_DATA_DIR,
            "output_dir": OUTPUT_DIR,
            "resource_config": rc,
        },
        sort_keys=True,
    )
    return {
        **spec.environment,
        "TRAINING_JOB_NAME": spec.training_job_name,
        "TRAINING_JOB_ARN": job_arn(spec.training_job_name),
        **env,
    }


def processing_config_files(spec: TrainingJobSpec, current_host: str, hosts: list[str]) -> dict[str, str]:
    """The files under /opt/ml/config of one host of a processing job: the CreateProcessingJob
    request echoed (processingjobconfig.json) and resourceconfig.json."""
    if spec.processing is None:
        raise ValueError(f"{spec.training_job_name} is not a processing job")
    echoed = spec.processing.model_copy(update={"environment": spec.environment})  # carried on the job's spec
    request = to_pascal(echoed.model_dump(mode="json", exclude={"analyzed_model"}))  # dockyard's own
    request["ProcessingJobArn"] = job_arn(spec.training_job_name, "processing-job")
    for item in request.get("ProcessingInputs", []):
        item["S3Input"]["S3DownloadMode"] = "StartOfJob"
    files = {
        PROCESSING_CONFIG_FILE: request,
        RESOURCE_CONFIG_FILE: resource_config(current_host, hosts, spec.resource_config.instance_type),
    }
    return {name: json.dumps(content, indent=2, sort_keys=True) for name, content in files.items()}


def processing_mounts(spec: TrainingJobSpec, layout: HostLayout) -> dict[str, tuple[str, bool]]:
    """A processing container's binds, host folder -> (container path, read-only): each input's
    staged channel at its local path, each output's folder, its config, and /opt/ml/output."""
    if spec.processing is None:
        raise ValueError(f"{spec.training_job_name} is not a processing job")
    binds = {layout.on_host(PROCESSING_CONFIG_DIR): (PROCESSING_CONFIG_DIR, True), layout.output: (OUTPUT_DIR, False)}
    for item in spec.processing.processing_inputs:  # writable, as on SageMaker (scripts unpack models there)
        if item.s3_input.s3_input_mode is InputMode.PIPE:  # its FIFO (infra/pipe.py), read-only
            binds[f"{layout.channel(item.input_name)}_0"] = (item.s3_input.container_path, True)
        else:
            binds[layout.channel(item.input_name)] = (item.s3_input.local_path, False)
    for output in spec.processing.processing_output_config.outputs:
        binds[layout.on_host(output.s3_output.local_path)] = (output.s3_output.local_path, False)
    return binds
