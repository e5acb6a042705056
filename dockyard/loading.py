"""Turning a job document (YAML, JSON, or a SageMaker request) into a spec.

Pure: takes text and values, returns a validated TrainingJobSpec or raises
JobSpecError with one line per field problem.
"""

from __future__ import annotations

import re
import secrets
from datetime import datetime
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from dockyard.algorithm_spec import BUILTINS, AlgorithmSpec
from dockyard.algorithms import suggest
from dockyard.errors import FieldProblem, JobSpecError
from dockyard.spec import ProcessingJobSpec, TrainingJobSpec
from dockyard.wire import to_snake

# CreateTrainingJob fields that have no meaning on a host you own: accepted
# from a SageMaker request and dropped, so a request runs as it is.
SAGEMAKER_IGNORED = {
    "VpcConfig",
    "EnableInterContainerTrafficEncryption",
    "TensorBoardOutputConfig",
    "InfraCheckConfig",
    "RemoteDebugConfig",
    "SessionChainingConfig",
}
_ENV_REF = re.compile(r"\$\{DOCKYARD_HOME\}")


def from_sagemaker_request(body: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Convert a CreateTrainingJob body (PascalCase) to spec keys.

    Returns the converted document and the top-level keys that were dropped.
    """
    dropped = sorted(k for k in body if k in SAGEMAKER_IGNORED)
    kept = {k: v for k, v in body.items() if k not in SAGEMAKER_IGNORED}
    return to_snake(kept), dropped


def looks_like_sagemaker_request(doc: dict[str, Any]) -> bool:
    return any(k[:1].isupper() for k in doc)


def generate_job_name(prefix: str, now: datetime) -> str:
    """`prefix-YYYYmmdd-HHMMSS-xxxx`, trimmed to SageMaker's 63 characters."""
    stamp = now.strftime("%Y%m%d-%H%M%S")
    suffix = f"-{stamp}-{secrets.token_hex(2)}"
    clean = re.sub(r"[^a-zA-Z0-9-]+", "-", prefix).strip("-") or "job"
    return clean[: 63 - len(suffix)].rstrip("-") + suffix


def _default_prefix(doc: dict[str, Any]) -> str:
    algo = doc.get("algorithm_specification") or {}
    if not isinstance(algo, dict):
        return "job"
    if algo.get("algorithm_name"):
        return str(algo["algorithm_name"])
    image = str(algo.get("training_image") or "job")
    return image.rsplit("/", 1)[-1].split(":", 1)[0].split("@", 1)[0]


def _expand(value: Any, home: str) -> Any:
    if isinstance(value, str):
        return _ENV_REF.sub(home, value)
    if isinstance(value, dict):
        return {k: _expand(v, home) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand(v, home) for v in value]
    return value


def _path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def _model_at(loc: tuple[int | str, ...], root: type[BaseModel] = TrainingJobSpec) -> type[BaseModel] | None:
    """The pydantic model that owns the field at `loc`, for did-you-mean hints."""
    model: Any = root
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part)
        if field is None:
            return None
        ann = field.annotation
        for candidate in (*getattr(ann, "__args__", ()), ann):
            inner = getattr(candidate, "__args__", (candidate,))
            found = next((c for c in inner if isinstance(c, type) and issubclass(c, BaseModel)), None)
            if found:
                model = found
                break
        else:
            return None
    return model if isinstance(model, type) else None


def field_problem(err: Any, root: type[BaseModel] = TrainingJobSpec) -> FieldProblem:
    loc = tuple(err["loc"])
    path = _path(loc)
    kind = err["type"]
    msg = str(err["msg"]).removeprefix("Value error, ")
    if kind == "extra_forbidden":
        owner = _model_at(loc, root)
        hint = suggest(str(loc[-1]), list(owner.model_fields)) if owner else ""
        return FieldProblem(path, "unknown field", hint or "remove it (see the spec reference in README.md)")
    if kind == "missing":
        return FieldProblem(path, "required", "add it (see the spec reference in README.md)")
    if kind == "string_pattern_mismatch" and path in ("training_job_name", "processing_job_name"):
        return FieldProblem(
            path,
            f"'{err['input']}' is not a valid job name",
            "use 1-63 letters, digits and hyphens, starting with a letter or digit",
        )
    if kind == "string_pattern_mismatch" and path.endswith("channel_name"):
        return FieldProblem(
            path, f"'{err['input']}' is not a safe directory name", "use 1-64 letters, digits, '.', '-' or '_'"
        )
    if kind == "enum":
        return FieldProblem(path, f"got '{err['input']}'", msg[0].lower() + msg[1:])
    if kind == "value_error":  # our own validators already say how to fix it
        return FieldProblem(path, msg)
    return FieldProblem(path, f"{msg} — got {err.get('input')!r}", "fix the value")


