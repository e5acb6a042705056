"""A processing job as the stages carry it.

A processing job (dockyard.spec.ProcessingJobSpec, CreateProcessingJob's shape) is
another kind of job for the same stages: `as_job` gives the training-shaped spec the
tasks carry (its inputs as channels, its image and command, its instances), with the
processing spec kept beside it for what a processing container sees differently: its
inputs and outputs at the local paths it names under /opt/ml/processing/,
/opt/ml/config/processingjobconfig.json and resourceconfig.json, and its outputs
uploaded as folders, not archives.
"""

from __future__ import annotations

from dockyard.algorithms import processing_image
from dockyard.spec import ProcessingJobSpec, TrainingJobSpec


def as_job(spec: ProcessingJobSpec, output_path: str) -> TrainingJobSpec:
    """The training-shaped spec the stages carry for `spec`: its inputs as channels, its image and
    command, its instances, and the processing spec itself; `output_path` holds what dockyard
    itself writes for the job (job.json)."""
    cluster = spec.processing_resources.cluster_config
    app = spec.app_specification
    doc = {
        "training_job_name": spec.processing_job_name,
        "algorithm_specification": {
            "training_image": processing_image(app.image_uri),
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
