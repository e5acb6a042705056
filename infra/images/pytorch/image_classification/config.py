"""The job as the container sees it: the files under /opt/ml/input/config, and the
image classifier's hyperparameters (SageMaker's names, every value a string)
parsed and checked into one Config.

A problem the user can fix raises TrainingError, whose message names the field,
the problem and the fix; train.py writes it to /opt/ml/output/failure.
"""

from __future__ import annotations

import difflib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

ML = "/opt/ml"
CONFIG_DIR = f"{ML}/input/config"
DATA_DIR = f"{ML}/input/data"
MODEL_DIR = f"{ML}/model"
FAILURE_FILE = f"{ML}/output/failure"
CHECKPOINT_DIR = f"{ML}/checkpoints"


class TrainingError(Exception):
    """A failure its message explains (a user's mistake, an unreachable host):
    the message alone becomes the failure reason, no traceback."""

    def __init__(self, message: str) -> None:
        # Raised in a DataLoader worker, it comes back as "Caught TrainingError in
        # DataLoader worker process 0. Original Traceback ...": keep the original message.
        marker = "TrainingError: "
        if message.startswith("Caught ") and marker in message:
            message = message.rsplit(marker, 1)[1].strip()
        super().__init__(message)


@dataclass(frozen=True)
class Kind:
    expect: str  # what a valid value looks like, for the error message
    parse: Callable[[str], Any]  # raises ValueError on a bad value


def _int(minimum: int) -> Kind:
    def parse(text: str) -> int:
        value = int(text)
        if value < minimum:
            raise ValueError(text)
        return value

    return Kind(f"an integer >= {minimum}", parse)


def _float(low: float, high: float, low_open: bool = False, high_open: bool = False) -> Kind:
    def parse(text: str) -> float:
        value = float(text)
        if not (low < value if low_open else low <= value) or not (value < high if high_open else value <= high):
            raise ValueError(text)
        return value

    return Kind(f"a number in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}", parse)


def _choice(*values: str) -> Kind:
    def parse(text: str) -> str:
        if text.lower() not in values:
            raise ValueError(text)
        return text.lower()

    return Kind("one of " + ", ".join(values), parse)


def _shape(text: str) -> tuple[int, int, int]:
    parts = [int(p) for p in text.split(",")]
    if len(parts) != 3 or parts[0] not in (1, 3) or min(parts) < 1:
        raise ValueError(text)
    return parts[0], parts[1], parts[2]


def _epochs(text: str) -> tuple[int, ...]:
    steps = tuple(sorted({int(p) for p in text.split(",")}))
    if not steps or steps[0] < 1:
        raise ValueError(text)
    return steps


def _depth(text: str) -> int:
    if text not in ("18", "34", "50", "101", "152", "200"):
        raise ValueError(text)
    return int(text)