def parse_document(text: str, source: str = "job spec") -> dict[str, Any]:
    """A job document's mapping, from YAML or JSON text.

    Raises:
        JobSpecError: the text does not parse, or is not a mapping.
    """
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise JobSpecError(f"{source}: not valid YAML or JSON ({exc}) — fix the syntax") from None
    if doc is None:
        raise JobSpecError(f"{source}: the file is empty — write the job's fields in it (README.md lists them)")
    if not isinstance(doc, dict):
        raise JobSpecError(f"{source}: must be a mapping of job fields — see the spec reference in README.md")
    return doc


def build_job(doc: dict[str, Any], *, home: str, now: datetime) -> TrainingJobSpec:
    """Validate a parsed job document (snake_case or a SageMaker request) into a spec.

    `${DOCKYARD_HOME}` in any string becomes `home`. A missing
    training_job_name is generated from `base_job_name` or the algorithm.

    Raises:
        JobSpecError: one line per field problem.
    """
    if looks_like_sagemaker_request(doc):
        doc, _ = from_sagemaker_request(doc)
    if "processing_job_name" in doc:
        raise JobSpecError(
            "this is a processing job, not a training job: run it with `python -m flows.process` "
            "(or `dockyard process`)"
        )
    doc = _expand(dict(doc), home)
    prefix = doc.pop("base_job_name", None)
    if not doc.get("training_job_name"):
        doc["training_job_name"] = generate_job_name(str(prefix or _default_prefix(doc)), now)
    try:
        return TrainingJobSpec.model_validate(doc)
    except ValidationError as exc:
        raise JobSpecError([field_problem(e) for e in exc.errors()]) from None


def build_processing_job(doc: dict[str, Any], *, home: str, now: datetime) -> ProcessingJobSpec:
    """Validate a parsed processing job document (snake_case or a CreateProcessingJob request).

    `${DOCKYARD_HOME}` in any string becomes `home`; a missing processing_job_name is generated
    from `base_job_name` or the image.

    Raises:
        JobSpecError: one line per field problem.
    """
    if looks_like_sagemaker_request(doc):
        doc = to_snake(doc)
    doc = _expand(dict(doc), home)
    if "analyzed_model" in doc:
        raise JobSpecError(
            "analyzed_model: dockyard's own field, set from the analysis config — name the model there "
            "(predictor.model_name)"
        )
    prefix = doc.pop("base_job_name", None)
    if not doc.get("processing_job_name"):
        image = str((doc.get("app_specification") or {}).get("image_uri") or "processing")
        default = image.rsplit("/", 1)[-1].split(":", 1)[0].split("@", 1)[0]
        doc["processing_job_name"] = generate_job_name(str(prefix or default), now)
    try:
        return ProcessingJobSpec.model_validate(doc)
    except ValidationError as exc:
        raise JobSpecError([field_problem(e, ProcessingJobSpec) for e in exc.errors()]) from None


def build_algorithm(doc: dict[str, Any]) -> AlgorithmSpec:
    """Validate a parsed algorithm document (snake_case, or a CreateAlgorithm request).

    Raises:
        JobSpecError: one line per field problem; a built-in's name is taken.
    """
    if looks_like_sagemaker_request(doc):
        doc = to_snake(doc)
    doc = {k: v for k, v in doc.items() if k not in ("tags", "inference_specification", "validation_specification")}
    training = doc.get("training_specification")
    if isinstance(training, dict):  # accepted, not used: dockyard stages only the job's own channels
        doc["training_specification"] = {k: v for k, v in training.items() if k != "additional_s3_data_source"}
    try:
        algorithm = AlgorithmSpec.model_validate(doc)
    except ValidationError as exc:
        raise JobSpecError([field_problem(e, AlgorithmSpec) for e in exc.errors()]) from None
    unbounded = [
        h.name for h in algorithm.training_specification.supported_hyper_parameters
        if h.numeric_range is not None and None in (h.numeric_range.min_value, h.numeric_range.max_value)
    ]  # fmt: skip
    if unbounded:
        raise JobSpecError(f"training_specification.supported_hyper_parameters: {unbounded} have a range without "
                           "both min_value and max_value — give both, as CreateAlgorithm does")  # fmt: skip
    if algorithm.algorithm_name.lower() in {n.lower() for n in BUILTINS}:
        raise JobSpecError(f"algorithm_name: '{algorithm.algorithm_name}' is a built-in's name — choose another name")
    return algorithm
