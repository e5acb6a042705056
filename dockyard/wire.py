"""SageMaker's PascalCase field names and dockyard's snake_case, both ways, from one table."""

from __future__ import annotations

import re
from typing import Any

# snake_case -> PascalCase where the mechanical rule gets it wrong.
IRREGULAR = {
    "hyperparameters": "HyperParameters",
    "role": "RoleArn",
    "volume_size_in_gb": "VolumeSizeInGB",
    "enable_sage_maker_metrics_time_series": "EnableSageMakerMetricsTimeSeries",
}
_IRREGULAR_SNAKE = {pascal: snake for snake, pascal in IRREGULAR.items()}
# Maps whose keys are the user's own names, not field names: left as they are.
USER_MAPS = {
    "hyperparameters",
    "static_hyper_parameters",
    "environment",
    "rule_parameters",
    "hook_parameters",
    "collection_parameters",
    "profiling_parameters",
}


def snake(name: str) -> str:
    if name in _IRREGULAR_SNAKE:
        return _IRREGULAR_SNAKE[name]
    name = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", name)
    return re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name).lower()


def pascal(name: str) -> str:
    if name in IRREGULAR:
        return IRREGULAR[name]
    return "".join(part[:1].upper() + part[1:] for part in name.split("_"))


def to_snake(value: Any, key: str | None = None) -> Any:
    """PascalCase request data (CreateTrainingJob's) in snake_case; `key` names `value`'s field."""
    if isinstance(value, dict):
        if key is not None and snake(key) in USER_MAPS:
            return dict(value)
        return {snake(k): to_snake(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [to_snake(v) for v in value]
    return value


def to_pascal(value: Any, key: str | None = None) -> Any:
    """snake_case spec data in SageMaker's PascalCase; `key` names `value`'s field."""
    if isinstance(value, dict):
        if key in USER_MAPS:
            return dict(value)
        return {pascal(k): to_pascal(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [to_pascal(v) for v in value]
    return value