REQUIRED = object()
UNIT, POSITIVE_UNIT = _float(0, 1), _float(0, 1, low_open=True)
# SageMaker's hyperparameters with their defaults (checkpoint_frequency is dockyard's: 1).
HYPERPARAMETERS: dict[str, tuple[Kind, Any]] = {
    "num_classes": (_int(2), REQUIRED),
    "num_training_samples": (_int(1), REQUIRED),
    "image_shape": (Kind("'channels,height,width' with 1 or 3 channels, e.g. '3,224,224'", _shape), (3, 224, 224)),
    "num_layers": (Kind("one of 18, 34, 50, 101, 152, 200", _depth), 152),
    "epochs": (_int(1), 30),
    "learning_rate": (POSITIVE_UNIT, 0.1),
    "mini_batch_size": (_int(1), 32),
    "optimizer": (_choice("sgd", "adam", "rmsprop", "nag"), "sgd"),
    "momentum": (UNIT, 0.9),
    "weight_decay": (UNIT, 0.0001),
    "beta_1": (_float(0, 1, high_open=True), 0.9),
    "beta_2": (_float(0, 1, high_open=True), 0.999),
    "eps": (POSITIVE_UNIT, 1e-8),
    "gamma": (UNIT, 0.9),
    "lr_scheduler_factor": (UNIT, 0.1),
    "lr_scheduler_step": (Kind("comma-separated epoch numbers, e.g. '10,20'", _epochs), ()),
    "augmentation_type": (_choice("crop", "crop_color", "crop_color_transform"), None),
    "resize": (_int(1), None),
    "top_k": (_int(2), None),
    "checkpoint_frequency": (_int(1), 1),
    "early_stopping": (_choice("true", "false"), "false"),
    "early_stopping_min_epochs": (_int(1), 10),
    "early_stopping_patience": (_int(1), 5),
    "early_stopping_tolerance": (UNIT, 0.0),
    "precision_dtype": (_choice("float32", "float16"), "float32"),
    "use_pretrained_model": (_choice("0", "1"), "0"),
    "multi_label": (Kind("0 (one label per image; multi-label training is not supported)", _choice("0").parse), "0"),
    "use_weighted_loss": (_choice("0", "1"), "0"),  # multi-label only: accepted, no effect
    "kv_store": (_choice("dist_sync", "dist_async", "device", "local"), "dist_sync"),  # MXNet's: no effect here
}


@dataclass(frozen=True)
class Config:
    """The hyperparameters, parsed; see HYPERPARAMETERS for SageMaker's names and defaults."""

    num_classes: int
    num_training_samples: int
    image_shape: tuple[int, int, int]
    num_layers: int
    epochs: int
    learning_rate: float
    mini_batch_size: int
    optimizer: str
    momentum: float
    weight_decay: float
    beta_1: float
    beta_2: float
    eps: float
    gamma: float
    lr_scheduler_factor: float
    lr_scheduler_step: tuple[int, ...]
    augmentation_type: str | None
    resize: int | None
    top_k: int | None
    checkpoint_frequency: int
    early_stopping: bool
    early_stopping_min_epochs: int
    early_stopping_patience: int
    early_stopping_tolerance: float
    float16: bool
    use_pretrained_model: bool

    def model_spec(self) -> dict[str, Any]:
        """What fixes the network's shape: a checkpoint or model must match it."""
        return {"num_classes": self.num_classes, "image_shape": list(self.image_shape), "num_layers": self.num_layers}


def parse_hyperparameters(raw: dict[str, Any]) -> Config:
    """Check every hyperparameter; all problems are reported at once.

    Raises:
        TrainingError: one line per bad, missing or unknown hyperparameter.
    """
    problems, values = [], {}
    for name in raw:
        # sagemaker_* come from SageMaker's SDK, _tuning_objective_metric from its tuner.
        if name in HYPERPARAMETERS or name.startswith(("sagemaker_", "_")):
            continue
        near = difflib.get_close_matches(name, HYPERPARAMETERS, n=1)
        problems.append(f"hyperparameter '{name}' is not one of the image classifier's"
                        + (f" (did you mean '{near[0]}'?)" if near else "") + "; remove it")
    for name, (kind, default) in HYPERPARAMETERS.items():
        if name not in raw:
            if default is REQUIRED:
                problems.append(f"hyperparameter '{name}' is required: set it to {kind.expect}")
            values[name] = default
            continue
        try:
            values[name] = kind.parse(str(raw[name]).strip())
        except ValueError:
            problems.append(f"hyperparameter '{name}' must be {kind.expect}, got '{raw[name]}'")
    if not problems:
        problems = _cross_checks(values)
    if problems:
        raise TrainingError("; ".join(problems))
    for name in ("multi_label", "use_weighted_loss", "kv_store"):
        values.pop(name)
    values["early_stopping"] = values["early_stopping"] == "true"
    values["use_pretrained_model"] = values["use_pretrained_model"] == "1"
    values["float16"] = values.pop("precision_dtype") == "float16"
    return Config(**values)


