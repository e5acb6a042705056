"""What the built-in XGBoost can tell about a job before anything runs.

The hyperparameters' names, kinds, ranges and objectives are in
dockyard.algorithms; this module checks what needs more: each eval_metric
against the metrics XGBoost computes, what an objective needs (num_class for
multi:*), and which content types a channel's input mode can carry. What only
the data can tell (a malformed row, a missing label) the container reports as
the job's FailureReason.
"""

from __future__ import annotations

import re

from dockyard.algorithms import CSV, LIBSVM, RECORDIO_PROTOBUF, XGBOOST_CONTENT_TYPES, XGBOOST_METRICS, suggest
from dockyard.errors import FieldProblem
from dockyard.spec import TrainingJobSpec

PIPE_CONTENT_TYPES = (CSV, RECORDIO_PROTOBUF)
_WITH_THRESHOLD = {"error": r"@[0-9.]+", "pre": r"@[0-9]+", "ndcg": r"(?:@[0-9]+)?-?", "map": r"(?:@[0-9]+)?-?",
                   "tweedie-nloglik": r"@[0-9.]+"}  # fmt: skip


def known_metric(metric: str) -> bool:
    """Whether XGBoost computes `metric`: one of XGBOOST_METRICS, `error@0.7`, `ndcg@5-` and the like included."""
    name = re.split(r"[@]|-$", metric, maxsplit=1)[0]
    if metric in XGBOOST_METRICS:
        return True
    tail = _WITH_THRESHOLD.get(name)
    return tail is not None and re.fullmatch(re.escape(name) + tail, metric) is not None


def content_type(given: str | None) -> str | None:
    """The content type a channel's data is read as (text/libsvm when none is given), or None
    when XGBoost reads no such type."""
    media = (given or LIBSVM).split(";")[0].strip().lower()
    return XGBOOST_CONTENT_TYPES.get(media)


def problems(spec: TrainingJobSpec) -> list[FieldProblem]:
    hp = spec.hyperparameters
    found: list[FieldProblem] = []
    for metric in [m.strip() for m in hp.get("eval_metric", "").split(",") if m.strip()]:
        if not known_metric(metric):
            found.append(FieldProblem(
                "hyperparameters.eval_metric", f"XGBoost computes no metric '{metric}'",
                suggest(metric, XGBOOST_METRICS) or f"use XGBoost's metrics: {', '.join(XGBOOST_METRICS)}",
            ))  # fmt: skip
    objective = hp.get("objective", "")
    if objective.startswith("multi:") and "num_class" not in hp:
        found.append(FieldProblem(
            "hyperparameters.num_class", f"objective {objective} needs the number of classes",
            "add num_class (the labels are 0 .. num_class-1)",
        ))  # fmt: skip
    train = next((c for c in spec.input_data_config if c.channel_name == "train"), None)
    trains_as = content_type(train.content_type if train else None)
    for i, channel in enumerate(spec.input_data_config):
        # As SageMaker's XGBoost does, a channel that gives no content type is read as train's.
        read_as = content_type(channel.content_type or (train.content_type if train else None))
        at = f"input_data_config[{i}]"
        if read_as is None:
            continue  # the algorithm's specification reports a content type it does not read
        if channel is not train and channel.content_type and trains_as and read_as != trains_as:
            found.append(FieldProblem(
                f"{at}.content_type", f"channel {channel.channel_name} is {read_as}, channel train {trains_as}: "
                "XGBoost reads every channel in one content type", "give both the same (or leave this one out)",
            ))  # fmt: skip
        if spec.channel_mode(channel).value == "Pipe" and read_as not in PIPE_CONTENT_TYPES:
            found.append(FieldProblem(
                f"{at}.input_mode" if channel.input_mode else "algorithm_specification.training_input_mode",
                f"XGBoost reads {read_as} from files only, not through a Pipe channel"
                + ("" if channel.content_type or (train and train.content_type)
                   else " (text/libsvm is the default when content_type is not given)"),
                "set input_mode: File, or give the data as text/csv or application/x-recordio-protobuf",
            ))  # fmt: skip
        label_size = re.search(r"label_size\s*=\s*\"?([^;\s\"]*)", channel.content_type or "")
        if read_as == CSV and label_size and label_size.group(1) != "1":
            found.append(FieldProblem(
                f"{at}.content_type", f"label_size={label_size.group(1)}: training reads one label, the first column",
                "set text/csv;label_size=1, or plain text/csv",
            ))  # fmt: skip
    return found
