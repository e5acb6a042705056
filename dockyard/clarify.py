"""Clarify jobs: the model an analysis names, and how it reaches dockyard's Clarify processor.

A processing job that runs dockyard's Clarify processor (dockyard.algorithms.CLARIFY_IMAGE)
reads its analysis_config.json from the input at /opt/ml/processing/input/config. There,
`predictor.model_name` names the model to explain. On SageMaker it names a SageMaker model;
here it names a training job in the job store, or gives a model.tar.gz URI. dockyard resolves it
at validation (`analyzed_model`) into the spec's `analyzed_model`. The stages then unpack the
archive (stage_data) and either:
- bind it read-only at /opt/ml/processing/input/model, for the processor to load itself
  (the built-in XGBoost's models); or
- serve it from a container of the training job's image beside the processor (Clarify's
  shadow endpoint): `serve`, the model at /opt/ml/model, on the job's network as
  http://model:8080, SageMaker's inference contract.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

from dockyard.algorithms import CLARIFY_IMAGE, processing_image
from dockyard.errors import JobSpecError
from dockyard.record import JobRecord
from dockyard.spec import AnalyzedModel, ProcessingJobSpec
from dockyard.status import PrimaryStatus

CONFIG_DIR = "/opt/ml/processing/input/config"  # where Clarify reads analysis_config.json
CONFIG_FILE = "analysis_config.json"
MODEL_DIR = "/opt/ml/processing/input/model"  # where the processor loads a model itself
SERVED_MODEL_DIR = "/opt/ml/model"  # where a serving container finds its model, as on SageMaker hosting
SERVE_COMMAND = ("serve",)
SHADOW_HOST = "model"  # the serving container's name on the job's network
ENDPOINT_VARIABLE = "DOCKYARD_MODEL_ENDPOINT"  # the processor's environment: the served model's URL
ENDPOINT = f"http://{SHADOW_HOST}:8080"
LOADED_ALGORITHMS = ("xgboost",)  # the built-ins whose models the processor loads itself


def is_clarify(spec: ProcessingJobSpec) -> bool:
    """Whether the job runs dockyard's Clarify processor."""
    return processing_image(spec.app_specification.image_uri) == CLARIFY_IMAGE


def config_location(spec: ProcessingJobSpec) -> tuple[str, str] | None:
    """The analysis config's URI and the field that gives it, for a Clarify job with a config input."""
    if not is_clarify(spec):
        return None
    for i, item in enumerate(spec.processing_inputs):
        if item.s3_input.local_path == CONFIG_DIR:
            uri = item.s3_input.s3_uri
            if not uri.endswith(".json"):
                uri = f"{uri.rstrip('/')}/{CONFIG_FILE}"
            return uri, f"processing_inputs[{i}].s3_input.s3_uri"
    return None


def analyzed_model(
    spec: ProcessingJobSpec, config_text: bytes, field: str, find: Callable[[str], JobRecord | None]
) -> AnalyzedModel | None:
    """The model the analysis config (`config_text`, read from `field`'s URI) names, resolved with
    `find` (the job store's lookup by name); None when it names none.

    Raises:
        JobSpecError: the config is not JSON, or names a model dockyard cannot give the processor.
    """
    try:
        config = json.loads(config_text)
    except ValueError as exc:
        raise JobSpecError(f"{field}: {CONFIG_FILE} is not JSON ({exc}) — fix the analysis config") from None
    predictor: Any = config.get("predictor") if isinstance(config, dict) else None
    if predictor is None:
        return None
    if not isinstance(predictor, dict):
        raise JobSpecError(f"{CONFIG_FILE}: predictor must be a mapping — give it model_name")
    if predictor.get("endpoint_name"):
        raise JobSpecError(
            f"{CONFIG_FILE}: predictor.endpoint_name: dockyard runs no endpoints — name the model as "
            "predictor.model_name (a training job, or a model.tar.gz URI): dockyard serves it for the analysis"
        )
    name = predictor.get("model_name")
    if name is None or name == "":
        return None
    if not isinstance(name, str):
        raise JobSpecError(f"{CONFIG_FILE}: predictor.model_name must be a string — a training job's name or a URI")
    if "://" in name:
        if not name.startswith(("s3://", "file://")):
            raise JobSpecError(
                f"{CONFIG_FILE}: predictor.model_name: '{name}' is no s3:// or file:// URI — give the model.tar.gz's"
            )
        if name.startswith("file://") and not name.endswith((".tar.gz", ".tgz")):  # never a folder of the host's
            raise JobSpecError(
                f"{CONFIG_FILE}: predictor.model_name: '{name}' — a file:// model is one model.tar.gz, not a folder"
            )
        try:
            model = AnalyzedModel(model_data=name)
        except ValidationError as exc:
            reason = exc.errors()[0]["msg"].removeprefix("Value error, ")
            raise JobSpecError(f"{CONFIG_FILE}: predictor.model_name: {reason}") from None
    else:
        model = _of_job(name, find(name))
    if model.image is None:  # the processor loads it at MODEL_DIR: no input or output may be there
        paths = [
            (f"processing_inputs[{i}].s3_input.local_path", item.s3_input.container_path)
            for i, item in enumerate(spec.processing_inputs)
        ]
        paths += [(f"processing_output_config.outputs[{i}].s3_output.local_path", o.s3_output.local_path)
                  for i, o in enumerate(spec.processing_output_config.outputs)]  # fmt: skip
        for field, path in paths:
            if path == MODEL_DIR or path.startswith(MODEL_DIR + "/") or MODEL_DIR.startswith(path + "/"):
                raise JobSpecError(
                    f"{field}: {path} is where the processor loads the model that predictor.model_name names — "
                    "give it another local path, or drop model_name"
                )
    return model


def _of_job(name: str, record: JobRecord | None) -> AnalyzedModel:
    if record is None or record.kind != "training":
        raise JobSpecError(
            f"{CONFIG_FILE}: predictor.model_name: '{name}' is no training job in the job store, nor a URI — "
            "name a Completed training job (dockyard jobs list), or give s3://.../model.tar.gz"
        )
    if record.status.primary is not PrimaryStatus.COMPLETED or not record.model_artifacts:
        raise JobSpecError(
            f"{CONFIG_FILE}: predictor.model_name: training job '{name}' is {record.status.primary.value}, and only "
            "a Completed job's model is analysed — wait for it to complete, or name another"
        )
    algorithm = record.spec.algorithm_specification.builtin_name
    if algorithm in LOADED_ALGORITHMS:
        return AnalyzedModel(model_data=record.model_artifacts, training_job_name=name)
    if algorithm:
        raise JobSpecError(
            f"{CONFIG_FILE}: predictor.model_name: training job '{name}' ran the built-in {algorithm}, whose models "
            f"dockyard neither loads nor serves for Clarify — models of {', '.join(LOADED_ALGORITHMS)} and of your "
            "own images (with a `serve` command) are"
        )
    # The very image the model was trained in: by its registry digest where it has one (an image only
    # this engine knows has only its tag, which another host may resolve by building or pulling it).
    digest = record.training_image_digest
    image = (
        digest
        if digest and "@" in digest
        else record.training_image or record.spec.algorithm_specification.training_image
    )
    return AnalyzedModel(model_data=record.model_artifacts, image=image, training_job_name=name)
