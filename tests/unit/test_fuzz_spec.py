"""The front door under random and mutated input (Hypothesis): the spec loader and the
rules answer a valid job or a JobSpecError naming what is wrong, never anything else.

Inputs: random text as a job file, and the examples' job files and a SageMaker
CreateTrainingJob body with one part mutated (a value replaced by another of any
JSON type, a field dropped, an unknown field added). Derandomized, so a CI run
tries the same cases as the run before it; any failure prints the smallest case.
"""

from __future__ import annotations

import copy
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dockyard.errors import JobSpecError
from dockyard.loading import build_job, parse_document
from dockyard.rules import HostFacts, check_job

ROOT = Path(__file__).resolve().parents[2]
HOST = HostFacts(cpus=2, memory_bytes=24 << 30, gpus=0)
NOW = datetime(2026, 11, 29, tzinfo=UTC)
FUZZ = settings(max_examples=300, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])

SAGEMAKER_REQUEST: dict[str, Any] = {
    "TrainingJobName": "fuzz-1",
    "AlgorithmSpecification": {
        "TrainingImage": "811284229777.dkr.ecr.us-east-1.amazonaws.com/image-classification:1",
        "TrainingInputMode": "File",
        "MetricDefinitions": [{"Name": "loss", "Regex": "loss=([0-9.]+)"}],
    },
    "RoleArn": "arn:aws:iam::111111111111:role/dockyard",
    "HyperParameters": {"num_classes": "10", "num_training_samples": "100", "image_shape": "3,32,32"},
    "InputDataConfig": [
        {
            "ChannelName": "train",
            "ContentType": "application/x-recordio",
            "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": "s3://bucket/train"}},
        }
    ],
    "OutputDataConfig": {"S3OutputPath": "s3://bucket/output"},
    "ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": 2, "VolumeSizeInGB": 10},
    "StoppingCondition": {"MaxRuntimeInSeconds": 600},
    "CheckpointConfig": {"S3Uri": "s3://bucket/checkpoints"},
}


def _documents() -> list[dict[str, Any]]:
    docs = [yaml.safe_load(p.read_text()) for p in sorted(ROOT.glob("examples/*/job.yaml"))]
    docs.append(yaml.safe_load((ROOT / "examples" / "xgboost-breast-cancer" / "spot-job.yaml").read_text()))
    return [*docs, SAGEMAKER_REQUEST]


DOCUMENTS = _documents()

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=80),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=20), children, max_size=4),
    max_leaves=10,
)


def _paths(value: Any, here: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place in a document: mapping keys and list positions, nested."""
    found = [here] if here else []
    if isinstance(value, dict):
        for key, child in value.items():
            found += _paths(child, (*here, key))
    elif isinstance(value, list):
        for i, child in enumerate(value):
            found += _paths(child, (*here, i))
    return found


@st.composite
def mutated(draw: st.DrawFn, documents: list[dict[str, Any]] = DOCUMENTS) -> dict[str, Any]:
    """One of `documents` with one to three parts replaced, dropped or added."""
    doc = copy.deepcopy(draw(st.sampled_from(documents)))
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        paths = _paths(doc)
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent: Any = doc
        for step in path[:-1]:
            parent = parent[step]
        action = draw(st.sampled_from(["replace", "drop", "add"]))
        if action == "replace":
            parent[path[-1]] = draw(json_values)
        elif action == "drop" and isinstance(parent, dict):
            del parent[path[-1]]
        elif isinstance(parent, dict):
            parent[draw(st.text(min_size=1, max_size=20))] = draw(json_values)
    return doc


def load(doc: dict[str, Any]) -> None:
    """What validate does before anything is created, short of the host's Docker and the locations."""
    try:
        spec = build_job(doc, home="/tmp/dockyard-fuzz", now=NOW)
        check_job(spec, HOST)
    except JobSpecError as exc:
        message = str(exc)
        assert message.strip(), "an empty error message"
        assert "Traceback" not in message


def test_the_examples_and_the_request_load() -> None:
    for doc in DOCUMENTS:
        build_job(copy.deepcopy(doc), home="/tmp/dockyard-fuzz", now=NOW)


@FUZZ
@given(mutated())
def test_a_mutated_job_is_a_valid_job_or_a_spec_error(doc: dict[str, Any]) -> None:
    load(doc)


@FUZZ
@given(st.text(max_size=400) | st.binary(max_size=200).map(lambda b: b.decode("latin-1")))
def test_any_text_as_a_job_file_is_a_mapping_or_a_spec_error(text: str) -> None:
    try:
        doc = parse_document(text)
    except JobSpecError:
        return
    load(doc)


@FUZZ
@given(json_values)
def test_any_json_value_in_any_top_level_field_is_a_valid_job_or_a_spec_error(value: Any) -> None:
    for doc in DOCUMENTS[:2]:
        for key in list(doc):
            changed = copy.deepcopy(doc)
            changed[key] = value
            load(changed)


def test_nan_and_infinity_are_refused_where_a_number_is_asked() -> None:
    doc = copy.deepcopy(SAGEMAKER_REQUEST)
    doc["StoppingCondition"]["MaxRuntimeInSeconds"] = math.inf
    try:
        build_job(doc, home="/tmp/dockyard-fuzz", now=NOW)
    except JobSpecError as exc:
        assert "max_runtime_in_seconds" in str(exc)
    else:
        raise AssertionError("an infinite max runtime was accepted")
