"""What the built-in image classifier can tell about a job before anything runs.

The hyperparameters' names, kinds and ranges are in dockyard.algorithms; this
module checks what needs more than one field: the image shape's format, the
channels each content type needs (raw images need their .lst channels), and
values bounded by other values. What only the data can tell (a label beyond
num_classes, a missing or corrupt image) the container reports as the job's
FailureReason.
"""

from __future__ import annotations

from dockyard.errors import FieldProblem
from dockyard.spec import S3DataType, TrainingJobSpec

IMAGE = "application/x-image"
RECORDIO = "application/x-recordio"
MODEL = "application/x-sagemaker-model"
IMAGE_TYPES = (IMAGE, "image/jpeg", "image/png")
CONTENT_TYPES = (*IMAGE_TYPES, RECORDIO)


def parse_image_shape(value: str) -> tuple[int, int, int] | None:
    """'3,224,224' (spaces allowed) as (channels, height, width), or None when malformed."""
    parts = [p.strip() for p in value.split(",")]
    if len(parts) != 3 or not all(p.isdigit() and int(p) > 0 for p in parts):
        return None
    channels, height, width = (int(p) for p in parts)
    return (channels, height, width) if channels in (1, 3) else None


def problems(spec: TrainingJobSpec) -> list[FieldProblem]:
    hp = spec.hyperparameters
    found: list[FieldProblem] = []
    shape = hp.get("image_shape")
    if shape is not None and parse_image_shape(shape) is None:
        found.append(
            FieldProblem(
                "hyperparameters.image_shape",
                f"must be 'channels,height,width' with 1 or 3 channels — got '{shape}'",
                "e.g. image_shape: '3,224,224'",
            )
        )
    steps = hp.get("lr_scheduler_step")
    if steps is not None and not all(s.strip().isdigit() and int(s) > 0 for s in steps.split(",")):
        found.append(
            FieldProblem(
                "hyperparameters.lr_scheduler_step",
                f"must be comma-separated epoch numbers — got '{steps}'",
                "e.g. lr_scheduler_step: '10,20'",
            )
        )
    found += _bounded(hp)
    found += _channels(spec)
    return found


def _bounded(hp: dict[str, str]) -> list[FieldProblem]:
    """Values that must not exceed another hyperparameter's (each already checked as a number)."""
    found = []
    for name, limit_name, default in (("top_k", "num_classes", None), ("checkpoint_frequency", "epochs", "30")):
        value, limit = hp.get(name), hp.get(limit_name, default)
        if value and limit and value.isdigit() and limit.isdigit() and int(value) > int(limit):
            found.append(
                FieldProblem(
                    f"hyperparameters.{name}",
                    f"is {value}, more than {limit_name} ({limit})",
                    f"set it to at most {limit}",
                )
            )
    return found


def _channels(spec: TrainingJobSpec) -> list[FieldProblem]:
    found = []
    channels = {c.channel_name: (i, c) for i, c in enumerate(spec.input_data_config)}
    for name in ("train", "validation"):
        if name not in channels:
            continue
        i, channel = channels[name]
        source = channel.data_source.s3_data_source
        augmented = source is not None and source.s3_data_type is S3DataType.AUGMENTED_MANIFEST_FILE
        content = channel.content_type
        if content is not None and content not in CONTENT_TYPES:
            found.append(
                FieldProblem(
                    f"input_data_config[{i}].content_type",
                    f"the image classifier reads {' or '.join(CONTENT_TYPES)}, not '{content}'",
                    f"set content_type: {IMAGE} (images with .lst files) or {RECORDIO} (im2rec RecordIO)",
                )
            )
        raw_images = content in IMAGE_TYPES or (content is None and f"{name}_lst" in channels)
        if raw_images and not augmented and f"{name}_lst" not in channels:
            found.append(
                FieldProblem(
                    "input_data_config",
                    f"channel '{name}' holds raw images ({content}), so it needs a '{name}_lst' channel "
                    "listing them (lines: index<TAB>label<TAB>path)",
                    f"add a channel named {name}_lst with the .lst file",
                )
            )
    if "model" in channels:
        i, channel = channels["model"]
        if channel.content_type not in (None, MODEL):
            found.append(
                FieldProblem(
                    f"input_data_config[{i}].content_type",
                    f"the model channel (incremental training) holds a model.tar.gz, not '{channel.content_type}'",
                    f"set content_type: {MODEL}",
                )
            )
    return found