def _cross_checks(v: dict[str, Any]) -> list[str]:
    """Values bounded by other values."""
    problems = []
    if v["top_k"] is not None and v["top_k"] > v["num_classes"]:
        problems.append(f"top_k is {v['top_k']}, more than num_classes ({v['num_classes']}): set it to at most that")
    if v["checkpoint_frequency"] > v["epochs"]:
        problems.append(f"checkpoint_frequency is {v['checkpoint_frequency']}, more than epochs ({v['epochs']}): "
                        "no checkpoint would ever be written; set it to at most epochs")
    _, height, width = v["image_shape"]
    if v["resize"] is not None and v["resize"] < max(height, width):
        problems.append(f"resize is {v['resize']}, smaller than image_shape's {height}x{width}: the crop would not "
                        f"fit; set resize to at least {max(height, width)} or leave it out")
    if v["optimizer"] == "nag" and v["momentum"] == 0:
        problems.append("optimizer nag (Nesterov) needs momentum > 0: set momentum, e.g. 0.9")
    return problems


@dataclass(frozen=True)
class Channel:
    """One entry of inputdataconfig.json."""

    name: str
    content_type: str | None
    mode: str  # File, Pipe or FastFile
    sharded: bool  # ShardedByS3Key: this host holds only its share
    record_wrapped: bool  # RecordWrapperType RecordIO: an augmented manifest's records

    @property
    def folder(self) -> str:
        return f"{DATA_DIR}/{self.name}"


@dataclass(frozen=True)
class Job:
    config: Config
    channels: dict[str, Channel]
    current_host: str
    hosts: tuple[str, ...]
    network_interface: str
    checkpoint_dir: str


def _read_json(name: str, default: Any) -> Any:
    path = f"{CONFIG_DIR}/{name}"
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        return default
    except (OSError, ValueError) as exc:
        raise TrainingError(f"{path} is not readable JSON ({exc}); the platform wrote it wrong") from exc


def load_job() -> Job:
    """The job from /opt/ml/input/config.

    Raises:
        TrainingError: a bad hyperparameter, or an unreadable config file.
    """
    channels = {
        name: Channel(
            name=name,
            content_type=(entry.get("ContentType") or "").split(";")[0].strip().lower() or None,
            mode=entry.get("TrainingInputMode", "File"),
            sharded=entry.get("S3DistributionType") == "ShardedByS3Key",
            record_wrapped=entry.get("RecordWrapperType", "None") == "RecordIO",
        )
        for name, entry in _read_json("inputdataconfig.json", {}).items()
    }
    resources = _read_json("resourceconfig.json", {})
    host = resources.get("current_host", "algo-1")
    checkpoint_dir = _read_json("checkpointconfig.json", {}).get("LocalPath") or CHECKPOINT_DIR
    return Job(
        config=parse_hyperparameters(_read_json("hyperparameters.json", {})),
        channels=channels,
        current_host=host,
        hosts=tuple(resources.get("hosts", [host])),
        network_interface=resources.get("network_interface_name", "eth0"),
        checkpoint_dir=checkpoint_dir,
    )


def cpu_count() -> int:
    """The CPUs this container may use: SM_NUM_CPUS when the platform sets it, else the
    cgroup's CPU quota, else the affinity mask (os.cpu_count() sees every core of the machine)."""
    if os.environ.get("SM_NUM_CPUS", "").isdigit() and int(os.environ["SM_NUM_CPUS"]) > 0:
        return int(os.environ["SM_NUM_CPUS"])
    count = len(os.sched_getaffinity(0))
    try:
        with open("/sys/fs/cgroup/cpu.max") as f:
            quota, period = f.read().split()
        if quota != "max":
            count = min(count, max(1, -(-int(quota) // int(period))))
    except (OSError, ValueError):
        pass
    return count


def write_failure(message: str) -> None:
    """The failure reason dockyard reports (its first 1,024 characters)."""
    os.makedirs(os.path.dirname(FAILURE_FILE), exist_ok=True)
    with open(FAILURE_FILE, "w") as f:
        f.write(message)
